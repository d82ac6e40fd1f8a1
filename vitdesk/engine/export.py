"""``vitdesk export``: a trained run as ONNX or TorchScript, with its preprocessing contract.

:func:`export_run` writes the model (fp32; ``int8`` adds an ONNX Runtime dynamic
quantisation) and :data:`~vitdesk.engine.export_contract.CONTRACT_FILE` beside it, then
proves the export: the exported model's probabilities are compared with the run's
PyTorch model on the run's test slices (validation slices, else random inputs, when the
test files are not here) and the int8 model's accuracy with the fp32 one's. Every file
is written atomically; the output folder is checked before any work.

ONNX comes from the TorchScript-based exporter (``dynamo=False``): it works offline with
this torch and needs no onnxscript; the graph gets a dynamic batch axis and is checked
with ``onnx.checker``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitdesk.engine.export_contract import (
    CONTRACT_FILE,
    FORMAT,
    IMAGES,
    INPUT_NAME,
    INT8_FILE,
    LETTERBOX,
    MODEL_FILES,
    OUTPUT,
    OUTPUT_NAME,
    check_export_folder,
    check_format,
)
from vitdesk.errors import DataError
from vitdesk.jobs import NEVER, CancelToken, Listener, Notice, Progress, emit

OPSET = 17
CHECK_SLICES = 256  # at most this many slices prove the export (a few seconds on a CPU)
FP32_TOLERANCE = 1e-4  # max |p_exported - p_torch| an fp32 export must keep
INT8_MAX_DROP = 0.01  # accuracy points (as a fraction) int8 may lose against fp32


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote and measured."""

    out_dir: Path
    contract: dict
    files: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        c = self.contract["check"]
        lines = [f"{self.contract['model_format']} model -> {self.out_dir}",
                 f"  max |p - p_torch| {c['max_abs_diff']:.2e} on {c['n']} {c['on']}"]
        q = self.contract.get("int8")
        if q:
            if q.get("accuracy_fp32") is not None:
                lines.append(f"  int8 ({q['method']}): accuracy {q['accuracy_int8']:.3f} vs "
                             f"fp32 {q['accuracy_fp32']:.3f} on {q['n']} {q['on']}, "
                             f"agreement {q['agreement']:.3f}")
            else:
                lines.append(f"  int8 ({q['method']}): agreement with fp32 "
                             f"{q['agreement']:.3f} on {q['n']} {q['on']}")
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_slices(run: Any, data_src: str | Path | None = None, limit: int = CHECK_SLICES,
                 cancel: CancelToken = NEVER) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(x, labels or None, what they are) to prove an export on: the run's test slices,
    else its validation slices, else seeded random inputs when neither is readable here."""
    from vitdesk.data.preprocess import preprocess_slice, read_record
    from vitdesk.data.splits import load_split

    try:
        splits = load_split(Path(run.run_dir) / "split.json", data_src=data_src)
    except DataError:
        splits = {}
    for name in ("test", "val"):
        recs = [r for r in splits.get(name, []) if Path(r.path).is_file()][:limit]
        if not recs:
            continue
        xs = []
        for r in recs:
            cancel.check()
            xs.append(preprocess_slice(read_record(r), r.kind, run.window, run.img_size,
                                       run.mean, run.std, 3))
        index = {c: i for i, c in enumerate(run.classes)}
        y = np.array([index.get(r.label, -1) for r in recs], dtype=int)
        return (np.stack(xs), y if (y >= 0).all() else None,
                "test slices" if name == "test" else "validation slices")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, run.img_size, run.img_size)).astype(np.float32)
    return x, None, "random inputs (the run's test slices are not here: give --data)"


def _torch_probs(model: torch.nn.Module, x: np.ndarray, batch: int = 32) -> np.ndarray:
    from vitdesk.engine.exported_model import softmax

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i:i + batch])).float().numpy())
    return softmax(np.concatenate(out))


def _session_probs(session: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    from vitdesk.engine.exported_model import softmax

    out = [session.run(None, {INPUT_NAME: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return softmax(np.concatenate(out))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' tracer and deprecation warnings say nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def write_onnx(model: torch.nn.Module, path: Path, img_size: int, opset: int = OPSET) -> None:
    """The fp32 ONNX graph (dynamic batch axis), checked with ``onnx.checker``, atomically."""
    import onnx

    from vitdesk.fileio import atomic_write_bytes

    example = torch.zeros(2, 3, img_size, img_size)

    def write(tmp: str) -> None:
        with _quiet():
            torch.onnx.export(model, (example,), tmp, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
        onnx.checker.check_model(tmp, full_check=True)

    atomic_write_bytes(path, write)


def write_torchscript(model: torch.nn.Module, path: Path, img_size: int) -> None:
    """The traced TorchScript module (any batch size), atomically."""
    from vitdesk.fileio import atomic_write_bytes

    example = torch.zeros(2, 3, img_size, img_size)

    def write(tmp: str) -> None:
        with _quiet(), torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, tmp)

    atomic_write_bytes(path, write)


def write_int8(fp32: Path, path: Path) -> None:
    """ONNX Runtime dynamic quantisation: int8 weights of every MatMul/Gemm, activations
    quantised per batch at run time (no calibration data needed; a ViT's linear layers
    hold almost all its compute). The graph is first shape-inferred and optimised as ORT
    recommends (``quant_pre_process``); a graph that step cannot handle is quantised as
    it is."""
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vitdesk.fileio import atomic_write_bytes

    def write(tmp: str) -> None:
        with _quiet(), tempfile.TemporaryDirectory(dir=path.parent) as work:
            src = Path(work) / "pre.onnx"
            try:
                quant_pre_process(str(fp32), str(src))
            except Exception:  # noqa: BLE001 - an optional optimisation, never a failure
                src = fp32
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # "consider pre-processing" when it was skipped
            try:
                quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm"])
            finally:
                root.setLevel(level)

    atomic_write_bytes(path, write)


def _accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(1) == y).mean())


def _calibration(run: Any, fit: bool, cancel: CancelToken, listener: Listener | None
                 ) -> Any:
    """The run's temperature scaling: calibration.json, else (``fit``) fitted now on its
    validation slices as its own predict would (stored when the run folder is writable)."""
    from vitdesk.engine.calibration import calibrate_run, read_calibration
    from vitdesk.errors import DiskFullError

    cal = read_calibration(run.run_dir)
    if cal is not None or not fit:
        return cal
    emit(listener, Notice("calibration", "fitting temperature scaling on the run's "
                                         "validation slices"))
    try:
        return calibrate_run(run, write=True, cancel=cancel, listener=listener)
    except (OSError, DiskFullError):
        return calibrate_run(run, write=False, cancel=cancel, listener=listener)


def _conformal_calibration(run: Any, cancel: CancelToken, listener: Listener | None
                           ) -> dict | None:
    """The run's validation labels and uncalibrated probabilities, so an exported predict
    calibrates conformal sets at any ``--alpha`` exactly as the run's predict does."""
    from vitdesk.engine.calibration import validation_probs

    got = validation_probs(run, 32, cancel, listener)
    if got is None:
        return None
    y, p = got
    return {"fitted_on": "validation slices", "n": int(len(y)), "labels": y.tolist(),
            "probs": p.astype(np.float64).tolist()}


