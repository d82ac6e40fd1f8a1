"""Turn a dataset source (``SRC``) into a list of :class:`SliceRecord`.

SRC kinds (DESIGN.md):

* a folder of DICOM series with a ``labels.csv`` (rows name one slice file or one
  series folder; a series folder expands to one record per slice, in volume order);
* an image folder with one subfolder per class (PNG/JPEG/DICOM files);
* a manifest CSV ``path,label[,patient_id,sex,age]``;
* a workspace folder (holds ``workspace.sqlite``): its labelled slices and series.

Only DICOM headers are read here (``stop_before_pixels``), never pixels, and no
torch is imported, so listing a dataset is cheap. Raw patient IDs are hashed with
:func:`safe_key` as soon as they are read and never stored.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.data.label_checks import (
    PatientLink,
    check_patient_ids,
    check_patient_mode,
    check_record_labels,
)
from vitdesk.data.records import (
    SliceRecord,
    classes_of,
    is_image_file,
    looks_like_dicom,
    parse_age,
    parse_sex,
    safe_key,
)
from vitdesk.errors import DataError, LoadError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress, emit

LABELS_CSV = "labels.csv"
WORKSPACE_DB = "workspace.sqlite"
REQUIRED_COLUMNS = ("path", "label")
_TASK = "load dataset"
_MAX_SKIP_NOTICES = 20  # one line per unreadable file, then a count
_HEADER_TAGS = [
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientSex",
    "PatientAge",
    "NumberOfFrames",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "InstanceNumber",
    "SamplesPerPixel",
    "PhotometricInterpretation",
]


# ---------------------------------------------------------------- DICOM headers


@dataclass(frozen=True)
class DicomHeader:
    """The safe, hashed facts a record needs from one DICOM file's header."""

    path: str
    patient: str
    series: str
    sex: str | None
    age: float | None
    n_frames: int
    position: float  # along the slice normal; sorts slices as the volume loader does
    instance: int
    pid_key: str = ""  # keyed PatientID alone ("" when absent): checked against CSV IDs
    colour: str = ""  # why the values are not HU (a colour image read as luminance), or ""


def read_header(path: str | Path) -> DicomHeader:
    """Read one DICOM header (no pixels) into hashed keys, sex, age and geometry.

    Patient key = safe_key(PatientID, else StudyInstanceUID, else the file path),
    as DESIGN.md's split rule asks. Raises DataError naming the file, the problem and
    what to do, whatever goes wrong with it (not DICOM, unreadable, corrupt header,
    more frames claimed than the file holds).
    """
    from vitdesk.imaging.dicom import colour_note  # lazy: pydicom
    from vitdesk.imaging.scan import file_problem, read_file_header

    p = str(path)
    try:
        ds = read_file_header(p, _HEADER_TAGS).header
    except LoadError as exc:
        raise DataError(str(exc)) from None
    try:
        return _header_facts(p, ds, colour_note(ds) or "")
    except Exception as exc:  # noqa: BLE001 - a value pydicom cannot convert: this file's
        raise DataError(f"{p}: {file_problem(exc)}") from None


def _header_facts(p: str, ds: Any, colour: str = "") -> DicomHeader:
    pid = str(ds.get("PatientID", "") or "").strip()
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    try:
        n_frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        n_frames = 1
    position = 0.0
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        position = float(np.dot(np.cross(row, col), np.asarray(ipp, float)))
    try:
        instance = int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        instance = 0
    return DicomHeader(
        path=p,
        patient=safe_key(pid or study or str(Path(p).resolve())),
        series=safe_key(series_uid or str(Path(p).resolve())),
        sex=parse_sex(ds.get("PatientSex")),
        age=parse_age(ds.get("PatientAge")),
        n_frames=n_frames,
        position=position,
        instance=instance,
        pid_key=safe_key(pid) if pid else "",
        colour=colour,
    )


class _Skips:
    """One notice per skipped file (file, reason, what to do), then a count."""

    def __init__(self, listener: Listener | None) -> None:
        self.listener = listener
        self.n = 0
        self.first = ""

    def add(self, text: str) -> None:
        """``text``: "<file>: <reason; what to do>" (a DataError's or FileError's words)."""
        self.n += 1
        self.first = self.first or text
        if self.n <= _MAX_SKIP_NOTICES:
            emit(self.listener, Notice(_TASK, f"skipped {text}"))

    def close(self) -> None:
        if self.n > _MAX_SKIP_NOTICES:
            emit(self.listener, Notice(_TASK, f"skipped {self.n - _MAX_SKIP_NOTICES} more "
                                              "unreadable file(s)"))


