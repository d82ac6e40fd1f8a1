"""Shared pieces of run evaluation and input prediction: load a run, batch slices, overlays.

Used by :mod:`vitdesk.analysis.evaluation` (``evaluate_run``) and
:mod:`vitdesk.analysis.predict` (``predict_input``). Captions and file names are
made by the callers; nothing here touches patient data beyond the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def load_run_like(run: Any, device: str = "auto") -> Any:
    """``run`` as a :class:`~vitdesk.engine.run.LoadedRun` (a run folder is loaded)."""
    from vitdesk.engine.run import LoadedRun, load_run

    if isinstance(run, LoadedRun):
        return run
    return load_run(run, device=device)


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of the model's weights (CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def dataset_batches(ds: Any, indices: Sequence[int], batch_size: int,
                    with_labels: bool = True):
    """Batches (x, y) (or x alone) of the dataset items at ``indices``."""
    for i in range(0, len(indices), batch_size):
        items = [ds[int(j)] for j in indices[i:i + batch_size]]
        x = torch.stack([it[0] for it in items])
        if with_labels:
            yield x, torch.as_tensor([it[1] for it in items])
        else:
            yield x


def records_dataset(run: Any, records: list) -> Any:
    """The run's preprocessing over ``records`` (no augmentation, cached)."""
    from vitdesk.data.dataset import SliceDataset

    return SliceDataset(records, run.classes, run.window, run.img_size, run.mean, run.std,
                        channels=3, augment=None, cache=True, cache_mb=256.0)


def display_image(raw: np.ndarray, kind: str, window: Any) -> np.ndarray:
    """The windowed slice as the viewer shows it: grey [0, 1] (H, W) (channel mean)."""
    from vitdesk.data.dataset import to_unit

    return to_unit(raw, kind, window, 3).mean(axis=0)


def attention_overlays(model: torch.nn.Module, x: torch.Tensor, raw: np.ndarray, kind: str,
                       window: Any, img_size: int, target: int, alpha: float = 0.45
                       ) -> dict[str, np.ndarray]:
    """Rollout and Grad-CAM overlays of one preprocessed slice ``x`` (C, S, S) mapped back
    onto the windowed slice ``raw`` (its own H x W). Returns uint8 RGB per method
    ("rollout", "gradcam"); a CNN has no attention to roll out, so only "gradcam"."""
    from vitdesk.analysis.attention import attention_maps, grad_cam, normalize01, overlay
    from vitdesk.data.dataset import Letterbox
    from vitdesk.engine.models import is_cnn

    grey = display_image(raw, kind, window)
    h, w = grey.shape
    box = Letterbox(h, w, img_size)
    xb = x[None].to(device_of(model))
    out = {}
    if not is_cnn(model):
        maps = attention_maps(model, xb, inverse=box.to_slice)
        out["rollout"] = overlay(grey, normalize01(maps.rollout[0]), alpha)
    cam = grad_cam(model, xb, target=int(target), inverse=box.to_slice)[0]
    out["gradcam"] = overlay(grey, cam, alpha)
    return out
