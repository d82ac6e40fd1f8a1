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
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from vitdesk.errors import Cancelled, LoadError
from vitdesk.imaging.deid import safe_key, split_meta
from vitdesk.imaging.scan import (
    FileHeader,
    SeriesInfo,
    ds_floats,
    open_bounded,
    read_file_header,
)
from vitdesk.imaging.volume import FileError, Volume
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
    lut: tuple[np.ndarray, int] | None  # valid Modality LUT: (table, first stored value)
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
    notes: tuple[str, ...] = ()  # warnings about this file (shown once per series)


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
            with open_bounded(path) as fh:
                ts = pydicom.dcmread(fh, stop_before_pixels=True, force=True).file_meta.get(
                    "TransferSyntaxUID"
                )
        except Exception:  # any read problem just means "unknown" here
            ts = None
    try:
        return UID(ts).name if ts else "unknown transfer syntax"
    except Exception:  # noqa: BLE001 - a garbled UID is still "unknown"
        return "unknown transfer syntax"


def _read_pixels(path: str, frame: int | None) -> tuple[Dataset, np.ndarray]:
    """Read the needed header elements and decode all frames (or only ``frame``)."""
    ds = Dataset()
    try:
        # Fast path: reads group 0028 and _PIXEL_TAGS only, then decodes.
        with open_bounded(path) as fh:
            arr = pixel_array(fh, ds_out=ds, specific_tags=_PIXEL_TAGS, index=frame)
        return ds, arr
    except AttributeError:
        pass  # no file meta (no preamble / raw data set): read it all below
    with open_bounded(path) as fh:
        ds = pydicom.dcmread(fh, force=True)
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
    arr = ds.pixel_array
    if frame is not None and int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    return ds, arr


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


def modality_lut(ds: Dataset) -> tuple[np.ndarray, int] | str | None:
    """The (0028,3000) Modality LUT Sequence of ``ds`` as (table, first stored value).

    Returns None when there is no sequence, and a reason (str) when its first item
    lacks a usable (0028,3002) LUT Descriptor (entries, first stored value mapped,
    bits) or (0028,3006) LUT Data with at least that many entries (PS3.3 C.11.1);
    callers then fall back to Rescale Slope/Intercept and warn.
    """
    seq = ds.get("ModalityLUTSequence")
    if not seq:
        return None
    try:
        item = seq[0]
        desc = item.get("LUTDescriptor")
        if desc is None or isinstance(desc, bytes | str) or len(desc) != 3:
            return "its item has no valid LUT Descriptor"
        n = int(desc[0]) or 65536  # 0 means 2^16 entries
        first = int(desc[1])
        if "LUTData" not in item:
            return "its item has no LUT Data"
        data = item["LUTData"].value
        if isinstance(data, bytes):
            big = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == str(
                ExplicitVRBigEndian)
            table = np.frombuffer(data[: 2 * n], dtype=">u2" if big else "<u2")
        elif isinstance(data, int):
            table = np.asarray([data])
        else:
            table = np.asarray(list(data or []))
        if table.ndim != 1 or table.size < n or table.dtype.kind not in "iuf":
            return f"its LUT Data holds {table.size} entries, the descriptor says {n}"
        return table[:n].astype(np.float32), first
    except Exception as exc:  # noqa: BLE001 - any oddity: fall back to the rescale tags
        return f"it cannot be read ({type(exc).__name__})"


