"""Fairness against fairlearn; age parsing and banding; small-group flags."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, roc_auc_score

from vitdesk.analysis.fairness import (
    age_band,
    age_groups,
    fairness_all,
    group_fairness,
    parse_age,
    sex_groups,
)


def test_group_metrics_match_fairlearn(rng):
    n = 300
    y = rng.integers(0, 2, n)
    p1 = rng.random(n)
    probs = np.stack([1 - p1, p1], axis=1)
    groups = rng.choice(np.array(["A", "B", "C"]), n, p=[0.5, 0.3, 0.2])
    pred = probs.argmax(1)
    rep = group_fairness(y, probs, groups, attribute="site", n_boot=50, min_group_size=5)
    mf = MetricFrame(
        metrics={"accuracy": accuracy_score, "tpr": true_positive_rate,
                 "fpr": false_positive_rate, "positive_rate": selection_rate},
        y_true=y, y_pred=pred, sensitive_features=groups,
    )
    by = mf.by_group
    for row in rep.rows:
        for name in ("accuracy", "tpr", "fpr", "positive_rate"):
            assert row.metrics[name].value == pytest.approx(by.loc[row.group, name])
            e = row.metrics[name]
            assert e.lo <= e.value <= e.hi
        m = groups == row.group
        assert row.n == int(m.sum())
        assert row.metrics["auc"].value == pytest.approx(roc_auc_score(y[m], p1[m]))
    d = rep.disparities
    kw = {"y_true": y, "y_pred": pred, "sensitive_features": groups}
    assert d["demographic_parity_difference"] == pytest.approx(demographic_parity_difference(**kw))
    assert d["demographic_parity_ratio"] == pytest.approx(demographic_parity_ratio(**kw))
    assert d["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(**kw))
    assert d["accuracy_gap"] == pytest.approx(by["accuracy"].max() - by["accuracy"].min())


def test_multiclass_one_vs_rest_and_small_groups(rng):
    n = 90
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    sex = sex_groups(rng.choice(["M", "F", "f", None], n, p=[0.45, 0.45, 0.05, 0.05]))
    reports = fairness_all(y, probs, {"sex": sex}, classes=["a", "b", "c"], n_boot=20,
                           min_group_size=10)
    assert [r.positive for r in reports] == ["a", "b", "c"]
    r = reports[2]
    by_group = {row.group: row for row in r.rows}
    assert set(by_group) == {"F", "M", "unknown"}
    assert by_group["unknown"].small and not by_group["M"].small
    assert any("unknown" in note for note in r.notes)
    # one-vs-rest: positive rate of class c equals the share predicted c in the group
    m = sex == "M"
    assert by_group["M"].metrics["positive_rate"].value == pytest.approx(
        (probs[m].argmax(1) == 2).mean())


def test_age_parsing_and_bands():
    assert parse_age("045Y") == 45.0
    assert parse_age("006M") == pytest.approx(0.5)
    assert parse_age("014D") == pytest.approx(14 / 365.25)
    assert parse_age(70) == 70.0
    assert parse_age("") is None and parse_age("abc") is None and parse_age(None) is None
    assert age_band("039Y") == "<40"
    assert age_band(40) == "40-64" and age_band("064Y") == "40-64"
    assert age_band(65.0) == ">=65"
    assert age_band(None) == "unknown"
    assert age_groups([10, 50, 80], bins=(18, 60)).tolist() == ["<18", "18-59", ">=60"]
