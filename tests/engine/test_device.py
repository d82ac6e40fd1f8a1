"""One device/precision rule and one history writer for fine-tuning and pretraining."""

from __future__ import annotations

import json

import pytest
import torch

from vitdesk.engine import device as dev
from vitdesk.engine.history import HistoryWriter, read_history
from vitdesk.errors import ConfigError

CPU = torch.device("cpu")


@pytest.mark.parametrize("mode,want", [("off", None), ("auto", None), ("fp16", torch.float16),
                                       ("bf16", torch.bfloat16)])
def test_amp_rule_on_cpu(mode, want):
    assert dev.amp_dtype(mode, CPU) is want
    assert dev.amp_name(want) == {"auto": "off"}.get(mode, mode)
    # loss scaling only where fp16 gradients can underflow: a GPU
    assert not dev.grad_scaler(want, CPU).is_enabled()


def test_cuda_without_gpu_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--device cpu or auto"):
        dev.resolve_device("cuda")
    assert dev.resolve_device("auto") == CPU


def test_torchrun_rank_takes_its_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert dev.resolve_device("auto") == torch.device("cuda", 1)


def test_both_loops_use_the_one_rule():
    import vitdesk.engine.pretrain as pretrain
    import vitdesk.engine.run as run
    import vitdesk.engine.trainer as trainer

    # no private copies left (the pretraining loop once read "fp16" as bf16 or fp32)
    for mod in (pretrain, run, trainer):
        assert not any(hasattr(mod, n) for n in ("_amp_dtype", "_resolve_device", "_versions",
                                                 "_truncate_history", "_append_history"))
    assert pretrain.amp_dtype is trainer.amp_dtype is dev.amp_dtype
    assert pretrain.resolve_device is run.resolve_device is dev.resolve_device


def test_pretraining_accepts_every_fine_tuning_precision(tmp_path):
    from vitdesk.config import AMP_MODES
    from vitdesk.engine.pretrain_config import PretrainConfig

    for mode in AMP_MODES:
        PretrainConfig(data=str(tmp_path), amp=mode, out=str(tmp_path / "o")).validate()
    with pytest.raises(ConfigError, match="amp"):
        PretrainConfig(data=str(tmp_path), amp="fp8", out=str(tmp_path / "o")).validate()


def test_history_writer_appends_truncates_and_survives_a_torn_line(tmp_path):
    path = tmp_path / "history.jsonl"
    w = HistoryWriter(path)
    for step in (3, 6, 9):
        w.append({"epoch": step // 3 - 1, "step": step, "loss": 1.0 / step})
    assert [r["step"] for r in read_history(tmp_path)] == [3, 6, 9]
    # a resumed run reopens it, with a torn last line from a kill mid-write
    with path.open("a") as fh:
        fh.write('{"epoch": 3, "st')
    w2 = HistoryWriter(path)
    w2.truncate(6)  # the checkpoint resumed from is at step 6
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [3, 6]
    w2.append({"epoch": 2, "step": 9, "loss": 0.1})
    assert [r["step"] for r in read_history(tmp_path)] == [3, 6, 9]
    assert not list(tmp_path.glob("*.tmp*"))
