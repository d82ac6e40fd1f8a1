"""Helpers shared by the evaluation/report/CLI tests: a tiny synthetic sample and run."""

from __future__ import annotations

from pathlib import Path

FRACTIONS = [0.5, 0.17, 0.33]  # 6 patients -> 3 train, 1 val, 2 test


def tiny_sample(folder: Path, patients: int = 6, seed: int = 0) -> Path:
    from vitdesk.imaging.synthetic import generate_sample

    return generate_sample(folder, patients=patients, slices=6, size=48, seed=seed).out_dir


def tiny_run(data: Path, out: Path, epochs: int = 2, model: str = "vit_test_tiny"):
    """Train ``model`` (vit_test_tiny, or cnn_test_tiny: a one-block-per-stage timm
    ResNet) at 32 px on ``data``; return the run folder. Every run of the same ``data``
    gets the same split."""
    from vitdesk.config import RunConfig, StageConfig
    from vitdesk.engine.run import train

    cfg = RunConfig()
    cfg.model.name, cfg.model.img_size = model, 32
    cfg.weights.pretrained = "none"
    cfg.data.source, cfg.data.fractions, cfg.data.batch_size = str(data), FRACTIONS, 8
    cfg.data.balance = "loss"
    cfg.recipe.kind = "full"
    cfg.recipe.stages = [StageConfig("full", epochs, 2e-3, "all", 1.0)]
    cfg.device, cfg.out = "cpu", str(out)
    return train(cfg)

def tiny_cnn_run(data: Path, out: Path, epochs: int = 2):
    return tiny_run(data, out, epochs, model="cnn_test_tiny")
