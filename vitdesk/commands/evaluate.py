"""``vitdesk evaluate RUN --data SRC [--tta] [--out DIR]``: metrics.json and a summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.analysis.tta import TTAConfig
    from vitdesk.commands._common import sigint_cancels, summary_table, write_json
    from vitdesk.console import ConsoleProgress

    out = Path(args.out) if args.out else Path(args.run) / "eval"
    with sigint_cancels() as token:
        ev = evaluate_run(args.run, args.data, tta=TTAConfig() if args.tta else None,
                          device=getattr(args, "device", "auto") or "auto", cancel=token,
                          listener=ConsoleProgress())
    path = write_json(out / "metrics.json", ev.to_dict())
    print(f"evaluated run {ev.run_id} on the {ev.split} split (95% bootstrap CIs):")
    print(summary_table(ev.summary_rows()))
    print(path)
    return 0
