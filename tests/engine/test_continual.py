"""Continual fine-tuning: rehearsal buffer, EWC, the parent rules and the CLI refusals."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from tests.engine._synth import CLASSES, squares, tiny_cfg
from vitdesk.engine.continual import (
    FISHER_FILE,
    REHEARSAL_FILE,
    EWCPenalty,
    RehearsalBuffer,
    RehearsalHook,
    build_rehearsal,
    fisher_diagonal,
    load_fisher,
    select_rehearsal,
)
from vitdesk.engine.plan import check_continual_adapt, inherit_parent, plan_run
from vitdesk.engine.run import TrainData, train
from vitdesk.engine.trainer import StepContext, Trainer
from vitdesk.errors import ConfigError


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished tiny run on the squares task (its training data: squares(64, 0))."""
    torch.set_num_threads(1)
    cfg = tiny_cfg(tmp_path_factory.mktemp("runs") / "parent", epochs=2)
    return train(cfg, data=TrainData(squares(64, 0), squares(32, 1), list(CLASSES)))


# ---- rehearsal buffer ---------------------------------------------------------------
def test_selection_is_exact_balanced_and_seeded():
    targets = [0] * 30 + [1] * 10 + [-1] * 5
    pick = select_rehearsal(targets, 8, seed=3)
    assert len(pick) == 8 and len(set(pick)) == 8
    assert sorted(np.bincount([targets[i] for i in pick])) == [4, 4]
    # the minority runs out: the rest comes from the other class, still exactly N
    many = select_rehearsal(targets, 30, seed=3)
    counts = np.bincount([targets[i] for i in many])
    assert len(many) == 30 and counts.tolist() == [20, 10]
    assert all(targets[i] >= 0 for i in select_rehearsal(targets, 100, seed=0))
    assert len(select_rehearsal(targets, 100, seed=0)) == 40  # every labelled one, no more
    assert select_rehearsal(targets, 8, seed=3) == pick
    assert select_rehearsal(targets, 8, seed=4) != pick


def test_buffer_holds_arrays_and_labels_only(tmp_path):
    ds = squares(20, 0)
    targets = ds.tensors[1].tolist()
    buf = build_rehearsal(ds, targets, 6, seed=1, classes=CLASSES)
    assert buf.x.shape == (6, 3, 32, 32) and buf.x.dtype == np.float16
    idx = select_rehearsal(targets, 6, seed=1)
    np.testing.assert_allclose(buf.x.astype(np.float32), ds.tensors[0][idx].numpy(),
                               atol=2e-3)  # float16 rounding
    assert buf.y.tolist() == [targets[i] for i in idx]
    assert np.bincount(buf.y).tolist() == [3, 3]
    buf.save(tmp_path, seed=1)
    with np.load(tmp_path / REHEARSAL_FILE, allow_pickle=False) as z:
        assert set(z.files) == {"x", "y", "classes", "seed"}
        strings = [str(s) for s in z["classes"]]
    assert strings == CLASSES and not any("/" in s or "\\" in s for s in strings)
    back = RehearsalBuffer.load(tmp_path)
    assert back.y.tolist() == buf.y.tolist() and back.classes == CLASSES
    readme = (tmp_path / "README.txt").read_text()
    assert "PIXEL DATA" in readme and "6 preprocessed" in readme


def test_rehearsal_hook_draws_half_batches_deterministically():
    buf = build_rehearsal(squares(20, 0), squares(20, 0).tensors[1].tolist(), 10, 0, CLASSES)
    hook = RehearsalHook(buf, per_batch=4, seed=7)
    x, y = hook.extra_batch(5)
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    x2, y2 = RehearsalHook(buf, per_batch=4, seed=7).extra_batch(5)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(hook.extra_batch(6)[0], x)


def test_trainer_appends_hook_rows_to_every_batch(tmp_path):
    seen = []

    class Spy(RehearsalHook):
        def loss(self, ctx: StepContext):
            seen.append((int(ctx.x.shape[0]), ctx.target[-3:].tolist()))
            return None

    buf = RehearsalBuffer(np.zeros((3, 3, 32, 32), np.float16), np.array([1, 1, 1]), CLASSES)
    cfg = tiny_cfg(tmp_path / "r", epochs=1, batch=8)
    t = Trainer(cfg, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 2)),
                squares(16, 0), None, CLASSES, torch.device("cpu"), None,
                hooks=[Spy(buf, per_batch=3, seed=0)])
    t.fit()
    assert seen == [(11, [1, 1, 1]), (11, [1, 1, 1])]  # 8 new + 3 replayed, twice


