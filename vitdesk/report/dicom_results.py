"""Results as DICOM objects a PACS or viewer files with the study (highdicom + pydicom).

Per predicted DICOM series :func:`write_prediction_sr` writes one Comprehensive SR
(its own new series in the source study): for every slice the referenced source
image, the predicted class, its probability and the conformal prediction set when
there is one, plus the model's name and version and "research use only" as text. A
run report goes in as an Encapsulated PDF (:func:`encapsulated_pdf`) in the same study,
attention overlays as Secondary Capture images aligned with their source slices
(:func:`overlay_sc`).

Identity: the objects carry the source Study Instance UID (so a viewer files them with
the study) and reference the source series and SOP instance UIDs; every other Patient
and Study attribute the standard requires is written empty (they are Type 2), so no
name, ID, birth date, accession number, date or institution is copied.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitdesk import RESEARCH_NOTICE, __version__

SCHEME = "99VITDESK"  # a private coding scheme (PS3.16: designators starting "99")
MANUFACTURER = "vitdesk"
SR_SERIES_NUMBER = 9901
PDF_SERIES_NUMBER = 9902
SC_SERIES_NUMBER = 9903
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
# Patient/study attributes blanked (Type 2) or removed (Type 3) in every object written
_TYPE2_BLANK = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDate",
                "StudyTime")
_TYPE3_DROP = ("IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAge", "PatientSize",
               "PatientWeight", "InstitutionName", "InstitutionAddress",
               "InstitutionalDepartmentName", "StudyDescription", "PatientComments",
               "ReferencedPatientSequence", "ReferencedStudySequence",
               "ContributingEquipmentSequence")  # highdicom copies the source site there


@dataclass(frozen=True)
class SliceResult:
    """One slice's prediction, for the SR."""

    slice_index: int
    probs: np.ndarray
    predicted: str
    set: str | None = None


