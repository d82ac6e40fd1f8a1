"""Patient-safe keys, the safe/PHI metadata split and DICOM de-identification.

``safe_key`` is the only way identifiers (UIDs, patient IDs) reach anything a
user can export: a truncated HMAC-SHA256 keyed with a per-installation secret
(see :func:`secret_path`), stable across runs on one installation. A plain hash
would not do: an 8-digit MRN space is reversed by brute force in about 80 s.
``deidentify`` implements the Basic Application Level Confidentiality Profile of
DICOM PS3.15 Annex E (table E.1-1, basic profile column) for the attributes a CT
file carries, keeping PatientSex and PatientAge (Retain Patient Characteristics
option, E.3.6) because fairness analysis needs them.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import re
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

# Shown and exported freely: acquisition and image geometry, no identity.
SAFE_KEYWORDS: tuple[str, ...] = (
    "Modality", "SOPClassUID", "SeriesDescription", "StudyDescription", "ProtocolName",
    "BodyPartExamined", "SliceThickness", "SpacingBetweenSlices", "KVP", "XRayTubeCurrent",
    "Exposure", "ConvolutionKernel", "Manufacturer", "ManufacturerModelName",
    "PatientSex", "PatientAge", "PatientSize", "PatientWeight", "PatientPosition",
    "Rows", "Columns", "PixelSpacing", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "PhotometricInterpretation", "SamplesPerPixel",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
    "ImageType", "ContrastBolusAgent", "GantryDetectorTilt", "NumberOfFrames",
    "SeriesNumber", "ImageOrientationPatient", "ReconstructionDiameter", "ScanOptions",
)

# Identifying: names, IDs, dates and times, places, people, devices, UIDs.
PHI_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
    "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName",
    "IssuerOfPatientID", "EthnicGroup", "PatientComments", "MilitaryRank", "Occupation",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime",
    "AcquisitionDateTime", "InstanceCreationDate", "InstanceCreationTime",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "StationName", "DeviceSerialNumber", "DeviceUID", "RequestAttributesSequence",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
)

# PS3.15 E.1-1 basic profile actions for the attributes we meet in CT:
# X remove, Z replace with empty (type 2), D dummy value, U replace UID.
_REMOVE: tuple[str, ...] = (
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "IssuerOfPatientID", "EthnicGroup",
    "PatientComments", "MilitaryRank", "Occupation", "MedicalRecordLocator",
    "AdditionalPatientHistory", "PatientInsurancePlanCodeSequence", "BranchOfService",
    "CountryOfResidence", "RegionOfResidence", "PatientReligiousPreference",
    "MedicalAlerts", "Allergies", "SmokingStatus", "PregnancyStatus", "LastMenstrualDate",
    "PatientState", "ResponsibleOrganization", "ResponsiblePerson",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "StationName", "DeviceSerialNumber", "DeviceUID", "PlateID", "DetectorID",
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
    "InstanceCreationDate", "InstanceCreationTime",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "RequestAttributesSequence", "AdmissionID", "AdmittingDiagnosesDescription",
    "ImageComments", "StudyComments", "TextComments", "DerivationDescription",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription", "ReferencedPatientSequence",
    "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "SourceImageSequence", "ReferencedImageSequence", "IrradiationEventUID",
    "PatientTransportArrangements", "PersonName", "VerifyingObserverName",
    "ContentCreatorName", "DataSetTrailingPadding", "ReasonForStudy", "RequestedProcedureID",
    # Free-text descriptions may name the patient: X in the basic profile (kept
    # only under the Retain Description option, which we do not claim).
    "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments",
)
_EMPTY: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
    "ReferringPhysicianName", "StudyID", "StudyDate", "StudyTime", "ContentDate",
    "ContentTime",
)
_UIDS: tuple[str, ...] = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID", "ReferencedSOPInstanceUID",
    "MediaStorageSOPInstanceUID", "ConcatenationUID", "DimensionOrganizationUID",
)

# Root for replacement UIDs: the UUID-derived root of PS3.5 B.2 ("2.25.").
_UID_ROOT = "2.25."


SECRET_ENV = "VITDESK_SECRET_FILE"
# Stored next to keys (workspaces) so keys made another way are never joined silently.
KEY_SCHEME = "hmac-sha256/1"
_secret_cache: dict[str, bytes] = {}
_keyed: dict[tuple, Any] = {}  # where the secret is -> an HMAC object keyed with it


def config_dir() -> Path:
    """The user's vitdesk configuration folder (never inside a run folder)."""
    if os.environ.get(SECRET_ENV):
        return Path(os.environ[SECRET_ENV]).expanduser().parent
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "vitdesk"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vitdesk"