def _series_files(folder: Path, cancel: CancelToken, skips: _Skips) -> list[str]:
    """DICOM image files under ``folder`` (the imaging scan); unusable ones are skips."""
    from vitdesk.imaging.scan import scan_path  # lazy: pydicom only for DICOM sources

    result = scan_path(folder, cancel=cancel)
    for err in result.errors:
        skips.add(err.describe())
    return [f for s in result.series for f in s.files]


class _ColourNotices:
    """One notice per series (or file) of colour images: training sees their luminance,
    not HU, and a window meant for HU would be wrong for them."""

    def __init__(self, listener: Listener | None) -> None:
        self.listener = listener
        self.seen: set[str] = set()

    def add(self, headers: list[DicomHeader]) -> None:
        by_series: dict[str, list[DicomHeader]] = {}
        for h in headers:
            if h.colour and h.series not in self.seen:
                by_series.setdefault(h.series, []).append(h)
        for series, hs in by_series.items():
            self.seen.add(series)
            more = f" (and {len(hs) - 1} more file(s) of its series)" if len(hs) > 1 else ""
            emit(self.listener, Notice(_TASK, f"{hs[0].path}{more}: {hs[0].colour}; "
                                              "convert it to greyscale to train on HU"))


def _volume_order(headers: list[DicomHeader]) -> list[DicomHeader]:
    """Sort each series' slices by position along the normal (then InstanceNumber)."""
    return sorted(headers, key=lambda h: (h.series, h.position, h.instance, h.path))


def _dicom_records(
    headers: list[DicomHeader], label: str | None, sex: str | None, age: float | None,
    patient: str | None,
) -> Iterator[SliceRecord]:
    for h in headers:
        for frame in range(h.n_frames):  # multi-frame files: one record per frame
            yield SliceRecord(
                path=str(Path(h.path).resolve()),
                frame=frame,
                label=label,
                patient=patient or h.patient,
                series=h.series,
                sex=sex if sex is not None else h.sex,
                age=age if age is not None else h.age,
                kind="dicom",
            )


# ---------------------------------------------------------------- manifest / labels.csv


def _clean(value: object) -> str:
    return str(value).strip() if value is not None else ""


def read_manifest(
    csv_path: str | Path,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    *,
    patient_id: str = "check",
) -> list[SliceRecord]:
    """Read a manifest / labels.csv (``path,label[,patient_id,sex,age]``).

    ``path`` is relative to the CSV's folder (absolute allowed) and names one image
    file or a folder holding a DICOM series (every slice gets the row's label).
    ``patient_id``: how a ``patient_id`` column meets the DICOM PatientID of the
    row's files: ``check`` (they must agree, see :mod:`vitdesk.data.label_checks`;
    the column's grouping is used), ``csv`` (the column wins) or ``dicom`` (the files
    win; the column is used for non-DICOM images only).

    A DICOM file named by a row (or found in a row's folder) that cannot be read is
    skipped with one notice (file, reason, what to do); only when nothing named can
    be read is it an error. Colour DICOM series get one notice each (read as
    luminance, not HU).
    """
    check_patient_mode(patient_id)
    csv_path = Path(csv_path)
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [(_clean(h)).lower() for h in (reader.fieldnames or [])]
            rows = [
                {(_clean(k)).lower(): _clean(v) for k, v in row.items() if k is not None}
                for row in reader
            ]
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot read the CSV ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc}): save it as UTF-8 CSV") from None
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing_cols:
        raise DataError(
            f"{csv_path}: missing column(s) {', '.join(missing_cols)} (found: "
            f"{', '.join(header) or 'none'}): the header must be path,label"
            "[,patient_id,sex,age]"
        )
    if not rows:
        raise DataError(f"{csv_path}: no rows: add one line per image or series folder")

    missing: list[str] = []
    records: list[SliceRecord] = []
    header_cache: dict[str, DicomHeader] = {}
    links: list[PatientLink] = []
    skips = _Skips(listener)  # one unreadable file never stops a dataset
    colour = _ColourNotices(listener)
    for i, row in enumerate(rows):
        cancel.check()
        if i % 50 == 0:
            emit(listener, Progress(_TASK, i, len(rows), csv_path.name))
        rel = row.get("path", "")
        if not rel:
            missing.append(f"(row {i + 2}: empty path)")
            continue
        target = Path(rel) if os.path.isabs(rel) else base / rel
        if not target.exists():
            missing.append(rel)
            continue
        label = row.get("label") or None
        raw_pid = row.get("patient_id", "")
        patient = safe_key(raw_pid) if raw_pid else None  # hashed at once: raw ID never kept
        dicom_patient = None if patient_id == "dicom" else patient
        sex = parse_sex(row.get("sex")) if row.get("sex") else None
        age = parse_age(row.get("age")) if row.get("age") else None
        if target.is_dir():
            n_skipped = skips.n
            files = _series_files(target, cancel, skips)
            if not files and skips.n > n_skipped:
                continue  # only unreadable files there: each has its notice
            if not files:
                raise DataError(
                    f"{csv_path}: row {i + 2} names folder {rel} which holds no DICOM "
                    "files: point it at a series folder or an image file"
                )
            headers = _volume_order(_readable_headers(files, header_cache, skips))
            if not headers:
                continue
            colour.add(headers)
            links.extend(_links(i + 2, raw_pid, rel, headers))
            records.extend(_dicom_records(headers, label, sex, age, dicom_patient))
        elif is_image_file(target):
            records.append(
                SliceRecord(
                    path=str(target.resolve()), frame=0, label=label,
                    patient=patient or safe_key(target.stem),
                    series=safe_key(str(target.resolve())),
                    sex=sex, age=age, kind="image",
                )
            )
        else:
            try:
                header = _cached_header(str(target), header_cache)
            except DataError as exc:
                skips.add(str(exc))
                continue
            colour.add([header])
            links.extend(_links(i + 2, raw_pid, rel, [header]))
            records.extend(_dicom_records([header], label, sex, age, dicom_patient))
    skips.close()
    if skips.n and not records and not missing:
        raise DataError(
            f"{csv_path}: none of the files named in the CSV could be read ({skips.n} "
            f"unreadable; first: {skips.first})"
        )
    if patient_id == "check":
        check_patient_ids(links, str(csv_path))
    records = _dedupe(records, csv_path, listener)
    if missing:
        shown = ", ".join(missing[:5])
        raise DataError(
            f"{csv_path}: {len(missing)} file(s) named in the CSV do not exist "
            f"(first: {shown}): fix the paths (relative to {base}) or remove the rows"
        )
    emit(listener, Progress(_TASK, len(rows), len(rows), csv_path.name))
    return records


