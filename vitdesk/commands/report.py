"""``vitdesk report RUN --data SRC [--out DIR]``: report.html + report.pdf (+ metrics.json)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.analysis.tta import TTAConfig
    from vitdesk.commands._common import sigint_cancels, write_json
    from vitdesk.console import ConsoleProgress
    from vitdesk.report.from_run import write_run_report

    out = Path(args.out) if args.out else Path(args.run) / "report"
    with sigint_cancels() as token:
        ev = evaluate_run(args.run, args.data, tta=TTAConfig(), attention_samples=6,
                          device=getattr(args, "device", "auto") or "auto", cancel=token,
                          listener=ConsoleProgress())
    files = write_run_report(args.run, ev, out)
    write_json(out / "metrics.json", ev.to_dict())  # the numbers behind the report
    print(files.html)
    print(f"{files.pdf} ({files.pages} pages)")
    return 0