def _native_layout(known: FileHeader) -> tuple[np.dtype, int] | None:
    """(dtype, offset) of native little-endian pixels the scan located, or None.

    Lets the loader skip pydicom's second parse of the header: pixels are read
    with one ``np.fromfile`` per slice, which releases the GIL, so the thread
    pool reads and converts slices in parallel.
    """
    ds = known.header
    if known.pixel_offset < 0 or ds is None:
        return None
    # NumberOfFrames present means a multi-frame IOD (enhanced CT keeps its rescale in
    # per-frame groups the scan does not read): pydicom's path handles those.
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or "NumberOfFrames" in ds:
        return None
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return None
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper() not in (
            "MONOCHROME1", "MONOCHROME2"):
        return None  # palette colour: pydicom's path converts it
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


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of (..., 3) RGB values, float32 in the input's range."""
    rgb = rgb.astype(np.float32, copy=False)
    return (np.float32(0.299) * rgb[..., 0] + np.float32(0.587) * rgb[..., 1]
            + np.float32(0.114) * rgb[..., 2])


def colour_note(ds: Any) -> str | None:
    """Why a colour image's values are not HU (it is read as luminance), or None.

    From the header alone, so a dataset can say it before any pixel is read:
    (0028,0002) Samples per Pixel 3 (RGB, YBR_*) and (0028,0004) Photometric
    Interpretation PALETTE COLOR are reduced to luminance by the reader. ``ds`` is
    a pydicom Dataset or a dict of safe metadata (keywords as keys).
    """
    try:
        spp = int(_first(ds.get("SamplesPerPixel", 1)) or 1)
    except (TypeError, ValueError):
        return None
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if spp == 3:
        return (f"colour image ({photometric or 'RGB'}): loaded as luminance, "
                "not Hounsfield units")
    if spp == 1 and photometric == "PALETTE COLOR":
        return "colour image (PALETTE COLOR): loaded as luminance, not Hounsfield units"
    return None


def _greyscale(path: str, ds: Dataset, arr: np.ndarray, frame: int | None
               ) -> tuple[np.ndarray, str | None]:
    """Stored greyscale values of ``arr``; colour images become luminance with a note.

    (0028,0004) Photometric Interpretation RGB / YBR (pydicom returns RGB) and
    PALETTE COLOR (mapped through its palette first) are reduced to luminance;
    anything else that is not one sample per pixel is refused with the reason.
    """
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    multi = frame is None and int(ds.get("NumberOfFrames", 1) or 1) > 1
    if spp == 3 and arr.ndim == (4 if multi else 3) and arr.shape[-1] == 3:
        return _luminance(arr), colour_note(ds)
    if spp != 1:
        raise LoadError(
            f"{path}: colour image ({spp} samples per pixel, {photometric or '?'}) that "
            "cannot be reduced to greyscale; convert it to a greyscale DICOM"
        )
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, ds)
        except Exception as exc:  # noqa: BLE001 - a broken palette is this file's problem
            raise LoadError(f"{path}: palette colour image whose palette cannot be read "
                            f"({type(exc).__name__}); convert it to greyscale") from None
        return _luminance(rgb), colour_note(ds)
    return arr, None