def _links(row: int, raw_pid: str, rel: str, headers: list[DicomHeader]) -> list[PatientLink]:
    """One link per distinct DICOM patient among a row's files (none without a CSV ID)."""
    if not raw_pid:
        return []
    keys = sorted({h.pid_key for h in headers if h.pid_key})
    return [PatientLink(row, raw_pid, k, rel) for k in keys]


def _dedupe(
    records: list[SliceRecord], where: Path, listener: Listener | None
) -> list[SliceRecord]:
    """Drop repeated slices (same file and frame); conflicting labels are an error."""
    seen: dict[tuple[str, int], SliceRecord] = {}
    out = []
    for r in records:
        key = (r.path, r.frame)
        prev = seen.get(key)
        if prev is None:
            seen[key] = r
            out.append(r)
        elif prev.label != r.label:
            raise DataError(
                f"{where}: {r.path} (frame {r.frame}) is labelled both '{prev.label}' and "
                f"'{r.label}': keep one row per image"
            )
    if len(out) < len(records):
        emit(listener, Notice(_TASK, f"{len(records) - len(out)} repeated slice(s) ignored"))
    return out


def _cached_header(path: str, cache: dict[str, DicomHeader]) -> DicomHeader:
    if path not in cache:
        cache[path] = read_header(path)
    return cache[path]


def _readable_headers(
    files: list[str], cache: dict[str, DicomHeader], skips: _Skips
) -> list[DicomHeader]:
    """Headers of ``files``; a file whose header cannot be read is a skip."""
    out = []
    for f in files:
        try:
            out.append(_cached_header(f, cache))
        except DataError as exc:  # changed since the scan, or a value pydicom cannot convert
            skips.add(str(exc))
    return out


# ---------------------------------------------------------------- class folders


