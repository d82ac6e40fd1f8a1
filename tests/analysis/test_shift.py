"""Shift alarm: held-out threshold holds its nominal rate; shifted data raise it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from vitdesk.analysis.shift import (
    MahalanobisDetector,
    conformal_threshold,
    ood_auroc,
)
from vitdesk.errors import DataError

N, D = 300, 120  # feature dimension comparable to the number of cases


def _gauss(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    # anisotropic: a few strong directions, like pooled ViT features
    scale = np.linspace(0.3, 3.0, D)
    return (rng.normal(size=(n, D)) + shift) * scale


def test_in_sample_threshold_is_biased_the_held_out_one_is_not():
    # the bug this replaces: threshold from the fit cases' own distances
    rng = np.random.default_rng(0)
    train, new = _gauss(rng, N), _gauss(rng, 4000)
    det = MahalanobisDetector(percentile=95).fit(train)
    naive = np.percentile(det.distances(train[det_rows(det, train)]), 95)
    assert (det.distances(new) > naive).mean() > 0.15  # in-sample: several times 5 %
    assert abs(det.score(new).fraction_above - 0.05) < 0.04


def det_rows(det: MahalanobisDetector, train: np.ndarray) -> np.ndarray:
    """Rows of ``train`` the Gaussian was fitted on (their mean is ``det.mean``)."""
    from vitdesk.analysis.shift import holdout_split as _split

    fit, _ = _split(len(train), None, det.holdout, det.seed)
    assert np.allclose(train[fit].mean(0), det.mean)
    return fit


@pytest.mark.parametrize("use_validation", [False, True])
def test_alarm_rate_holds_nominal_over_seeds(use_validation):
    rates, rates_shifted = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        train, val = _gauss(rng, N), _gauss(rng, 150)
        det = MahalanobisDetector(percentile=95, seed=seed).fit(
            train, val if use_validation else None)
        assert det.reference == ("validation" if use_validation else "held-out training split")
        res = det.score(_gauss(rng, 2000))
        assert res.expected_rate == pytest.approx(0.05)
        assert res.observed_rate == res.fraction_above
        assert abs(res.fraction_above - 0.05) < 0.06, seed  # each seed reasonably close
        assert 0.35 < res.auroc < 0.65  # new in-distribution cases look like held-out ones
        rates.append(res.fraction_above)
        rates_shifted.append(det.score(_gauss(rng, 500, shift=1.0)).fraction_above)
    print(f"alarm rate mean {np.mean(rates):.4f} (nominal 0.05), shifted "
          f"{np.mean(rates_shifted):.3f}")
    assert abs(np.mean(rates) - 0.05) < 0.03
    assert np.mean(rates_shifted) > 0.5
    assert min(rates_shifted) > max(rates)


def test_shrinkage_is_ledoit_wolf_and_auroc_matches_sklearn():
    rng = np.random.default_rng(3)
    train, inn, out = _gauss(rng, N), _gauss(rng, 200), _gauss(rng, 200, shift=1.0)
    det = MahalanobisDetector().fit(train)
    fit = det_rows(det, train)
    ref = LedoitWolf().fit(train[fit])
    diff = inn - ref.location_
    expected = np.sqrt(np.einsum("nd,de,ne->n", diff, ref.precision_, diff))
    np.testing.assert_allclose(det.distances(inn), expected, rtol=1e-6)
    d_in, d_out = det.distances(inn), det.distances(out)
    sk = roc_auc_score(np.r_[np.zeros(200), np.ones(200)], np.r_[d_in, d_out])
    assert det.auroc(inn, out) == pytest.approx(sk)
    assert ood_auroc(d_in, d_out) == pytest.approx(sk) and sk > 0.9
    d = det.score(out).to_dict()
    for key in ("percentile", "fraction_above", "threshold", "expected_rate", "observed_rate",
                "auroc", "n_reference"):
        assert key in d
    assert d["covariance"] == "ledoit-wolf" and d["n_reference"] == len(train) - len(fit)


def test_split_by_patient_keeps_patients_on_one_side():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 10)
    det = MahalanobisDetector().fit(_gauss(rng, 300), groups=groups)
    from vitdesk.analysis.shift import holdout_split as _split

    a, b = _split(300, groups, 0.5, 0)
    assert not set(groups[a]) & set(groups[b])
    assert len(det.reference_distances) == 150 and det.reference == "held-out training split"


def test_expected_rate_is_honest_when_the_reference_is_small():
    rng = np.random.default_rng(0)
    train = _gauss(rng, N)
    small = MahalanobisDetector(percentile=95).fit(train, _gauss(rng, 12))
    assert small.reference == "validation" and small.expected_rate == pytest.approx(1 / 13)
    # the largest of 12 is exceeded by 1 in 13 exchangeable new cases, not 1 in 20:
    # 1000 draws of 12 reference cases and one new case
    d = small.distances(_gauss(rng, 13 * 1000)).reshape(1000, 13)
    assert abs((d[:, 12] > d[:, :12].max(1)).mean() - 1 / 13) < 0.03
    big = MahalanobisDetector(percentile=95).fit(train, _gauss(rng, 100))
    assert big.expected_rate == pytest.approx(0.05)
    tiny = MahalanobisDetector(percentile=95).fit(train, _gauss(rng, 9))
    assert tiny.reference == "held-out training split"


def test_conformal_threshold_order_statistic():
    d = np.arange(1.0, 101.0)  # 100 reference distances
    assert conformal_threshold(d, 95) == 96.0  # ceil(101 * 0.95) = 96th smallest
    assert conformal_threshold(d[:5], 95) == 5.0  # too few: the largest
    with pytest.raises(DataError):
        conformal_threshold(np.zeros(0), 95)
    with pytest.raises(DataError, match="held-out features"):
        MahalanobisDetector().fit(np.zeros((10, 3)), np.zeros((30, 4)))


def _patients(rng, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances of ``k`` slices for each of ``m`` patients that share most of their
    variation (anatomy, noise, scanner), and the patient of each."""
    d = rng.normal(size=(m, 1)) + 0.3 * rng.normal(size=(m, k))
    return d.ravel(), np.repeat(np.arange(m), k)


