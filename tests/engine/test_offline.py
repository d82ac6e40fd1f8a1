"""Offline means offline: no socket is opened when hub weights are asked for (issue 16 #3).

The training start runs in a subprocess so the import order is the real one (the
suite's conftest sets HF_HUB_OFFLINE before anything imports huggingface_hub; a user's
shell does not). The subprocess replaces every way to reach a server with a recorder
that refuses, and reports how often it was tried.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vitdesk.offline import OFFLINE_ENV, go_offline

ROOT = Path(__file__).resolve().parents[2]

# Runs first in the child: nothing of vitdesk, torch or huggingface_hub is imported yet.
GUARD = r"""
import json, os, socket, sys, time
attempts = []
def refuse(name):
    def f(*a, **k):
        attempts.append(name)
        raise OSError(101, "network unreachable (test guard: " + name + ")")
    return f
socket.socket.connect = refuse("connect")
socket.socket.connect_ex = refuse("connect_ex")
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")
t0 = time.perf_counter()
rc = None
try:
    exec(compile(sys.argv[1], "<child>", "exec"))
finally:
    sys.stderr.flush()
    with open(os.environ["GUARD_OUT"], "w") as fh:
        json.dump({"attempts": attempts, "rc": rc,
                   "seconds": time.perf_counter() - t0}, fh)
"""


def _child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in OFFLINE_ENV and not k.startswith(("HF_", "TIMM_"))}
    # an empty cache of our own: a user's real cache must not make the test pass
    env.update(HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"),
               GUARD_OUT=str(tmp_path / "guard.json"), PYTHONPATH=str(ROOT))
    return env


def _run_child(tmp_path: Path, code: str, timeout: float = 300) -> tuple[dict, str]:
    env = _child_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", GUARD, code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)
    report = json.loads(Path(env["GUARD_OUT"]).read_text())
    return report, proc.stderr


def _png_classes(root: Path) -> Path:
    """An image folder with one subfolder per class (no DICOM needed)."""
    import cv2

    rng = np.random.default_rng(0)
    for c in ("normal", "lesion"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 255, (32, 32), dtype=np.uint8)
            cv2.imwrite(str(root / c / f"{c}{i}.png"), img)
    return root


def test_go_offline_sets_every_switch():
    env: dict[str, str] = {"HF_HUB_OFFLINE": "0"}
    go_offline(env)
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HF_DATASETS_OFFLINE"] == "1" and env["HF_HUB_DISABLE_TELEMETRY"] == "1"


def test_go_offline_patches_an_already_imported_hub(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for k in OFFLINE_ENV:
        monkeypatch.delenv(k, raising=False)
    go_offline()
    assert constants.HF_HUB_OFFLINE is True and constants.is_offline_mode()
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_training_start_with_uncached_hub_weights_opens_no_socket(tmp_path):
    data = _png_classes(tmp_path / "imgs")
    code = (
        "from vitdesk.cli import main\n"
        f"rc = main(['train', '--data', {str(data)!r}, '--model', 'vit_tiny_patch16_224',"
        " '--pretrained', 'hub', '--img-size', '32', '--epochs', '1', '--batch-size', '4',"
        f" '--device', 'cpu', '--out', {str(tmp_path / 'run')!r}])\n"
        "import huggingface_hub.constants as c\n"
        "assert c.HF_HUB_OFFLINE is True, 'huggingface_hub is not offline'\n"
    )
    t0 = time.perf_counter()
    report, stderr = _run_child(tmp_path, code)
    wall = time.perf_counter() - t0
    assert report["attempts"] == [], report
    assert report["rc"] == 2, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("vitdesk: error:")]
    assert len(lines) == 1, stderr
    assert "not in the local cache" in lines[0] and "vit_tiny_patch16_224" in lines[0]
    assert "Traceback" not in stderr
    # before the fix the hub retried for ~50 s here (measured); now it fails at once
    assert report["seconds"] < 40, report
    print(f"uncached hub start: {report['seconds']:.1f} s in the child, {wall:.1f} s wall")


def _fake_hub_cache(hf_home: Path) -> dict[str, np.ndarray]:
    """Put vit_tiny_patch16_224's default weights (random, saved here) into a hub cache."""
    import torch
    from safetensors.torch import save_file

    from vitdesk.engine.weights import _hub_id

    hub_id = _hub_id("vit_tiny_patch16_224")[0]
    torch.manual_seed(3)
    from vitdesk.engine.models import create_model

    sd = create_model("vit_tiny_patch16_224", num_classes=1000, img_size=224).state_dict()
    repo = hf_home / "hub" / ("models--" + hub_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    return {k: sd[k].numpy() for k in ("blocks.0.attn.qkv.weight", "cls_token")}


@pytest.mark.parametrize("hub_first", [False, True])
def test_cached_hub_weights_load_without_the_network(tmp_path, hub_first):
    expected = _fake_hub_cache(tmp_path / "hf")
    np.save(tmp_path / "qkv.npy", expected["blocks.0.attn.qkv.weight"])
    # hub_first: a host program imported huggingface_hub before vitdesk (constants read
    # online); build_model must still stay off the network.
    code = (
        ("import huggingface_hub\n" if hub_first else "")
        + "import numpy as np\n"
        "from vitdesk.engine.weights import build_model\n"
        "model, rep = build_model('vit_tiny_patch16_224', 2, 32, pretrained='hub')\n"
        "got = model.state_dict()['blocks.0.attn.qkv.weight'].numpy()\n"
        "assert np.array_equal(got, np.load('qkv.npy')), 'weights differ from the cache'\n"
        "assert rep.source == 'hub:vit_tiny_patch16_224' and rep.head_reset\n"
        "assert model.get_classifier().out_features == 2\n"
        "rc = 0\n"
    )
    report, stderr = _run_child(tmp_path, code)
    assert report["rc"] == 0, stderr
    assert report["attempts"] == [], report
