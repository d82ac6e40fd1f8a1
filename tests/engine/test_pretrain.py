"""MAE pretraining end to end on the synthetic CT sample: loss, outputs, loading, resume."""

from __future__ import annotations

import json

import pydicom
import pytest
import torch
from safetensors.torch import load_file

from vitdesk.cli import main
from vitdesk.engine.events import StepDone
from vitdesk.engine.pretrain import (
    PretrainConfig,
    PretrainEpochEnded,
    pretrain,
    read_card,
    saved_config,
)
from vitdesk.engine.weights import build_model
from vitdesk.errors import Cancelled, CheckpointError, ConfigError
from vitdesk.imaging.synthetic import generate_sample
from vitdesk.jobs import CancelToken


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """12 unlabelled-for-our-purposes CT slices (3 patients x 4 slices, 64 px)."""
    out = tmp_path_factory.mktemp("mae") / "sample"
    generate_sample(out, patients=3, slices=4, size=64, seed=3)
    return out


def _cfg(sample, out, **kw) -> PretrainConfig:
    base = dict(data=str(sample), model="vit_test_tiny", img_size=32, window="lung",
                epochs=10, batch_size=4, base_lr=0.2, warmup_epochs=1.0, decoder_dim=32,
                decoder_depth=1, decoder_heads=4, attention="eager", augment=False, device="cpu",
                out=str(out))
    base.update(kw)
    return PretrainConfig(**base)


