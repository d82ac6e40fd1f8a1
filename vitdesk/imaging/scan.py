"""Find DICOM series under a path by reading headers only.

Walks a folder (or takes one file), reads each DICOM header without its pixels
and groups files by SeriesInstanceUID. Files that are not DICOM are skipped
silently; files that look like DICOM but cannot be read become a
:class:`FileError`. DICOMDIR index files and non-image objects (reports,
presentation states) are skipped. Volume formats SimpleITK reads (NIfTI, MHA,
NRRD) are listed in ``ScanResult.volume_files`` for :func:`vitdesk.imaging.io.load_path`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from vitdesk.errors import LoadError
from vitdesk.imaging.deid import PHI_KEYWORDS, SAFE_KEYWORDS, safe_key, split_meta
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
class FileError:
    """A file that looked like image data but could not be read."""

    path: str
    reason: str

    def describe(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class FileHeader:
    """What a scan learnt about one file, so loading need not parse it again.

    ``pixel_offset``/``pixel_length`` locate native (uncompressed, little endian)
    Pixel Data; both are -1 when the data is encapsulated or elsewhere.
    """

    path: str
    header: Any  # pydicom Dataset with the scanned elements (no pixels)
    transfer_syntax: str
    pixel_offset: int = -1
    pixel_length: int = -1


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


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
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
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        return float(np.dot(normal, np.asarray(ipp, float)))
    except (TypeError, ValueError):
        return None


def _read_header(path: Path) -> tuple[bytes, FileHeader | None]:
    """Return the first 132 bytes and, if they look like DICOM, the parsed header."""
    with open(path, "rb") as fh:
        head = fh.read(132)
        if not looks_like_dicom(head):
            return head, None
        fh.seek(0)
        ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True, specific_tags=_SCAN_TAGS)
        # dcmread stopped at the start of the Pixel Data element: note where its
        # value lies so the loader can read native pixels without parsing again.
        where = fh.tell()
        elem = fh.read(12)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    offset = length = -1
    if elem[:4] == _PIXEL_DATA_TAG and ts in (_EXPLICIT_LE, _IMPLICIT_LE):
        if ts == _EXPLICIT_LE and elem[4:6] in (b"OW", b"OB"):
            offset, length = where + 12, int.from_bytes(elem[8:12], "little")
        elif ts == _IMPLICIT_LE:
            offset, length = where + 8, int.from_bytes(elem[4:8], "little")
        if length == 0xFFFFFFFF:  # encapsulated despite the syntax: let pydicom decide
            offset = length = -1
    return head, FileHeader(str(path), ds, ts, offset, length)


def scan_path(
    path: str | Path, cancel: CancelToken = NEVER, listener: Listener | None = None
) -> ScanResult:
    """Find DICOM series (and SimpleITK volume files) under ``path``.

    Args:
        path: a folder (searched recursively) or one file.
        cancel: checked once per file.
        listener: receives :class:`vitdesk.jobs.Progress` events ("scan") every
            ``PROGRESS_EVERY`` files and at the end.

    Raises:
        LoadError: ``path`` does not exist or is neither a file nor a folder.
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
    for file in _walk(root):
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
            _, fh_info = _read_header(file)
        except PermissionError as exc:
            errors.append(FileError(str(file), f"cannot read ({exc.strerror or exc})"))
            continue
        except (InvalidDicomError, OSError, ValueError, KeyError, EOFError, TypeError,
                AttributeError, IndexError, OverflowError, struct.error) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            errors.append(FileError(str(file), f"unreadable DICOM header ({reason})"))
            continue
        if fh_info is None:
            skipped += 1
            continue
        ds = fh_info.header
        media_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if media_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
            skipped += 1
            continue
        if len(ds) == 0:
            errors.append(FileError(str(file), "DICOM file without a data set (truncated?); "
                                               "copy or export it again"))
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped += 1  # not an image (structured report, presentation state...)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        gkey = uid if uid else f"file:{file}"
        groups.setdefault(gkey, []).append((file, fh_info))

    series = [_series_info(gkey, members) for gkey, members in groups.items()]
    series.sort(key=lambda s: (s.patient_key, s.study_key, _int(s.meta.get("SeriesNumber")), s.key))
    emit(listener, Progress("scan", n_files, n_files, f"{len(series)} series"))
    return ScanResult(series, errors, n_files, volume_files, skipped)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _series_info(gkey: str, members: list[tuple[Path, FileHeader]]) -> SeriesInfo:
    def order(item: tuple[Path, FileHeader]) -> tuple:
        f, ds = item[0], item[1].header
        pos = _slice_position(ds)
        inst_n = _int(ds.get("InstanceNumber"))
        return (pos is None, pos if pos is not None else 0.0, inst_n, str(f))

    members = sorted(members, key=order)
    first = members[0][1].header
    meta, phi = split_meta(first)
    n_frames = 0
    for _, fh_info in members:
        ds = fh_info.header
        try:
            n_frames += max(1, int(ds.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            n_frames += 1
    meta["NumberOfFiles"] = len(members)
    patient = str(first.get("PatientID", "") or "") or str(first.get("StudyInstanceUID", ""))
    study = str(first.get("StudyInstanceUID", "") or "") or gkey
    info = SeriesInfo(
        key=safe_key(gkey),
        patient_key=safe_key(patient or gkey),
        study_key=safe_key(study),
        files=tuple(str(f) for f, _ in members),
        modality=str(first.get("Modality", "") or ""),
        description=str(first.get("SeriesDescription", "") or ""),
        meta=meta,
        phi=phi,
        n_frames=n_frames,
    )
    object.__setattr__(info, "_headers", tuple(h for _, h in members))  # frozen dataclass
    return info
