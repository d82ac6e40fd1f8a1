"""``vitdesk predict RUN INPUT [--tta] [--attention DIR] [--out CSV]``."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vitdesk.analysis.evaluation import predict_input
    from vitdesk.analysis.tta import TTAConfig
    from vitdesk.commands._common import sigint_cancels
    from vitdesk.console import ConsoleProgress

    with sigint_cancels() as token:
        res = predict_input(args.run, args.input, tta=TTAConfig() if args.tta else None,
                            attention_dir=args.attention,
                            device=getattr(args, "device", "auto") or "auto", cancel=token,
                            listener=ConsoleProgress())
    for err in res.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as fh:
            _write(fh, res)
        print(f"{len(res.rows)} slices -> {out}", file=sys.stderr)
    else:
        _write(sys.stdout, res)
    if res.overlays:
        print(f"{len(res.overlays)} attention overlays -> {args.attention}", file=sys.stderr)
    return 0


def _write(fh, res) -> None:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(res.csv_header())
    w.writerows(res.csv_rows())
