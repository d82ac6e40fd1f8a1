"""Split-conformal prediction sets: same sets as MAPIE on the same scores, and coverage
of at least 1 - alpha on exchangeable data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vitdesk.analysis.conformal import (
    calibrate,
    check_alpha,
    conformal_quantile,
    evaluate_sets,
    prediction_sets,
    refer,
    scores,
    set_labels,
)
from vitdesk.errors import DataError


def _data(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from a softmax and labels drawn from a softer one (a model that is
    right most of the time, over-confident, so sets must sometimes hold two classes)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 2.0
    q = np.exp(z / 1.7)
    q /= q.sum(1, keepdims=True)
    y = (q.cumsum(1) > rng.random((n, 1))).argmax(1)
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def _mapie_sets(method: str, p_cal, y_cal, p_test, alpha: float, seed: int = 0):
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Given(ClassifierMixin, BaseEstimator):
        def __init__(self, k: int = 2) -> None:
            self.k = k

        def fit(self, x, y):
            self.classes_ = np.arange(self.k)
            return self

        def predict_proba(self, x):
            return np.asarray(x, dtype=np.float64)

        def predict(self, x):
            return np.asarray(x).argmax(1)

    est = Given(p_cal.shape[1]).fit(p_cal, y_cal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = SplitConformalClassifier(est, confidence_level=1 - alpha, conformity_score=method,
                                     prefit=True, random_state=seed)
        m.conformalize(p_cal, y_cal)
        _, sets = m.predict_set(p_test)
    return sets[:, :, 0], m


# MAPIE accepts only LAC for two classes (its APS needs three or more)
@pytest.mark.parametrize("method,k", [("lac", 2), ("lac", 4), ("aps", 3), ("aps", 4)])
def test_same_sets_as_mapie(method, k):
    p_cal, y_cal = _data(500, k, seed=k)
    p_test, _ = _data(400, k, seed=100 + k)
    alpha = 0.1
    ref, _ = _mapie_sets(method, p_cal, y_cal, p_test, alpha, seed=3)
    # both randomise APS calibration scores with U(0, 1) draws of RandomState(seed)
    cal = calibrate(p_cal, y_cal, alpha, method, seed=3)
    ours = cal.sets(p_test)
    assert ours.shape == ref.shape
    assert (ours == ref).all(), f"{(ours != ref).any(1).sum()} sets differ"
    assert 0.05 < refer(ours).mean() < 0.95  # not a trivial case


def test_quantile_is_the_finite_sample_order_statistic():
    s = np.arange(1, 101) / 100.0  # 100 scores
    assert conformal_quantile(s, 0.1) == 0.91  # ceil(101 * 0.9) = 91st smallest
    assert conformal_quantile(s[:5], 0.1) == float("inf")  # 5 cases cannot give 90 %
    p = np.array([[0.7, 0.3], [0.5, 0.5]])
    assert prediction_sets(p, float("inf"), "lac").all()
    # LAC: a class is in when 1 - p <= q
    np.testing.assert_array_equal(prediction_sets(p, 0.6, "lac"), [[True, False],
                                                                     [True, True]])
    np.testing.assert_array_equal(prediction_sets(np.array([[0.3, 0.3, 0.4]]), 0.5, "lac"),
                                  [[False, False, False]])  # empty: refer
    # APS: top classes until their total reaches q (the last one included)
    np.testing.assert_array_equal(prediction_sets(np.array([[0.6, 0.3, 0.1]]), 0.8, "aps"),
                                  [[True, True, False]])
    np.testing.assert_allclose(scores(np.array([[0.6, 0.3, 0.1]]), np.array([1]), "aps"), [0.9])
    assert refer(np.array([[True, False], [True, True], [False, False]])).tolist() == [
        False, True, True]
    assert set_labels(np.array([[True, True], [False, True], [False, False]]),
                      ["normal", "lesion"]) == ["normal|lesion", "lesion", ""]
    for bad in (0, 1, -0.1, "x"):
        with pytest.raises(DataError, match="--alpha"):
            check_alpha(bad)


@pytest.mark.parametrize("method", ["lac", "aps"])
def test_coverage_holds_over_seeds_on_exchangeable_data(method):
    alpha, cover, size = 0.1, [], []
    for seed in range(100):
        p, y = _data(600, 3, seed)
        cal = calibrate(p[:300], y[:300], alpha, method, seed=seed)
        res = evaluate_sets(cal, p[300:], y[300:], n_boot=20, seed=seed)
        assert res.coverage.lo <= res.coverage.value <= res.coverage.hi
        cover.append(res.coverage.value)
        size.append(res.mean_set_size)
    # E[coverage] >= 1 - alpha; the mean of 100 seeds is within about 0.002 (one standard
    # error) of its expectation. LAC's is also at most 1 - alpha + 1/(n+1); APS sets keep
    # the class that crosses the threshold, so they over-cover a little.
    assert np.mean(cover) >= 1 - alpha - 0.004
    if method == "lac":
        assert np.mean(cover) <= 1 - alpha + 1 / 301 + 0.006
    assert np.mean(size) < 2.5  # informative: not every class every time
    print(f"{method}: mean coverage {np.mean(cover):.4f} (target {1 - alpha}), "
          f"mean set size {np.mean(size):.2f}")


def test_result_dict_and_patient_intervals():
    p, y = _data(400, 2, 0)
    pats = np.repeat(np.arange(80), 5).astype(str)
    cal = calibrate(p[:200], y[:200], 0.2)
    res = evaluate_sets(cal, p[200:], y[200:], pats[200:], n_boot=200)
    d = res.to_dict()
    for key in ("alpha", "method", "coverage", "coverage_ci", "refer_rate", "refer_rate_ci",
                "n"):
        assert key in d
    sets = cal.sets(p[200:])
    assert d["coverage"] == pytest.approx(sets[np.arange(200), y[200:]].mean())
    assert d["refer_rate"] == pytest.approx((sets.sum(1) != 1).mean())
    assert d["n"] == 200 and d["alpha"] == 0.2 and d["method"] == "lac"
    assert d["coverage_ci"][0] <= d["coverage"] <= d["coverage_ci"][1]
    assert "patients" in d["ci"]


# --------------------------------------------------------------------------- on a run


@pytest.fixture(scope="module")
def conf_run(tmp_path_factory):
    from tests.evalrun import tiny_run, tiny_sample

    root = tmp_path_factory.mktemp("confrun")
    data = tiny_sample(root / "sample")
    return tiny_run(data, root / "run"), data


def test_evaluate_predict_and_report_carry_the_sets(conf_run, tmp_path):
    import csv
    import io

    from vitdesk.analysis.calibration import apply_temperature, read_calibration
    from vitdesk.analysis.evaluation import evaluate_run, predict_input
    from vitdesk.engine.calibration import validation_probs
    from vitdesk.engine.run import load_run
    from vitdesk.report.from_run import write_run_report

    run, data = conf_run
    kw = dict(robustness=False, shift=False, fairness=False, attention_samples=0, n_boot=50,
              device="cpu")
    ev = evaluate_run(run, conformal_alpha=0.3, **kw)
    t = read_calibration(run).temperature
    y_val, p_val = validation_probs(load_run(run))
    ref = calibrate(apply_temperature(p_val, t), y_val, 0.3, "lac")  # 6 validation slices
    sets = ref.sets(ev.plain_probs)
    c = ev.to_dict()["conformal"]
    assert c["alpha"] == 0.3 and c["method"] == "lac" and c["n"] == ev.n_slices
    assert c["n_calibration"] == 6 and c["quantile"] == pytest.approx(ref.quantile)
    assert c["coverage"] == pytest.approx(sets[np.arange(ev.n_slices), ev.labels].mean())
    assert c["refer_rate"] == pytest.approx(refer(sets).mean())
    assert c["coverage_ci"][0] <= c["coverage"] <= c["coverage_ci"][1]
    rows = dict(ev.summary_rows())
    assert any(k.startswith("conformal sets (LAC, alpha 0.3)") for k in rows)
    # too few validation slices for 90 %: every class, every slice referred, and said so
    ev10 = evaluate_run(run, conformal_alpha=0.1, **kw)
    assert ev10.conformal.refer_rate.value == 1.0 and ev10.conformal.coverage.value == 1.0
    files = write_run_report(run, ev, tmp_path / "rep")
    html = files.html.read_text(encoding="utf-8")
    assert "Conformal prediction sets" in html and f"{c['refer_rate']:.3f}" in html
    # predict: a set column after the existing ones, the same sets for the same slices
    folder = next(p for p in data.iterdir() if p.is_dir())
    pr = predict_input(run, folder, device="cpu", conformal_alpha=0.3)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(pr.csv_header())
    w.writerows(pr.csv_rows())
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table[0][-2:] == ["uncertainty", "set"]
    probs = np.stack([r.probs for r in pr.rows])
    want = set_labels(ref.sets(probs), pr.classes)
    assert [r[-1] for r in table[1:]] == [s or "(empty)" for s in want]


def test_cli_alpha_out_of_range_is_one_line_exit_2(conf_run, capsys):
    from vitdesk.cli import main

    run, data = conf_run
    code = main(["evaluate", str(run), "--data", str(data), "--alpha", "1.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--alpha" in err[0]
