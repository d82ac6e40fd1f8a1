"""Safe weight loading: refused pickles, formats, run-to-run transfer, bad inputs."""

from __future__ import annotations

import pickle

import pytest
import torch

from tests.engine._synth import data, tiny_cfg
from vitdesk.engine.models import create_model
from vitdesk.engine.run import train
from vitdesk.engine.weights import build_model, read_state_dict, resolve_weights_path
from vitdesk.errors import CheckpointError, ConfigError, ModelError


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: the attack a weights file could carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt"])
def test_pickle_with_code_payload_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    bad = tmp_path / f"weights{suffix}"
    good = {"pos_embed": torch.zeros(1, 17, 64)}
    with bad.open("wb") as fh:
        pickle.dump({"state_dict": good, "x": _Payload(str(marker))}, fh, protocol=2)
    # sanity: the payload is real (a plain pickle.load would run it)
    with bad.open("rb") as fh:
        pickle.load(fh)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="refused"):
        read_state_dict(bad)
    with pytest.raises(CheckpointError, match="refused"):
        build_model("vit_test_tiny", 2, 32, pretrained=str(bad))
    assert not marker.exists()


def test_torch_and_safetensors_files_load_with_prefixes_and_head_reset(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = create_model("vit_test_tiny", num_classes=5, img_size=32)
    sd = src.state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
               tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        model, rep = build_model("vit_test_tiny", 2, 32, pretrained=str(tmp_path / name))
        assert rep.head_reset and not rep.resized_pos_embed
        assert rep.missing == [] and rep.unexpected == []
        assert torch.equal(model.state_dict()["blocks.1.mlp.fc2.weight"],
                           sd["blocks.1.mlp.fc2.weight"])
        assert model.head.weight.shape == (2, 64)


def test_weights_of_one_run_load_into_another_with_resized_pos_embed(tmp_path):
    first = train(tiny_cfg(tmp_path / "a", epochs=1), data=data(32, 8))
    assert resolve_weights_path(first).name.startswith("best-")
    model, rep = build_model("vit_test_tiny", 3, 48, pretrained=str(first))
    assert rep.resized_pos_embed and rep.head_reset
    assert model.pos_embed.shape == (1, 1 + 6 * 6, 64)
    trained = read_state_dict(resolve_weights_path(first))
    assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"],
                       trained["blocks.0.attn.qkv.weight"])
    # and a second run starts from the first at 48 px
    cfg = tiny_cfg(tmp_path / "b", epochs=1, img_size=48)
    cfg.weights.pretrained = str(first)
    second = train(cfg, data=data(32, 8, size=48))
    assert (second / "checkpoints" / "best.json").is_file()


def test_bad_weight_sources_raise_clear_errors(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        read_state_dict(tmp_path / "junk.safetensors")
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state_dict(tmp_path / "trunc.pth")
    with pytest.raises(CheckpointError, match="not found"):
        build_model("vit_test_tiny", 2, 32, pretrained=str(tmp_path / "missing.pth"))
    torch.manual_seed(0)
    other = create_model("vit_tiny_patch16_224", num_classes=2, img_size=32)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        build_model("vit_test_tiny", 2, 32, pretrained=str(tmp_path / "other.pt"))
    with pytest.raises(ConfigError, match="test model"):
        build_model("vit_test_tiny", 2, 32, pretrained="hub")


def test_hub_without_cache_names_the_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as err:
        build_model("vit_tiny_patch16_224", 2, 32, pretrained="hub")
    msg = str(err.value)
    assert "model.safetensors" in msg and "vit_tiny_patch16_224" in msg and "weights" in msg
    assert "--" not in msg  # neutral words: the GUI shows it too


def test_unknown_model_lists_close_matches():
    with pytest.raises(ModelError, match="vit_tiny_patch16_224"):
        create_model("vit_tiny_patch16_22", num_classes=2, img_size=224)
    with pytest.raises(ModelError, match="unknown model"):
        create_model("swin_tiny_patch4_window7_224", num_classes=2, img_size=224)
    with pytest.raises(ConfigError, match="divisible"):
        create_model("vit_test_tiny", num_classes=2, img_size=36)
