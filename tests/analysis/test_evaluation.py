"""evaluate_run / predict_input on a tiny trained run of the synthetic sample."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from tests.evalrun import tiny_run, tiny_sample
from vitdesk.analysis.evaluation import (
    analysis_order,
    evaluate_run,
    json_safe,
    patient_rule,
    predict_input,
)
from vitdesk.analysis.tta import TTAConfig
from vitdesk.data.splits import load_split
from vitdesk.errors import Cancelled, DataError
from vitdesk.jobs import CancelToken, Progress

SMALL = dict(n_boot=100, robustness_cases=8, attention_samples=2, shift_train_cases=12,
             hu_strengths={"noise_hu": (0.0, 50.0), "shift_hu": (0.0, 100.0)},
             adversarial_eps=(0.0, 4 / 255), device="cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evalrun")
    data = tiny_sample(root / "sample")
    return tiny_run(data, root / "run")


@pytest.fixture(scope="module")
def evaluation(run):
    events = []
    ev = evaluate_run(run, tta=TTAConfig(scales=(1.0,)), listener=events.append, **SMALL)
    return ev, events


def test_scores_exactly_the_saved_test_split_and_no_training_patient(run, evaluation):
    ev, _ = evaluation
    splits = load_split(run / "split.json")
    assert ev.split == "test"
    assert ev.n_slices == len(splits["test"]) == len(ev.labels) == len(ev.probs)
    assert set(ev.patients.tolist()) == {r.patient for r in splits["test"]}
    assert not set(ev.patients.tolist()) & {r.patient for r in splits["train"]}
    assert ev.n_patients == len({r.patient for r in splits["test"]})


def test_probabilities_and_metrics_are_consistent(evaluation):
    ev, events = evaluation
    np.testing.assert_allclose(ev.probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ev.plain_probs.sum(1), 1.0, atol=1e-5)
    assert ev.classes == ["normal", "lesion"]  # the finding is the positive class
    acc = float((ev.probs.argmax(1) == ev.labels).mean())
    assert ev.metrics.slice.estimates["accuracy"].value == pytest.approx(acc)
    assert ev.metrics.slice.confusion.sum() == ev.n_slices
    # slice-level labels: a patient is positive when any slice shows the lesion
    assert ev.settings["patient_rule"] == "any"
    assert ev.metrics.patient.n == ev.n_patients
    assert ev.tta["n_views"] == 2 and ev.tta["accuracy_tta"] == pytest.approx(acc)
    assert ev.uncertainty.shape == (ev.n_slices,)
    assert any(isinstance(e, Progress) and e.task == "tta" for e in events)


def test_metrics_json_is_strict_json_with_the_documented_keys(run, evaluation):
    ev, _ = evaluation
    d = ev.to_dict()
    text = json.dumps(d, allow_nan=False)  # NaN would raise here
    assert d["run_id"] == run.name
    for key in ("metrics", "metrics_without_tta", "tta", "fairness", "robustness", "shift",
                "dataset_fingerprint", "versions", "split", "classes"):
        assert key in d
    assert d["metrics"]["slice"]["n"] == ev.n_slices
    assert {f["attribute"] for f in d["fairness"]} == {"sex", "age"}
    assert set(d["robustness"]) == {"hu", "adversarial"}
    hu = {c["name"]: c for c in d["robustness"]["hu"]["curves"]}
    assert hu["noise_hu"]["strengths"] == [0.0, 50.0]
    assert d["shift"]["n"] == ev.n_slices
    assert str(run.parent) not in text  # no data or run paths in metrics.json


def test_attention_overlays_are_on_the_slice_grid(evaluation):
    ev, _ = evaluation
    assert len(ev.attention) == 4  # 2 slices x (rollout, Grad-CAM)
    for a in ev.attention:
        assert a.image.shape == (48, 48, 3) and a.image.dtype == np.uint8
        assert a.true in ev.classes and "case_" not in a.caption


def test_external_source_scores_all_its_labelled_slices(run, tmp_path):
    other = tiny_sample(tmp_path / "other", patients=3, seed=5)
    ev = evaluate_run(run, other, robustness=False, shift=False, attention_samples=0,
                      n_boot=50, device="cpu")
    assert ev.split == "external"
    assert ev.n_slices == 3 * 6 and ev.tta is None
    np.testing.assert_array_equal(ev.probs, ev.plain_probs)


def test_cancel_and_bad_split(run):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate_run(run, cancel=token, device="cpu")
    with pytest.raises(DataError, match="no 'holdout' split"):
        evaluate_run(run, split="holdout", device="cpu")


def test_predict_input_rows_and_overlays(run, tmp_path):
    case = run.parent / "sample" / "case_001"
    res = predict_input(run, case, tta=TTAConfig(scales=(1.0,)), attention_dir=tmp_path / "att",
                        device="cpu")
    assert len(res.rows) == 6 and [r.slice_index for r in res.rows] == list(range(6))
    assert len({r.key for r in res.rows}) == 1 and len(res.rows[0].key) == 12
    for r in res.rows:
        assert r.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert r.predicted == res.classes[int(r.probs.argmax())]
        assert r.uncertainty is not None
    assert len(res.overlays) == 12
    img = cv2.imread(str(res.overlays[0]))
    assert img is not None and img.shape == (48, 48, 3)


def test_helpers():
    assert analysis_order(["lesion", "normal"]) == [1, 0]
    assert analysis_order(["a", "b", "c"]) == [0, 1, 2]
    assert patient_rule(np.array([0, 1, 0]), np.array(["p", "p", "q"])) == "any"
    assert patient_rule(np.array([0, 0, 1]), np.array(["p", "p", "q"])) == "majority"
    assert json_safe({"a": float("nan"), "b": np.float32(0.5), "c": [np.int64(2)]}) == \
        {"a": None, "b": 0.5, "c": [2]}


def test_patient_threshold_is_chosen_on_the_validation_patients(run, evaluation):
    from vitdesk.analysis.metrics import aggregate_by_patient, youden_threshold

    ev, _ = evaluation
    val = evaluate_run(run, split="val", tta=TTAConfig(scales=(1.0,)), **SMALL)
    py, pp, _ = aggregate_by_patient(val.labels, val.probs, val.patients,
                                     val.settings["patient_rule"], "topk", 3)
    expected = youden_threshold(py, pp[:, 1])
    got = ev.metrics.settings.get("patient_threshold")
    if expected is None:  # one class among the validation patients: argmax decisions
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-4)
        assert any("validation patients" in n for n in ev.notes)
        calls = (aggregate_by_patient(ev.labels, ev.probs, ev.patients, "any", "topk", 3)
                 [1][:, 1] >= got).astype(int)
        assert ev.metrics.patient.confusion.sum(0)[1] == calls.sum()


def test_validation_threshold_is_applied_to_patient_decisions(run, evaluation, monkeypatch):
    """With validation patients of both classes (here: the test patients stand in)."""
    import vitdesk.analysis.evaluation as E
    from vitdesk.analysis.metrics import aggregate_by_patient, youden_threshold

    ev, _ = evaluation
    py, pp, _ = aggregate_by_patient(ev.labels, ev.probs, ev.patients, "any", "topk", 3)
    if len(set(py.tolist())) < 2:
        pytest.skip("the tiny test split holds one class of patient")
    real = E.run_splits

    def val_is_test(run_dir, split, *rest):
        splits = dict(real(run_dir, split if split != "val" else "test", *rest))
        splits["val"] = splits["test"]
        return splits

    monkeypatch.setattr(E, "run_splits", val_is_test)
    got = evaluate_run(run, tta=TTAConfig(scales=(1.0,)), **SMALL)
    t = youden_threshold(py, pp[:, 1])
    assert got.metrics.settings["patient_threshold"] == pytest.approx(t, abs=1e-4)
    calls = (pp[:, 1] >= t).astype(int)
    assert got.metrics.patient.confusion.sum(0).tolist() == [int((calls == 0).sum()),
                                                             int(calls.sum())]
    assert any("validation patients" in n for n in got.notes)


def test_one_image_per_patient_patient_level_equals_slice_level(tmp_path):
    """An image folder (one image per patient): the patient decision uses the slice cut,
    so patient accuracy cannot differ from slice accuracy (issue 13)."""
    from tests.pngdata import write_square_pngs

    data = write_square_pngs(tmp_path / "png", per_class=12, size=32)
    run = tiny_run(data, tmp_path / "run")
    ev = evaluate_run(run, robustness=False, shift=False, fairness=False, attention_samples=0,
                      n_boot=20, device="cpu")
    assert ev.n_slices == ev.n_patients
    s, p = ev.metrics.slice, ev.metrics.patient
    assert p.cut == s.cut == "p >= 0.5"
    assert p.estimates["accuracy"].value == pytest.approx(s.estimates["accuracy"].value)
    assert "patient_threshold" not in ev.metrics.settings
    assert any("one image" in n for n in ev.notes)
    rows = dict(ev.summary_rows())
    assert rows["slice accuracy [p >= 0.5, TTA off]"].split()[0] == rows[
        "patient accuracy [p >= 0.5, TTA off]"].split()[0]