# ---- EWC --------------------------------------------------------------------------------
def test_ewc_penalty_zero_at_old_weights_positive_away_with_its_gradient():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    fisher = {k: torch.rand_like(v) + 0.1 for k, v in old.items()}
    ewc = EWCPenalty(fisher, old, lam=10.0)
    assert ewc.penalty(model).item() == 0.0
    with torch.no_grad():
        model.weight += 0.5
    pen = ewc.penalty(model)
    expected = 0.5 * 10.0 * (fisher["weight"] * 0.25).sum()
    torch.testing.assert_close(pen, expected)
    assert pen.item() > 0
    pen.backward()
    torch.testing.assert_close(model.weight.grad, 10.0 * fisher["weight"] * 0.5)
    torch.testing.assert_close(model.bias.grad, torch.zeros(2))


def test_fisher_is_the_mean_of_per_slice_squared_gradients():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    ds = TensorDataset(torch.randn(5, 3, 2, 2), torch.tensor([0, 1, 1, 0, -1]))
    fisher = fisher_diagonal(model, ds, range(5), torch.device("cpu"))
    manual = torch.zeros(2, 12)
    for i in range(4):  # the unlabelled fifth is skipped
        model.zero_grad()
        x, y = ds[i]
        F.cross_entropy(model(x[None]), y[None]).backward()
        manual += model[1].weight.grad ** 2
    torch.testing.assert_close(fisher["1.weight"], manual / 4)
    assert all((v >= 0).all() for v in fisher.values())


# ---- the continued run ----------------------------------------------------------------
def test_continue_with_rehearsal_and_ewc(parent, tmp_path):
    cfg = tiny_cfg(parent.parent / "child", epochs=1)
    cfg.continual.continue_from = str(parent)
    cfg.continual.rehearsal = 12
    cfg.continual.ewc = 50.0
    child = train(cfg, data=TrainData(squares(32, 5), squares(16, 6), list(CLASSES)),
                  earlier=squares(64, 0))
    saved = tomllib.loads((child / "config.toml").read_text())
    assert saved["continual"]["continue_from"] == "parent"  # the folder name, no path
    assert len(RehearsalBuffer.load(parent)) == 12
    fisher = load_fisher(parent)
    assert (parent / FISHER_FILE).is_file() and any(float(v.sum()) > 0 for v in fisher.values())
    metrics = json.loads((child / "metrics.json").read_text())
    assert metrics["continual"]["run"] == "parent"
    assert metrics["continual"]["rehearsal_slices"] == 12
    assert str(parent.parent) not in (child / "metrics.json").read_text()
    # a second continuation reuses the parent's files (no training data given this time)
    cfg2 = tiny_cfg(parent.parent / "child2", epochs=1)
    cfg2.continual.continue_from = str(parent)
    cfg2.continual.rehearsal, cfg2.continual.ewc = 12, 50.0
    train(cfg2, data=TrainData(squares(32, 5), None, list(CLASSES)))


def test_continue_starts_from_the_parent_weights(parent, tmp_path):
    from vitdesk.engine.run import load_run

    cfg = tiny_cfg(tmp_path / "zero", epochs=1, lr=1e-12)
    cfg.continual.continue_from = str(parent)
    child = train(cfg, data=TrainData(squares(16, 5), None, list(CLASSES)))
    a, b = load_run(parent).model.state_dict(), load_run(child).model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_parent_rules(parent, tmp_path):
    cfg = tiny_cfg(tmp_path / "r")
    cfg.continual.rehearsal = 5
    with pytest.raises(ConfigError, match="continual.rehearsal needs a parent"):
        plan_run(cfg)
    cfg.continual.rehearsal, cfg.continual.ewc = 0, -1.0
    with pytest.raises(ConfigError, match="continual.ewc=-1"):
        check_continual_adapt(cfg)
    cfg.continual.ewc = 0.0
    cfg.continual.continue_from = str(parent)
    cfg.model.img_size = 48
    with pytest.raises(ConfigError, match="model.img_size=48 but the parent run 'parent'"):
        plan_run(cfg)
    # a flag left out takes the parent's value; one given differently is refused
    asked = tiny_cfg(tmp_path / "r")
    asked.model.name, asked.model.img_size = "auto", 224
    got = inherit_parent(asked, parent, explicit=set())
    assert (got.model.name, got.model.img_size) == ("vit_test_tiny", 32)
    with pytest.raises(ConfigError, match="model.img_size=224"):
        inherit_parent(asked, parent, explicit={"model.img_size"})
    asked.weights.pretrained = "hub"
    with pytest.raises(ConfigError, match="weights.pretrained"):
        inherit_parent(asked, parent, explicit={"weights.pretrained"})
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "config.toml").write_text((parent / "config.toml").read_text())
    cfg.model.img_size = 32
    cfg.continual.continue_from = str(unfinished)
    with pytest.raises(ConfigError, match="has not finished training"):
        plan_run(cfg)


