"""Find DICOM series under a path by reading headers only.

Walks a folder (or takes one file), reads each DICOM header without its pixels
and groups files by SeriesInstanceUID. Files that are not DICOM are skipped
silently; a file that looks like DICOM but cannot be used for any reason (any
exception, a header claiming more pixels than the file holds) and a folder that
cannot be listed become one :class:`FileError` (path, reason, what to do), and
the scan goes on. Reads are bounded by the file size, so corrupt element lengths
never allocate what the file cannot hold. DICOMDIR index files and non-image objects (reports,
presentation states) are skipped. Volume formats SimpleITK reads (NIfTI, MHA,
NRRD) are listed in ``ScanResult.volume_files`` for :func:`vitdesk.imaging.io.load_path`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from vitdesk.errors import Cancelled, LoadError
from vitdesk.imaging.deid import PHI_KEYWORDS, SAFE_KEYWORDS, safe_key, split_meta
from vitdesk.imaging.header_cache import HeaderCache, raw_elements
from vitdesk.imaging.volume import FileError
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit

PROGRESS_EVERY = 50  # files between progress events

# Extensions SimpleITK reads as volumes (".nii.gz" is matched as a suffix pair).
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")

_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_EXPLICIT_LE = str(ExplicitVRLittleEndian)
_IMPLICIT_LE = str(ImplicitVRLittleEndian)

# Headers only: everything split_meta and the grouping need, nothing else, so
# the big per-frame sequences of enhanced multi-frame files are skipped unread.
_SCAN_TAGS = [
    Tag(kw)
    for kw in (
        *SAFE_KEYWORDS,
        *PHI_KEYWORDS,
        "ImagePositionPatient",
        "InstanceNumber",
        "NumberOfFrames",
        "SharedFunctionalGroupsSequence",
        "PixelPaddingValue",
        "PixelPaddingRangeLimit",
        "ModalityLUTSequence",
        "MediaStorageSOPClassUID",
    )
]
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


@dataclass(frozen=True)
class FileHeader:
    """What a scan learnt about one file, so loading need not parse it again.

    ``pixel_offset``/``pixel_length`` locate native (uncompressed, little endian)
    Pixel Data; both are -1 when the data is encapsulated or elsewhere.
    ``pixel_start`` is where the Pixel Data element begins in any transfer syntax
    (-1: the file ends before it) and ``file_size`` the file's size, so the bytes a
    header claims can be checked before anything is decoded.
    """

    path: str
    header: Any  # pydicom Dataset with the scanned elements (no pixels)
    transfer_syntax: str
    pixel_offset: int = -1
    pixel_length: int = -1
    pixel_start: int = -1
    file_size: int = -1


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found by a scan (files sorted along the slice normal)."""

    key: str
    patient_key: str
    study_key: str
    files: tuple[str, ...]
    modality: str
    description: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # repr=False: a logged SeriesInfo must not print names or IDs
    phi: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    n_frames: int = 0

    @property
    def headers(self) -> tuple[FileHeader, ...]:
        """Per-file scanned headers in ``files`` order (empty when built by hand).

        Kept outside the dataclass fields on purpose: the headers hold PHI, so
        ``dataclasses.asdict`` / ``replace`` and equality never see them. Loading
        uses them to skip a second header parse and falls back without them.
        """
        return getattr(self, "_headers", ())


@dataclass(frozen=True)
class ScanResult:
    """Series found, per-file errors, and how many files were looked at."""

    series: list[SeriesInfo]
    errors: list[FileError]
    n_files: int
    volume_files: list[str] = field(default_factory=list)
    skipped: int = 0  # non-DICOM files, DICOMDIRs and non-image DICOM objects


def ds_floats(ds: Any, keyword: str) -> list[float] | None:
    """Numbers of a DS/IS element (e.g. ImagePositionPatient) as floats, or None.

    Hot path of scanning and loading: parses the raw value bytes directly
    instead of building pydicom's validated DSfloat objects (several times
    faster); anything unusual falls back to pydicom's own conversion.
    """
    tag = _KEYWORD_TAGS.get(keyword) or _keyword_tag(keyword)
    elem = ds.get_item(tag)
    if elem is None:
        return None
    raw = getattr(elem, "is_raw", False) and elem.value
    if isinstance(raw, bytes) and elem.VR in (None, "DS", "IS"):
        text = raw.strip(b" \x00")
        if not text:
            return None
        try:
            return [float(v) for v in text.split(b"\\")]
        except ValueError:
            pass  # odd encoding: let pydicom decide below
    value = ds[tag].value
    if value is None or value == "":
        return None
    values = value if isinstance(value, list | tuple | MultiValue) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def _keyword_tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    _KEYWORD_TAGS[keyword] = tag
    return tag


