"""A tiny trained run on a generated sample, shared by the analysis-tab tests.

Import the fixtures into a test module with
``from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401``.
Both are session-scoped: the sample is written and the run trained once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitdesk.config import RunConfig, StageConfig


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """A small synthetic CT sample (6 patients, 6 slices of 48 px) with labels.csv."""
    from vitdesk.imaging.synthetic import generate_sample

    out = tmp_path_factory.mktemp("sample") / "sample"
    generate_sample(out, patients=6, slices=6, size=48, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(sample_dir, tmp_path_factory) -> Path:
    """A vit_test_tiny run (img 32, one epoch) trained on ``sample_dir``."""
    from vitdesk.engine.run import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core machines: one thread is much faster here
    try:
        cfg = RunConfig()
        cfg.model.name = "vit_test_tiny"
        cfg.model.img_size = 32
        cfg.model.drop_path = 0.0
        cfg.model.attention = "eager"
        cfg.weights.pretrained = "none"
        cfg.data.source = str(sample_dir)
        cfg.data.window = "soft_tissue"
        cfg.data.batch_size = 8
        cfg.data.fractions = [0.5, 0.17, 0.33]
        cfg.recipe.kind = "full"
        cfg.recipe.stages = [StageConfig("full", 1, 1e-3, "all", 1.0)]
        cfg.optim.warmup_fraction = 0.0
        cfg.device = "cpu"
        cfg.out = str(tmp_path_factory.mktemp("runs") / "runs" / "tiny")
        return train(cfg)
    finally:
        torch.set_num_threads(before)