def _decode_file(
    path: str, known: FileHeader | None = None, frame: int | None = None
) -> list[_Frame]:
    """Decode one file into frames (stored values plus the geometry of each).

    ``frame`` decodes only that frame of a multi-frame file. The header's pixel
    claims are checked against the file size first (see
    :func:`~vitdesk.imaging.scan.pixel_claims_problem`), so a corrupt header never
    makes the decoder allocate what the file cannot hold.

    Raises:
        LoadError: one line naming the file, what is wrong and what to do.
    """
    try:
        return _decode_checked(path, known, frame)
    except LoadError:
        raise
    except (Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    # BaseException: decoders written in Rust raise pyo3's PanicException, which
    # is not an Exception; it is still only this file's problem.
    except BaseException as exc:  # noqa: BLE001
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise LoadError(f"{path}: cannot read this image ({type(exc).__name__}: {reason}); "
                        f"{_CORRUPT_HINT}") from None


def _decode_checked(path: str, known: FileHeader | None, frame: int | None) -> list[_Frame]:
    if known is None:
        known = read_file_header(path)  # raises LoadError when the claims do not fit
    if frame is not None:
        n = int(_float(ds_floats(known.header, "NumberOfFrames"), 1) or 1)
        if not 0 <= frame < n:
            raise LoadError(f"{path}: has no frame {frame} (it holds {n}); "
                            "rebuild the dataset")
    ds: Dataset | None = None
    try:
        layout = _native_layout(known)
        if layout is not None:
            ds = known.header
            arr = None  # read later, straight into the volume
        else:
            ds, arr = _read_pixels(path, frame)
    except LoadError:
        raise
    except FileNotFoundError:
        raise LoadError(f"{path}: file not found; rescan the folder") from None
    except (Cancelled, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # codec plugins raise many types (Rust ones: panics)
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        low = reason.lower()
        missing = isinstance(exc, NotImplementedError) or "plugin" in low and (
            "missing" in low or "no " in low
        )
        hint = _CODEC_HINT if missing else _CORRUPT_HINT
        raise LoadError(
            f"{path}: cannot decode pixel data ({_ts_name(ds, path)}): {reason}; {hint}"
        ) from None
    notes: list[str] = []
    bits_stored = int(ds.get("BitsStored", 0) or 0)
    if arr is None:  # lazy: one native frame, read when converted
        n_frames, shape = 1, (int(ds.Rows), int(ds.Columns))
        first_index = 0
    else:
        arr = _correct_unused_bits(arr, bits_stored)
        arr, note = _greyscale(path, ds, arr, frame)
        if note:
            notes.append(note)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if arr.ndim == 2:
            arr = arr[np.newaxis]
        if arr.ndim != 3 or (frame is None and n_frames > 1 and arr.shape[0] != n_frames):
            raise LoadError(f"{path}: pixel data shape {arr.shape} does not match its header")
        first_index = frame or 0
        n_frames, shape = arr.shape[0], (arr.shape[1], arr.shape[2])
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2")
    pad = _padding_range(ds) if not notes else None  # padding is defined on grey values
    lut = modality_lut(ds)
    if isinstance(lut, str):
        notes.append(f"Modality LUT Sequence ignored ({lut}): Rescale Slope/Intercept used")
        lut = None
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    ps = _vec(ds_floats(ds, "PixelSpacing"), 2)
    wc, ww = _float(ds_floats(ds, "WindowCenter")), _float(ds_floats(ds, "WindowWidth"))
    tilt = _float(ds_floats(ds, "GantryDetectorTilt"), 0.0) or 0.0
    instance = int(_float(ds_floats(ds, "InstanceNumber"), 0) or 0)
    # Legacy multi-frame (one position for the whole file): frames are stacked
    # along the normal every SpacingBetweenSlices (else SliceThickness) mm.
    step_mm = None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 and not enhanced:
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
    for k in range(n_frames):
        i = first_index + k  # the frame's index in the file
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
                stored=arr[k] if arr is not None else None,
                shape=shape,
                lazy=layout if arr is None else None,
                bits_stored=bits_stored,
                slope=slope if slope is not None and np.isfinite(slope) else 1.0,
                intercept=intercept if intercept is not None and np.isfinite(intercept) else 0.0,
                lut=lut,
                pad_range=pad,
                ipp=ipp if ipp is not None and np.isfinite(ipp).all() else None,
                iop=iop if iop is not None and np.isfinite(iop).all() else None,
                pixel_spacing=(float(f_ps[0]), float(f_ps[1])) if f_ps is not None else None,
                thickness=thick,
                window=(f_ww, f_wc) if f_ww and f_wc is not None and f_ww > 0 else None,
                photometric=photometric,
                tilt=tilt,
                file=path,
                frame=i,
                instance=instance,
                notes=tuple(notes),
            )
        )
    return frames


