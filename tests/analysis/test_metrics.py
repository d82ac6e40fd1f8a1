"""Metrics against scikit-learn, bootstrap intervals, patients, calibration, transfer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from vitdesk.analysis.metrics import (
    aggregate_by_patient,
    bootstrap,
    calibration_bins,
    evaluate,
    learning_curve,
    transfer_effectiveness,
)
from vitdesk.errors import DataError


def _random_case(rng, n=120, k=2, skill=1.5):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += skill
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3])
def test_slice_metrics_match_sklearn(rng, k):
    y, p = _random_case(rng, k=k)
    pred = p.argmax(1)
    ev = evaluate(y, p, [f"c{i}" for i in range(k)], n_boot=100)
    m = ev.slice.estimates
    assert m["accuracy"].value == pytest.approx(skm.accuracy_score(y, pred))
    assert m["balanced_accuracy"].value == pytest.approx(skm.balanced_accuracy_score(y, pred))
    auc = skm.roc_auc_score(y, p[:, 1]) if k == 2 else skm.roc_auc_score(y, p, multi_class="ovr")
    assert m["auc"].value == pytest.approx(auc)
    np.testing.assert_array_equal(ev.slice.confusion, skm.confusion_matrix(y, pred))
    recall = skm.recall_score(y, pred, average=None)
    for c in range(k):
        pc = ev.slice.per_class[f"c{c}"]
        assert pc["sensitivity"].value == pytest.approx(recall[c])
        spec = skm.recall_score(y != c, pred != c)
        assert pc["specificity"].value == pytest.approx(spec)
    for est in list(m.values()) + [e for d in ev.slice.per_class.values() for e in d.values()]:
        assert est.lo <= est.value <= est.hi
        assert est.hi - est.lo < 0.5
    assert ev.patient is None


def test_bootstrap_is_seeded_and_narrows_with_n(rng):
    fns = {"acc": lambda y, p: float((p.argmax(1) == y).mean())}
    y, p = _random_case(rng, n=60)
    a = bootstrap(fns, y, p, n_boot=200, seed=3)["acc"]
    b = bootstrap(fns, y, p, n_boot=200, seed=3)["acc"]
    assert a == b
    yl, pl = _random_case(rng, n=2000)
    big = bootstrap(fns, yl, pl, n_boot=200, seed=3)["acc"]
    assert (big.hi - big.lo) < (a.hi - a.lo)


def test_patient_aggregation_rules():
    y = np.array([0, 0, 1, 1, 1, 0, 0, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.3, 0.7],
                  [0.4, 0.6], [0.6, 0.4], [0.7, 0.3], [0.1, 0.9]])
    pats = ["b", "b", "b", "a", "a", "c", "c", "c"]
    labels, scores, keys = aggregate_by_patient(y, p, pats, "majority")
    assert keys.tolist() == ["a", "b", "c"]
    assert labels.tolist() == [1, 0, 0]
    np.testing.assert_allclose(scores[1], [(0.9 + 0.8 + 0.2) / 3, (0.1 + 0.2 + 0.8) / 3])
    labels_any, _, _ = aggregate_by_patient(y, p, pats, "any")
    assert labels_any.tolist() == [1, 1, 1]
    ev = evaluate(y, p, ["n", "l"], patients=pats, n_boot=50)
    assert ev.patient.n == 3 and ev.slice.n == 8
    assert ev.settings["resampling"] == "patients"
    with pytest.raises(DataError):
        aggregate_by_patient(y, p, pats[:3])


def test_calibration_bins_hand_computed():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.95, 0.05], [0.65, 0.35], [0.45, 0.55], [0.8, 0.2]])
    cal = calibration_bins(y, p, n_bins=5)
    # confidences .95 (correct), .65 (correct), .55 (correct), .8 (wrong)
    # bins: (.4,.6]: .55 acc 1; (.6,.8]: .65 acc 1 and .8 acc 0; (.8,1]: .95 acc 1
    expected = (abs(1 - 0.55) + 2 * abs(0.5 - 0.725) + abs(1 - 0.95)) / 4
    assert cal["ece"] == pytest.approx(expected)
    assert [b["n"] for b in cal["bins"]] == [0, 0, 1, 2, 1]


def test_learning_curve_and_transfer():
    hist = [
        {"stage": 1, "epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_acc": 0.50},
        {"stage": 1, "epoch": 2, "train_loss": 0.8, "val_loss": 0.7, "val_acc": 0.70},
        {"stage": 2, "epoch": 1, "train_loss": 0.6, "val_loss": 0.5, "val_acc": 0.80},
        {"stage": 2, "epoch": 2, "train_loss": 0.5, "val_loss": 0.55, "val_acc": 0.80},
        {"stage": 3, "epoch": 1, "train_loss": 0.4, "val_loss": 0.60, "val_acc": 0.78},
        {"stage": 3, "epoch": 2, "train_loss": 0.3, "val_loss": 0.65, "val_acc": 0.77},
    ]
    lc = learning_curve(hist, patience=3)
    assert lc["best_val_acc"] == 0.8 and lc["best_epoch"] == 3
    assert lc["epoch_to_fraction"] == 3  # 0.95 * 0.8 = 0.76 first reached at epoch 3
    assert lc["overfit_onset"] == 4
    assert learning_curve(hist, patience=4)["overfit_onset"] is None
    base = {"history": [{"train_loss": 1, "val_loss": 1, "val_acc": 0.6}]}
    tr = transfer_effectiveness({"history": hist, "metrics": {"accuracy": 0.9}}, base, 2)
    assert tr["absolute_improvement"] == pytest.approx(0.3)
    assert tr["gain_over_chance"] == pytest.approx((0.9 - 0.5) / (0.6 - 0.5))
    assert tr["relative_error_reduction"] == pytest.approx(0.3 / 0.4)


def test_unlabelled_cases_are_refused(rng):
    y, p = _random_case(rng, n=10)
    y[0] = -1
    with pytest.raises(DataError, match="unlabelled"):
        evaluate(y, p, ["a", "b"], n_boot=10)


def test_patient_score_max_and_topk_hand_computed():
    # patient "a": one clearly abnormal slice among normal ones; "b": uniformly mild
    y = np.array([0, 0, 1, 0, 0, 0, 0, 0])
    p1 = np.array([0.1, 0.2, 0.9, 0.3, 0.4, 0.4, 0.4, 0.4])
    p = np.stack([1 - p1, p1], axis=1)
    pats = ["a", "a", "a", "a", "b", "b", "b", "b"]
    _, mean, _ = aggregate_by_patient(y, p, pats, "any")
    np.testing.assert_allclose(mean[:, 1], [(0.1 + 0.2 + 0.9 + 0.3) / 4, 0.4])
    assert mean[0, 1] < mean[1, 1]  # the mean ranks the focal finding below the mild one
    _, mx, _ = aggregate_by_patient(y, p, pats, "any", patient_score="max")
    np.testing.assert_allclose(mx, [[0.1, 0.9], [0.6, 0.4]])
    _, top2, _ = aggregate_by_patient(y, p, pats, "any", patient_score="topk", topk=2)
    np.testing.assert_allclose(top2[:, 1], [(0.9 + 0.3) / 2, 0.4])
    np.testing.assert_allclose(top2.sum(1), 1.0)
    # a fraction: ceil(0.5 * 4) = 2 slices, the same as topk=2
    _, frac, _ = aggregate_by_patient(y, p, pats, "any", patient_score="topk", topk=0.5)
    np.testing.assert_allclose(frac, top2)
    ev = evaluate(y, p, ["normal", "lesion"], patients=pats, rule="any", patient_score="max",
                  n_boot=20)
    assert ev.patient.estimates["auc"].value == 1.0
    assert ev.patient.confusion.tolist() == [[1, 0], [0, 1]]
    assert ev.settings["patient_score"] == "max"
    assert evaluate(y, p, ["normal", "lesion"], patients=pats, rule="any",
                    n_boot=20).patient.estimates["auc"].value == 0.0
    with pytest.raises(DataError, match="patient_score"):
        aggregate_by_patient(y, p, pats, patient_score="median")


def test_topk_over_several_abnormal_classes_renormalises():
    p = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    _, s, _ = aggregate_by_patient(np.array([1, 2, 0]), p, ["a"] * 3, "any",
                                   patient_score="max")
    np.testing.assert_allclose(s, [[0.0, 0.5, 0.5]])  # 0.8 + 0.8 > 1: scaled to sum 1


def test_youden_threshold_and_patient_threshold():
    from vitdesk.analysis.metrics import evaluate, predicted_labels, youden_threshold

    y = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.55, 0.6, 0.62, 0.7, 0.8, 0.9])  # all above 0.5: argmax calls all 1
    t = youden_threshold(y, score)
    assert t == pytest.approx((0.7 + 0.62) / 2)
    probs = np.stack([1 - score, score], axis=1)
    assert predicted_labels(probs).tolist() == [1] * 6
    assert predicted_labels(probs, t).tolist() == y.tolist()
    assert youden_threshold(np.ones(3), score[:3]) is None  # one class: nothing to separate
    # patient level: one slice per patient here, so patients == slices
    pats = [f"p{i}" for i in range(6)]
    plain = evaluate(y, probs, ["normal", "lesion"], pats, n_boot=50)
    cut = evaluate(y, probs, ["normal", "lesion"], pats, n_boot=50, patient_threshold=t)
    assert plain.patient.estimates["accuracy"].value == pytest.approx(0.5)
    assert cut.patient.estimates["accuracy"].value == 1.0
    assert cut.patient.confusion.tolist() == [[3, 0], [0, 3]]
    # AUC needs no threshold; slice level keeps the argmax
    assert cut.patient.estimates["auc"].value == plain.patient.estimates["auc"].value
    assert cut.slice.estimates["accuracy"].value == pytest.approx(0.5)
    assert cut.settings["patient_threshold"] == pytest.approx(t, abs=1e-4)


def test_every_level_names_its_decision_cut():
    from vitdesk.analysis.metrics import decision_cut, evaluate
    from vitdesk.report.sections import level_table

    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.6, 40), 0, 1)
    probs = np.c_[1 - p1, p1]
    pats = np.repeat(np.arange(10), 4).astype(str)
    ev = evaluate(y, probs, ["normal", "lesion"], pats, n_boot=20, patient_threshold=0.3)
    assert ev.slice.cut == "p >= 0.5"
    assert ev.patient.cut == "p >= 0.300, validation Youden's J"
    d = ev.to_dict()
    assert d["slice"]["cut"] == "p >= 0.5" and d["patient"]["cut"].startswith("p >= 0.300")
    # the cut really is the one used: patient accuracy recomputed at 0.3 matches
    from vitdesk.analysis.metrics import aggregate_by_patient

    py, pp, _ = aggregate_by_patient(y, probs, pats, "majority", "mean", 3)
    assert ev.patient.estimates["accuracy"].value == pytest.approx(((pp[:, 1] >= 0.3) == py).mean())
    assert decision_cut(3) == "argmax" and decision_cut(3, 0.4) == "argmax"
    table = level_table(d["patient"], "Patient level")
    names = [r[0] for r in table.rows]
    assert "Accuracy [p >= 0.300, validation Youden's J]" in names
    assert "ROC AUC" in names  # threshold-free numbers carry no cut
    assert "decision p >= 0.300" in table.caption
    with_tta = level_table(d["slice"], "Slice level", "TTA off")
    assert "Accuracy [p >= 0.5, TTA off]" in [r[0] for r in with_tta.rows]
