"""Inputs for the trust-cue tests: slices far outside any CT training distribution."""

from __future__ import annotations

import numpy as np


def checkerboard(shape: tuple[int, ...]) -> np.ndarray:
    """-1000/+1000 HU squares of 2 pixels: far from any CT slice in feature space."""
    return np.where((np.indices(shape).sum(0) // 2) % 2 == 0, 1000.0, -1000.0).astype(
        np.float32)