def secret_path() -> Path:
    """Where the installation secret lives: ``$VITDESK_SECRET_FILE``, else the config dir."""
    env = os.environ.get(SECRET_ENV)
    return Path(env).expanduser() if env else config_dir() / "secret.key"


def _read_or_create_secret(path: Path) -> bytes:
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        data = b""
    if len(data) >= 32:
        return data
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = secrets.token_hex(32).encode("ascii")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(fresh)
    try:
        os.link(tmp, path)  # fails if another process created it first: use theirs
    except FileExistsError:
        pass
    except OSError:  # no hard links (some file systems): last writer wins, once
        if not path.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.read_bytes().strip()


def installation_secret() -> bytes:
    """The per-installation secret (created 0600 on first use), cached per path.

    When it can neither be read nor created (a read-only home) this process uses a
    random secret of its own, with a warning: keys then hold for this session only,
    and a workspace indexed with them refuses to reopen rather than mis-join.
    """
    path = secret_path()
    key = str(path)
    if key not in _secret_cache:
        try:
            _secret_cache[key] = _read_or_create_secret(path)
        except OSError as exc:
            warnings.warn(f"cannot read or create the vitdesk secret {path} "
                          f"({exc.strerror or exc}): patient keys hold for this session only; "
                          "set VITDESK_SECRET_FILE to a writable file", stacklevel=2)
            _secret_cache[key] = secrets.token_hex(32).encode("ascii")
    return _secret_cache[key]


def key_id() -> str:
    """Names the scheme and the secret (not reversible): equal iff keys are comparable."""
    tag = hmac.new(installation_secret(), b"vitdesk key id", hashlib.sha256).hexdigest()[:12]
    return f"{KEY_SCHEME}:{tag}"


def safe_key(text: str) -> str:
    """Return a 12-hex-digit, non-identifying key for ``text``.

    HMAC-SHA256 under the installation secret: the same text gives the same key on
    this installation; without the secret the key cannot be brute-forced back.
    """
    where = (os.environ.get(SECRET_ENV), os.environ.get("XDG_CONFIG_HOME"))
    base = _keyed.get(where)
    if base is None:  # keyed once per secret location: copying is cheaper than hmac.new
        base = _keyed[where] = hmac.new(installation_secret(), digestmod=hashlib.sha256)
    h = base.copy()
    h.update(str(text).encode("utf-8"))
    return h.hexdigest()[:12]


def _plain(value: Any) -> Any:
    """Convert pydicom values (MultiValue, PersonName, DSfloat...) to JSON-friendly ones."""
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, float):  # DSfloat is a float subclass
        return float(value)
    if isinstance(value, int):  # IS is an int subclass
        return int(value)
    if isinstance(value, Dataset | list):
        return None
    return str(value) if value is not None else None