def _contract(run: Any, fmt: str, files: dict[str, Path], cal: Any, conformal: dict | None,
              check: dict, int8: dict | None) -> dict:
    import onnx
    import onnxruntime
    import timm

    import vitdesk
    from vitdesk.data.source_refs import is_ref
    from vitdesk.engine.run import resolve_pool

    cfg = run.cfg
    source = cfg.data.source
    return {
        "format": FORMAT,
        "research_use": vitdesk.RESEARCH_NOTICE,
        "model_format": fmt,
        "model_file": files["model"].name,
        "int8_file": files["int8"].name if "int8" in files else None,
        "sha256": {p.name: _sha256(p) for p in files.values()},
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, run.img_size, run.img_size],
                  "dtype": "float32", "layout": "NCHW"},
        "output": {"name": OUTPUT_NAME, "meaning": OUTPUT},
        "classes": list(run.classes),
        "preprocessing": {
            "window": {**run.window.to_dict(), "label": run.window.label()},
            "img_size": int(run.img_size), "channels": 3,
            "letterbox": LETTERBOX, "images": IMAGES,
            "mean": [float(v) for v in run.mean], "std": [float(v) for v in run.std],
        },
        "model": {"name": cfg.model.name, "pooling": resolve_pool(cfg),
                  "parameters": int(sum(p.numel() for p in run.model.parameters()))},
        "calibration": None if cal is None else {
            "temperature": float(cal.temperature), "fitted_on": cal.fitted_on, "n": cal.n,
            "ece_before": cal.ece_before, "ece_after": cal.ece_after},
        "conformal_calibration": conformal,
        "data_fingerprint": source if is_ref(source) else None,
        "versions": {"vitdesk": vitdesk.__version__, "torch": torch.__version__,
                     "timm": timm.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opset": OPSET},
        "check": check,
        "int8": int8,
    }


