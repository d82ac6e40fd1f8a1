"""Tests of the lead's windowing module: preset edges, WindowSpec round trips."""

from __future__ import annotations

import numpy as np
import pytest

from vitdesk.errors import ConfigError
from vitdesk.imaging.windowing import (
    PRESETS,
    WindowSpec,
    apply_window,
    clahe,
    get_preset,
    window_stack,
    window_uint8,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_edges_map_to_0_and_1(name):
    p = PRESETS[name]
    lo, hi = p.level - p.width / 2, p.level + p.width / 2
    hu = np.array([lo - 100, lo, p.level, hi, hi + 100], np.float32)
    out = apply_window(hu, p.width, p.level)
    assert out.dtype == np.float32
    # the edges are exact, not merely close: level - W/2 -> 0, level + W/2 -> 1
    assert out[0] == 0.0 and out[1] == 0.0 and out[3] == 1.0 and out[4] == 1.0
    assert out[2] == pytest.approx(0.5, abs=1e-6)


def test_design_table_values():
    expected = {"brain": (80, 40), "subdural": (200, 75), "stroke": (40, 40),
                "lung": (1500, -600), "mediastinum": (350, 50), "abdomen": (400, 50),
                "liver": (150, 30), "bone": (1800, 400), "soft_tissue": (400, 40)}
    assert {k: (p.width, p.level) for k, p in PRESETS.items()} == expected
    assert get_preset("Soft Tissue") is PRESETS["soft_tissue"]
    assert get_preset("soft-tissue") is PRESETS["soft_tissue"]
    with pytest.raises(ConfigError, match="unknown window preset"):
        get_preset("nope")


def test_apply_window_linear_and_rejects_bad_width():
    hu = np.linspace(-200, 300, 11)
    out = apply_window(hu, 400, 40)
    np.testing.assert_allclose(out, np.clip((hu - (40 - 200)) / 400, 0, 1), atol=1e-6)
    with pytest.raises(ConfigError):
        apply_window(hu, 0, 40)
    u8 = window_uint8(np.array([-160.0, 40.0, 240.0]), 400, 40)
    assert u8.dtype == np.uint8 and list(u8) == [0, 128, 255]


def test_window_spec_parse_apply_and_round_trip():
    spec = WindowSpec.parse("brain, subdural ,bone")
    assert spec.windows == ((80.0, 40.0), (200.0, 75.0), (1800.0, 400.0))
    hu = np.array([[0.0, 40.0], [80.0, 1300.0]], np.float32)
    out = spec.apply(hu, channels=3)
    assert out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[0], apply_window(hu, 80, 40))
    np.testing.assert_allclose(out[2], apply_window(hu, 1800, 400))
    assert WindowSpec.from_dict(spec.to_dict()) == spec
    assert WindowSpec.parse(spec.label()) == spec
    custom = WindowSpec.parse("400/40")
    assert custom.label() == "400/40" and custom.windows == ((400.0, 40.0),)
    one = custom.apply(hu, channels=3)
    np.testing.assert_array_equal(one[0], one[2])
    with pytest.raises(ConfigError):
        WindowSpec.parse("brain,bone")
    with pytest.raises(ConfigError, match="WIDTH/LEVEL"):
        WindowSpec.parse("abc/def")
    with pytest.raises(ConfigError):
        window_stack(hu, [(80, 40)] * 3, channels=1)


def test_clahe_keeps_range_and_shape():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(0.3, 0.05, (64, 64)), 0, 1).astype(np.float32)
    out = clahe(img)
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > img.std()  # contrast increased


def test_names_must_match_windows():
    # Either construction is refused with ConfigError, or label() works.
    try:
        spec = WindowSpec(windows=((80.0, 40.0), (200.0, 75.0), (1800.0, 400.0)))
    except ConfigError:
        return
    assert WindowSpec.parse(spec.label()).windows == spec.windows
