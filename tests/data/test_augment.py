"""Augmentations: seeded, epoch-dependent, HU jitter before windowing, imbalance."""

from __future__ import annotations

import numpy as np
import pytest

from vitdesk.data.augment import (
    AugmentConfig,
    geometric,
    jitter_hu,
    loss_weights,
    mixup_kwargs,
    progressive_size,
    sample_rng,
    sample_weights,
)
from vitdesk.data.records import SliceRecord
from vitdesk.errors import ConfigError


def test_geometric_seeded_per_sample_and_epoch():
    img = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    cfg = AugmentConfig(rotate_deg=20, translate=0.1)
    a = geometric(img, cfg, sample_rng(7, 0, 5))
    b = geometric(img, cfg, sample_rng(7, 0, 5))
    c = geometric(img, cfg, sample_rng(7, 1, 5))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == img.shape and a.dtype == np.float32


def test_hflip_only_is_exact_mirror():
    img = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    cfg = AugmentConfig(hflip=True, flip_prob=1.0, rotate_deg=0, scale=(1, 1), translate=0)
    np.testing.assert_array_equal(geometric(img, cfg, sample_rng(0, 0, 0)), img[:, :, ::-1])


def test_jitter_hu_shift_and_gain():
    hu = np.array([[0.0, 100.0]], np.float32)
    cfg = AugmentConfig(hu_shift=30.0, hu_scale=0.1)
    rng = sample_rng(1, 2, 3)
    gain, shift = 1 + rng.uniform(-0.1, 0.1), rng.uniform(-30, 30)
    out = jitter_hu(hu, cfg, sample_rng(1, 2, 3))
    np.testing.assert_allclose(out, hu * gain + shift, rtol=1e-6)
    assert out[0, 0] != 0.0


def test_class_weights():
    recs = [SliceRecord(f"{i}", label="a" if i < 6 else "b") for i in range(8)]
    np.testing.assert_allclose(loss_weights(recs, ["a", "b"]), [8 / 12, 8 / 4])
    w = sample_weights(recs, ["a", "b"])
    assert w[0] == pytest.approx(1 / 6) and w[7] == pytest.approx(1 / 2)
    assert w[:6].sum() == pytest.approx(w[6:].sum())  # classes drawn equally often


def test_mixup_kwargs_and_progressive():
    assert mixup_kwargs(AugmentConfig(), 2) is None
    kw = mixup_kwargs(AugmentConfig(mixup_alpha=0.8, cutmix_alpha=1.0), 3, 0.1)
    # keyword names of timm.data.Mixup (not imported here: importing timm costs seconds)
    assert kw == {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "prob": 1.0, "switch_prob": 0.5,
                  "mode": "batch", "label_smoothing": 0.1, "num_classes": 3}
    sched = ((0, 64), (3, 128), (5, 224))
    assert [progressive_size(sched, e, 224) for e in (0, 2, 3, 7)] == [64, 64, 128, 224]
    assert progressive_size(((0, 100),), 0, 224, multiple_of=16) == 96


def test_config_roundtrip_and_validation():
    cfg = AugmentConfig(progressive=((0, 64), (2, 128)), scale=(0.8, 1.2))
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="flip_prob"):
        AugmentConfig(flip_prob=2.0)
    with pytest.raises(ConfigError, match="unknown augment option"):
        AugmentConfig.from_dict({"hflipp": True})


def test_run_config_shorthands():
    cfg = AugmentConfig(scale=0.1, intensity=0.08)
    assert cfg.scale == pytest.approx((0.9, 1.1))
    assert (cfg.hu_scale, cfg.image_jitter) == (0.08, 0.08)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
