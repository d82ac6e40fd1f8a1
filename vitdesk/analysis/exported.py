"""``vitdesk predict EXPORTED_DIR INPUT``: an exported model's probabilities, without torch.

The same inputs, keys, windowing and CSV columns as a run's predict
(:mod:`vitdesk.analysis.predict`): ``key,slice,p_<class>...,predicted,uncertainty,set``,
``set`` holding the split-conformal prediction set when the export carries its run's
validation scores. Preprocessing comes from the torch-free
:mod:`vitdesk.data.preprocess`, scoring from :class:`~vitdesk.engine.exported_model.
ExportedModel` (ONNX Runtime), so an ONNX export predicts on a machine without torch.
No test-time augmentation or attention overlays: those need the run's PyTorch model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit


@dataclass
class ExportedPrediction:
    """Rows of the probabilities CSV (the columns of a run's predict)."""

    classes: list[str]
    keys: list[str]
    slices: list[int]
    probs: np.ndarray
    errors: list[str]
    sets: list[str] | None = None  # conformal sets ("a|b"), when the export has them
    temperature: float = 1.0
    precision: str = "fp32"
    alpha: float | None = None
    notes: list[str] = field(default_factory=list)
    contract: dict = field(default_factory=dict, repr=False)  # the export's contract

    @property
    def predicted(self) -> list[str]:
        return [self.classes[int(i)] for i in self.probs.argmax(1)] if len(self.probs) else []

    def csv_header(self) -> list[str]:
        return ["key", "slice", *[f"p_{c}" for c in self.classes], "predicted",
                "uncertainty", "set"]

    def csv_rows(self) -> list[list[str]]:
        """As a run's predict writes them: no TTA, so no uncertainty; an empty conformal
        set is "(empty)", no sets at all leave the column blank."""
        sets = self.sets if self.sets is not None else [None] * len(self.keys)
        return [[key, str(z), *[f"{p:.6f}" for p in self.probs[i]], pred, "",
                 "" if st is None else (st or "(empty)")]
                for i, (key, z, pred, st) in enumerate(zip(self.keys, self.slices,
                                                           self.predicted, sets, strict=True))]


def conformal_sets(contract: dict, probs: np.ndarray, temperature: float,
                   alpha: float | None) -> list[str] | None:
    """The conformal set of each row, calibrated on the export's validation scores as the
    run's own predict calibrates them; None without scores or without ``alpha``."""
    from vitdesk.analysis.conformal import calibrate, check_alpha, set_labels
    from vitdesk.engine.calibration import apply_temperature

    doc = contract.get("conformal_calibration")
    if alpha is None or not doc or not doc.get("labels"):
        return None
    y = np.asarray(doc["labels"], dtype=int)
    p_val = apply_temperature(np.asarray(doc["probs"], dtype=np.float64), temperature)
    cal = calibrate(p_val, y, check_alpha(alpha), str(doc.get("method", "lac")))
    return set_labels(cal.sets(probs), list(contract["classes"]))


def predict_exported(
    folder: str | Path,
    input_path: str | Path,
    *,
    alpha: float | None = 0.1,
    precision: str = "auto",
    batch_size: int = 32,
    threads: int | None = None,
    sources: dict[str, list[str]] | None = None,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
) -> ExportedPrediction:
    """Probabilities of every slice of ``input_path`` by the model exported in ``folder``.

    Args:
        alpha: error rate of the conformal sets (None: no ``set`` column).
        precision: "auto" (int8 when exported), "fp32" or "int8".
        sources: receives each DICOM series' source file per slice (DICOM results).
    """
    from vitdesk.data.inputs import input_slices
    from vitdesk.data.preprocess import preprocess_slice
    from vitdesk.engine.export_contract import window_of
    from vitdesk.engine.exported_model import ExportedModel

    model = ExportedModel(folder, precision=precision, threads=threads)
    window = window_of(model.contract)
    slices, errors = input_slices(Path(input_path).expanduser(), cancel, listener, sources)
    total = math.ceil(len(slices) / batch_size)
    out = []
    for b, i in enumerate(range(0, len(slices), batch_size), start=1):
        cancel.check()
        x = np.stack([preprocess_slice(raw, kind, window, model.img_size, model.mean,
                                       model.std, model.channels)
                      for _, _, raw, kind in slices[i:i + batch_size]])
        out.append(model.probs(x))
        emit(listener, Progress("predict", b, total))
    probs = np.concatenate(out) if out else np.zeros((0, len(model.classes)), np.float32)
    sets = conformal_sets(model.contract, probs, model.temperature, alpha)
    return ExportedPrediction(model.classes, [k for k, _, _, _ in slices],
                              [int(z) for _, z, _, _ in slices], probs, errors, sets,
                              model.temperature, model.precision,
                              alpha if sets is not None else None, contract=model.contract)


__all__ = ["ExportedPrediction", "conformal_sets", "predict_exported"]
