"""Temperature scaling: fitted temperature and ECE against netcal; stored with the run
and applied by evaluate, predict and TTA."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from vitdesk.analysis.calibration import (
    CALIBRATION_FILE,
    apply_temperature,
    fit_calibration,
    fit_temperature,
    read_calibration,
)
from vitdesk.analysis.metrics import expected_calibration_error


def _overconfident(n: int, k: int, true_t: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z / true_t), probabilities reported as softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3.0
    q = np.exp(z / true_t)
    q /= q.sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in q])
    p = np.exp(z - z.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


def _netcal(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """(temperature, ECE before, ECE after) as netcal computes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from netcal.metrics import ECE
        from netcal.scaling import TemperatureScaling

        ts = TemperatureScaling()
        ts.fit(p, y)
        after = ts.transform(p)
        if after.ndim == 1:  # two classes: netcal returns p(class 1)
            after = np.c_[1 - after, after]

        def top_label_ece(q: np.ndarray) -> float:
            # netcal's binary ECE of "the top class is right" against its confidence is the
            # top-label ECE (given (N, 2) it would measure class 1's reliability instead)
            return ECE(10).measure(q.max(1), (q.argmax(1) == y).astype(int))

        # netcal's "temperature" is the weight on the logits: 1 / T
        return (1.0 / float(np.ravel(ts.temperature)[0]), top_label_ece(p),
                top_label_ece(after))


@pytest.mark.parametrize("k,true_t", [(2, 2.5), (3, 1.8), (2, 0.6)])
def test_temperature_and_ece_match_netcal(k, true_t):
    y, p = _overconfident(3000, k, true_t, seed=k)
    t_ref, ece_before_ref, ece_after_ref = _netcal(y, p)
    cal = fit_calibration(y, p)
    assert cal.temperature == pytest.approx(t_ref, rel=2e-3)
    assert cal.temperature == pytest.approx(true_t, rel=0.15)  # and it finds the truth
    assert cal.ece_before == pytest.approx(ece_before_ref, abs=1e-9)
    assert cal.ece_after == pytest.approx(ece_after_ref, abs=2e-3)
    assert cal.ece_after < cal.ece_before and cal.nll_after < cal.nll_before
    assert cal.n == 3000 and cal.fitted_on == "validation slices"


def test_apply_temperature_is_softmax_of_scaled_logits_and_keeps_the_argmax():
    z = torch.randn(50, 3) * 4
    p = torch.softmax(z, -1).numpy()
    for t in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(apply_temperature(p, t), torch.softmax(z / t, -1).numpy(),
                                   atol=1e-5)
        assert (apply_temperature(p, t).argmax(1) == p.argmax(1)).all()
    np.testing.assert_allclose(apply_temperature(apply_temperature(p, 2.0), 0.5), p, atol=1e-5)
    y, p2 = _overconfident(500, 2, 1.0, 0)  # already calibrated: T near 1
    assert fit_temperature(y, p2) == pytest.approx(1.0, abs=0.15)


# --------------------------------------------------------------------------- on a run


@pytest.fixture(scope="module")
def cal_run(tmp_path_factory):
    from tests.evalrun import tiny_run, tiny_sample

    root = tmp_path_factory.mktemp("calrun")
    data = tiny_sample(root / "sample")
    return tiny_run(data, root / "run"), data


def test_training_stores_the_validation_calibration(cal_run):
    from vitdesk.engine.calibration import validation_probs
    from vitdesk.engine.run import load_run

    run, _ = cal_run
    d = json.loads((run / CALIBRATION_FILE).read_text())
    assert {"temperature", "ece_before", "ece_after", "fitted_on", "n"} <= set(d)
    assert d["fitted_on"] == "validation slices" and d["n"] == 6  # 1 validation patient
    y, p = validation_probs(load_run(run))
    assert d["temperature"] == pytest.approx(fit_temperature(y, p), rel=1e-4)
    assert d["ece_before"] == pytest.approx(expected_calibration_error(y, p), abs=1e-6)
    assert "/" not in json.dumps(d)  # no paths


def test_evaluate_predict_and_tta_apply_it(cal_run, tmp_path):
    from vitdesk.analysis.evaluation import evaluate_run, predict_input
    from vitdesk.analysis.tta import TTAConfig

    run, data = cal_run
    (run / CALIBRATION_FILE).unlink()  # evaluate refits a missing calibration lazily
    kw = dict(robustness=False, shift=False, fairness=False, attention_samples=0, n_boot=20,
              device="cpu")
    ev = evaluate_run(run, **kw)
    t = read_calibration(run).temperature
    c = ev.to_dict()["calibration"]
    assert c["temperature"] == pytest.approx(t) and c["fitted"]
    raw = evaluate_run(run, calibrate=False, **kw)
    assert raw.calibration is None
    np.testing.assert_allclose(ev.probs, apply_temperature(raw.probs, t), atol=1e-5)
    assert c["ece_before"] == pytest.approx(
        expected_calibration_error(raw.labels, raw.probs), abs=1e-5)
    assert c["ece_after"] == pytest.approx(
        expected_calibration_error(ev.labels, ev.probs), abs=1e-5)
    rows = dict(ev.summary_rows())
    assert "slice ECE before -> after temperature" in rows
    # predict: the same temperature on the same slices
    folder = next(p for p in data.iterdir() if p.is_dir())
    pr = predict_input(run, folder, device="cpu")
    plain = predict_input(run, folder, device="cpu", calibrate=False)
    np.testing.assert_allclose(np.stack([r.probs for r in pr.rows]),
                               apply_temperature(np.stack([r.probs for r in plain.rows]), t),
                               atol=1e-5)
    # TTA: each view scaled before the views are combined
    tta = TTAConfig(scales=(1.0,))
    ev_tta = evaluate_run(run, tta=tta, **kw)
    np.testing.assert_allclose(ev_tta.plain_probs, ev.probs, atol=1e-5)
    assert ev_tta.to_dict()["calibration"]["temperature"] == pytest.approx(t)