def read_class_folder(
    folder: str | Path, cancel: CancelToken = NEVER, listener: Listener | None = None
) -> list[SliceRecord]:
    """One subfolder per class; PNG/JPEG/DICOM files anywhere below it.

    Image patients are the file stem's safe key; DICOM patients come from the header.
    """
    folder = Path(folder)
    class_dirs = sorted(
        d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    if not class_dirs:
        raise DataError(
            f"{folder}: no class subfolders: put images in one subfolder per class "
            "(e.g. normal/, lesion/) or add a labels.csv"
        )
    records: list[SliceRecord] = []
    header_cache: dict[str, DicomHeader] = {}
    skips, colour = _Skips(listener), _ColourNotices(listener)
    for k, cdir in enumerate(class_dirs):
        emit(listener, Progress(_TASK, k, len(class_dirs), cdir.name))
        records.extend(_tree_records(cdir, cdir.name, cancel, header_cache, skips, colour))
    skips.close()
    emit(listener, Progress(_TASK, len(class_dirs), len(class_dirs), folder.name))
    return records


def read_unlabelled_folder(
    folder: str | Path, cancel: CancelToken = NEVER, listener: Listener | None = None
) -> list[SliceRecord]:
    """Every PNG/JPEG/DICOM slice below ``folder`` with no label (for pretraining)."""
    folder = Path(folder)
    emit(listener, Progress(_TASK, 0, 1, folder.name))
    skips = _Skips(listener)
    records = _tree_records(folder, None, cancel, {}, skips, _ColourNotices(listener))
    skips.close()
    emit(listener, Progress(_TASK, 1, 1, folder.name))
    return records


def _tree_records(
    root: Path, label: str | None, cancel: CancelToken, header_cache: dict[str, DicomHeader],
    skips: _Skips, colour: _ColourNotices,
) -> list[SliceRecord]:
    """Records for every image file below ``root``, DICOM slices in volume order.

    A DICOM file whose header cannot be read is left out with one notice naming it.
    """
    records: list[SliceRecord] = []
    dicom_headers = []
    for p in sorted(root.rglob("*")):
        cancel.check()
        if not p.is_file() or p.name.startswith("."):
            continue
        if is_image_file(p):
            records.append(
                SliceRecord(
                    path=str(p.resolve()), frame=0, label=label,
                    patient=safe_key(p.stem), series=safe_key(str(p.resolve())),
                    kind="image",
                )
            )
        elif looks_like_dicom(p):
            try:
                dicom_headers.append(_cached_header(str(p), header_cache))
            except DataError as exc:  # one bad file never stops a dataset
                skips.add(str(exc))
    colour.add(dicom_headers)
    records.extend(_dicom_records(_volume_order(dicom_headers), label, None, None, None))
    return records


# ---------------------------------------------------------------- workspace


def read_workspace(
    folder: str | Path, cancel: CancelToken = NEVER, listener: Listener | None = None,
    *, unlabelled: bool = False,
) -> list[SliceRecord]:
    """The labelled slices of a workspace (a series label labels all its slices).

    With ``unlabelled`` every slice of every series comes back, labelled or not
    (pretraining). Keys, sex and age come from the workspace index, so no file is
    opened except to count frames of multi-frame files.
    """
    from vitdesk.data.workspace import Workspace

    folder = Path(folder)
    from vitdesk.imaging.dicom import colour_note  # lazy: pydicom

    ws = Workspace.open(folder, create=False)
    records: list[SliceRecord] = []
    missing: list[str] = []
    try:
        patients = {p.key: p for p in ws.patients()}
        all_series = ws.series()
        for k, s in enumerate(all_series):
            cancel.check()
            emit(listener, Progress(_TASK, k, len(all_series), "workspace"))
            labels = ws.labels_for_series(s.key)
            if (not labels and not unlabelled) or not s.files:
                continue
            gone = [f for f in s.files if not os.path.isfile(f)]
            if gone:
                missing.extend(gone)
                continue
            slices = _workspace_slices(s.files, s.n_slices)
            p = patients.get(s.patient_key)
            sex = parse_sex(p.sex) if p else None
            age = parse_age(p.age) if p else None
            wanted = range(len(slices)) if unlabelled else sorted(labels)
            note = colour_note(s.meta or {})
            if note:  # the index keeps the safe metadata: no file to open
                emit(listener, Notice(_TASK, f"series '{s.description or s.key}' ({s.n_slices} "
                                             f"slice(s)): {note}; convert it to greyscale "
                                             "to train on HU"))
            for i in wanted:
                if 0 <= i < len(slices):
                    path, frame = slices[i]
                    records.append(SliceRecord(path, frame, labels.get(i), s.patient_key,
                                               s.key, sex, age, "dicom"))
    finally:
        ws.close()
    if missing:
        raise DataError(
            f"{folder}: {len(missing)} labelled file(s) of the workspace no longer exist "
            f"(first: {', '.join(missing[:5])}): restore them or re-import the folder"
        )
    return records


def _workspace_slices(files: tuple[str, ...], n_slices: int) -> list[tuple[str, int]]:
    """(file, frame) of each slice index of a series, in the workspace's slice order."""
    paths = [os.path.abspath(f) for f in files]
    if n_slices == len(paths):
        return [(f, 0) for f in paths]
    return [(f, fr) for f in paths for fr in range(read_header(f).n_frames)]


# ---------------------------------------------------------------- dispatch


def detect_kind(src: str | Path) -> str:
    """Which SRC kind ``src`` is: "workspace", "dicom_folder", "manifest", "class_folder"."""
    p = Path(src)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder: check the --data path")
    if p.is_file():
        if p.name == WORKSPACE_DB:
            return "workspace"
        if p.suffix.lower() == ".csv":
            return "manifest"
        raise DataError(
            f"{p}: not a dataset source: give a folder (with labels.csv or one subfolder "
            "per class), a manifest .csv, or a workspace folder"
        )
    if (p / WORKSPACE_DB).is_file():
        return "workspace"
    if (p / LABELS_CSV).is_file():
        return "dicom_folder"
    entries = [e for e in p.iterdir() if not e.name.startswith(".")]
    if not entries:
        raise DataError(f"{p}: the folder is empty: point --data at a folder of images")
    if any(e.is_dir() for e in entries):
        return "class_folder"
    if any(looks_like_dicom(e) or is_image_file(e) for e in entries):
        raise DataError(
            f"{p}: images but no labels: add a {LABELS_CSV} (path,label) or move the "
            "images into one subfolder per class"
        )
    raise DataError(
        f"{p}: unknown dataset source (no {LABELS_CSV}, class subfolders, images or "
        f"{WORKSPACE_DB}): see `vitdesk train --help` for the accepted kinds"
    )


def load_records(
    src: str | Path,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
    *,
    require_labels: bool = True,
    min_classes: int = 2,
    patient_id: str = "check",
) -> list[SliceRecord]:
    """Load every slice record of a dataset source.

    Labels are checked (:mod:`vitdesk.data.label_checks`): near-spelled class names
    are refused, and for training (``min_classes`` >= 2) a class with fewer than five
    slices next to one with enough.

    Args:
        src: any SRC kind (see module docstring), or a run folder's ``ref:`` of one
            this installation knows.
        cancel: checked once per file/row.
        listener: receives :class:`Progress` / :class:`Notice` events.
        require_labels: drop unlabelled rows (with a notice) and fail if none is left.
        min_classes: fail with fewer classes (2 for training; 1 for an evaluation set).
        patient_id: trust mode for a CSV ``patient_id`` column (see :func:`read_manifest`).
    """
    from vitdesk.data.source_refs import resolve_source

    check_patient_mode(patient_id)
    src = resolve_source(str(src))
    p = Path(src)
    if not require_labels and p.is_dir() and not (p / WORKSPACE_DB).is_file():
        # unlabelled use (pretraining) reads every slice below the folder, whatever
        # labels.csv or class folders say
        kind = "unlabelled"
    else:
        kind = detect_kind(src)
    if kind == "unlabelled":
        records = read_unlabelled_folder(p, cancel, listener)
    elif kind == "workspace":
        records = read_workspace(p.parent if p.is_file() else p, cancel, listener,
                                 unlabelled=not require_labels)
    elif kind == "dicom_folder":
        records = read_manifest(p / LABELS_CSV, cancel, listener, patient_id=patient_id)
    elif kind == "manifest":
        records = read_manifest(p, cancel, listener, patient_id=patient_id)
    else:
        records = read_class_folder(p, cancel, listener)
    if not records and kind == "workspace" and require_labels:
        # a workspace lists only labelled slices here: it may hold hundreds of others
        raise DataError(f"{p}: no labelled images: label slices or series in the "
                        "Dataset tab of the workbench")
    if not records:
        raise DataError(f"{p}: no images found: check the folder or the CSV rows")
    if require_labels:
        unlabelled = sum(r.label is None for r in records)
        records = [r for r in records if r.label is not None]
        if unlabelled:
            emit(listener, Notice(_TASK, f"{unlabelled} unlabelled slice(s) left out"))
        if not records:
            raise DataError(
                f"{p}: no labelled images: fill the label column or label slices first"
            )
        classes = classes_of(records)
        if len(classes) < min_classes:
            raise DataError(
                f"{p}: only {len(classes)} class ({', '.join(classes)}) found: training "
                f"needs at least {min_classes} classes; add images of another class"
            )
        for note in check_record_labels(records, str(p), training=min_classes >= 2):
            emit(listener, Notice(_TASK, note))
    return records