@pytest.fixture(scope="module")
def pretrained(sample, tmp_path_factory):
    """One finished pretraining (10 epochs x 3 steps) shared by the tests below."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mae") / "enc"
    events: list = []
    pretrain(_cfg(sample, out), listeners=[events.append])
    return out, events


def test_reconstruction_loss_falls(pretrained):
    out, events = pretrained
    card = read_card(out)
    losses = card["loss_per_epoch"]
    assert len(losses) == 10
    # Predicting each hidden patch's own mean scores ~1.0 with per-patch normalised
    # targets; an MAE that learned the anatomy does clearly better.
    assert losses[0] > 1.0
    assert min(losses[-3:]) < 0.88
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0]
    epochs = [e for e in events if isinstance(e, PretrainEpochEnded)]
    assert [e.loss for e in epochs] == pytest.approx(losses, abs=1e-6)
    assert epochs[-1].global_step == 30


def test_outputs_card_history_and_no_phi(pretrained, sample):
    out, _ = pretrained
    card = json.loads((out / "card.json").read_text())
    assert card["model"] == "vit_test_tiny" and card["img_size"] == 32
    assert card["patch_size"] == 8 and card["mask_ratio"] == 0.75 and card["epochs"] == 10
    assert card["window"]["names"] == ["lung"] and card["window"]["windows"] == [[1500.0, -600.0]]
    assert card["data"]["n_images"] == 12 and card["data"]["n_patients"] == 3
    assert len(card["data"]["fingerprint"]) == 16
    assert card["seconds"] > 0 and card["software"]["torch"] == torch.__version__
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(10))
    assert [h["loss"] for h in history] == pytest.approx(card["loss_per_epoch"], abs=1e-6)
    assert (out / "checkpoints" / "last.json").is_file()
    # nothing written may carry patient data or the (possibly identifying) data path
    ds = pydicom.dcmread(next(sample.rglob("*.dcm")), stop_before_pixels=True)
    phi = [str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate),
           str(ds.AccessionNumber), str(sample)]
    for f in out.rglob("*"):
        if f.suffix in (".json", ".jsonl"):
            text = f.read_text()
            assert not any(p and p in text for p in phi), f


def test_encoder_loads_into_a_finetuning_model(pretrained):
    out, _ = pretrained
    enc = load_file(str(out / "encoder.safetensors"))
    # the folder itself, a new class count: same keys, head re-initialised
    model, report = build_model("vit_test_tiny", 3, 32, pretrained=str(out))
    assert report.head_reset and not report.unexpected
    assert set(report.missing) == set()  # the head is reported by head_reset, not as missing
    sd = model.state_dict()
    assert set(sd) - set(enc) == {"head.weight", "head.bias"}
    assert all(torch.equal(sd[k], enc[k]) for k in enc)
    assert sd["head.weight"].shape == (3, 64)
    # the file directly, another image size: position embeddings resized
    file = str(out / "encoder.safetensors")
    model48, report48 = build_model("vit_test_tiny", 2, 48, pretrained=file)
    assert report48.resized_pos_embed and report48.head_reset
    sd48 = model48.state_dict()
    assert sd48["pos_embed"].shape == (1, 1 + 36, 64)
    assert torch.equal(sd48["pos_embed"][:, 0], enc["pos_embed"][:, 0])  # cls kept
    assert torch.equal(sd48["blocks.1.mlp.fc2.weight"], enc["blocks.1.mlp.fc2.weight"])
    # and it classifies
    with torch.no_grad():
        assert model48.eval()(torch.zeros(1, 3, 48, 48)).shape == (1, 2)


def test_cancel_then_resume_ends_where_an_uninterrupted_run_ends(sample, tmp_path):
    kw = dict(epochs=3, augment=True, log_every=1)
    ref = pretrain(_cfg(sample, tmp_path / "ref", **kw))
    token = CancelToken()

    def stop_at_step_4(ev):
        if isinstance(ev, StepDone) and ev.global_step == 4:  # mid epoch 2 (3 steps/epoch)
            token.cancel()

    part = tmp_path / "part"
    with pytest.raises(Cancelled):
        pretrain(_cfg(sample, part, **kw), token, [stop_at_step_4])
    meta = json.loads((part / "checkpoints" / "last.json").read_text())
    assert meta["global_step"] == 4 and meta["pretrain_state"]["batch"] == 1
    assert not (part / "encoder.safetensors").exists() and not (part / "card.json").exists()
    # an unfinished pretraining is no backbone: fine-tuning refuses it
    with pytest.raises(CheckpointError, match="did not finish"):
        build_model("vit_test_tiny", 2, 32, str(part))
    # the folder is refused without --resume, accepted with it
    with pytest.raises(ConfigError, match="not empty"):
        pretrain(_cfg(sample, part, **kw))
    pretrain(_cfg(sample, part, resume=True, **kw))
    a = load_file(str(ref / "encoder.safetensors"))
    b = load_file(str(part / "encoder.safetensors"))
    assert set(a) == set(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ca, cb = read_card(ref), read_card(part)
    assert cb["loss_per_epoch"] == pytest.approx(ca["loss_per_epoch"], abs=1e-5)
    assert len((part / "history.jsonl").read_text().splitlines()) == 3


def test_resume_refuses_changed_settings_and_finished_runs(pretrained, sample, tmp_path):
    out, _ = pretrained
    with pytest.raises(CheckpointError, match="mask_ratio"):
        pretrain(_cfg(sample, out, resume=True, mask_ratio=0.5, epochs=12))
    with pytest.raises(ConfigError, match="already finished 10"):
        pretrain(_cfg(sample, out, resume=True))
    with pytest.raises(CheckpointError, match="no checkpoints/last.json"):
        pretrain(_cfg(sample, tmp_path / "new", resume=True))
    saved = saved_config(out)
    assert saved.mask_ratio == 0.75 and saved.decoder_dim == 32 and saved.data == ""


def test_cli_pretrain_writes_and_refuses_a_used_folder(sample, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["pretrain", "--data", str(sample), "--model", "vit_test_tiny", "--img-size", "32",
            "--epochs", "1", "--batch-size", "12", "--window", "lung", "--device", "cpu",
            "--out", str(out)]
    assert main(args) == 0
    assert (out / "encoder.safetensors").is_file() and read_card(out)["epochs"] == 1
    captured = capsys.readouterr()
    assert str(out) in captured.out and "pretrain epoch 1/1" in captured.err
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--resume" in err[0]
    # --resume with more epochs continues from the saved settings
    more = [a if i != args.index("--epochs") + 1 else "2" for i, a in enumerate(args)]
    assert main([*more, "--resume"]) == 0
    assert read_card(out)["epochs"] == 2
    assert main(["pretrain", "--data", str(sample), "--model", "vit_test_tiny", "--img-size",
                 "30", "--out", str(tmp_path / "bad")]) == 2
    assert "divisible" in capsys.readouterr().err


def test_finetuning_warns_when_the_backbone_window_differs(pretrained):
    from vitdesk.config import RunConfig
    from vitdesk.engine.run import _check_backbone_card
    from vitdesk.jobs import Notice

    out, _ = pretrained
    cfg = RunConfig()
    cfg.weights.pretrained = str(out)
    cfg.model.img_size = 32
    seen: list = []
    cfg.data.window = "lung"
    _check_backbone_card(cfg, [seen.append])
    assert seen == []  # same window and size: silent
    cfg.data.window = "soft_tissue"
    cfg.model.img_size = 48
    _check_backbone_card(cfg, [seen.append])
    texts = [e.message for e in seen if isinstance(e, Notice)]
    assert any("--window lung" in t for t in texts)
    assert any("32 px" in t for t in texts)