def _to_hu(fr: _Frame, out: np.ndarray) -> np.ndarray | None:
    """Write the HU of ``fr`` into ``out`` (float32); return its padding mask.

    HU = stored x Rescale Slope + Rescale Intercept, or the valid Modality LUT's
    entry for the stored value (clipped to the table, PS3.3 C.11.1.1). Padding
    voxels ((0028,0120) Pixel Padding Value up to (0028,0121) Range Limit) are
    set to :data:`PADDING_HU` and returned as a mask.
    """
    stored = fr.stored if fr.stored is not None else _read_lazy(fr)
    if fr.lut is not None:
        table, first = fr.lut
        idx = np.clip(stored.astype(np.int64) - first, 0, table.size - 1)
        out[...] = table[idx]
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


def read_frame_hu(path: str | Path, frame: int = 0) -> np.ndarray:
    """One 2-D float32 HU slice: frame ``frame`` of any DICOM file (padding -> -1024).

    The same conversion as :func:`load_series` (legacy rescale tags, per-frame and
    shared functional groups of enhanced multi-frame files, a valid Modality LUT),
    decoding only the frame asked for. This is what training, evaluation and
    prediction read.

    Raises:
        LoadError: one line naming the file, the problem and what to do.
    """
    return _frame_hu(path, None, frame)


def _frame_hu(path: str | Path, known: FileHeader | None, frame: int) -> np.ndarray:
    frames = _decode_file(str(path), known, int(frame))
    if not frames:
        raise LoadError(f"{path}: no image frame {frame}; rebuild the dataset")
    fr = frames[0]
    out = np.empty(fr.shape, np.float32)
    try:
        _to_hu(fr, out)
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - one file's problem, in one line
        raise LoadError(f"{path}: cannot convert frame {frame} to HU "
                        f"({type(exc).__name__}); {_CORRUPT_HINT}") from None
    return out


def read_slice_hu(path: str | Path) -> np.ndarray:
    """Return one 2-D float32 HU slice from a single-frame DICOM file (padding -> -1024)."""
    known = read_file_header(path)
    n = int(_float(ds_floats(known.header, "NumberOfFrames"), 1) or 1)
    if n != 1:
        raise LoadError(
            f"{path}: {n} frames in one file; read it with load_series instead"
        )
    return _frame_hu(path, known, 0)  # the header is parsed once


def _workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def _file_error(exc: LoadError, path: str) -> FileError:
    """A FileError from a LoadError whose message starts with "<path>: "."""
    text = str(exc)
    prefix = f"{path}: "
    return FileError(path, text[len(prefix):] if text.startswith(prefix) else text)


def _decode_all(
    files: Sequence[str],
    headers: Sequence[FileHeader | None],
    cancel: CancelToken,
    listener: Listener | None,
) -> tuple[list[_Frame], list[FileError]]:
    """Decode every file; a file that fails becomes a FileError, the rest go on."""
    frames: list[_Frame] = []
    skipped: list[FileError] = []
    n = len(files)

    def one(i: int) -> list[_Frame]:
        return _decode_file(files[i], headers[i])

    if n == 1:
        try:
            return one(0), skipped
        except LoadError as exc:
            return [], [_file_error(exc, files[0])]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        try:
            for i, fut in enumerate(futures, 1):
                cancel.check()
                try:
                    frames.extend(fut.result())
                except LoadError as exc:  # _decode_file turns everything into LoadError
                    skipped.append(_file_error(exc, files[i - 1]))
                if i % 16 == 0 or i == n:
                    emit(listener, Progress("load", i, n, "slices"))
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return frames, skipped


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

    Files that cannot be decoded are left out and listed in ``Volume.skipped``
    (path and reason), with a warning that the volume has a gap; the series
    fails only when no file decodes.

    Raises:
        LoadError: no file of the series can be decoded (the message names the
            first file, its problem and what to do).
        Cancelled: ``cancel`` was triggered.
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
    frames, skipped = _decode_all(files, headers, cancel, listener)
    if not frames:
        if skipped:
            first = skipped[0]
            more = f" (and {len(skipped) - 1} more file(s))" if len(skipped) > 1 else ""
            raise LoadError(f"{first.path}: {first.reason}{more}")
        raise LoadError(f"{files[0]}: no image frames found")
    if not key:
        good = frames[0].file
        try:
            with open_bounded(good) as fh:
                head = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
            meta, phi = split_meta(head)
            uid = str(head.get("SeriesInstanceUID", "") or "")
        except Exception:  # header already decoded once; meta is a nicety here
            uid = ""
        key = safe_key(uid or f"file:{good}")
    return _assemble(frames, meta, phi, key, cancel, skipped)


