"""What a report shows: a plain dataclass of already-computed results, and a PHI guard.

``ReportData`` deliberately has no field for a patient name, ID, birth date,
accession number, institution or UID. Results may be given as the analysis
objects or their ``to_dict()`` forms; the report reads only the dict forms.
:func:`check_no_phi` refuses a report in which any text matches a caller's list of
forbidden markers (e.g. the names and IDs of the patients in the data set).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitdesk.errors import DataError

NOTICE = "Research use only, not for diagnosis"


@dataclass
class ModelCard:
    """How the model was made. Every field is optional text or numbers, no PHI."""

    architecture: str = ""
    weights_source: str = ""  # e.g. "local file model.safetensors (sha256 1a2b...)", "none"
    backbone: str = ""  # provenance of the pretrained backbone (dataset, licence)
    img_size: int | None = None
    windowing: str = ""  # e.g. "brain 80/40, subdural 200/75, bone 1800/400"
    recipe: str = ""
    stages: list[dict] = field(default_factory=list)  # name, epochs, trainable, lr ...
    classes: list[str] = field(default_factory=list)
    data_sizes: dict[str, int] = field(default_factory=dict)  # split -> slices
    patients: dict[str, int] = field(default_factory=dict)  # split -> patients
    split: str = ""  # e.g. "by patient 70/15/15, stratified, seed 0"
    software: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    device: str = ""


@dataclass
class AttentionSample:
    """One attention overlay: uint8 RGB (H, W, 3) and a non-identifying caption."""

    image: np.ndarray
    caption: str = ""


@dataclass
class ReportData:
    """Everything a report may show; every section is optional."""

    title: str = "vitdesk evaluation report"
    subtitle: str = ""
    created: str = ""  # date/time of the report (not of any study)
    model: ModelCard | None = None
    history: list[dict] | None = None  # history.jsonl rows
    evaluation: Any = None  # analysis.metrics.Evaluation or its to_dict()
    tta: dict | None = None  # analysis.tta.tta_summary()
    transfer: dict | None = None  # analysis.metrics.transfer_effectiveness()
    fairness: Sequence[Any] | None = None  # FairnessReport objects or dicts
    robustness: Sequence[Any] | None = None  # RobustnessResult objects or dicts
    shift: Any = None  # analysis.shift.ShiftResult or its to_dict()
    calibration: dict | None = None  # analysis.calibration.calibration_summary()
    conformal: dict | None = None  # analysis.conformal.ConformalResult.to_dict()
    attention: Sequence[AttentionSample] | None = None
    # a continued run: analysis.forgetting.forgetting() (parent vs run on the parent's
    # test split), or {"note": why it was not measured}
    continual: dict | None = None
    adapt: dict | None = None  # an adapted run: metrics.json 'adapt' (source/target accuracy)
    notes: list[str] = field(default_factory=list)


def plain(obj: Any) -> Any:
    """The dict form of an analysis result (``to_dict()``), or the object itself."""
    if obj is None:
        return None
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if callable(to_dict) else obj


def _strings(obj: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(obj, str):
        yield where, obj
    elif isinstance(obj, np.ndarray):
        return
    elif hasattr(obj, "to_dict") and callable(obj.to_dict):
        yield from _strings(obj.to_dict(), where)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _strings(getattr(obj, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k, f"{where} (key)")
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple, set)):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{where}[{i}]")


def check_no_phi(data: Any, forbidden: Iterable[str] = (), extra_text: Iterable[str] = ()) -> None:
    """Raise DataError if any text in ``data`` (or ``extra_text``) contains a forbidden marker.

    Matching is case-insensitive substring matching; markers shorter than 3
    characters are ignored (they would match ordinary words); a DICOM person name
    "FAMILY^GIVEN" also matches "family given". The error names the
    field, never the marker, so the message itself leaks nothing.
    """
    markers = []
    for i, m in enumerate(forbidden):
        m = (m or "").strip().lower()
        if len(m) < 3:
            continue
        markers.append((i, m))
        if "^" in m:  # DICOM person names: DOE^JANE also appears as "doe jane"
            markers.append((i, " ".join(p for p in m.split("^") if p)))
    if not markers:
        return
    texts = list(_strings(data, ""))
    texts += [("rendered report", t) for t in extra_text]
    for where, text in texts:
        low = text.lower()
        for i, m in markers:
            if m in low:
                raise DataError(
                    f"report refused: {where or 'a field'} contains protected health "
                    f"information (forbidden marker #{i + 1}); remove it and build the report again"
                )