def split_meta(ds: Dataset) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a dataset's header into (safe meta, phi) dicts of plain values.

    Only the listed keywords are copied. ``phi["PrivateTags"]`` is True when the
    dataset carries private elements (they may hold anything, so their presence
    is itself treated as identifying).
    """
    meta: dict[str, Any] = {}
    phi: dict[str, Any] = {}
    for kw in SAFE_KEYWORDS:
        value = ds.get(kw)
        if value is None or value == "":
            continue
        plain = _plain(value)
        if plain is not None:
            meta[kw] = plain
    for kw in PHI_KEYWORDS:
        value = ds.get(kw)
        if value is None or value == "":
            continue
        plain = _plain(value)
        if plain is not None:
            phi[kw] = plain
    for kw in _FREE_TEXT:
        # A description typed as a person's name (LAST^FIRST, or the patient's own
        # name) is identifying: it moves to phi, shown only with the identifiers.
        if kw in meta and looks_like_name(meta[kw], phi.get("PatientName")):
            phi[kw] = meta.pop(kw)
    phi["PrivateTags"] = any(elem.tag.is_private for elem in ds)
    return meta, phi


# Free-text safe fields that a site may have filled with a name.
_FREE_TEXT: tuple[str, ...] = ("SeriesDescription", "StudyDescription", "ProtocolName")
# LAST^FIRST[^MIDDLE...]: the DICOM person-name form (PS3.5 6.2, VR PN).
_NAME_PART = r"[^\W\d_](?:[^\W\d_]|['.\- ])*"  # letters, apostrophes, hyphens: no digits
_PN_FORM = re.compile(rf"^\s*{_NAME_PART}\^{_NAME_PART}(?:\^(?:{_NAME_PART})?)*\s*$")


def looks_like_name(text: Any, patient_name: Any = None) -> bool:
    """True when free text looks like a person's name: the DICOM ``LAST^FIRST``
    form, or a text containing the patient's own family or given name."""
    t = str(text or "").strip()
    if not t:
        return False
    if _PN_FORM.match(t):
        return True
    parts = [p.strip().lower() for p in str(patient_name or "").split("^")[:2]]
    words = set(re.findall(r"[^\W\d_]+", t.lower()))
    return any(len(p) >= 3 and p in words for p in parts)


def _hashed_uid(uid: str) -> str:
    # 2.25.<decimal of a 128-bit hash>: a valid UID of at most 44 characters,
    # the same for the same input so series stay grouped after de-identification.
    digest = hashlib.sha256(uid.encode("ascii", "replace")).digest()[:16]
    return _UID_ROOT + str(int.from_bytes(digest, "big"))


def _deid_inplace(ds: Dataset) -> None:
    ds.remove_private_tags()
    for kw in _REMOVE:
        if kw in ds:
            delattr(ds, kw)
    for kw in _EMPTY:
        if kw in ds:
            ds[kw].value = ""
    for kw in _UIDS:
        if kw in ds and ds[kw].value:
            ds[kw].value = _hashed_uid(str(ds[kw].value))
    # Overlay data and curves may burn in text; the profile removes them too.
    for elem in list(ds):
        if elem.tag.group in range(0x6000, 0x6020, 2) or elem.tag.group in range(
            0x5000, 0x5020, 2
        ):
            del ds[elem.tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _deid_inplace(item)


def deidentify(ds: Dataset) -> Dataset:
    """Return a de-identified copy of ``ds`` (PS3.15 Annex E basic profile).

    Names, IDs, dates, times, institutions, physicians, device serials, comments
    and private tags are removed or emptied; UIDs are replaced by hashed
    ``2.25.`` UIDs (consistent within and across files, so series stay grouped);
    PatientSex and PatientAge are kept. Pixel data is untouched (burnt-in text is
    not detected). Sets PatientIdentityRemoved and DeidentificationMethod.
    """
    out = copy.deepcopy(ds)
    _deid_inplace(out)
    fm = getattr(out, "file_meta", None)
    if fm is not None and "MediaStorageSOPInstanceUID" in fm and "SOPInstanceUID" in out:
        fm.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "vitdesk PS3.15 E basic profile; retain patient characteristics"
    return out