def test_other_classes_are_refused(parent, tmp_path):
    cfg = tiny_cfg(tmp_path / "c", epochs=1)
    cfg.continual.continue_from = str(parent)
    with pytest.raises(ConfigError, match="knows classes"):
        train(cfg, data=TrainData(squares(16, 5), None, ["a", "b"]))
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_cli_refusals(parent, tmp_path, capsys):
    from vitdesk.cli import main

    cases = [
        (["--rehearsal", "5"], "continual.rehearsal needs a parent"),
        (["--earlier", str(tmp_path)], "--earlier"),
        (["--continue", str(tmp_path / "nope")], "not found"),
        (["--continue", str(parent), "--img-size", "64"], "model.img_size=64"),
        (["--continue", str(parent), "--rehearsal", "-2"], "continual.rehearsal=-2"),
    ]
    for extra, words in cases:
        code = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--device", "cpu", "--model", "vit_test_tiny", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2, (extra, err)
        assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_forgetting_on_the_parents_test_split(tmp_path, capsys):
    """Real DICOM: parent on scanner A, child on B; evaluate --earlier scores both models
    on A's test split, and a run without a parent is refused in one line."""
    from vitdesk.analysis.forgetting import forgetting
    from vitdesk.cli import main
    from vitdesk.engine.run import load_run
    from vitdesk.imaging.synthetic import generate_sample

    a, b = tmp_path / "A", tmp_path / "B"
    generate_sample(a, patients=8, slices=4, size=32, seed=1, scanner="A")
    generate_sample(b, patients=8, slices=4, size=32, seed=2, scanner="B")
    runs = tmp_path / "runs"
    cfg = tiny_cfg(runs / "pa", epochs=1)
    cfg.data.source = str(a)
    parent = train(cfg)
    cfg = tiny_cfg(runs / "ch", epochs=1)
    cfg.data.source = str(b)
    cfg.continual.continue_from = str(parent)
    cfg.continual.rehearsal = 6
    child = train(cfg)  # the parent's data is found through its recorded source
    assert len(RehearsalBuffer.load(parent)) == 6
    f = forgetting(load_run(child), str(a), n_boot=200)
    test = json.loads((parent / "split.json").read_text())["splits"]["test"]
    assert f["n_slices"] == len(test) > 0 and f["parent"] == "pa"
    assert f["forgetting"] == pytest.approx(f["parent_acc"] - f["run_acc"])
    lo, hi = f["forgetting_ci"]
    assert lo <= f["forgetting"] <= hi
    assert main(["evaluate", str(parent), "--data", str(a), "--earlier", str(a),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no parent run" in err and len(err.splitlines()) == 1


def test_a_cancelled_continued_run_resumes_to_the_same_history(parent, tmp_path):
    """Rehearsal draws by batch index and EWC's anchor is the parent: a cut run resumed
    reproduces the uninterrupted one."""
    from vitdesk.engine.events import StepDone
    from vitdesk.errors import Cancelled
    from vitdesk.jobs import CancelToken

    def cfg_at(name):
        cfg = tiny_cfg(tmp_path / name, epochs=2, batch=8)
        cfg.continual.continue_from = str(parent)
        cfg.continual.rehearsal, cfg.continual.ewc = 8, 10.0
        cfg.log_every = 1
        return cfg

    def history(run):
        return [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]

    new = TrainData(squares(24, 5), squares(8, 6), list(CLASSES))
    full = train(cfg_at("full"), data=new, earlier=squares(64, 0))
    token = CancelToken()

    def stop(ev):
        if isinstance(ev, StepDone) and ev.global_step == 4:
            token.cancel()

    with pytest.raises(Cancelled):
        train(cfg_at("cut"), token, [stop], data=new, earlier=squares(64, 0))
    cut = train(cfg_at("cut"), data=new, resume=True)
    a, b = history(full), history(cut)
    assert [h["step"] for h in a] == [h["step"] for h in b] == [3, 6]
    for x, y in zip(a, b, strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)
