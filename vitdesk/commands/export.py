"""``vitdesk export RUN --format onnx|torchscript [--int8] [--data SRC] --out DIR``."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from vitdesk.config import run_folder_problem
    from vitdesk.engine.export_contract import CONTRACT_FILE, INT8_FILE, MODEL_FILES, check_format
    from vitdesk.errors import ConfigError
    from vitdesk.fileio import check_output_path

    # every input and output is checked before torch is even imported
    fmt = check_format(args.format)
    if args.int8 and fmt != "onnx":
        raise ConfigError("--int8 quantises an ONNX model: use --format onnx --int8")
    problem = run_folder_problem(args.run, "run")
    if problem:
        raise ConfigError(problem)
    check_output_path(args.out, "--out", folder=True,
                      files=(CONTRACT_FILE, MODEL_FILES[fmt], *([INT8_FILE] if args.int8 else [])))

    from vitdesk.commands._common import sigint_cancels
    from vitdesk.console import ConsoleProgress
    from vitdesk.engine.export import export_run

    with sigint_cancels() as token:
        res = export_run(args.run, fmt, args.out, int8=args.int8, data_src=args.data,
                         cancel=token, listener=ConsoleProgress())
    print(res.describe())
    return 0