def _drop_odd_sizes(frames: list[_Frame], skipped: list[FileError]) -> list[_Frame]:
    """Keep the slices of the most common size; the others are skipped files."""
    counts: dict[tuple[int, int], int] = {}
    for fr in frames:
        counts[fr.shape] = counts.get(fr.shape, 0) + 1
    if len(counts) == 1:
        return frames
    keep = max(counts, key=lambda s: (counts[s], s == frames[0].shape))
    odd: dict[str, tuple[int, int]] = {}
    for fr in frames:
        if fr.shape != keep:
            odd.setdefault(fr.file, fr.shape)
    for file, (r, c) in odd.items():
        skipped.append(FileError(file, f"slice size {c}x{r} differs from the series' "
                                       f"{keep[1]}x{keep[0]}; move it to its own folder"))
    return [fr for fr in frames if fr.file not in odd]


def _assemble(
    frames: list[_Frame], meta: dict, phi: dict, key: str, cancel: CancelToken,
    skipped: list[FileError] | None = None,
) -> Volume:
    skipped = list(skipped or [])
    frames = _drop_odd_sizes(frames, skipped)
    warnings: list[str] = []
    for note in dict.fromkeys(n for fr in frames for n in fr.notes):
        warnings.append(note)
    if skipped:
        warnings.append(
            f"{len(skipped)} file(s) of this series could not be read and were left out "
            "(listed as skipped); the volume has a gap where they were"
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
            # by slice index and instance number, never the file: a path may hold a name
            k = int(np.argmax(dup))
            warnings.append(
                f"{int(dup.sum())} duplicate slice position(s) (e.g. slices {k + 1} and "
                f"{k + 2}, instance numbers {frames[k].instance} and {frames[k + 1].instance}): "
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
    if not np.isfinite(dz) or dz == 0:
        dz = 1.0
    tilts = {fr.tilt for fr in frames if fr.tilt}
    if tilts and not any("gantry tilt" in w for w in warnings):
        warnings.append(f"gantry tilt of {max(tilts, key=abs):g} degrees (GantryDetectorTilt)")

    rows, cols = frames[0].shape
    hu = np.empty((len(frames), rows, cols), np.float32)
    masks: list[np.ndarray | None] = [None] * len(frames)
    failed: dict[str, str] = {}

    def convert(k: int) -> None:
        try:
            masks[k] = _to_hu(frames[k], hu[k])
        except LoadError as exc:  # e.g. a file truncated since the scan
            failed.setdefault(frames[k].file, _file_error(exc, frames[k].file).reason)
        except Exception as exc:  # noqa: BLE001 - one file's problem, not the series'
            failed.setdefault(frames[k].file, f"cannot convert to HU ({type(exc).__name__}); "
                                              f"{_CORRUPT_HINT}")

    cancel.check()
    if len(frames) > 8:
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            list(pool.map(convert, range(len(frames))))
    else:
        for k in range(len(frames)):
            convert(k)
    if failed:
        left = [fr for fr in frames if fr.file not in failed]
        skipped += [FileError(f, r) for f, r in failed.items()]
        if not left:
            first = skipped[0]
            raise LoadError(f"{first.path}: {first.reason}")
        return _assemble(left, meta, phi, key, cancel, skipped)
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
        skipped=skipped,
    )