_KEYWORD_TAGS: dict[str, int] = {}


def looks_like_dicom(head: bytes) -> bool:
    """Guess from the first 132 bytes whether a file is DICOM (with or without preamble)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8:
        return False
    # No preamble: a raw data set starts with a group 0002 or 0008 element,
    # little endian (implicit or explicit VR) or big endian.
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    if group_le in (0x0002, 0x0008):
        return True
    return group_be == 0x0008


def is_volume_file(name: str) -> bool:
    """True for file names SimpleITK reads as volumes (.nii, .nii.gz, .mha, ...)."""
    low = name.lower()
    return any(low.endswith(s) for s in VOLUME_SUFFIXES)


def _walk(root: Path, errors: list[FileError]) -> Iterator[Path]:
    if root.is_file():
        yield root
        return

    def unreadable(exc: OSError) -> None:
        # os.walk skips folders it cannot list; a user must hear about them
        where = exc.filename or str(root)
        why = exc.strerror or type(exc).__name__
        errors.append(FileError(str(where), f"cannot list this folder ({why}); "
                                            "ask for read access or copy the files elsewhere"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            if file.is_file():  # not FIFOs, sockets or devices: opening them can block
                yield file


def _slice_position(ds: Any) -> float | None:
    ipp = ds_floats(ds, "ImagePositionPatient")
    iop = ds_floats(ds, "ImageOrientationPatient")
    if iop is None:
        try:  # enhanced multi-frame: orientation lives in the shared groups
            iop = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
            iop = iop.ImageOrientationPatient
        except (AttributeError, IndexError, KeyError):
            iop = None
    if ipp is None or iop is None or len(ipp) != 3 or len(iop) != 6:
        return None
    try:
        # plain floats: numpy's per-call overhead was about 5% of a header scan
        r0, r1, r2, c0, c1, c2 = (float(v) for v in iop)
        x, y, z = (float(v) for v in ipp)
        return (r1 * c2 - r2 * c1) * x + (r2 * c0 - r0 * c2) * y + (r0 * c1 - r1 * c0) * z
    except (TypeError, ValueError):
        return None


# What pixel_claims_problem reads, added to any caller's own tag list.
_CLAIM_TAGS = [
    Tag(kw) for kw in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated")
]


class BoundedReader(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than the bytes left.

    pydicom reads an element's value with ``fp.read(length)``, ``length`` taken
    from the header, and CPython allocates ``length`` bytes before reading: a
    corrupt 4 GB length would allocate 4 GB. Clamping keeps every read within
    the file's size.
    """

    def __init__(self, raw: io.FileIO) -> None:
        super().__init__(raw, buffer_size=64 * 1024)
        self._size = os.fstat(raw.fileno()).st_size

    @property
    def size(self) -> int:
        return self._size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(0, self._size - self.tell()))
            if size == 0:
                return b""
        return super().read(size)


def open_bounded(path: str | Path) -> BoundedReader:
    """Open ``path`` for pydicom with reads bounded by the file size (see BoundedReader)."""
    return BoundedReader(io.FileIO(path, "rb"))


# Most headers fit here: one read per file, parsed from memory (BytesIO reads
# allocate only what is there, so corrupt lengths cost nothing either).
_HEAD_CHUNK = 32 * 1024
# (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float Pixel Data,
# little and big endian: where stop_before_pixels stops when the header is complete.
_PIXEL_TAGS_RAW = (_PIXEL_DATA_TAG, b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00",
                   b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09")


def _parse(fh: Any, tags: list | None) -> tuple[Any, int, bytes]:
    """(header, offset where parsing stopped, the 12 bytes there)."""
    ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True,
                         specific_tags=_SCAN_TAGS if tags is None else tags)
    # dcmread stopped at the start of the Pixel Data element: note where its
    # value lies so the loader can read native pixels without parsing again.
    where = fh.tell()
    return ds, where, fh.read(12)


