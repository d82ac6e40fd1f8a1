"""Crash-safe checkpoints: safetensors weights + JSON metadata + a plain-tensor state file.

A checkpoint ``kind`` (``last`` or ``best``) is three files in ``RUN/checkpoints``:
``KIND-TAG.safetensors`` (model weights), ``KIND-TAG.state.pt`` (optimizer, scheduler,
scaler, EMA and RNG states: plain tensors, numbers and containers only, read back
with ``weights_only=True``) and ``KIND.json`` (metadata naming those files). Every
file is written to a temp file in the same folder, fsynced and ``os.replace``d; the
JSON is written last and is the commit point, so a kill at any moment leaves the
previous complete checkpoint loadable.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdesk.errors import CheckpointError
from vitdesk.fileio import finish_temp_file


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Write via ``write(file_path)`` into a temp file next to ``path``, fsync, replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        finish_temp_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as plain tensors and numbers."""
    py = random.getstate()
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: str | Path,
    kind: str,
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``kind`` atomically; returns the path of its JSON."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{int(meta.get('global_step', 0)):08d}"
    wname = f"{kind}-{tag}.safetensors"
    # safetensors wants contiguous, unshared CPU tensors
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    atomic_write_bytes(folder / wname, lambda p: save_file(flat, p, metadata={"kind": kind}))
    meta = dict(meta, weights=wname, format="vitdesk-checkpoint-1")
    if state is not None:
        sname = f"{kind}-{tag}.state.pt"
        atomic_write_bytes(folder / sname, lambda p: torch.save(state, p))
        meta["state"] = sname
    json_path = folder / f"{kind}.json"
    atomic_write_text(json_path, json.dumps(meta, indent=2, sort_keys=True))
    keep = {wname, meta.get("state")}
    for old in folder.glob(f"{kind}-*"):
        if old.name not in keep:
            with contextlib.suppress(OSError):
                old.unlink()
    return json_path


def checkpoint_exists(folder: str | Path, kind: str = "last") -> bool:
    return (Path(folder) / f"{kind}.json").is_file()


def load_checkpoint(folder: str | Path, kind: str = "last", with_state: bool = True) -> Checkpoint:
    """Read checkpoint ``kind``; :class:`CheckpointError` if missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    jp = folder / f"{kind}.json"
    if not jp.is_file():
        raise CheckpointError(f"no '{kind}' checkpoint in {folder}: nothing to resume or load")
    try:
        meta = json.loads(jp.read_text(encoding="utf-8"))
        wpath = folder / meta["weights"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{jp} is corrupt ({exc}): start a new run") from None
    try:
        weights = load_file(str(wpath), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint weights {wpath} are corrupt or missing ({exc})"
        ) from None
    state: dict[str, Any] = {}
    if with_state and meta.get("state"):
        spath = folder / meta["state"]
        try:
            state = torch.load(str(spath), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint state {spath} is corrupt ({exc})") from None
    return Checkpoint(meta=meta, weights=weights, state=state)