def test_a_fit_at_the_search_bound_is_flagged():
    y, p = _overconfident(400, 2, 2.0, seed=5)
    assert fit_calibration(y, p).plausible()
    # a model whose confident calls are wrong: NLL wants T -> infinity, the fit stops at e^3 ~ 20
    cal = fit_calibration(1 - y, p)
    assert cal.temperature == pytest.approx(np.exp(3.0), rel=1e-3) and not cal.plausible()


def _patients(m: int, per: int, true_t: float, seed: int, shift_sd: float = 0.0):
    """``m`` patients of ``per`` slices, probabilities over-confident by ``true_t``;
    ``shift_sd`` gives each patient its own logit offset (patients differ)."""
    rng = np.random.default_rng(seed)
    ys, ps = [], []
    for _ in range(m):
        y, p = _overconfident(per, 2, true_t, int(rng.integers(1 << 30)))
        if shift_sd:
            z = np.log(p) + np.array([0.0, rng.normal(0, shift_sd)])
            p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        ys.append(y)
        ps.append(p)
    return np.concatenate(ys), np.concatenate(ps), np.repeat(np.arange(m), per)


def test_temperature_is_applied_when_it_helps_held_out_patients():
    y, p, g = _patients(20, 30, 2.5, seed=1)
    cal = fit_calibration(y, p, groups=g)
    assert cal.applied and cal.cv_folds == 5
    assert cal.cv_nll_fitted < cal.cv_nll_identity
    assert cal.temperature == cal.fitted_temperature == pytest.approx(fit_temperature(y, p))


def test_temperature_is_not_applied_when_it_hurts_held_out_patients():
    # already calibrated on average, but each patient sits elsewhere: a temperature fitted
    # on a few of them does not carry to the others
    hits = 0
    for seed in range(20):
        y, p, g = _patients(4, 12, 1.0, seed=seed, shift_sd=2.0)
        cal = fit_calibration(y, p, groups=g)
        assert cal.cv_folds == 4
        if not cal.applied:
            hits += 1
            assert cal.temperature == 1.0 and cal.fitted_temperature != 1.0
            assert cal.ece_after == pytest.approx(cal.ece_before)
            assert cal.cv_nll_fitted >= cal.cv_nll_identity
    assert hits >= 5  # the guard does act on small, heterogeneous validation sets


def test_cross_validated_nll_is_what_it_says():
    from vitdesk.engine.calibration import cross_validated_nll, nll

    y, p, g = _patients(6, 10, 2.0, seed=3)
    ident, fitted, k = cross_validated_nll(y, p, g, folds=3)
    assert k == 3 and ident == pytest.approx(nll(y, p))
    # by hand: the same folds (seeded permutation of the sorted patients, mod k)
    fold_of = np.random.default_rng(0).permutation(6) % 3
    total = 0.0
    for f in range(3):
        out = fold_of[g] == f
        t = fit_temperature(y[~out], p[~out])
        total += nll(y[out], apply_temperature(p[out], t)) * out.sum()
    assert fitted == pytest.approx(total / len(y))


def test_few_patients_or_none_keep_the_plain_fit(tmp_path):
    from vitdesk.engine.calibration import write_calibration

    y, p, g = _patients(2, 30, 2.5, seed=4)
    cal = fit_calibration(y, p, groups=g)
    assert cal.applied and cal.cv_folds == 0 and np.isnan(cal.cv_nll_identity)
    assert fit_calibration(y, p).applied
    write_calibration(tmp_path, cal)
    got = read_calibration(tmp_path)
    assert (got.temperature, got.fitted_temperature, got.applied, got.cv_folds) == (
        cal.temperature, cal.fitted_temperature, True, 0)
    assert np.isnan(got.cv_nll_identity) and np.isnan(got.cv_nll_fitted)
    # a calibration.json of an older run (no cross-validation fields) reads as applied
    d = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    for key in ("fitted_temperature", "cv_nll_identity", "cv_nll_fitted", "cv_folds", "applied"):
        d.pop(key)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(d))
    old = read_calibration(tmp_path)
    assert old.applied and old.temperature == pytest.approx(cal.temperature)


def test_trust_line_and_report_say_when_the_temperature_was_not_applied():
    from vitdesk.analysis.calibration import calibration_summary, not_applied_text
    from vitdesk.analysis.inference import RunTrust
    from vitdesk.report.sections import _calibration_section

    for seed in range(40):
        y, p, g = _patients(4, 12, 1.0, seed=seed, shift_sd=2.0)
        cal = fit_calibration(y, p, groups=g)
        if not cal.applied:
            break
    assert not cal.applied
    assert "not rescaled" in RunTrust(1.0, True, False).calibration_words()
    assert "calibrated (temperature" in RunTrust(0.5, True, True).calibration_words()
    text = not_applied_text(cal)
    assert f"{cal.cv_folds}-fold patient cross-validation" in text and "not applied" in text
    summary = calibration_summary(y, p, p, cal)
    assert summary["applied"] is False and summary["temperature"] == 1.0
    assert summary["fitted_temperature"] == pytest.approx(cal.fitted_temperature)
    para = " ".join(_calibration_section(summary).paragraphs)
    assert "not applied" in para and "Every probability in this report is calibrated" not in para
