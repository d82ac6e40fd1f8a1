"""A run started from a pretraining folder keeps its backbone provenance in the report
(issue 16 #6): the GUI trained with a path relative to its working directory, and the
report, made later from elsewhere, said "provenance not recorded"."""

from __future__ import annotations

import json
from pathlib import Path

from vitdesk.config import RunConfig, load_config, save_config
from vitdesk.engine.pretrain import CARD, CARD_FORMAT
from vitdesk.report.from_run import backbone_location, model_card

MAE_TEXT = "MAE, 7 epochs, 120 unlabelled slices (10 patients)"


def _mae_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / CARD).write_text(json.dumps({
        "format": CARD_FORMAT, "model": "vit_test_tiny", "img_size": 64, "epochs": 7,
        "mask_ratio": 0.75, "window_label": "soft_tissue", "loss_per_epoch": [1.0, 0.5],
        "data": {"n_images": 120, "n_patients": 10, "fingerprint": "abc123"}}))
    (folder / "encoder.safetensors").write_bytes(b"")
    return folder


def _run(folder: Path, pretrained: str, source: str) -> Path:
    folder.mkdir(parents=True)
    cfg = RunConfig()
    cfg.model.name = "vit_test_tiny"
    cfg.weights.pretrained = pretrained
    save_config(cfg, folder / "config.toml")
    (folder / "env.json").write_text(json.dumps({"weights": {"source": source}}))
    return folder


def test_resolved_config_records_the_weights_path_absolute(tmp_path, monkeypatch):
    work = tmp_path / "work"
    enc = _mae_folder(work / "pretrain")
    monkeypatch.chdir(work)
    cfg = RunConfig()
    cfg.weights.pretrained = "pretrain"
    resolved = cfg.resolved()
    assert resolved.weights.pretrained == str(enc.resolve())
    assert cfg.weights.pretrained == "pretrain"  # the caller's object is untouched
    for keep in ("hub", "none", "not/there"):
        cfg.weights.pretrained = keep
        assert cfg.resolved().weights.pretrained == keep  # errors stay the user's words
    save_config(resolved, tmp_path / "c.toml")
    monkeypatch.chdir(tmp_path)
    card = model_card(_run(tmp_path / "new_run", str(enc.resolve()),
                           str(enc / "encoder.safetensors")))
    assert card.backbone == MAE_TEXT
    assert load_config(tmp_path / "c.toml").weights.pretrained == str(enc.resolve())


def test_old_run_with_a_relative_weights_path_finds_its_card(tmp_path, monkeypatch):
    # trained from tmp_path/work (the GUI's working directory), run saved under runs/
    work = tmp_path / "work"
    enc = _mae_folder(work / "pretrain")
    run = _run(work / "runs" / "r1", "pretrain", "pretrain/encoder.safetensors")
    monkeypatch.chdir(tmp_path)  # the report is made from somewhere else
    assert backbone_location(run, "pretrain", "pretrain/encoder.safetensors") == str(
        enc.resolve())
    card = model_card(run)
    assert card.backbone == MAE_TEXT and card.weights_source == "local MAE folder 'pretrain'"
    assert "provenance not recorded" not in card.backbone
    # only env.json still names it (the config's path is gone): its folder's card
    run2 = _run(work / "runs" / "r2", "elsewhere/pretrain", str(enc / "encoder.safetensors"))
    assert model_card(run2).backbone == MAE_TEXT
    # a plain weights file with no card stays "not recorded", and hub/none are untouched
    (tmp_path / "w.safetensors").write_bytes(b"")
    run3 = _run(tmp_path / "r3", "w.safetensors", "w.safetensors")
    assert "provenance not recorded" in model_card(run3).backbone
    assert backbone_location(run, "hub", "hub:vit_tiny_patch16_224") == "hub"
    assert backbone_location(run, "none", "none") == "none"