@pytest.mark.parametrize("m,k", [(3, 6), (8, 3), (40, 5)])
def test_patient_threshold_holds_its_rate_for_new_patients(m, k):
    rng = np.random.default_rng(m)
    alpha = 0.05
    expected = max(alpha, 1 / (m + 1))
    trials = 3000
    hit_grouped = hit_slices = 0.0
    for _ in range(trials):
        d, g = _patients(rng, m + 1, k)
        ref, new = d[: m * k], d[m * k:]  # the last patient is the new one
        hit_grouped += (new > conformal_threshold(ref, 95, g[: m * k])).mean()
        hit_slices += (new > conformal_threshold(ref, 95)).mean()
    rate, naive = hit_grouped / trials, hit_slices / trials
    se = np.sqrt(expected * (1 - expected) / trials)
    # the guarantee: at most the expected rate
    assert rate <= expected + 3 * se
    if m + 1 >= 1 / alpha:
        assert rate >= expected - 0.02  # and, with enough patients, not far below it
    if m * k < 40:
        # counting slices as if independent breaks the promise when patients are few
        # (the CI failure: 18 validation slices of 3 patients, 28 % alarms)
        assert naive > max(alpha, 1 / (m * k + 1)) + 0.02


def test_patient_threshold_with_one_slice_each_is_the_plain_rule():
    rng = np.random.default_rng(1)
    for n in (5, 19, 20, 57, 200):
        d = rng.normal(size=n)
        assert conformal_threshold(d, 95, np.arange(n)) == conformal_threshold(d, 95)
    with pytest.raises(DataError, match="patients"):
        conformal_threshold(np.zeros(4), 95, np.arange(3))


def test_expected_rate_counts_patients_when_known():
    rng = np.random.default_rng(2)
    train = _gauss(rng, N)
    val = _gauss(rng, 18)
    det = MahalanobisDetector(percentile=95).fit(train, val,
                                                 holdout_groups=np.repeat([0, 1, 2], 6))
    assert det.expected_rate == pytest.approx(1 / 4)
    res = det.score(_gauss(rng, 10))
    assert (res.n_reference, res.n_reference_patients) == (18, 3)
    assert res.reference_size == "18 slices of 3 patients"
    assert res.to_dict()["n_reference_patients"] == 3


# --------------------------------------------------------------------------- on a run


def _hu_copy(src, dst, offset: float, noise: float, seed: int = 0):
    """Copy a DICOM sample folder with every slice's HU offset and/or noised."""
    import shutil

    import pydicom

    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for p in sorted(dst.rglob("*.dcm")):
        ds = pydicom.dcmread(p)
        ds.RescaleIntercept = float(ds.RescaleIntercept) + offset
        if noise:
            arr = ds.pixel_array.astype(np.int32)
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            arr = arr + np.rint(rng.normal(0, noise / slope, arr.shape)).astype(np.int32)
            info = np.iinfo(ds.pixel_array.dtype)
            ds.PixelData = np.clip(arr, info.min, info.max).astype(
                ds.pixel_array.dtype).tobytes()
        ds.save_as(p)
    return dst


def train_shift_run(root, seed: int = 0):
    """A tiny ViT on 40 patients of 4 slices, 20 of them for validation (the threshold's
    reference: patients are its exchangeable units, and 20 of them let it promise 5 %),
    and 24 new in-distribution patients to score."""
    from vitdesk.config import RunConfig, StageConfig
    from vitdesk.engine.run import train
    from vitdesk.imaging.synthetic import generate_sample

    data = generate_sample(root / "sample", patients=40, slices=4, size=48, seed=0).out_dir
    other = generate_sample(root / "other", patients=24, slices=4, size=48, seed=7).out_dir
    cfg = RunConfig()
    cfg.model.name, cfg.model.img_size = "vit_test_tiny", 32
    cfg.weights.pretrained = "none"
    cfg.data.source, cfg.data.fractions, cfg.data.batch_size = str(data), [0.45, 0.5, 0.05], 8
    cfg.recipe.kind = "full"
    cfg.recipe.stages = [StageConfig("full", 3, 2e-3, "all", 1.0)]
    cfg.device, cfg.out, cfg.seed = "cpu", str(root / "run"), seed
    return train(cfg), other


