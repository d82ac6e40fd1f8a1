"""One analysis layer: EvalOptions, predictions with trust cues, fairness-gap intervals.

What the GUI shows comes from here, so these tests pin the numbers the tabs rely on:
predict_records gives evaluate_run's slice accuracy for the same settings, the shift
check uses evaluate's held-out detector, and metrics.json carries the gap intervals.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from tests.trustdata import checkerboard
from vitdesk.analysis.evaluation import evaluate_run, select_records
from vitdesk.analysis.fairness import (
    GAP_NAMES,
    disparity_intervals,
    group_fairness,
)
from vitdesk.analysis.inference import predict_records, predict_slices, run_trust
from vitdesk.analysis.options import EvalOptions, accuracy_words
from vitdesk.analysis.shift import series_shifted
from vitdesk.analysis.tta import TTAConfig
from vitdesk.errors import ConfigError

FAST = EvalOptions(n_boot=60, robustness=False, attention_samples=0, shift_train_cases=12,
                   device="cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("layer")
    return tiny_run(tiny_sample(root / "sample"), root / "run")


@pytest.fixture(scope="module")
def loaded(run):
    from vitdesk.engine.run import load_run

    return load_run(run, device="cpu")


def test_options_replace_names_an_unknown_field_and_check_validates():
    o = EvalOptions().replace(n_boot=10, tta=TTAConfig(scales=(1.0,)))
    assert o.n_boot == 10 and o.tta_views == 2  # identity + flip
    with pytest.raises(ConfigError, match="n_bootz"):
        EvalOptions().replace(n_bootz=3)
    with pytest.raises(ConfigError, match="conformal_method"):
        EvalOptions(conformal_method="xyz").check()
    assert accuracy_words("slice", "p >= 0.5", None) == "slice accuracy [p >= 0.5, TTA off]"
    assert "TTA on (2 views)" in accuracy_words("patient", "argmax", o.tta)


def test_keyword_changes_and_options_object_give_the_same_evaluation(loaded):
    a = evaluate_run(loaded, None, FAST.replace(fairness=False, shift=False))
    b = evaluate_run(loaded, None, fairness=False, shift=False, n_boot=60, robustness=False,
                     attention_samples=0, device="cpu")
    np.testing.assert_array_equal(a.probs, b.probs)
    assert a.to_dict()["metrics"] == b.to_dict()["metrics"]


@pytest.mark.parametrize("tta", [None, TTAConfig(scales=(1.0,))])
def test_predict_records_is_evaluates_slice_accuracy(loaded, tta):
    o = FAST.replace(tta=tta)
    ev = evaluate_run(loaded, None, o)
    pred = predict_records(loaded, None, o)
    acc = ev.metrics.slice.estimates["accuracy"].value
    assert pred.accuracy == pytest.approx(acc, abs=1e-12)
    assert pred.cut == ev.metrics.slice.cut == "p >= 0.5"
    # same probabilities (evaluate reorders the classes: "normal" first)
    order = [loaded.classes.index(c) for c in ev.classes]
    np.testing.assert_allclose(pred.probs[:, order], ev.probs, atol=1e-6)
    words = pred.accuracy_text()
    assert words.startswith("slice accuracy [p >= 0.5, TTA ")
    assert ("TTA off" in words) == (tta is None)
    # conformal sets and the shift verdict ride along with each prediction
    assert pred.sets is not None and len(pred.sets) == len(pred.probs)
    assert pred.calibrated and pred.temperature == pytest.approx(ev.calibration["temperature"])
    # the shift check is evaluate's: the same threshold and the same distances
    assert pred.shift.threshold == pytest.approx(ev.shift.threshold)
    np.testing.assert_allclose(pred.shift.distances, ev.shift.distances, rtol=1e-6)
    sets_ev = ev.conformal.sets  # (N, K) in analysis order
    got = np.array([[c in s.split("|") for c in ev.classes] for s in pred.sets])
    np.testing.assert_array_equal(got, sets_ev)


def test_open_series_slices_get_the_same_scores_as_records(loaded, run):
    from vitdesk.data.dataset import read_record

    trust = run_trust(loaded, FAST)
    recs = select_records(loaded, None, "test")[0][:5]
    raw = [read_record(r) for r in recs]
    a = predict_slices(loaded, raw, FAST, trust, kinds=[r.kind for r in recs])
    b = predict_records(loaded, None, FAST, trust)
    np.testing.assert_allclose(a.probs, b.probs[:5], atol=1e-5)
    assert a.labels is None and a.accuracy is None and a.accuracy_text() == ""
    # a 2-pixel checkerboard of -1000/+1000 HU is nothing like a CT slice
    far = predict_slices(loaded, [checkerboard(r.shape) for r in raw], FAST, trust)
    assert far.outside.all() and far.out_of_distribution
    assert far.shift_text().startswith("OUT OF DISTRIBUTION: outside what the model")
    # the tiny run's few validation slices: the threshold is their largest, so the
    # in-distribution rate it is set for is 1/(n+1), and the verdict says that number
    res = far.shift
    assert res.expected_rate == pytest.approx(
        max(0.05, 1 / ((res.n_reference_patients or res.n_reference) + 1)))
    assert f"expected {res.expected_rate:.0%}" in far.shift_text()


def test_series_verdict_is_a_binomial_tail():
    assert not series_shifted(0, 40, 0.05)
    assert not series_shifted(3, 40, 0.05)  # 2 expected: 3 is ordinary
    assert series_shifted(10, 40, 0.05)
    assert series_shifted(1, 1, 0.05) and not series_shifted(0, 1, 0.05)


def test_gap_intervals_move_into_fairness_and_metrics_json(loaded, tmp_path):
    ev = evaluate_run(loaded, None, FAST.replace(shift=False))
    assert ev.fairness
    for rep in ev.fairness:
        assert set(rep.gap_ci) == set(GAP_NAMES)
    d = json.loads(json.dumps(ev.to_dict()))
    assert "gap_ci" in d["fairness"][0] and set(d["fairness"][0]["gap_ci"]) == set(GAP_NAMES)
    # the disparity names of metrics.json stay as they were
    assert "demographic_parity_difference" in d["fairness"][0]["disparities"]


def test_disparity_intervals_cover_the_point_value_and_resample_patients():
    rng = np.random.default_rng(0)
    n = 400
    patients = np.repeat(np.arange(100), 4)
    groups = np.where(patients % 2 == 0, "F", "M")
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 * y + 0.25 + 0.2 * rng.standard_normal(n) + 0.1 * (groups == "M"), 0, 1)
    probs = np.c_[1 - p1, p1]
    point = group_fairness(y, probs, groups, n_boot=0).disparities
    ci = disparity_intervals(y, probs, groups, patients, 1, n_boot=200, seed=1)
    for k in GAP_NAMES:
        lo, hi = ci[k]
        assert lo <= point[k] <= hi, k
        assert hi - lo > 0
    # fewer patients -> wider intervals
    few = disparity_intervals(y[:80], probs[:80], groups[:80], patients[:80], 1, n_boot=200)
    assert (few["accuracy_gap"][1] - few["accuracy_gap"][0]) > (
        ci["accuracy_gap"][1] - ci["accuracy_gap"][0])


def test_no_private_helper_is_imported_across_analysis_modules():
    import pathlib
    import re

    import vitdesk

    root = pathlib.Path(vitdesk.__file__).parent
    bad = []
    files = [*(root / "analysis").glob("*.py"), *(root / "report").glob("*.py"),
             root / "gui" / "analysis_jobs.py",
             *[root / "gui" / "tabs" / f"{t}_tab.py"
               for t in ("inference", "fairness", "robustness", "attention")]]
    for f in files:
        for m in re.finditer(r"from vitdesk\.[\w.]+ import (\([^)]*\)|[^\n]*)", f.read_text()):
            names = [x.strip().split(" as ")[0] for x in m.group(1).strip("()").split(",")]
            bad += [f"{f.name}: {x}" for x in names if x.startswith("_")]
    assert len(files) > 20 and bad == []


def test_console_rows_carry_the_gap_intervals(loaded):
    ev = evaluate_run(loaded, None, FAST.replace(shift=False))
    rows = dict(ev.summary_rows())
    for rep in ev.fairness:
        key = f"fairness by {rep.attribute} ({rep.positive}): accuracy gap"
        gap = rep.disparities["accuracy_gap"]
        if not np.isfinite(gap):  # one group only in this small test split
            assert rows[key] == "-"
            continue
        assert rows[key].startswith(f"{gap:.3f}")
        lo, hi = rep.gap_ci["accuracy_gap"]
        if np.isfinite(lo):
            assert rows[key].endswith(f"({lo:.3f}-{hi:.3f})")
