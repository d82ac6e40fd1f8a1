"""Build small edge-case DICOM files for the imaging tests (pydicom only).

Each helper writes real files: the loader under test reads them from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-123456",
    "PatientBirthDate": "19700101",
    "PatientSex": "F",
    "PatientAge": "054Y",
    "InstitutionName": "St Example Hospital",
    "AccessionNumber": "ACC98765",
}
PHI_STRINGS = ("Doe", "Jane", "PID-123456", "19700101", "St Example", "ACC98765")


def _base(series_uid: str, study_uid: str, rows: int, cols: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".1"
    ds.Modality = "CT"
    ds.SeriesDescription = "test series"
    ds.StudyDate = "20240102"
    ds.Manufacturer = "pytest"
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [0.7, 0.8]
    return ds


def _file_meta(ds: Dataset, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    return meta


def ct_slice(
    path: str | Path,
    stored: np.ndarray,
    *,
    z: float = 0.0,
    ipp: Sequence[float] | None = None,
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    study_uid: str = "1.2.826.0.1.3680043.8.498.2",
    slope: float = 1.0,
    intercept: float = -1024.0,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    extra: dict[str, Any] | None = None,
    ts: str = ExplicitVRLittleEndian,
    compress: str | None = None,
    preamble: bool = True,
    instance: int = 1,
) -> Path:
    """Write one CT slice; ``stored`` dtype decides signedness (int16 / uint16)."""
    stored = np.asarray(stored)
    rows, cols = stored.shape
    ds = _base(series_uid, study_uid, rows, cols)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = list(ipp) if ipp is not None else [-50.0, -60.0, z]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.SliceThickness = 9.0  # deliberately wrong: spacing must come from positions
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.WindowCenter = [40, 300]
    ds.WindowWidth = [400, 1500]
    ds.PhotometricInterpretation = photometric
    bits = stored.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.file_meta = _file_meta(ds, ts)
    if compress:
        ds.compress(compress)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        # A bare data set: no 128-byte preamble, no "DICM", no file meta.
        buf = BytesIO()
        del ds.file_meta
        ds.save_as(buf, implicit_vr=True, little_endian=True)
        path.write_bytes(buf.getvalue())
    return path


def ct_series(
    folder: str | Path,
    stored: np.ndarray,
    *,
    z0: float = 10.0,
    dz: float = 2.5,
    positions: Sequence[float] | None = None,
    shuffle: int | None = 0,
    prefix: str = "f",
    **kw: Any,
) -> list[Path]:
    """Write a series, one file per slice; names shuffled so name order != slice order.

    Returns paths in slice (position) order.
    """
    n = stored.shape[0]
    pos = list(positions) if positions is not None else [z0 + k * dz for k in range(n)]
    order = np.random.default_rng(shuffle).permutation(n) if shuffle is not None else range(n)
    paths: list[Path | None] = [None] * n
    for name_idx, k in enumerate(order):
        paths[k] = ct_slice(
            Path(folder) / f"{prefix}{name_idx:03d}.dcm", stored[k], z=pos[k],
            instance=int(name_idx) + 1, **kw,
        )
    return paths  # type: ignore[return-value]


def enhanced_ct(
    path: str | Path,
    stored: np.ndarray,
    positions: Sequence[float],
    slopes: Sequence[float],
    intercepts: Sequence[float],
    series_uid: str = "1.2.826.0.1.3680043.8.498.77",
) -> Path:
    """An Enhanced CT multi-frame file with per-frame position and rescale."""
    n, rows, cols = stored.shape
    ds = _base(series_uid, "1.2.826.0.1.3680043.8.498.78", rows, cols)
    ds.SOPClassUID = EnhancedCTImageStorage
    del ds.PixelSpacing
    ds.NumberOfFrames = n
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.6]
    measures.SliceThickness = 1.0
    shared.PlaneOrientationSequence = DicomSequence([orient])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per = []
    for k in range(n):
        item = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [0.0, 0.0, float(positions[k])]
        item.PlanePositionSequence = DicomSequence([plane])
        trans = Dataset()
        trans.RescaleSlope = slopes[k]
        trans.RescaleIntercept = intercepts[k]
        trans.RescaleType = "HU"
        item.PixelValueTransformationSequence = DicomSequence([trans])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per)
    ds.PixelData = stored.astype("<i2").tobytes()
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


__all__ = ["ct_slice", "ct_series", "enhanced_ct", "PATIENT", "PHI_STRINGS",
           "ImplicitVRLittleEndian"]
