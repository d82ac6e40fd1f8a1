"""model.pool: class token or mean of patch tokens, decided by the weights source."""

from __future__ import annotations

import json
import tomllib

import pytest

from tests.engine._synth import data, tiny_cfg
from vitdesk.engine.models import create_model
from vitdesk.engine.run import load_run, resolve_pool, train
from vitdesk.errors import ConfigError


def test_create_model_pools_as_asked():
    avg = create_model("vit_test_tiny", 2, 32, pool="avg")
    tok = create_model("vit_test_tiny", 2, 32, pool="token")
    assert avg.global_pool == "avg" and tok.global_pool == "token"
    assert "fc_norm.weight" in avg.state_dict() and "norm.weight" in tok.state_dict()
    # the distilled model reads its two tokens whatever is asked
    assert create_model("vit_test_tiny_distilled", 2, 32, pool="avg").global_pool == "token"


def test_auto_pool_follows_the_weights_source(tmp_path):
    cfg = tiny_cfg(tmp_path / "r")
    assert resolve_pool(cfg) == "avg"  # random init
    cfg.weights.pretrained = "hub"
    assert resolve_pool(cfg) == "token"
    mae = tmp_path / "mae"
    mae.mkdir()
    (mae / "card.json").write_text(json.dumps({"format": "vitdesk-mae-card-1"}))
    cfg.weights.pretrained = str(mae)
    assert resolve_pool(cfg) == "avg"
    cfg.weights.pretrained = str(mae / "encoder.safetensors")
    assert resolve_pool(cfg) == "avg"
    cfg.model.pool = "token"
    assert resolve_pool(cfg) == "token"  # an explicit choice wins
    cfg.model.pool, cfg.model.name = "auto", "vit_test_tiny_distilled"
    assert resolve_pool(cfg) == "token"
    cfg.model.name = "cnn_test_tiny"
    assert resolve_pool(cfg) == "auto"


def test_run_records_its_pool_and_is_rebuilt_with_it(tmp_path):
    run = train(tiny_cfg(tmp_path / "a", epochs=1), data=data(16, 8))
    assert tomllib.loads((run / "config.toml").read_text())["model"]["pool"] == "avg"
    assert load_run(run).model.global_pool == "avg"
    # a run used as weights passes its pool on
    cfg = tiny_cfg(tmp_path / "b", epochs=1)
    cfg.weights.pretrained = str(run)
    assert resolve_pool(cfg) == "avg"


def test_bad_pool_is_refused(tmp_path):
    cfg = tiny_cfg(tmp_path / "r")
    cfg.model.pool = "max"
    with pytest.raises(ConfigError, match="model.pool"):
        cfg.validate()