@pytest.fixture(scope="module")
def shift_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("shiftrun")
    run, other = train_shift_run(root)
    return run, other, root


def test_shifted_ct_copy_raises_the_alarm(shift_run):
    from vitdesk.analysis.evaluation import evaluate_run

    run, other, root = shift_run
    kw = dict(robustness=False, fairness=False, attention_samples=0, n_boot=20,
              shift_train_cases=256, device="cpu")
    base = evaluate_run(run, other, **kw).shift
    offset = evaluate_run(run, _hu_copy(other, root / "offset", 300.0, 0.0), **kw).shift
    noisy = evaluate_run(run, _hu_copy(other, root / "noisy", 0.0, 250.0), **kw).shift
    # the same new patients acquired by the sample generator's scanner B (sharp kernel,
    # high fine noise, +25 HU drift, thin slices, wide field of view)
    from vitdesk.imaging.synthetic import generate_sample

    site_b = generate_sample(root / "scanner_b", patients=6, slices=6, size=48, seed=7,
                             scanner="B").out_dir
    scanner = evaluate_run(run, site_b, **kw).shift
    print(f"CT alarm rate in-dist {base.fraction_above:.3f} (auroc {base.auroc:.2f}), "
          f"+300 HU {offset.fraction_above:.3f} ({offset.auroc:.2f}), "
          f"noise 250 HU {noisy.fraction_above:.3f} ({noisy.auroc:.2f}), "
          f"scanner B {scanner.fraction_above:.3f} ({scanner.auroc:.2f}); "
          f"reference {base.reference} {base.reference_size}")
    # the reference is the validation patients, never the training ones: the network was
    # fitted on those, new patients sit farther out (CI: 31 % alarms, AUROC 0.74)
    assert base.reference == "validation"
    assert (base.n_reference, base.n_reference_patients) == (80, 20)
    assert base.expected_rate == pytest.approx(0.05)
    # 24 new patients: the observed rate scatters around 5 % (whole patients alarm
    # together, and the threshold is itself the largest of 20 patients; 20 training
    # seeds here gave 0.000-0.104); 30 % is beyond that scatter with odds well below
    # 1 in 1000 (the tests above check the rate itself on 3000 simulated draws).
    # CI saw 28 % with 3 validation patients counted as 18 independent slices.
    assert base.fraction_above <= 0.3
    assert offset.fraction_above >= 0.8 and offset.auroc > 0.95
    # AUROC against held-out in-distribution cases is the steadier signal on 36 slices
    assert noisy.fraction_above > base.fraction_above
    for res in (noisy, scanner):
        assert res.auroc > 0.7 and res.auroc > base.auroc
    # scanner B is the milder shift: on this 3-epoch model its alarm rate depends on the
    # machine's arithmetic (0.39 on a 2-core box, 0.00 on CI's), its AUROC does not
    assert scanner.fraction_above >= base.fraction_above


def test_series_verdict_allows_what_one_in_distribution_patient_shows():
    from vitdesk.analysis.shift import series_shifted

    # 27 of 300 (9 %) is far beyond the binomial count for 5 % ...
    assert series_shifted(27, 300, 0.05)
    # ... but one held-out patient already raised the alarm on 20 % of its slices:
    # correlated slices make that ordinary, so the series is not called shifted
    assert not series_shifted(27, 300, 0.05, group_max=0.2)
    assert series_shifted(200, 300, 0.05, group_max=0.2)


def test_detector_records_the_most_alarming_held_out_patient():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 8))
    # 40 held-out patients of 5 slices each; patient 3 sits a little off the training mean
    held = rng.normal(size=(200, 8))
    groups = np.repeat(np.arange(40), 5)
    held[groups == 3] += 1.5
    det = MahalanobisDetector(percentile=95).fit(train, held, holdout_groups=groups)
    above = det.reference_distances > det.threshold
    expected = max(above[groups == g].mean() for g in range(40))
    assert det.reference_group_max == pytest.approx(expected)
    assert det.reference_group_max >= above[groups == 3].mean() > 0.05
    res = det.score(held[groups == 3])
    assert res.reference_group_max == det.reference_group_max
    assert not res.out_of_distribution  # an in-distribution patient is not an alarm
    assert det.score(held[groups == 3] + 5.0).out_of_distribution
    # without patient groups the detector falls back to the binomial rule alone
    assert np.isnan(MahalanobisDetector().fit(train, held).reference_group_max)
