"""Crash-safe checkpoints: safetensors weights + JSON metadata + a plain-tensor state file.

A checkpoint ``kind`` (``last`` or ``best``) is three files in ``RUN/checkpoints``:
``KIND-TAG.safetensors`` (model weights), ``KIND-TAG.state.pt`` (optimizer, scheduler,
scaler, EMA and RNG states: plain tensors, numbers and containers only, read back
with ``weights_only=True``) and ``KIND.json`` (metadata naming those files). Every
file is written to a temp file in the same folder, fsynced and ``os.replace``d; the
JSON is written last and is the commit point, so a kill at any moment leaves the
previous complete checkpoint loadable. A write that fails (a full disk) removes the
files of the checkpoint it was writing, so the folder holds only complete checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdesk.errors import CheckpointError
from vitdesk.fileio import atomic_write_bytes, atomic_write_text

__all__ = ["Checkpoint", "atomic_write_bytes", "atomic_write_text", "checkpoint_exists",
           "load_checkpoint", "load_best_or_last", "save_checkpoint"]


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


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
    committed = _committed_files(folder, kind)
    written: list[Path] = []
    try:
        atomic_write_bytes(folder / wname,
                           lambda p: save_file(flat, p, metadata={"kind": kind}),
                           size_hint=_nbytes(flat) + 64 * 1024)
        written.append(folder / wname)
        meta = dict(meta, weights=wname, format="vitdesk-checkpoint-1")
        if state is not None:
            sname = f"{kind}-{tag}.state.pt"
            atomic_write_bytes(folder / sname, lambda p: torch.save(state, p),
                               size_hint=_nbytes(state) + 64 * 1024)
            written.append(folder / sname)
            meta["state"] = sname
        json_path = folder / f"{kind}.json"
        atomic_write_text(json_path, json.dumps(meta, indent=2, sort_keys=True))
    except BaseException:
        # the JSON still names the previous files: drop the new ones it does not name
        # (a same-step rewrite replaced a committed file in place: that one stays)
        for p in written:
            if p.name not in committed:
                with contextlib.suppress(OSError):
                    p.unlink()
        raise
    keep = {wname, meta.get("state")}
    for old in folder.glob(f"{kind}-*"):
        if old.name not in keep:
            with contextlib.suppress(OSError):
                old.unlink()
    return json_path


def _committed_files(folder: Path, kind: str) -> set[str]:
    """The files the current ``KIND.json`` names (empty when missing or unreadable)."""
    try:
        meta = json.loads((folder / f"{kind}.json").read_text(encoding="utf-8"))
        return {str(meta.get("weights")), str(meta.get("state"))}
    except (OSError, ValueError, AttributeError):
        return set()


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a nested container (the size of the file they make)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 8


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


def load_best_or_last(
    folder: str | Path, with_state: bool = False, notice: Callable[[str], None] | None = None,
) -> tuple[Checkpoint, str]:
    """The ``best`` checkpoint, else ``last``; returns it and its kind.

    A corrupt ``best`` falls back to an intact ``last`` and says so through ``notice``
    (the model is then the run's latest, not its best-by-validation one). Both corrupt or
    missing: one :class:`CheckpointError` naming both.
    """
    folder = Path(folder)
    if not checkpoint_exists(folder, "best"):
        return load_checkpoint(folder, "last", with_state), "last"
    try:
        return load_checkpoint(folder, "best", with_state), "best"
    except CheckpointError as exc:
        if not checkpoint_exists(folder, "last"):
            raise
        why = str(exc).removesuffix(": start a new run")  # ``exc`` is unbound after this block
        try:
            cp = load_checkpoint(folder, "last", with_state)
        except CheckpointError as last_exc:
            raise CheckpointError(
                f"both checkpoints of {folder.parent} are unusable (best: {why}; last: "
                f"{str(last_exc).removesuffix(': start a new run')}): train the run again"
            ) from None
    if notice is not None:
        notice(f"the best checkpoint of {folder.parent} is unusable ({why}): using "
               f"the last one (step {cp.meta.get('global_step', '?')}) instead")
    return cp, "last"