def _read_header(
    path: Path, tags: list | None = None, keep_raw: bool = False
) -> tuple[bytes, FileHeader | None]:
    """Return the first 132 bytes and, if they look like DICOM, the parsed header.

    ``keep_raw`` also keeps the raw non-PHI elements for a :class:`HeaderCache`.
    """
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        chunk = raw.read(_HEAD_CHUNK)
    head = chunk[:132]
    if not looks_like_dicom(head):
        return head, None
    parsed = None
    if len(chunk) == size:  # the whole file is in memory
        parsed = _parse(io.BytesIO(chunk), tags)
    else:
        try:
            ds, where, elem = _parse(io.BytesIO(chunk), tags)
            if elem[:4] in _PIXEL_TAGS_RAW and where + 12 <= len(chunk):
                parsed = ds, where, elem  # stopped at the pixels: the header is complete
        except Exception:  # noqa: BLE001 - cut mid-element: parse the whole file below
            parsed = None
    if parsed is None:
        with open_bounded(path) as fh:
            parsed = _parse(fh, tags)
    ds, where, elem = parsed
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    offset = length = -1
    if elem[:4] == _PIXEL_DATA_TAG and ts in (_EXPLICIT_LE, _IMPLICIT_LE):
        if ts == _EXPLICIT_LE and elem[4:6] in (b"OW", b"OB"):
            offset, length = where + 12, int.from_bytes(elem[8:12], "little")
        elif ts == _IMPLICIT_LE:
            offset, length = where + 8, int.from_bytes(elem[4:8], "little")
        # encapsulated despite the syntax, or truncated: pydicom decides and explains
        if length == 0xFFFFFFFF or offset + length > size:
            offset = length = -1
    start = where if len(elem) >= 8 else -1
    info = FileHeader(str(path), ds, ts, offset, length, start, size)
    if keep_raw:  # before anything reads (and so converts) an element
        object.__setattr__(info, "_raw", raw_elements(ds))
    return head, info


def read_file_header(path: str | Path, tags: list | None = None) -> FileHeader:
    """Parse one DICOM file's header (no pixels) and check its pixel claims.

    ``tags`` (keywords or tags) limits the elements read, as ``specific_tags`` does;
    default: what a scan reads. The pixel-size elements are always added.

    Raises:
        LoadError: one line naming the file, the problem and what to do, whatever
            went wrong (pydicom, OS, permission), when it holds no image, or when
            the header claims more pixel bytes than the file holds.
    """
    file = Path(path)
    wanted = None if tags is None else [Tag(t) for t in tags] + _CLAIM_TAGS
    try:
        _, info = _read_header(file, wanted)
        problem = pixel_claims_problem(info) if info is not None else None
    except Exception as exc:  # noqa: BLE001 - any failure of one file is that file's problem
        raise LoadError(f"{file}: {file_problem(exc)}") from None
    if info is None:
        raise LoadError(f"{file}: not a readable DICOM file (no DICOM header found); "
                        "remove it or give a DICOM image")
    if "Rows" not in info.header or "Columns" not in info.header:
        raise LoadError(f"{file}: DICOM file without an image (no Rows/Columns: a report, an "
                        "index or a cut header); remove it or give a DICOM image")
    if problem:
        raise LoadError(f"{file}: {problem}")
    return info


def file_problem(exc: BaseException) -> str:
    """One line for an exception raised while reading one file: reason and what to do."""
    if isinstance(exc, PermissionError):
        return f"cannot read ({exc.strerror or 'permission denied'}); ask for read access"
    if isinstance(exc, FileNotFoundError):
        return "file not found (moved or deleted?); rescan the folder"
    if isinstance(exc, MemoryError):
        return "too large to read into memory; check the file's Rows/Columns/frames"
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    if isinstance(exc, OSError):
        return f"cannot read ({reason}); check the disk or copy the file again"
    return (f"unreadable DICOM header ({type(exc).__name__}: {reason}); "
            "the file is corrupt or not standard DICOM: export it again")


# Compressed pixel data rarely shrinks more than this (uniform frames in RLE or
# JPEG 2000 do); beyond it the header's Rows/Columns/frames are not believed.
MAX_COMPRESSION = 1000
_SLACK_BYTES = 64 * 2**20


