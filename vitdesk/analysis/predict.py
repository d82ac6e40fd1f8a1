"""``vitdesk predict``: probabilities per slice of any file or folder, with overlays.

:func:`predict_input` reads DICOM, NIfTI/MHA/NRRD or PNG/JPEG input, scores every
slice with a run's model (optionally with test-time augmentation) and writes
attention overlays named by safe keys, never by patient data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdesk.analysis.run_model import attention_overlays, device_of, load_run_like
from vitdesk.data.inputs import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from vitdesk.data.inputs import input_slices as _input_slices
from vitdesk.jobs import NEVER, CancelToken, Listener, Progress, emit


@dataclass
class PredictedSlice:
    """One row of the probabilities CSV."""

    key: str  # safe key of the series (DICOM/volumes) or of the image file
    slice_index: int
    probs: np.ndarray
    predicted: str
    uncertainty: float | None
    overlay: Path | None = None
    set: str | None = None  # conformal prediction set "a|b" ("(empty)"), None: not computed


@dataclass
class PredictResult:
    classes: list[str]
    rows: list[PredictedSlice]
    overlays: list[Path]
    errors: list[str]
    temperature: float = 1.0  # the run's calibration applied to the probabilities
    conformal: Any = None  # analysis.conformal.ConformalCalibrator behind the set column

    def csv_header(self) -> list[str]:
        return ["key", "slice", *[f"p_{c}" for c in self.classes], "predicted",
                "uncertainty", "set"]

    def csv_rows(self) -> list[list[str]]:
        return [[r.key, str(r.slice_index), *[f"{p:.6f}" for p in r.probs], r.predicted,
                 "" if r.uncertainty is None else f"{r.uncertainty:.6f}",
                 "" if r.set is None else r.set] for r in self.rows]


def _safe_name(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)[:64] or "slice"


def predict_input(
    run: str | Path | Any,
    input_path: str | Path,
    tta: Any = None,
    attention_dir: str | Path | None = None,
    alpha: float = 0.45,
    *,
    batch_size: int = 32,
    device: str = "auto",
    calibrate: bool = True,
    conformal_alpha: float | None = 0.1,
    conformal_method: str = "lac",
    sources: dict[str, list[str]] | None = None,
    cancel: CancelToken = NEVER,
    listener: Listener | None = None,
) -> PredictResult:
    """Probabilities for every slice of ``input_path``; overlays into ``attention_dir``.

    Overlay files are named ``<safe key>_<slice>_rollout.png`` and ``..._gradcam.png``
    (the key is a hash, never a patient name) and have the slice's own size.
    With ``calibrate`` the probabilities are temperature-scaled by the run's
    calibration (fitted on its validation slices now when the run lacks it).
    ``conformal_alpha``: each row's ``set`` holds the true class with probability
    1 - alpha (split-conformal, calibrated on the run's validation slices; a set that is
    not one class means "refer"); None or no validation slices: no sets.
    """
    from vitdesk.analysis.conformal import check_alpha, set_labels
    from vitdesk.analysis.inference import run_trust
    from vitdesk.analysis.options import EvalOptions
    from vitdesk.analysis.tta import predict_proba, tta_predict

    if conformal_alpha is not None:
        conformal_alpha = check_alpha(conformal_alpha)
    from vitdesk.data.dataset import preprocess_slice

    lr = load_run_like(run, device)
    model = lr.model.eval()
    dev = device_of(model)
    # ``sources`` receives each DICOM series' source files (for DICOM results)
    slices, errors = _input_slices(Path(input_path).expanduser(), cancel, listener, sources)
    x_all = np.stack([preprocess_slice(raw, kind, lr.window, lr.img_size, lr.mean, lr.std, 3)
                      for _, _, raw, kind in slices])
    xt = torch.from_numpy(x_all)

    def batches():
        for i in range(0, len(xt), batch_size):
            yield xt[i:i + batch_size]

    total = math.ceil(len(xt) / batch_size)
    # the run's temperature and conformal calibrator, as evaluate and the GUI get them
    trust = run_trust(lr, EvalOptions(calibrate=calibrate, conformal_alpha=conformal_alpha,
                                      conformal_method=conformal_method, shift=False,
                                      batch_size=batch_size), cancel=cancel, listener=listener)
    temp = trust.temperature
    unc = None
    if tta is not None:
        res = tta_predict(model, batches(), tta, device=dev, total=total, cancel=cancel,
                          listener=listener, temperature=temp)
        probs, unc, plain = res.probs, res.uncertainty, res.plain
    else:
        probs, _ = predict_proba(model, batches(), device=dev, total=total, cancel=cancel,
                                 listener=listener, temperature=temp)
        plain = probs
    ccal = trust.conformal
    # sets from the calibrated un-augmented probabilities, as the validation scores were
    sets = set_labels(ccal.sets(plain), list(lr.classes)) if ccal is not None else None
    rows = [PredictedSlice(key, z, probs[i], lr.classes[int(probs[i].argmax())],
                           None if unc is None else float(unc[i]))
            for i, (key, z, _, _) in enumerate(slices)]
    if sets is not None:
        for r, st in zip(rows, sets, strict=True):
            r.set = st or "(empty)"
    overlays: list[Path] = []
    if attention_dir is not None:
        import cv2

        folder = Path(attention_dir).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        for i, (key, z, raw, kind) in enumerate(slices):
            cancel.check()
            emit(listener, Progress("attention", i + 1, len(slices)))
            images = attention_overlays(model, xt[i], raw, kind, lr.window, lr.img_size,
                                        int(probs[i].argmax()), alpha)
            written = {}
            for method, img in images.items():
                p = folder / f"{_safe_name(key)}_{z:04d}_{method}.png"
                cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                overlays.append(p)
                written[method] = p
            # a ViT's row points at its rollout; a CNN has only Grad-CAM
            rows[i].overlay = written.get("rollout") or written.get("gradcam")
    return PredictResult(list(lr.classes), rows, overlays, errors, temp, ccal)
