"""HU perturbations before windowing, FGSM/PGD, and Mahalanobis shift detection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.analysis.conftest import MEAN, STD, quadrant_images
from vitdesk.analysis.robustness import (
    adversarial_curves,
    fgsm,
    hu_perturbation_curves,
    perturb_hu,
)
from vitdesk.analysis.shift import MahalanobisDetector, extract_features
from vitdesk.errors import Cancelled, DataError
from vitdesk.jobs import CancelToken

WIDTH, LEVEL = 1000.0, 0.0  # [0, 1] image = (HU + 500) / 1000


def preprocess(hu: np.ndarray) -> torch.Tensor:
    x01 = np.clip((hu - (LEVEL - WIDTH / 2)) / WIDTH, 0, 1).astype(np.float32)
    x = torch.from_numpy(x01)[:, None].expand(-1, 3, -1, -1)
    return (x - 0.5) / 0.5


def hu_slices(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x01, y = quadrant_images(n, seed)
    return x01[:, 0].numpy() * WIDTH - WIDTH / 2 + LEVEL, y.numpy()


def test_hu_noise_zero_leaves_predictions_and_big_shift_hurts(trained_vit):
    hu, y = hu_slices(32, seed=2000)
    res = hu_perturbation_curves(
        trained_vit, hu, y, preprocess,
        perturbations={"noise_hu": (0.0, 50.0), "shift_hu": (0.0, 450.0)}, batch_size=16)
    assert res.clean_accuracy > 0.9
    noise, shift = res.curves
    assert noise.strengths == (0.0, 50.0) and noise.accuracy[0] == res.clean_accuracy
    assert noise.drop[0] == 0.0
    assert shift.accuracy[0] == res.clean_accuracy
    # +450 HU turns the dark quadrant (-400 HU) nearly bright: the model must suffer
    assert shift.accuracy[1] < res.clean_accuracy - 0.2
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(perturb_hu(hu, "noise_hu", 0.0, rng), hu)
    c = perturb_hu(hu, "contrast", 1.2, rng)
    np.testing.assert_allclose(c.mean(axis=(1, 2)), hu.mean(axis=(1, 2)), rtol=1e-4, atol=1e-2)
    with pytest.raises(DataError):
        perturb_hu(hu, "blur", 1.0, rng)


def test_fgsm_lowers_accuracy_and_respects_eps(trained_vit, test_set):
    x, y = test_set
    res = adversarial_curves(trained_vit, x, y, MEAN, STD, epsilons=(0.0, 0.5),
                             attacks=("fgsm", "pgd"), pgd_steps=3)
    fg, pg = res.curves
    assert fg.accuracy[0] == res.clean_accuracy > 0.9
    assert fg.accuracy[1] < res.clean_accuracy - 0.3
    assert pg.accuracy[0] == res.clean_accuracy
    assert pg.accuracy[1] < res.clean_accuracy - 0.3
    assert fg.drop == (0.0, res.clean_accuracy - fg.accuracy[1])
    adv = fgsm(trained_vit, x[:8], y[:8], 0.1, MEAN, STD)
    x01, a01 = x[:8] * 0.5 + 0.5, adv * 0.5 + 0.5
    assert (a01 - x01).abs().max() <= 0.1 + 1e-5
    assert a01.min() >= -1e-6 and a01.max() <= 1 + 1e-6
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        adversarial_curves(trained_vit, x, y, MEAN, STD, cancel=token)


def test_mahalanobis_flags_shifted_not_in_distribution(rng):
    cov = np.diag(np.linspace(0.5, 2.0, 8))
    train = rng.multivariate_normal(np.zeros(8), cov, 400)
    same = rng.multivariate_normal(np.zeros(8), cov, 200)
    shifted = rng.multivariate_normal(np.full(8, 3.0), cov, 50)
    for shrink in (False, True):
        det = MahalanobisDetector(percentile=95, shrinkage=shrink).fit(train)
        s_in, s_out = det.score(same), det.score(shifted)
        assert s_in.fraction_above < 0.15
        assert s_out.fraction_above > 0.9 and s_out.median_ratio > 2
        assert len(s_out.outliers) == int(round(s_out.fraction_above * 50))


def test_mahalanobis_singular_covariance_and_model_features(trained_vit, test_set):
    x, _ = test_set
    feats = extract_features(trained_vit, [x[:16], x[16:32]])
    # 64 pooled features, then the mean and SD of the 64-wide patch-embedding tokens;
    # fewer cases than dimensions: singular covariance
    assert feats.shape == (32, 3 * 64)
    pooled = trained_vit.forward_head(trained_vit.forward_features(x[:16]), pre_logits=True)
    np.testing.assert_allclose(feats[:16, :64], pooled.detach().numpy(), rtol=1e-5, atol=1e-6)
    tok = trained_vit.patch_embed(x[:16]).detach()
    np.testing.assert_allclose(feats[:16, 64:128], tok.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[:16, 128:], tok.std(1).numpy(), rtol=1e-5, atol=1e-5)
    det = MahalanobisDetector().fit(feats)
    d = det.distances(feats)
    assert np.isfinite(d).all()
    noise = extract_features(trained_vit, [torch.randn(8, 3, 32, 32) * 3])
    assert det.score(noise).fraction_above == 1.0