def _header_int(ds: Any, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else default
    return int(value)


def pixel_claims_problem(info: FileHeader) -> str | None:
    """Why the pixels a header claims cannot be in this file, or None when they can.

    Checked before any decoding so that a header claiming 65535 x 65535 x 10^6
    pixels is refused instead of allocated: (0028,0010) Rows x (0028,0011) Columns
    x (0028,0008) Number of Frames x (0028,0002) Samples per Pixel x (0028,0100)
    Bits Allocated must fit the bytes after the Pixel Data element start
    (compressed data: within :data:`MAX_COMPRESSION` times them).
    """
    ds = info.header
    if ds is None or "Rows" not in ds or "Columns" not in ds:
        return None
    try:
        rows, cols = _header_int(ds, "Rows", 0), _header_int(ds, "Columns", 0)
        frames = _header_int(ds, "NumberOfFrames", 1)
        spp = _header_int(ds, "SamplesPerPixel", 1)
        bits = _header_int(ds, "BitsAllocated", 16)
    except Exception as exc:  # noqa: BLE001 - pydicom converts raw values only now
        return ("Rows, Columns, NumberOfFrames, SamplesPerPixel or BitsAllocated cannot be "
                f"read ({type(exc).__name__}); the header is corrupt: export it again")
    if rows <= 0 or cols <= 0 or frames <= 0 or spp not in (1, 3, 4):
        return (f"header claims {rows} x {cols} pixels, {frames} frame(s), {spp} samples per "
                "pixel; the header is corrupt: export it again")
    if bits not in (1, 8, 16, 32, 64):
        return f"BitsAllocated is {bits} (expected 8, 16 or 32); the header is corrupt"
    need = (rows * cols * frames * spp * bits + 7) // 8
    if info.pixel_start < 0 or info.file_size < 0:
        return "no pixel data (the file ends after its header); it is truncated: copy it again"
    have = info.file_size - info.pixel_start
    try:
        compressed = bool(info.transfer_syntax) and UID(info.transfer_syntax).is_compressed
    except Exception:  # noqa: BLE001 - an odd UID string just means "not known compressed"
        compressed = False
    limit = have * MAX_COMPRESSION + _SLACK_BYTES if compressed else have
    if need > limit:
        return (f"header claims {rows} x {cols} x {frames} frame(s) ({need} bytes of pixels) "
                f"but only {have} bytes follow the Pixel Data tag; the file looks truncated "
                "or corrupt: copy or export it again")
    return None


def scan_path(
    path: str | Path, cancel: CancelToken = NEVER, listener: Listener | None = None,
    cache: HeaderCache | None = None,
) -> ScanResult:
    """Find DICOM series (and SimpleITK volume files) under ``path``.

    One file never stops a scan: any problem with a file (or a folder that cannot
    be listed) becomes one :class:`FileError` in ``ScanResult.errors`` (path and a
    one-line reason that says what to do).

    Args:
        path: a folder (searched recursively) or one file.
        cancel: checked once per file.
        listener: receives :class:`vitdesk.jobs.Progress` events ("scan") every
            ``PROGRESS_EVERY`` files and at the end.
        cache: unchanged files are taken from it instead of parsed, new ones are
            added (see :mod:`vitdesk.imaging.header_cache`).

    Raises:
        LoadError: ``path`` does not exist or is neither a file nor a folder.
        Cancelled: ``cancel`` was triggered.
    """
    root = Path(path)
    if not root.exists():
        raise LoadError(f"{root}: no such file or folder; check the path")
    if not (root.is_dir() or root.is_file()):
        raise LoadError(f"{root}: not a regular file or folder; give a DICOM file or folder")

    groups: dict[str, list[tuple[Path, FileHeader]]] = {}
    errors: list[FileError] = []
    volume_files: list[str] = []
    n_files = skipped = 0
    for file in _walk(root, errors):
        cancel.check()
        n_files += 1
        if n_files % PROGRESS_EVERY == 0:
            emit(listener, Progress("scan", n_files, None, f"{len(groups)} series"))
        if is_volume_file(file.name):
            volume_files.append(str(file))
            continue
        if file.name.upper() == "DICOMDIR":
            skipped += 1
            continue
        try:
            hit = cache.lookup(file) if cache is not None else None
            if hit is not None:
                kind, (gkey, fh_info) = "image", hit
            else:
                kind, gkey, fh_info = _classify(file, cache is not None)
                if kind == "image" and cache is not None:
                    cache.store(file, gkey, fh_info)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - one file never stops a scan
            errors.append(FileError(str(file), file_problem(exc)))
            continue
        if kind == "skip":
            skipped += 1
        elif kind == "error":
            errors.append(FileError(str(file), gkey))
        else:
            groups.setdefault(gkey, []).append((file, fh_info))

    if cache is not None:
        cache.flush()
    series = []
    for gkey, members in groups.items():
        info = _series_info(gkey, members, errors)
        if info is not None:
            series.append(info)
    series.sort(key=lambda s: (s.patient_key, s.study_key, _int(s.meta.get("SeriesNumber")), s.key))
    emit(listener, Progress("scan", n_files, n_files, f"{len(series)} series"))
    return ScanResult(series, errors, n_files, volume_files, skipped)


def _classify(file: Path, keep_raw: bool = False) -> tuple[str, str, Any]:
    """("skip" | "error" | "image", group key or error reason, FileHeader) of one file.

    The group key is the safe key of the SeriesInstanceUID (``file:PATH`` without
    one), so a :class:`HeaderCache` can store it.
    """
    _, fh_info = _read_header(file, keep_raw=keep_raw)
    if fh_info is None:
        return "skip", "", None
    ds = fh_info.header
    media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
    if media_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        return "skip", "", None
    if len(ds) == 0:
        return "error", ("DICOM file without a data set (truncated?); "
                         "copy or export it again"), None
    if "Rows" not in ds or "Columns" not in ds:
        return "skip", "", None  # not an image (structured report, presentation state...)
    problem = pixel_claims_problem(fh_info)
    if problem:
        return "error", problem, None
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    _note_order(fh_info)
    return "image", safe_key(uid) if uid else f"file:{file}", fh_info


def _note_order(fh_info: FileHeader) -> None:
    # computed inside the per-file guard, so sorting a series cannot fail later
    ds = fh_info.header
    object.__setattr__(fh_info, "_order", (_slice_position(ds), _int(ds.get("InstanceNumber"))))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _series_info(
    gkey: str, members: list[tuple[Path, FileHeader]], errors: list[FileError]
) -> SeriesInfo | None:
    """The SeriesInfo of one group; a member whose metadata cannot be read is an error."""

    def order(item: tuple[Path, FileHeader]) -> tuple:
        pos, inst_n = getattr(item[1], "_order", (None, 0))
        return (pos is None, pos if pos is not None else 0.0, inst_n, str(item[0]))

    members = sorted(members, key=order)
    first = None
    while members:
        try:
            first = members[0][1].header
            if getattr(members[0][1], "_cached", False):
                # the cache holds no PHI: the first file gives the series' identity
                first = _read_header(members[0][0])[1].header
            meta, phi = split_meta(first)
            uid = str(first.get("SeriesInstanceUID", "") or "")
            if uid and safe_key(uid) != gkey:  # changed since it was cached
                raise ValueError("SeriesInstanceUID differs from the cached one; rescan")
            ident = uid or gkey  # the raw UID (or file:PATH): keys hash it as before
            patient = str(first.get("PatientID", "") or "") or str(
                first.get("StudyInstanceUID", "") or "")
            study = str(first.get("StudyInstanceUID", "") or "") or ident
            modality = str(first.get("Modality", "") or "")
            # from meta: a name-like description is identifying (deid.split_meta)
            description = str(meta.get("SeriesDescription", "") or "")
            break
        except Exception as exc:  # noqa: BLE001 - a value pydicom cannot convert
            errors.append(FileError(str(members[0][0]), file_problem(exc)))
            members = members[1:]
    if not members:
        return None
    n_frames = 0
    for _, fh_info in members:
        try:
            n_frames += max(1, _header_int(fh_info.header, "NumberOfFrames", 1))
        except (TypeError, ValueError, OverflowError):
            n_frames += 1
    meta["NumberOfFiles"] = len(members)
    info = SeriesInfo(
        key=safe_key(ident),
        patient_key=safe_key(patient or ident),
        study_key=safe_key(study),
        files=tuple(str(f) for f, _ in members),
        modality=modality,
        description=description,
        meta=meta,
        phi=phi,
        n_frames=n_frames,
    )
    object.__setattr__(info, "_headers", tuple(h for _, h in members))  # frozen dataclass
    return info
