"""The exported model's preprocessing contract: one JSON beside the model file (no torch).

``vitdesk export`` writes it (:mod:`vitdesk.engine.export`); ``vitdesk predict
EXPORTED_DIR`` (:mod:`vitdesk.analysis.exported`) and any other runtime read it. It
holds everything needed to turn a CT slice into the model's input and its output into
calibrated probabilities, and nothing of the data's identity: no patient data, no
paths, the training data only as the run's keyed fingerprint.

Layout of an export folder::

    vitdesk-export.json   this contract
    model.onnx            --format onnx (fp32, dynamic batch axis)
    model.int8.onnx       --int8 (ONNX Runtime quantisation of model.onnx)
    model.ts.pt           --format torchscript (traced, fp32)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitdesk.errors import ConfigError, LoadError
from vitdesk.imaging.windowing import WindowSpec

CONTRACT_FILE = "vitdesk-export.json"
FORMAT = "vitdesk-export-1"
FORMATS = ("onnx", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts.pt"}
INT8_FILE = "model.int8.onnx"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# the geometry of vitdesk.data.preprocess, stated for runtimes outside vitdesk
LETTERBOX = {
    "pad": "zero-pad the windowed (C, H, W) slice to a centred square of side S = max(H, W): "
           "pad_top = (S - H) // 2, pad_left = (S - W) // 2",
    "resize": "resize the square to img_size: OpenCV INTER_AREA when shrinking, "
              "INTER_LINEAR when enlarging",
    "pad_value": 0.0,
    "order": "window -> [0, 1] -> letterbox -> (x - mean) / std -> NCHW float32",
}
IMAGES = ("PNG/JPEG are already windowed: scaled to [0, 1] by bit depth (8 or 16 bit), "
          "greyscale replicated to the channels; no HU window")
OUTPUT = ("logits (N, classes); probabilities = softmax(logits / temperature); "
          "predicted = argmax")
_REQUIRED = ("format", "model_format", "model_file", "classes", "preprocessing")


def is_export_dir(path: str | Path) -> bool:
    """True for a folder written by ``vitdesk export``."""
    return (Path(path).expanduser() / CONTRACT_FILE).is_file()


def check_format(fmt: str) -> str:
    """``fmt`` as one of :data:`FORMATS`, or a ConfigError naming the choices."""
    f = str(fmt).strip().lower()
    if f not in FORMATS:
        raise ConfigError(f"--format {fmt}: unknown export format: use onnx or torchscript")
    return f


def check_export_folder(out: str | Path, fmt: str, int8: bool = False,
                        flag: str = "--out") -> Path:
    """The export folder, checked before any work (ConfigError naming the problem): the
    format and int8 option, a writable folder, and never a run folder (its predict
    would then read the export instead of the run)."""
    from vitdesk.fileio import check_output_path

    fmt = check_format(fmt)
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 quantises an ONNX model: use --format onnx --int8")
    folder = check_output_path(out, flag, folder=True, files=(
        CONTRACT_FILE, MODEL_FILES[fmt], *([INT8_FILE] if int8 else [])))
    if (folder / "config.toml").is_file():
        raise ConfigError(f"{flag} {folder} is a run folder: export into another folder, "
                          f"e.g. {folder / 'export'}")
    return folder


def read_contract(folder: str | Path) -> dict[str, Any]:
    """The contract of an export folder, checked; a LoadError names what is wrong."""
    folder = Path(folder).expanduser()
    path = folder / CONTRACT_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LoadError(f"{folder}: not a vitdesk export (no {CONTRACT_FILE}): run "
                        "vitdesk export RUN --out DIR first") from None
    except (OSError, ValueError) as exc:
        raise LoadError(f"{path}: cannot read the export contract ({type(exc).__name__}): "
                        "export the run again") from None
    missing = [k for k in _REQUIRED if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise LoadError(f"{path}: the export contract lacks {', '.join(missing)}: export the "
                        "run again")
    if doc["format"] != FORMAT:
        raise LoadError(f"{path}: export format {doc['format']!r} is not {FORMAT!r}: export "
                        "the run again with this vitdesk")
    for key in ("model_file", *(["int8_file"] if doc.get("int8_file") else [])):
        if not (folder / str(doc[key])).is_file():
            raise LoadError(f"{folder / str(doc[key])}: model file missing from the export: "
                            "copy the whole export folder, or export the run again")
    return doc


def window_of(contract: dict[str, Any]) -> WindowSpec:
    """The HU window definition of an export."""
    return WindowSpec.from_dict(contract["preprocessing"]["window"])


def temperature_of(contract: dict[str, Any]) -> float:
    """The calibration temperature (1 when the run had none)."""
    cal = contract.get("calibration") or {}
    return float(cal.get("temperature", 1.0))


__all__ = ["CONTRACT_FILE", "FORMAT", "FORMATS", "INT8_FILE", "INPUT_NAME", "LETTERBOX",
           "MODEL_FILES", "OUTPUT_NAME", "check_export_folder", "check_format",
           "is_export_dir", "read_contract", "temperature_of", "window_of"]
