"""Run folders that always go on: dead ends restart, a corrupt best falls back to last,
a full disk keeps the last good checkpoint, resume compares the command with config.toml."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from tests.engine._synth import data, tiny_cfg
from vitdesk.config import RunConfig, epochs_match, resume_differences
from vitdesk.engine import checkpoint as ckpt
from vitdesk.engine.run import Trainer, load_run, train
from vitdesk.errors import CheckpointError, ConfigError, DiskFullError
from vitdesk.jobs import Notice


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _dead_end(out: Path, monkeypatch) -> None:
    """A run killed before its first checkpoint: config.toml, split.json, env.json only."""
    def killed(self):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "fit", killed)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_cfg(out, epochs=1), data=data(32, 8))
    assert (out / "config.toml").is_file() and (out / "split.json").is_file()
    assert not ckpt.checkpoint_exists(out / "checkpoints", "last")


@pytest.mark.parametrize("resume", [False, True])
def test_a_folder_without_a_checkpoint_is_restarted_in_place(tmp_path, monkeypatch, resume):
    out = tmp_path / "run"
    _dead_end(out, monkeypatch)
    (out / "history.jsonl").write_text('{"stage": 0, "epoch": 0, "step": 99}\n')  # stale
    events = []
    assert train(tiny_cfg(out, epochs=2), data=data(32, 8), listeners=[events.append],
                 resume=resume) == out
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert any("holds no checkpoint" in n and "starting it again" in n for n in notes), notes
    assert any("nothing to resume" in n for n in notes) == resume
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [0, 1]  # the stale line is gone
    assert ckpt.load_checkpoint(out / "checkpoints", "last").meta["global_step"] == 4
    assert json.loads((out / "metrics.json").read_text())["finished"] is True


def test_a_dead_end_holding_a_user_file_is_still_refused(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _dead_end(out, monkeypatch)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        train(tiny_cfg(out, epochs=1), data=data(32, 8))
    assert (out / "notes.txt").read_text() == "mine"


@pytest.fixture
def trained(tmp_path):
    """One epoch, then a second: best and last are different checkpoints."""
    cfg = tiny_cfg(tmp_path / "run", epochs=2)
    cfg.patience = 0
    return train(cfg, data=data(32, 8))


def _weights_file(run: Path, kind: str) -> Path:
    meta = json.loads((run / "checkpoints" / f"{kind}.json").read_text())
    return run / "checkpoints" / meta["weights"]


def test_a_corrupt_best_falls_back_to_last_with_a_notice(trained):
    last = ckpt.load_checkpoint(trained / "checkpoints", "last", with_state=False)
    _weights_file(trained, "best").write_bytes(b"truncated")
    events = []
    loaded = load_run(trained, listener=events.append)
    notes = [e.message for e in events if isinstance(e, Notice)]
    assert len(notes) == 1 and "best checkpoint" in notes[0] and "using the last" in notes[0]
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, last.weights[k]), k
    # with no listener it is a warning, not silence
    with pytest.warns(UserWarning, match="using the last"):
        load_run(trained)
    # both corrupt: one line naming both
    (trained / "checkpoints" / "last.json").write_text("{ half")
    with pytest.raises(CheckpointError) as info:
        load_run(trained, listener=events.append)
    msg = str(info.value)
    assert "best:" in msg and "last:" in msg and "\n" not in msg


def _enospc_on_call(n: int):
    """torch.save that fills the disk on its ``n``-th call: half a file, then ENOSPC."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] < n:
            return real(obj, f, *a, **kw)
        Path(f).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device", str(f))
    return save


def test_a_full_disk_mid_training_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    # 32 samples, batch 16: one last checkpoint per epoch (no 30 s spacing between them);
    # the 2nd state file finds no room
    monkeypatch.setattr("vitdesk.engine.trainer.LAST_CHECKPOINT_S", 0.0)
    monkeypatch.setattr(torch, "save", _enospc_on_call(2))
    out = tmp_path / "run"
    with pytest.raises(DiskFullError) as info:
        train(tiny_cfg(out, epochs=3), data=data(32, 8))
    msg = str(info.value)
    assert "disk full writing" in msg and "last-00000004.state.pt" in msg and "needs about" in msg
    ck = out / "checkpoints"
    names = _files(ck)
    # no temp file, no orphan of the failed checkpoint (best of step 4 was complete)
    assert not [n for n in names if n.endswith(".tmp") or n.startswith("last-00000004")], names
    good = ckpt.load_checkpoint(ck, "last")  # the epoch-1 checkpoint, complete
    assert good.meta["global_step"] == 2 and good.state["optimizer"] is not None
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    # and the run goes on from it once there is room
    assert train(tiny_cfg(out, epochs=3), data=data(32, 8), resume=True) == out
    assert ckpt.load_checkpoint(ck, "last").meta["global_step"] == 6


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MB tmpfs (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_disk_with_safetensors_and_torch_save(small_tmpfs):
    """The real writers' errors (SafetensorError text, torch's stream RuntimeError)."""
    folder = small_tmpfs / "checkpoints"
    small = {"w": torch.zeros(1000)}
    ckpt.save_checkpoint(folder, "last", small, {"global_step": 1}, {"s": torch.zeros(10)})
    before = {n: (folder / n).read_bytes() for n in _files(folder)}
    big = {"w": torch.zeros(1_000_000)}  # 4 MB: does not fit
    with pytest.raises(DiskFullError, match="last-00000002.safetensors.*needs about 4.1 MB"):
        ckpt.save_checkpoint(folder, "last", big, {"global_step": 2}, {"s": torch.zeros(10)})
    assert {n: (folder / n).read_bytes() for n in _files(folder)} == before
    with pytest.raises(DiskFullError, match="last-00000002.state.pt"):
        ckpt.save_checkpoint(folder, "last", small, {"global_step": 2}, {"s": big["w"]})
    assert {n: (folder / n).read_bytes() for n in _files(folder)} == before
    assert ckpt.load_checkpoint(folder, "last").meta["global_step"] == 1


# ---- resume: the command against config.toml ----------------------------------------------
def test_epochs_match_per_stage_or_as_the_total():
    cfg = RunConfig()
    cfg.switch_to_full(3)  # what --pretrained none --epochs 1,1,1 trains
    stages = cfg.stage_plan()
    assert epochs_match(stages, "1,1,1") and epochs_match(stages, "3")
    assert not epochs_match(stages, "2,2,2") and not epochs_match(stages, "x")
    staged = RunConfig().stage_plan()
    for s in staged:
        s.epochs = 2
    assert epochs_match(staged, "2") and epochs_match(staged, "2,2,2")
    assert epochs_match(staged, "6")  # the total
    assert not epochs_match(staged, "1,2,2")


def test_resume_differences_name_the_field_and_both_values():
    stored, asked = RunConfig().resolved(), RunConfig().resolved()
    asked.seed, asked.model.img_size, asked.device = 5, 64, "cpu"
    diffs = resume_differences(stored, asked, {"seed", "model.img_size", "device"})
    assert diffs == ["model.img_size is 224 in the run but 64 here",
                     "seed is 0 in the run but 5 here"]  # device may change
    assert resume_differences(stored, asked, {"data.window"}) == []  # not asked: not compared
    asked = RunConfig().resolved()
    asked.recipe.stages[1].lr = 1e-2
    (diff,) = resume_differences(stored, asked, None)
    assert diff.startswith("recipe.stages is [head (head, lr 0.001), top (top:4, lr 0.0003)")
    assert "top (top:4, lr 0.01)" in diff
