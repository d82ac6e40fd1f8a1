"""Test data for GUI tests (generated, tiny)."""

from __future__ import annotations

import numpy as np

from vitdesk.imaging.volume import Volume


def make_volume(nz: int = 12, ny: int = 64, nx: int = 80, spacing=(2.5, 0.7, 0.7),
                **kwargs) -> Volume:
    """A volume whose HU encode position: hu[z, y, x] = 10*z + y - x (easy to check)."""
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    hu = (10.0 * z + y - x).astype(np.float32)
    kwargs.setdefault("meta", {"Modality": "CT", "SeriesDescription": "ramp",
                               "PatientSex": "F", "PatientAge": "045Y"})
    kwargs.setdefault("key", "ramp00000001")
    return Volume(hu=hu, spacing=spacing, origin=(-20.0, -30.0, 100.0),
                  slice_positions=100.0 + spacing[0] * np.arange(nz), **kwargs)


def stated_rate(text: str) -> bool:
    """The shift line states the in-distribution alarm rate it is set for: 5 %, or
    1/(m+1) when a tiny run's m validation patients set the threshold (m >= 1)."""
    import re

    m = re.search(r"expected (\d+)%", text)
    return bool(m) and 5 <= int(m[1]) <= 50
