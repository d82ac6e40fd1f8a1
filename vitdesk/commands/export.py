"""``vitdesk export RUN --format onnx|torchscript [--int8] [--data SRC] --out DIR``."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from vitdesk.config import run_folder_problem
    from vitdesk.engine.export_contract import check_export_folder, check_format
    from vitdesk.errors import ConfigError

    # every input and output is checked before torch is even imported
    fmt = check_format(args.format)
    problem = run_folder_problem(args.run, "run")
    if problem:
        raise ConfigError(problem)
    check_export_folder(args.out, fmt, args.int8)

    from vitdesk.commands._common import sigint_cancels
    from vitdesk.console import ConsoleProgress
    from vitdesk.engine.export import export_run

    with sigint_cancels() as token:
        res = export_run(args.run, fmt, args.out, int8=args.int8, data_src=args.data,
                         cancel=token, listener=ConsoleProgress())
    print(res.describe())
    return 0
