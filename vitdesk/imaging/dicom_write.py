"""Write HU volumes as standards-conformant CT Image Storage DICOM series.

One single-frame file per slice, int16 stored values with (0028,1052) Rescale
Intercept -1024 and (0028,1053) Rescale Slope 1, axial orientation. Used by the
synthetic sample, tests and benchmarks; the files read back with any DICOM
reader (pydicom, SimpleITK/GDCM) and give the original HU to within rounding.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
RESCALE_INTERCEPT = -1024.0
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian}
_I16 = np.iinfo(np.int16)
# Elements that change from slice to slice; everything else is encoded once per series.
_PER_SLICE = ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation",
              "PixelData")


def _ds(value: float) -> str:
    """Format a number as a DICOM Decimal String (at most 16 characters)."""
    text = f"{float(value):.10g}"
    if len(text) > 16:
        text = f"{float(value):.6g}"
    return text


def _uid(rng_seed: int | str | None, *parts: object) -> UID:
    """A new UID; deterministic (hash of seed + parts) when a seed is given."""
    if rng_seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(rng_seed), *(str(p) for p in parts)])


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """HU to int16 stored values for intercept -1024, slope 1 (rounded, clipped)."""
    # float64 so that e.g. 1609.4999 is not rounded up by float32 precision after the shift
    stored = np.rint(np.asarray(hu, dtype=np.float64) - RESCALE_INTERCEPT)
    return np.clip(stored, _I16.min, _I16.max).astype(np.int16)


def _set_keywords(ds: Dataset, values: Mapping[str, Any], what: str) -> None:
    for keyword, value in values.items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"{what}: '{keyword}' is not a DICOM keyword")
        setattr(ds, keyword, value)


def write_ct_series(
    out_dir: str | Path,
    hu: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    patient: Mapping[str, Any] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_description: str = "",
    series_number: int = 1,
    window: tuple[float, float] = (400.0, 40.0),
    extra: Mapping[str, Any] | None = None,
    file_prefix: str = "IM",
    transfer_syntax: str = ExplicitVRLittleEndian,
    rng_seed: int | str | None = None,
) -> list[Path]:
    """Write ``hu`` (z, y, x) as one CT Image Storage file per slice.

    Args:
        out_dir: folder to write into (created); files are ``{file_prefix}_0001.dcm``...
        hu: Hounsfield units, axes (z, y, x). Values are rounded and clipped to
            what int16 stored values with intercept -1024 can hold.
        spacing: voxel size (z, y, x) in mm: (0018,0088) Spacing Between Slices and
            (0018,0050) Slice Thickness from z, (0028,0030) Pixel Spacing from (y, x).
        origin: (0020,0032) Image Position (Patient) (x, y, z) of the first slice;
            slice k sits at z + k * spacing[0] (axial, LPS, identity orientation).
        patient: DICOM keywords of the patient (PatientName, PatientID, PatientSex,
            PatientAge, PatientBirthDate, ...).
        study_uid: Study Instance UID (generated when None).
        series_uid: Series Instance UID (generated when None).
        series_description: (0008,103E) Series Description.
        series_number: (0020,0011) Series Number.
        window: default display window as (width, level): (0028,1051) Window Width,
            (0028,1050) Window Center.
        extra: further DICOM keywords to set (override the defaults written here).
        file_prefix: file name prefix (must not contain PHI).
        transfer_syntax: Explicit VR Little Endian by default; Implicit VR Little
            Endian, Explicit VR Big Endian, or any syntax ``Dataset.compress`` can
            encode (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless...).
        rng_seed: when given, every generated UID (and the default dates) are a
            deterministic function of it, so the same call writes identical files.

    Returns:
        The written paths, in slice order.
    """
    vol = np.asarray(hu)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3 or vol.shape[0] == 0:
        raise ValueError(f"hu must be a (z, y, x) array, got shape {np.shape(hu)}")
    transfer_syntax = UID(transfer_syntax)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nz, rows, cols = vol.shape
    sz, sy, sx = (float(v) for v in spacing)
    ox, oy, oz = (float(v) for v in origin)

    study_uid = UID(study_uid) if study_uid else _uid(rng_seed, "study")
    series_uid = UID(series_uid) if series_uid else _uid(rng_seed, study_uid, "series",
                                                         series_number)
    frame_uid = _uid(rng_seed, series_uid, "frame")
    if rng_seed is None:
        now = _dt.datetime.now()
        date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    else:
        date, time = "20240102", "093000"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.TransferSyntaxUID = (
        transfer_syntax if transfer_syntax in _UNCOMPRESSED else ExplicitVRLittleEndian
    )
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "VITDESK"

    # One dataset mutated per slice: building a fresh one per file would dominate
    # the time on large series.
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = time
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "vitdesk synthetic"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = _ds(sz)
    ds.KVP = "120"
    ds.SpacingBetweenSlices = _ds(sz)
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = int(series_number)
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [_ds(sy), _ds(sx)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = _ds(window[1])
    ds.WindowWidth = _ds(window[0])
    ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    _set_keywords(ds, patient or {}, "patient")
    _set_keywords(ds, extra or {}, "extra")

    big_endian = transfer_syntax == ExplicitVRBigEndian
    encoder: _SeriesEncoder | None = None
    paths: list[Path] = []
    for k in range(nz):
        z = oz + k * sz
        sop_uid = _uid(rng_seed, series_uid, "sop", k) if rng_seed is not None else generate_uid()
        ds.SOPInstanceUID = sop_uid
        meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(ox), _ds(oy), _ds(z)]
        ds.SliceLocation = _ds(z)
        plane = hu_to_stored(vol[k])  # per slice: a float64 copy of a whole volume is large
        path = out / f"{file_prefix}_{k + 1:04d}.dcm"
        if transfer_syntax in _UNCOMPRESSED:
            ds.PixelData = plane.astype(">i2" if big_endian else "<i2").tobytes()
            ds["PixelData"].VR = "OW"
            if encoder is None:
                encoder = _SeriesEncoder(ds, transfer_syntax)
            path.write_bytes(encoder.encode(ds))
        else:
            ds.compress(transfer_syntax, np.ascontiguousarray(plane),
                        generate_instance_uid=False)
            dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


class _SeriesEncoder:
    """Encode datasets that differ only in :data:`_PER_SLICE` elements, fast.

    pydicom's ``dcmwrite`` costs several ms per file in per-element overhead,
    which dominates series of small slices. The constant elements (and the
    constant part of the file meta) are encoded once; per file only the changing
    elements are. The bytes are exactly those ``dcmwrite(...,
    enforce_file_format=True)`` writes (tested).
    """

    def __init__(self, ds: Dataset, transfer_syntax: UID) -> None:
        self.implicit = transfer_syntax == ImplicitVRLittleEndian
        self.little = transfer_syntax != ExplicitVRBigEndian
        self.encodings = ds.get("SpecificCharacterSet")
        # completes and validates the file meta in place (group length, version...)
        write_file_meta_info(DicomBytesIO(), ds.file_meta, enforce_standard=True)
        meta_tags = [t for t in sorted(ds.file_meta.keys()) if t.element != 0]
        self.meta = self._segments(ds.file_meta, meta_tags, {0x00020003}, False, True, None)
        variable = {int(tag_for_keyword(k)) for k in _PER_SLICE}
        self.body = self._segments(ds, sorted(ds.keys()), variable, self.implicit,
                                   self.little, self.encodings)

    @staticmethod
    def _io(implicit: bool, little: bool) -> DicomBytesIO:
        fp = DicomBytesIO()
        fp.is_implicit_VR = implicit
        fp.is_little_endian = little
        return fp

    def _segments(self, ds, tags, variable, implicit, little, encodings) -> list[bytes | int]:
        """Encoded runs of constant elements, with the tags of variable ones between."""
        segments: list[bytes | int] = []
        run = self._io(implicit, little)
        for tag in tags:
            if int(tag) in variable:
                segments += [run.getvalue(), int(tag)]
                run = self._io(implicit, little)
            else:
                write_data_element(run, ds[tag], encodings)
        segments.append(run.getvalue())
        return segments

    def _fill(self, ds, segments, implicit, little, encodings) -> bytes:
        parts = []
        for seg in segments:
            if isinstance(seg, bytes):
                parts.append(seg)
            else:
                fp = self._io(implicit, little)
                write_data_element(fp, ds[seg], encodings)
                parts.append(fp.getvalue())
        return b"".join(parts)

    def encode(self, ds: Dataset) -> bytes:
        meta = self._fill(ds.file_meta, self.meta, False, True, None)
        # (0002,0000) File Meta Information Group Length, UL, explicit VR little endian
        group_length = b"\x02\x00\x00\x00UL\x04\x00" + len(meta).to_bytes(4, "little")
        body = self._fill(ds, self.body, self.implicit, self.little, self.encodings)
        return b"".join((b"\x00" * 128, b"DICM", group_length, meta, body))