def export_run(run: str | Path | Any, fmt: str = "onnx", out: str | Path = "export", *,
               int8: bool = False, data_src: str | Path | None = None,
               calibrate: bool = True, cancel: CancelToken = NEVER,
               listener: Listener | None = None) -> ExportResult:
    """Export a trained run (folder or LoadedRun) into ``out``.

    Args:
        fmt: "onnx" or "torchscript".
        int8: also write an int8 ONNX model (ONNX only); kept only when its accuracy on
            the labelled check slices is within one point of fp32 (else a DataError).
        data_src: the run's data source, to find its test slices (else the locally
            remembered folder; random inputs prove the graph when neither is found).
        calibrate: fit the run's temperature now when it has no calibration.json.
    """
    from vitdesk.engine.exported_model import ort_session
    from vitdesk.engine.run import LoadedRun, load_run
    from vitdesk.fileio import atomic_write_json

    fmt = check_format(fmt)
    folder = check_export_folder(out, fmt, int8)
    lr = run if isinstance(run, LoadedRun) else load_run(run, device="cpu", listener=listener)
    model = lr.model
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in model.parameters()):
        # exported graphs are fp32 on the CPU; a run shared with other work (the GUI's
        # loaded run on a GPU) is copied, never moved
        model = copy.deepcopy(model).float().cpu()
    model.eval()
    steps = 4 + int(int8)
    emit(listener, Progress("export", 0, steps))
    x, y, on = check_slices(lr, data_src, cancel=cancel)
    if y is None and on.startswith("random"):
        emit(listener, Notice("export", f"checked on {on}"))
    ref = _torch_probs(model, x)
    cancel.check()
    emit(listener, Progress("export", 1, steps))

    files = {"model": folder / MODEL_FILES[fmt]}
    if fmt == "onnx":
        write_onnx(model, files["model"], lr.img_size)
        got = _session_probs(ort_session(files["model"]), x)
    else:
        write_torchscript(model, files["model"], lr.img_size)
        with _quiet():
            ts = torch.jit.load(str(files["model"]), map_location="cpu").eval()
        got = _torch_probs(ts, x)
    diff = float(np.abs(got - ref).max())
    if not diff <= FP32_TOLERANCE:  # a bug in an exporter, never the user's doing
        raise RuntimeError(f"the exported model differs from the run's by {diff:.2e} "
                           f"(tolerance {FP32_TOLERANCE:g})")
    check = {"max_abs_diff": diff, "n": int(len(x)), "on": on, "tolerance": FP32_TOLERANCE}
    cancel.check()
    emit(listener, Progress("export", 2, steps))

    int8_doc = None
    if int8:
        files["int8"] = folder / INT8_FILE
        write_int8(files["model"], files["int8"])
        q = _session_probs(ort_session(files["int8"]), x)
        int8_doc = {"method": "dynamic (ONNX Runtime, int8 MatMul/Gemm weights)",
                    "n": int(len(x)), "on": on,
                    "agreement": float((q.argmax(1) == got.argmax(1)).mean()),
                    "max_abs_diff": float(np.abs(q - got).max()),
                    "accuracy_fp32": None if y is None else _accuracy(got, y),
                    "accuracy_int8": None if y is None else _accuracy(q, y)}
        if y is not None and int8_doc["accuracy_int8"] < int8_doc["accuracy_fp32"] - \
                INT8_MAX_DROP - 1e-9:
            files["int8"].unlink(missing_ok=True)
            raise DataError(
                f"int8 accuracy {int8_doc['accuracy_int8']:.3f} is more than one point below "
                f"fp32 {int8_doc['accuracy_fp32']:.3f} on the run's {on}: export without "
                "--int8")
        cancel.check()
        emit(listener, Progress("export", 3, steps))

    cal = _calibration(lr, calibrate, cancel, listener)
    conformal = _conformal_calibration(lr, cancel, listener)
    contract = _contract(lr, fmt, files, cal, conformal, check, int8_doc)
    atomic_write_json(folder / CONTRACT_FILE, contract, allow_nan=False)
    emit(listener, Progress("export", steps, steps))
    return ExportResult(folder, contract, [*files.values(), folder / CONTRACT_FILE])


__all__ = ["CHECK_SLICES", "FP32_TOLERANCE", "INT8_MAX_DROP", "OPSET", "ExportResult",
           "check_slices", "export_run", "write_int8", "write_onnx", "write_torchscript"]
