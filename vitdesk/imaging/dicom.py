"""Load a DICOM series into a :class:`~vitdesk.imaging.volume.Volume` in HU.

HU = stored value x (0028,1053) Rescale Slope + (0028,1052) Rescale Intercept,
per slice (per frame for enhanced multi-frame CT, from the Pixel Value
Transformation functional group). Slices are ordered by (0020,0032) Image
Position (Patient) projected on the slice normal, the cross product of the two
(0020,0037) Image Orientation (Patient) vectors; the z spacing is the median
distance between neighbouring positions. (0028,0120) Pixel Padding Value (and
(0028,0121) Pixel Padding Range Limit) voxels are masked and set to -1024 HU.

Speed: when :func:`~vitdesk.imaging.scan.scan_path` already located native
(uncompressed, little-endian) pixel data, the header is not parsed again and each
slice is read with ``np.fromfile`` and converted to HU straight into the output
volume, in a thread pool (file reads and numpy release the GIL). Other files
(compressed, big endian, multi-frame, no scan) go through pydicom's
``pixel_array`` and its codec plugins, also in the pool.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from vitdesk.errors import LoadError
from vitdesk.imaging.deid import safe_key, split_meta
from vitdesk.imaging.scan import FileHeader, SeriesInfo, ds_floats
from vitdesk.imaging.volume import Volume
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

PADDING_HU = -1024.0
GAP_FACTOR = 1.5  # a step this many times the median spacing means missing slices
UNEVEN_TOLERANCE = 0.1  # relative deviation from the median step that is "uneven"
DUPLICATE_MM = 0.01
TILT_DEGREES = 0.5

# Elements the loader reads besides group 0028; the rest of the header is skipped.
_PIXEL_TAGS = [
    Tag(kw)
    for kw in (
        "SeriesInstanceUID", "Modality", "InstanceNumber", "ImagePositionPatient",
        "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices",
        "GantryDetectorTilt", "NumberOfFrames", "PerFrameFunctionalGroupsSequence",
        "SharedFunctionalGroupsSequence",
    )
]

_CORRUPT_HINT = "the file looks truncated or corrupt: copy or export it again"
_CODEC_HINT = (
    "install the matching decoder (pylibjpeg with pylibjpeg-libjpeg / -openjpeg / -rle, "
    "or pyjpegls) or convert the series to uncompressed DICOM (e.g. gdcmconv --raw)"
)


@dataclass
class _Frame:
    """One 2-D slice before sorting: stored values (not yet HU) and geometry.

    ``stored`` is None for a lazy frame: native pixels at ``lazy`` =
    (dtype, offset) in ``file``, read only when converted to HU, straight into
    the output volume (no intermediate copy of the whole series).
    """

    stored: np.ndarray | None
    shape: tuple[int, int]
    lazy: tuple[np.dtype, int] | None
    bits_stored: int
    slope: float
    intercept: float
    ds: Dataset | None  # set only when a Modality LUT Sequence must be applied
    pad_range: tuple[float, float] | None
    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    thickness: float | None
    window: tuple[float, float] | None
    photometric: str
    tilt: float
    file: str
    frame: int
    instance: int


def _first(value: Any) -> Any:
    """First value of a possibly multi-valued element (WindowCenter may hold several)."""
    if value is None or value == "":
        return None
    if isinstance(value, str | bytes):
        return value
    try:
        return value[0]
    except (TypeError, IndexError, KeyError):
        return value


def _float(value: Any, default: float | None = None) -> float | None:
    value = _first(value)
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _vec(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) else None


def _group(ds: Dataset, index: int, seq: str, attr: str) -> Any:
    """Look ``attr`` up in a functional group: per-frame first, then shared."""
    for container, i in (("PerFrameFunctionalGroupsSequence", index),
                         ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(container)
        if not groups or len(groups) <= i:
            continue
        item = groups[i].get(seq)
        if item and attr in item[0]:
            return item[0].get(attr)
    return None


def _ts_name(ds: Dataset | None, path: str) -> str:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        try:
            ts = pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta.get(
                "TransferSyntaxUID"
            )
        except Exception:  # any read problem just means "unknown" here
            ts = None
    return UID(ts).name if ts else "unknown transfer syntax"


def _read_pixels(path: str) -> tuple[Dataset, np.ndarray]:
    """Read the needed header elements and decode all frames of one file."""
    ds = Dataset()
    try:
        # Fast path: reads group 0028 and _PIXEL_TAGS only, then decodes.
        arr = pixel_array(path, ds_out=ds, specific_tags=_PIXEL_TAGS)
        return ds, arr
    except AttributeError:
        pass  # no file meta (no preamble / raw data set): read it all below
    ds = pydicom.dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        if implicit is None:
            implicit, little = True, True
        ts = (ImplicitVRLittleEndian if implicit
              else ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        ds.ensure_file_meta()
        ds.file_meta.TransferSyntaxUID = ts
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise LoadError(f"{path}: no pixel data in this DICOM file; it is not an image")
    return ds, ds.pixel_array


def _padding_range(ds: Dataset) -> tuple[float, float] | None:
    ppv = ds.get("PixelPaddingValue")
    if ppv is None:
        return None
    ppv = int(_first(ppv))
    lim = ds.get("PixelPaddingRangeLimit")
    bits = int(ds.get("BitsAllocated", 16) or 16)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1

    def fix(v: int) -> int:
        # US-or-SS elements of signed images may have been read as unsigned.
        return v - (1 << bits) if signed and v >= (1 << (bits - 1)) else v

    ppv = fix(ppv)
    if lim is None:
        return (float(ppv), float(ppv))
    lim = fix(int(_first(lim)))
    return (float(min(ppv, lim)), float(max(ppv, lim)))


def _native_layout(known: FileHeader) -> tuple[np.dtype, int] | None:
    """(dtype, offset) of native little-endian pixels the scan located, or None.

    Lets the loader skip pydicom's second parse of the header: pixels are read
    with one ``np.fromfile`` per slice, which releases the GIL, so the thread
    pool reads and converts slices in parallel.
    """
    ds = known.header
    if known.pixel_offset < 0 or ds is None:
        return None
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        return None
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return None
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits not in (8, 16, 32) or "Rows" not in ds or "Columns" not in ds:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    count = rows * cols
    if known.pixel_length < count * bits // 8:
        return None  # let pydicom produce its own error message
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    return np.dtype(f"<{'i' if signed else 'u'}{bits // 8}"), known.pixel_offset


def _read_lazy(fr: _Frame) -> np.ndarray:
    dtype, offset = fr.lazy  # type: ignore[misc]
    count = fr.shape[0] * fr.shape[1]
    try:
        arr = np.fromfile(fr.file, dtype=dtype, count=count, offset=offset)
    except OSError as exc:
        raise LoadError(f"{fr.file}: cannot read ({exc}); rescan the folder") from None
    if arr.size != count:
        raise LoadError(
            f"{fr.file}: pixel data ends early ({arr.size} of {count} pixels); {_CORRUPT_HINT}"
        )
    return _correct_unused_bits(arr.reshape(fr.shape), fr.bits_stored)


def _correct_unused_bits(arr: np.ndarray, stored: int) -> np.ndarray:
    """Ignore bits above (0028,0101) Bits Stored (``stored``), as PS3.5 8.1.1 requires.

    They may hold overlays in old files. For clean files this changes nothing.
    """
    if arr.dtype.kind not in "iu" or not 0 < stored < arr.dtype.itemsize * 8:
        return arr
    if not arr.flags.writeable:
        arr = arr.copy()
    shift = arr.dtype.itemsize * 8 - stored
    if arr.dtype.kind == "i":
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)  # arithmetic shift: sign-extends
    else:
        np.bitwise_and(arr, (1 << stored) - 1, out=arr)
    return arr


def _decode_file(path: str, known: FileHeader | None = None) -> list[_Frame]:
    """Decode one file into frames (stored values plus the geometry of each)."""
    ds: Dataset | None = None
    layout = None
    try:
        layout = _native_layout(known) if known is not None else None
        if layout is not None:
            ds = known.header  # type: ignore[union-attr]
            arr = None  # read later, straight into the volume
        else:
            ds, arr = _read_pixels(path)
    except LoadError:
        raise
    except FileNotFoundError:
        raise LoadError(f"{path}: file not found; rescan the folder") from None
    except Exception as exc:  # codec plugins raise many types; all mean "cannot decode"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        missing = isinstance(exc, NotImplementedError) or "plugin" in reason.lower() and (
            "missing" in reason.lower() or "no " in reason.lower()
        )
        hint = _CODEC_HINT if missing else _CORRUPT_HINT
        raise LoadError(
            f"{path}: cannot decode pixel data ({_ts_name(ds, path)}): {reason}; {hint}"
        ) from None
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp != 1:
        raise LoadError(
            f"{path}: colour image ({spp} samples per pixel, "
            f"{ds.get('PhotometricInterpretation', '?')}); vitdesk loads greyscale CT/MR only"
        )
    bits_stored = int(ds.get("BitsStored", 0) or 0)
    if arr is None:  # lazy: one native frame, read when converted
        n_frames, shape = 1, (int(ds.Rows), int(ds.Columns))
    else:
        arr = _correct_unused_bits(arr, bits_stored)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.ndim != 3 or (n_frames > 1 and arr.shape[0] != n_frames):
            raise LoadError(f"{path}: pixel data shape {arr.shape} does not match its header")
        n_frames, shape = arr.shape[0], (arr.shape[1], arr.shape[2])
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    pad = _padding_range(ds)
    use_lut = bool(ds.get("ModalityLUTSequence"))
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    ps = _vec(ds_floats(ds, "PixelSpacing"), 2)
    wc, ww = _float(ds_floats(ds, "WindowCenter")), _float(ds_floats(ds, "WindowWidth"))
    tilt = _float(ds_floats(ds, "GantryDetectorTilt"), 0.0) or 0.0
    instance = int(_float(ds_floats(ds, "InstanceNumber"), 0) or 0)
    # Legacy multi-frame (one position for the whole file): frames are stacked
    # along the normal every SpacingBetweenSlices (else SliceThickness) mm.
    step_mm = None
    if n_frames > 1 and not enhanced:
        step_mm = _float(ds_floats(ds, "SpacingBetweenSlices")) or _float(
            ds_floats(ds, "SliceThickness")
        )
    # File-level values, overridden per frame by functional groups when enhanced.
    top_slope = _float(ds_floats(ds, "RescaleSlope"), 1.0)
    top_intercept = _float(ds_floats(ds, "RescaleIntercept"), 0.0)
    top_ipp = _vec(ds_floats(ds, "ImagePositionPatient"), 3)
    top_iop = _vec(ds_floats(ds, "ImageOrientationPatient"), 6)
    top_thick = _float(ds_floats(ds, "SliceThickness"))
    frames = []
    for i in range(n_frames):
        slope, intercept, ipp, iop = top_slope, top_intercept, top_ipp, top_iop
        f_ps, thick = ps, top_thick
        f_wc, f_ww = wc, ww
        if step_mm and ipp is not None and iop is not None:
            ipp = ipp + i * step_mm * _orientation_normal(iop)
        if enhanced:
            slope = _float(_group(ds, i, "PixelValueTransformationSequence", "RescaleSlope"),
                           slope)
            intercept = _float(
                _group(ds, i, "PixelValueTransformationSequence", "RescaleIntercept"), intercept
            )
            ipp = _vec(_group(ds, i, "PlanePositionSequence", "ImagePositionPatient"), 3)
            if ipp is None:
                ipp = top_ipp
            g_iop = _vec(_group(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
            iop = g_iop if g_iop is not None else iop
            g_ps = _vec(_group(ds, i, "PixelMeasuresSequence", "PixelSpacing"), 2)
            f_ps = g_ps if g_ps is not None else ps
            thick = _float(_group(ds, i, "PixelMeasuresSequence", "SliceThickness"), thick)
            f_wc = _float(_group(ds, i, "FrameVOILUTSequence", "WindowCenter"), wc)
            f_ww = _float(_group(ds, i, "FrameVOILUTSequence", "WindowWidth"), ww)
        frames.append(
            _Frame(
                stored=arr[i] if arr is not None else None,
                shape=shape,
                lazy=layout if arr is None else None,
                bits_stored=bits_stored,
                slope=slope if slope is not None else 1.0,
                intercept=intercept if intercept is not None else 0.0,
                ds=ds if use_lut else None,
                pad_range=pad,
                ipp=ipp,
                iop=iop,
                pixel_spacing=(float(f_ps[0]), float(f_ps[1])) if f_ps is not None else None,
                thickness=thick,
                window=(f_ww, f_wc) if f_ww and f_wc is not None and f_ww > 0 else None,
                photometric=photometric,
                tilt=tilt,
                file=path,
                frame=i,
                instance=instance,
            )
        )
    return frames


def _to_hu(fr: _Frame, out: np.ndarray) -> np.ndarray | None:
    """Write the HU of ``fr`` into ``out`` (float32); return its padding mask."""
    stored = fr.stored if fr.stored is not None else _read_lazy(fr)
    if fr.ds is not None:
        out[...] = apply_modality_lut(stored, fr.ds)
    else:
        # Same maths as pydicom's apply_modality_lut, in float32 and in place;
        # slope 1 (nearly all CT) needs a single pass over the slice.
        if fr.slope == 1.0:
            np.add(stored, np.float32(fr.intercept), out=out, casting="unsafe")
        else:
            np.multiply(stored, np.float32(fr.slope), out=out, casting="unsafe")
            if fr.intercept:
                out += np.float32(fr.intercept)
    if fr.pad_range is None:
        return None
    lo, hi = fr.pad_range
    mask = (stored >= lo) & (stored <= hi)
    out[mask] = PADDING_HU
    return mask


def read_slice_hu(path: str | Path) -> np.ndarray:
    """Return one 2-D float32 HU slice from a single-frame DICOM file (padding -> -1024)."""
    frames = _decode_file(str(path))
    if len(frames) != 1:
        raise LoadError(
            f"{path}: {len(frames)} frames in one file; read it with load_series instead"
        )
    fr = frames[0]
    out = np.empty(fr.shape, np.float32)
    _to_hu(fr, out)
    return out


def _workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def _decode_all(
    files: Sequence[str],
    headers: Sequence[FileHeader | None],
    cancel: CancelToken,
    listener: Listener | None,
) -> list[_Frame]:
    frames: list[_Frame] = []
    n = len(files)
    if n == 1:
        return _decode_file(files[0], headers[0])
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        futures = [pool.submit(_decode_file, f, h) for f, h in zip(files, headers, strict=True)]
        try:
            for i, fut in enumerate(futures, 1):
                cancel.check()
                frames.extend(fut.result())
                if i % 16 == 0 or i == n:
                    emit(listener, Progress("load", i, n, "slices"))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return frames


def _orientation_normal(iop: np.ndarray) -> np.ndarray:
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def load_series(
    series: SeriesInfo | Sequence[str | Path],
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
) -> Volume:
    """Load one DICOM series (a :class:`SeriesInfo` or its file paths) in HU.

    Raises:
        LoadError: a file cannot be read or decoded (the message names the file
            and its transfer syntax), or the slices differ in size.
    """
    headers: list[FileHeader | None]
    if isinstance(series, SeriesInfo):
        files = list(series.files)
        meta, phi, key = dict(series.meta), dict(series.phi), series.key
        headers = list(series.headers) if len(series.headers) == len(files) else []
    else:
        files = [str(f) for f in series]
        meta, phi, key = {}, {}, ""
        headers = []
    headers = headers or [None] * len(files)
    if not files:
        raise LoadError("empty series: no files to load; rescan the folder")
    emit(listener, Progress("load", 0, len(files), "slices"))
    frames = _decode_all(files, headers, cancel, listener)
    if not frames:
        raise LoadError(f"{files[0]}: no image frames found")
    if not key:
        try:
            head = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
            meta, phi = split_meta(head)
            uid = str(head.get("SeriesInstanceUID", "") or "")
        except Exception:  # header already decoded once; meta is a nicety here
            uid = ""
        key = safe_key(uid or f"file:{files[0]}")
    return _assemble(frames, meta, phi, key, cancel)


def _assemble(
    frames: list[_Frame], meta: dict, phi: dict, key: str, cancel: CancelToken
) -> Volume:
    warnings: list[str] = []
    shapes = {fr.shape for fr in frames}
    if len(shapes) > 1:
        odd = [fr.file for fr in frames if fr.shape != frames[0].shape]
        sizes = ", ".join(f"{c}x{r}" for r, c in sorted(shapes))
        raise LoadError(
            f"{odd[0]}: slices of one series have different sizes ({sizes}); "
            "move the odd files to their own folder"
        )

    iops = [fr.iop for fr in frames if fr.iop is not None]
    ref_iop = iops[0] if iops else np.array([1.0, 0, 0, 0, 1.0, 0])
    mixed = any(np.abs(i - ref_iop).max() > 1e-3 for i in iops)
    if mixed:
        warnings.append("mixed slice orientations in one series: the volume may be distorted")
    normal = _orientation_normal(ref_iop)
    have_pos = all(fr.ipp is not None for fr in frames)
    if have_pos:
        pos = np.array([float(np.dot(normal, fr.ipp)) for fr in frames])
    else:
        if len(frames) > 1:
            warnings.append("slices lack ImagePositionPatient: ordered by instance number")
        pos = np.array([float(fr.instance) for fr in frames])
    order = np.argsort(pos, kind="stable")
    frames = [frames[i] for i in order]
    pos = pos[order]

    thickness = next((fr.thickness for fr in frames if fr.thickness), None)
    if len(frames) > 1 and have_pos:
        steps = np.diff(pos)
        dup = steps < DUPLICATE_MM
        if dup.any():
            warnings.append(
                f"{int(dup.sum())} duplicate slice position(s) (e.g. "
                f"{frames[int(np.argmax(dup))].file} and the next): "
                "the series may hold two acquisitions"
            )
        real = steps[~dup]
        dz = float(np.median(real)) if real.size else float(thickness or 1.0)
        gaps = real > GAP_FACTOR * dz
        if gaps.any():
            n_missing = int(np.sum(np.round(real[gaps] / dz) - 1))
            warnings.append(
                f"missing slices: {int(gaps.sum())} gap(s) up to {real.max():.2f} mm "
                f"(spacing {dz:.2f} mm), about {n_missing} slice(s) missing"
            )
        dev = np.abs(real[~gaps] - dz) if real.size else np.array([])
        if dev.size and dev.max() > UNEVEN_TOLERANCE * dz:
            warnings.append(
                f"uneven slice spacing: steps from {real.min():.2f} to {real.max():.2f} mm "
                f"(median {dz:.2f} mm)"
            )
        span = frames[-1].ipp - frames[0].ipp
        span_norm = np.linalg.norm(span)
        if span_norm > 0 and not mixed:  # a mixed series has no single normal to compare
            cosang = abs(float(np.dot(span / span_norm, normal)))
            angle = float(np.degrees(np.arccos(min(1.0, cosang))))
            if angle > TILT_DEGREES:
                warnings.append(
                    f"gantry tilt: slices are stacked {angle:.1f} degrees off their normal; "
                    "the volume is not resampled, so 3-D geometry is sheared"
                )
    else:
        dz = float(thickness or 1.0)
    tilts = {fr.tilt for fr in frames if fr.tilt}
    if tilts and not any("gantry tilt" in w for w in warnings):
        warnings.append(f"gantry tilt of {max(tilts, key=abs):g} degrees (GantryDetectorTilt)")

    rows, cols = frames[0].shape
    hu = np.empty((len(frames), rows, cols), np.float32)
    masks: list[np.ndarray | None] = [None] * len(frames)

    def convert(k: int) -> None:
        masks[k] = _to_hu(frames[k], hu[k])

    cancel.check()
    if len(frames) > 8:
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            list(pool.map(convert, range(len(frames))))
    else:
        for k in range(len(frames)):
            convert(k)
    padding = None
    if any(m is not None for m in masks):
        padding = np.zeros(hu.shape, bool)
        for k, m in enumerate(masks):
            if m is not None:
                padding[k] = m

    ps = next((fr.pixel_spacing for fr in frames if fr.pixel_spacing), None)
    if ps is None:
        ps = (1.0, 1.0)
        warnings.append("no PixelSpacing: assuming 1 mm pixels")
    direction = np.column_stack([ref_iop[:3], ref_iop[3:], normal])
    origin = tuple(float(v) for v in frames[0].ipp) if frames[0].ipp is not None else (0.0,) * 3
    window = next((fr.window for fr in frames if fr.window), None)
    if not meta.get("Rows"):
        meta.update(Rows=rows, Columns=cols)
    return Volume(
        hu=hu,
        spacing=(abs(dz), float(ps[0]), float(ps[1])),
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        meta=meta,
        phi=phi,
        key=key,
        warnings=warnings,
        padding=padding,
        default_window=window,
        invert_display=frames[0].photometric.upper() == "MONOCHROME1",
        slice_positions=pos.astype(np.float64),
        source_files=[fr.file for fr in frames],
    )
