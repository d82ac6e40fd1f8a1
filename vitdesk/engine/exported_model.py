"""An exported model, ready to score preprocessed slices: ONNX Runtime without torch.

:class:`ExportedModel` opens an export folder (its contract and model file) and turns a
float32 NCHW batch into logits and calibrated probabilities. ONNX models (fp32 or int8)
run in ONNX Runtime and never import torch; a TorchScript export needs torch (imported
only when one is opened). ``vitdesk predict EXPORTED_DIR``, the export's own check and
``bench/export.py`` all score through here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vitdesk.engine.export_contract import (
    INPUT_NAME,
    read_contract,
    temperature_of,
)
from vitdesk.errors import LoadError


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable), returned as float32."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` (``threads``: intra-op threads, None = ORT's
    default of one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initialisers are not the user's
    try:
        return ort.InferenceSession(str(path), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own classes for bad files
        raise LoadError(f"{path}: ONNX Runtime cannot open the model ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:160]}): export the run again") from None


class ExportedModel:
    """The model of an export folder.

    Args:
        folder: written by ``vitdesk export``.
        precision: "fp32", "int8" (needs an ``--int8`` export) or "auto" (int8 when the
            export has it: the export kept it because it scored within a point of fp32).
        threads: intra-op threads of the runtime (None: the runtime's default).
    """

    def __init__(self, folder: str | Path, precision: str = "auto",
                 threads: int | None = None) -> None:
        self.folder = Path(folder).expanduser()
        self.contract = read_contract(self.folder)
        c = self.contract
        if precision not in ("auto", "fp32", "int8"):
            raise LoadError(f"precision {precision!r}: use auto, fp32 or int8")
        if precision == "int8" and not c.get("int8_file"):
            raise LoadError(f"{self.folder}: this export has no int8 model: export with --int8")
        use_int8 = bool(c.get("int8_file")) and precision != "fp32"
        self.precision = "int8" if use_int8 else "fp32"
        self.model_format = str(c["model_format"])
        self.path = self.folder / str(c["int8_file"] if use_int8 else c["model_file"])
        self.classes = [str(x) for x in c["classes"]]
        self.temperature = temperature_of(c)
        pre = c["preprocessing"]
        self.img_size = int(pre["img_size"])
        self.channels = int(pre.get("channels", 3))
        self.mean = tuple(float(v) for v in pre["mean"])
        self.std = tuple(float(v) for v in pre["std"])
        self._check_hash()
        if self.model_format == "onnx":
            self._session = ort_session(self.path, threads)
            self._run = self._run_onnx
        else:
            self._module = self._load_torchscript(threads)
            self._run = self._run_torchscript

    def _check_hash(self) -> None:
        """A model file changed after the export (a partial copy, an edit) is refused:
        its numbers would no longer be the ones the export was checked with."""
        import hashlib

        want = (self.contract.get("sha256") or {}).get(self.path.name)
        if not want:
            return
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != want:
            raise LoadError(f"{self.path}: the model file differs from the one exported "
                            "(sha256): copy the whole export folder again, or export the run "
                            "again")

    def _load_torchscript(self, threads: int | None) -> Any:
        import torch  # a TorchScript export runs in PyTorch by definition

        if threads:
            torch.set_num_threads(int(threads))
        try:
            with warnings.catch_warnings():  # torch.jit's deprecation note is not the user's
                warnings.simplefilter("ignore")
                return torch.jit.load(str(self.path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as exc:
            raise LoadError(f"{self.path}: cannot load the TorchScript model "
                            f"({type(exc).__name__}): export the run again") from None

    def _run_onnx(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {INPUT_NAME: x})[0]

    def _run_torchscript(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._module(torch.from_numpy(x)).float().numpy()

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) of a preprocessed float32 batch (N, C, S, S)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        want = (self.channels, self.img_size, self.img_size)
        if x.ndim != 4 or x.shape[1:] != want:
            raise LoadError(f"input of shape {x.shape}: this model takes (N, {want[0]}, "
                            f"{want[1]}, {want[2]}) preprocessed slices")
        return np.asarray(self._run(x), dtype=np.float32)

    def probs(self, x: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Probabilities (N, classes), temperature-scaled by the run's calibration through
        the one function every vitdesk prediction uses."""
        from vitdesk.engine.calibration import apply_temperature

        p = softmax(self.logits(x))
        return apply_temperature(p, self.temperature) if calibrated else p


__all__ = ["ExportedModel", "ort_session", "softmax"]
