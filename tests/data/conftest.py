"""Small on-the-fly datasets (real DICOM files, PNGs) for the data tests."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from vitdesk.imaging.dicom_write import write_ct_series

SIZE = 16


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def patient_hu(value: float, slices: int = 3, size: int = SIZE) -> np.ndarray:
    """A volume whose slice k is ``value + 10 k`` HU everywhere (easy to identify)."""
    return np.stack([np.full((size, size), value + 10 * k, np.float32) for k in range(slices)])


@pytest.fixture
def dicom_folder(tmp_path: Path) -> Path:
    """4 patients x 3 slices; patients 0, 1 'normal', 2, 3 'lesion'; per-slice labels.csv."""
    root = tmp_path / "dicom"
    rows = []
    for p in range(4):
        label = "normal" if p < 2 else "lesion"
        files = write_ct_series(
            root / f"case_{p:03d}" / "series_1",
            patient_hu(100.0 * p),
            spacing=(2.0, 1.0, 1.0),
            patient={"PatientID": f"PID-SECRET-{p}", "PatientName": f"Doe^P{p}",
                     "PatientSex": "M" if p % 2 else "F", "PatientAge": f"0{40 + p}Y"},
            rng_seed=p,
        )
        rows += [[f.relative_to(root).as_posix(), label] for f in files]
    write_csv(root / "labels.csv", ["path", "label"], rows)
    return root


@pytest.fixture
def png_folder(tmp_path: Path) -> Path:
    """Class folders a/ and b/ with 3 greyscale PNGs each (value 40 k + class offset)."""
    root = tmp_path / "png"
    for ci, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            img = np.full((12, 20), 40 * k + 100 * ci, np.uint8)
            cv2.imwrite(str(root / cls / f"img{ci}{k}.png"), img)
    return root
