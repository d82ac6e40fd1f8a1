"""Cross-validation statistics, the pooled out-of-fold metrics, and the fold seam
(``data.fold`` in the config -> ``build_datasets(fold=...)``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.pngdata import write_square_pngs
from vitdesk.analysis.cv import CVResult, fold_config, mean_interval, pooled_metrics
from vitdesk.config import RunConfig
from vitdesk.errors import ConfigError


def test_mean_interval_is_the_t_interval_of_the_mean():
    values = [0.80, 0.90, 0.70, 0.85, 0.75]
    s = mean_interval(values)
    sd = float(np.std(values, ddof=1))
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, df 4)
    assert (s.n, s.mean) == (5, pytest.approx(0.80))
    assert s.sd == pytest.approx(sd) and s.sd == pytest.approx(0.0790569, abs=1e-6)
    assert (s.lo, s.hi) == (pytest.approx(0.80 - half), pytest.approx(0.80 + half))
    # an undefined fold (AUC with one class) is left out, not counted as 0
    t = mean_interval([0.6, float("nan"), 0.8, None])
    assert t.n == 2 and t.mean == pytest.approx(0.7)
    assert math.isnan(mean_interval([0.5]).sd) and mean_interval([]).n == 0
    # accuracies near 1: the interval stops at 1
    near = mean_interval([1.0, 1.0, 0.92, 1.0, 1.0], bounds=(0.0, 1.0))
    assert near.hi == 1.0 and near.lo == pytest.approx(0.984 - 2.7764451 * 0.0357771 / 5**0.5)


def _fold(rng: np.random.Generator, n: int, shift: float, cut: float) -> dict:
    """A fold's out-of-fold predictions: 2 slices per patient, labels per patient."""
    per_patient = rng.integers(0, 2, n // 2)
    labels = np.repeat(per_patient, 2)
    p1 = np.clip(0.5 + shift * (labels - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], 1)
    pred = (p1 >= cut).astype(int)
    cm = np.zeros((2, 2), int)
    np.add.at(cm, (labels, pred), 1)
    return {"labels": labels, "probs": probs, "patients": np.repeat(np.arange(n // 2), 2),
            "confusion": {"slice": cm.tolist(), "patient": None},
            "cuts": {"slice": f"p >= {cut}", "patient": ""}}


def test_pooled_metrics_count_each_folds_own_decisions_and_rank_all_probabilities():
    rng = np.random.default_rng(0)
    folds = [_fold(rng, 40, 0.6, 0.5), _fold(rng, 30, 0.3, 0.4), _fold(rng, 30, 0.5, 0.6)]
    out = pooled_metrics(folds, ["normal", "lesion"], patient_score="mean", topk=3,
                         n_boot=50, seed=0)
    labels = np.concatenate([f["labels"] for f in folds])
    p1 = np.concatenate([f["probs"][:, 1] for f in folds])
    assert (out["n_slices"], out["n_patients"]) == (100, 50)  # fold-local indices kept apart
    correct = sum(np.trace(np.asarray(f["confusion"]["slice"])) for f in folds)
    assert out["slice"]["accuracy"] == pytest.approx(correct / 100)
    assert out["slice"]["auc"]["value"] == pytest.approx(roc_auc_score(labels, p1))
    lo, hi = out["slice"]["auc"]["lo"], out["slice"]["auc"]["hi"]
    assert lo <= out["slice"]["auc"]["value"] <= hi < 1
    # patient AUC: each patient's mean slice probability, patients of different folds apart
    pl = labels[::2]
    pp = (p1[::2] + p1[1::2]) / 2
    assert out["patient"]["auc"]["value"] == pytest.approx(roc_auc_score(pl, pp))
    assert out["patient"]["accuracy"] is None  # no fold gave a patient confusion matrix
    assert "p >= 0.4" in out["slice"]["accuracy_cut"]


def test_cv_table_shows_folds_spread_and_pooled():
    folds = [{"fold": i, "n_patients": 4, "n_slices": 8, "cuts": {"slice": "p >= 0.5",
              "patient": f"p >= 0.6{i}2, validation Youden's J"},
              "slice_accuracy": a, "slice_auc": a + 0.1, "patient_accuracy": a,
              "patient_auc": None} for i, a in ((1, 0.75), (2, 0.5), (3, 1.0))]
    r = CVResult(k=3, seed=0, classes=["normal", "lesion"], folds=folds)
    r.summary = {k: mean_interval([f[k] for f in folds])
                 for k in ("slice_accuracy", "slice_auc", "patient_accuracy", "patient_auc")}
    lines = r.table().splitlines()
    assert "slice accuracy [p >= 0.5]" in lines[0] and "[each fold's val. Youden]" in lines[0]
    assert lines[4].startswith("mean +- SD") and "0.750 +- 0.250" in lines[4]
    assert lines[5].startswith("95% CI (t)")
    assert r.to_dict()["summary"]["patient_auc"]["n"] == 0  # undefined: no number made up


def test_fold_config_and_data_fold_validation():
    cfg = RunConfig()
    cfg.out = "cv"
    f = fold_config(cfg, 2, 5)
    assert (f.data.fold, f.out, cfg.data.fold) == ("2/5", "cv/fold-2", "")
    f.validate()
    for bad, needle in (("6/5", "1 <= i <= k"), ("2of5", "is not i/k")):
        c = RunConfig()
        c.data.fold = bad
        with pytest.raises(ConfigError, match=needle):
            c.validate()
    c = RunConfig()
    c.data.fold, c.data.val_source = "1/3", "val"
    with pytest.raises(ConfigError, match="leave out data.val_source"):
        c.validate()


def test_build_datasets_fold_is_that_folds_test_patients(tmp_path):
    from vitdesk.data.build import build_datasets
    from vitdesk.data.sources import load_records
    from vitdesk.data.splits import kfold_patients
    from vitdesk.imaging.windowing import WindowSpec

    data = write_square_pngs(tmp_path / "data", per_class=6)
    kw = {"window": WindowSpec.parse("soft_tissue"), "img_size": 16, "mean": (0.5,) * 3,
          "std": (0.5,) * 3, "seed": 4}
    folds = kfold_patients(load_records(data), 3, seed=4)
    tested = set()
    for i in (1, 2, 3):
        b = build_datasets(data, fold=f"{i}/3", **kw)
        te = {r.patient for r in b.splits["test"]}
        assert te == set(folds[i - 1]) and len(b.test) == 4
        assert not te & {r.patient for r in b.splits["train"] + b.splits["val"]}
        tested |= te
    assert len(tested) == 12
