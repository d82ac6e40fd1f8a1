"""A tiny learnable PNG class-folder dataset shared by CLI and engine tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_square_pngs(root: Path, per_class: int = 10, size: int = 32, seed: int = 0) -> Path:
    """``root/normal`` (noise) and ``root/lesion`` (noise + a bright 10 px square)."""
    rng = np.random.default_rng(seed)
    for label in ("normal", "lesion"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            img = rng.normal(90, 20, (size, size)).clip(0, 255)
            if label == "lesion":
                r, c = rng.integers(0, size - 10, 2)
                img[r:r + 10, c:c + 10] = 230
            cv2.imwrite(str(root / label / f"{label}_{i:02d}.png"), img.astype(np.uint8))
    return root