def _code(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def _strip_identity(ds: Any) -> Any:
    """Blank every Type 2 identifying attribute, drop Type 3 ones (in place)."""
    for kw in _TYPE2_BLANK:
        setattr(ds, kw, "")
    for kw in _TYPE3_DROP:
        if kw in ds:
            delattr(ds, kw)
    return ds


# Our own values that the basic profile would drop (they hold no patient data) and Type 1
# attributes the written IODs need back.
_KEEP_ON_DEID = ("ContentDate", "ContentTime", "SeriesDescription", "ImageComments",
                 "InstanceCreationDate", "InstanceCreationTime")


def deidentified(ds: Any) -> Any:
    """A copy of a written object under PS3.15 Annex E's basic profile
    (:func:`vitdesk.imaging.deid.deidentify`): every UID, the referenced source ones
    included, is replaced by the same ``2.25.`` UID that de-identifying the source files
    gives, so the copies still reference de-identified copies of the sources."""
    from vitdesk.imaging.deid import deidentify

    keep = {kw: ds[kw].value for kw in _KEEP_ON_DEID if kw in ds}
    refs = list(ds.ReferencedImageSequence) if "ReferencedImageSequence" in ds else []
    out = deidentify(ds)
    for kw, value in keep.items():
        setattr(out, kw, value)
    if "ReferencedPerformedProcedureStepSequence" in ds:  # Type 2 in SR Document Series
        out.ReferencedPerformedProcedureStepSequence = []
    if refs:  # the SC's alignment reference, remapped like the source's own UID
        out.ReferencedImageSequence = [deidentify(r) for r in refs]
        for r in out.ReferencedImageSequence:
            for kw in ("PatientIdentityRemoved", "DeidentificationMethod"):
                if kw in r:
                    delattr(r, kw)
    return out


def _save(ds: Any, path: Path, deid: bool) -> Path:
    from vitdesk.fileio import atomic_write_bytes

    obj = deidentified(ds) if deid else ds
    atomic_write_bytes(path, lambda tmp: obj.save_as(tmp, enforce_file_format=True))
    return path


def _read_headers(files: Sequence[str]) -> list[Any]:
    import pydicom

    seen, out = set(), []
    for f in files:
        if f in seen:
            continue
        seen.add(f)
        out.append(pydicom.dcmread(f, stop_before_pixels=True))
    return out


def prediction_sr(files: Sequence[str], rows: Sequence[SliceResult], classes: Sequence[str],
                  model: dict[str, str]) -> Any:
    """A Comprehensive SR of one series' slice predictions.

    Args:
        files: the source file of each slice (index = slice index; a multi-frame file
            repeats and is referenced with its frame number).
        rows: the predictions.
        classes: class names, in the probabilities' order.
        model: ``name`` and ``version`` (shown as Algorithm Name / Version).
    """
    import highdicom as hd
    from highdicom.sr import (
        CodeContentItem,
        ContainerContentItem,
        ImageContentItem,
        NumContentItem,
        RelationshipTypeValues,
        TextContentItem,
    )
    from pydicom.sr.codedict import codes

    headers = _read_headers(files)
    by_file = {f: h for f, h in zip(dict.fromkeys(files), headers, strict=True)}
    contains = RelationshipTypeValues.CONTAINS
    root = ContainerContentItem(_code("VDR", "vitdesk classification result"))
    items = [
        TextContentItem(codes.DCM.Comment, RESEARCH_NOTICE, relationship_type=contains),
        TextContentItem(codes.DCM.AlgorithmName, str(model.get("name", "vitdesk model")),
                        relationship_type=contains),
        TextContentItem(codes.DCM.AlgorithmVersion,
                        str(model.get("version", f"vitdesk {__version__}"))[:64],
                        relationship_type=contains),
    ]
    for r in rows:
        f = files[r.slice_index]
        src = by_file[f]
        frames = None
        if int(getattr(src, "NumberOfFrames", 1) or 1) > 1:
            frames = [files[: r.slice_index + 1].count(f)]
        sl = ContainerContentItem(_code("VDS", "Slice classification"),
                                  relationship_type=contains)
        k = list(classes).index(r.predicted)
        sl.ContentSequence = [
            ImageContentItem(codes.DCM.SourceImage, src.SOPClassUID, src.SOPInstanceUID,
                             referenced_frame_numbers=frames, relationship_type=contains),
            CodeContentItem(codes.DCM.Finding, _code(f"C{k}", str(r.predicted)[:64]),
                            relationship_type=contains),
            NumContentItem(codes.DCM.Probability, float(r.probs[k]),
                           hd.sr.CodedConcept("1", "UCUM", "no units"),
                           relationship_type=contains),
        ]
        if r.set is not None:
            sl.ContentSequence.append(TextContentItem(
                _code("VDC", "Conformal prediction set"), r.set or "(empty)",
                relationship_type=contains))
        items.append(sl)
    root.ContentSequence = items
    first = headers[0]
    sr = hd.sr.ComprehensiveSR(
        evidence=headers, content=root, series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description="vitdesk AI result "
        "(research use only)", institution_name=None)
    _strip_identity(sr)
    sr.StudyInstanceUID = first.StudyInstanceUID
    return sr


def encapsulated_pdf(pdf: bytes, study_uid: str, title: str = "vitdesk report") -> Any:
    """An Encapsulated PDF in the study ``study_uid`` (no identity besides the UID)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    now = _dt.datetime.now()
    ds = pydicom.Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesNumber = PDF_SERIES_NUMBER
    ds.InstanceNumber = 1
    ds.Manufacturer = MANUFACTURER
    ds.ConversionType = "SYN"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = bytes(pdf) + (b"\0" if len(pdf) % 2 else b"")  # OB values have even length
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(pdf)
    _strip_identity(ds)
    return ds


def write_prediction_sr(out_dir: str | Path, results: dict[str, tuple[Sequence[str],
                                                                       list[SliceResult]]],
                        classes: Sequence[str], model: dict[str, str],
                        deid: bool = False) -> list[Path]:
    """One SR per series key into ``out_dir`` (named ``<key>_sr.dcm``), atomically;
    ``deid``: de-identified copies (see :func:`deidentified`)."""
    out = Path(out_dir).expanduser()
    written = []
    for key, (files, rows) in results.items():
        sr = prediction_sr(files, rows, classes, model)
        path = out / f"{key}_sr.dcm"
        written.append(_save(sr, path, deid))
    return written


def write_pdf(out_dir: str | Path, pdf_path: str | Path, study_uids: Sequence[str],
              title: str = "vitdesk report", deid: bool = False) -> list[Path]:
    """The report PDF as an Encapsulated PDF in each study, ``<n>_report.dcm``."""
    pdf = Path(pdf_path).read_bytes()
    out = Path(out_dir).expanduser()
    written = []
    for i, uid in enumerate(dict.fromkeys(study_uids), start=1):
        ds = encapsulated_pdf(pdf, uid, title)
        path = out / f"study{i:03d}_report.dcm"
        written.append(_save(ds, path, deid))
    return written


def results_by_series(keys: Sequence[str], slices: Sequence[int], probs: np.ndarray,
                      predicted: Sequence[str], sets: Sequence[str | None] | None,
                      sources: dict[str, list[str]]
                      ) -> dict[str, tuple[list[str], list[SliceResult]]]:
    """Predict rows grouped by DICOM series (rows of PNG/JPEG inputs have no source
    DICOM to reference and are left out)."""
    out: dict[str, tuple[list[str], list[SliceResult]]] = {}
    for i, (key, z) in enumerate(zip(keys, slices, strict=True)):
        files = sources.get(key)
        if not files or not str(files[0]).lower().endswith(".dcm") and not _is_dicom(files[0]):
            continue
        st = None if sets is None else sets[i]
        out.setdefault(key, (list(files), []))[1].append(
            SliceResult(int(z), np.asarray(probs[i]), str(predicted[i]), st))
    return out


def _is_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def study_uids(files: Sequence[str]) -> list[str]:
    """The distinct Study Instance UIDs of DICOM ``files`` (unreadable ones skipped)."""
    import pydicom

    uids: dict[str, None] = {}
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except Exception:  # noqa: BLE001 - a file that cannot be read is not referenced
            continue
        uid = str(getattr(ds, "StudyInstanceUID", "") or "")
        if uid:
            uids[uid] = None
    return list(uids)


def _orientation_letter(v: Sequence[float]) -> str:
    """The PS3.3 C.7.6.1.1.1 Patient Orientation letter of a direction cosine vector."""
    axis = int(np.argmax(np.abs(v)))
    return ("LR", "PA", "HF")[axis][0 if v[axis] > 0 else 1]


def overlay_sc(source_file: str, rgb: np.ndarray, series_uid: str, instance_number: int,
               description: str) -> Any:
    """An attention overlay (RGB, the source slice's rows x columns) as a Secondary Capture
    image in the source study, referencing its source image and carrying its pixel spacing
    and patient orientation so a viewer shows it aligned with the slice."""
    import highdicom as hd
    import pydicom
    from pydicom.dataset import Dataset

    src = pydicom.dcmread(source_file, stop_before_pixels=True)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.shape[:2] != (int(src.Rows), int(src.Columns)):
        raise ValueError(f"overlay {rgb.shape[:2]} does not match the slice "
                         f"{int(src.Rows)} x {int(src.Columns)}")
    kw: dict[str, Any] = {}
    iop = getattr(src, "ImageOrientationPatient", None)
    if iop is not None and len(iop) == 6:
        kw["patient_orientation"] = (_orientation_letter([float(x) for x in iop[:3]]),
                                     _orientation_letter([float(x) for x in iop[3:]]))
    if getattr(src, "PixelSpacing", None):
        kw["pixel_spacing"] = tuple(float(x) for x in src.PixelSpacing)
    sc = hd.sc.SCImage(
        pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", study_instance_uid=src.StudyInstanceUID,
        series_instance_uid=series_uid, series_number=SC_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=instance_number,
        manufacturer=MANUFACTURER, **kw)
    ref = Dataset()
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    sc.ReferencedImageSequence = [ref]
    sc.SeriesDescription = description[:64]
    sc.ImageComments = RESEARCH_NOTICE
    sc.BurnedInAnnotation = "NO"
    sc.Laterality = ""  # Type 2C (General Series): unknown; dciodvfy asks for it
    _strip_identity(sc)
    return sc


def write_overlay_sc(out_dir: str | Path, items: Sequence[tuple[str, str, str | Path]],
                     deid: bool = False) -> list[Path]:
    """Overlays as Secondary Capture images, one new series per source series.

    Args:
        items: (series key, source DICOM file of the slice, overlay PNG) per slice.
    """
    import cv2
    import highdicom as hd

    out = Path(out_dir).expanduser()
    series: dict[str, str] = {}
    counts: dict[str, int] = {}
    written = []
    for key, source, png in items:
        bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        uid = series.setdefault(key, str(hd.UID()))
        counts[key] = counts.get(key, 0) + 1
        sc = overlay_sc(source, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), uid, counts[key],
                        "vitdesk attention overlay (research use only)")
        path = out / f"{key}_sc_{counts[key]:04d}.dcm"
        written.append(_save(sc, path, deid))
    return written


def write_results(out_dir: str | Path, keys: Sequence[str], slices: Sequence[int],
                  probs: Any, predicted: Sequence[str], sets: Sequence[str | None] | None,
                  sources: dict[str, list[str]], classes: Sequence[str],
                  model: dict[str, str], overlays: Sequence[Any] | None = None,
                  deid: bool = False) -> tuple[list[Path], list[Path]]:
    """Every DICOM result of one prediction: (SR files, Secondary Capture files).

    Rows are predict's rows (one per slice); ``sources`` maps each series key to its
    slices' source files (``input_slices(..., sources=)``); ``overlays`` the overlay PNG
    of each row (or None). Rows without a DICOM source are left out.
    """
    if sets is not None and all(st is None for st in sets):
        sets = None
    groups = results_by_series(keys, slices, np.asarray(probs), predicted, sets, sources)
    srs = write_prediction_sr(out_dir, groups, classes, model, deid=deid) if groups else []
    items = [(k, sources[k][int(z)], ov) for k, z, ov in
             zip(keys, slices, overlays or [None] * len(keys), strict=True)
             if ov is not None and k in groups]
    scs = write_overlay_sc(out_dir, items, deid) if items else []
    return srs, scs


def run_model_info(run: Any) -> dict[str, str]:
    """Algorithm name/version of a loaded run, as the SR states them."""
    return {"name": str(run.cfg.model.name), "version": f"vitdesk {__version__}"}


def export_model_info(contract: dict, precision: str) -> dict[str, str]:
    """Algorithm name/version of an exported model (its file hash names the version)."""
    sha = (contract.get("sha256") or {}).get(
        contract.get("int8_file") if precision == "int8" else contract.get("model_file"), "")
    return {"name": str((contract.get("model") or {}).get("name", "vitdesk export")),
            "version": f"vitdesk {(contract.get('versions') or {}).get('vitdesk', '')} "
                       f"{precision} sha256 {sha[:16]}"}


__all__ = ["SliceResult", "deidentified", "encapsulated_pdf", "export_model_info",
           "overlay_sc", "prediction_sr", "results_by_series", "run_model_info",
           "study_uids", "write_overlay_sc", "write_pdf", "write_prediction_sr",
           "write_results"]
