"""``vitdesk evaluate RUN --data SRC [--tta] [--baseline RUN] [--out DIR]``: metrics.json
and a summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vitdesk.analysis.baseline import evaluate_baseline
    from vitdesk.analysis.evaluation import evaluate_run
    from vitdesk.analysis.tta import TTAConfig
    from vitdesk.commands._common import (
        check_baseline,
        load_run_for,
        metrics_doc,
        sigint_cancels,
        summary_table,
        transfer_lines,
        write_json,
    )
    from vitdesk.console import ConsoleProgress
    from vitdesk.fileio import check_output_path

    # every input and output is checked before the evaluation runs
    out = Path(args.out) if args.out else Path(args.run) / "eval"
    if args.out or Path(args.run).is_dir():  # no run folder: load_run names the problem
        check_output_path(out, "--out", folder=True, files=("metrics.json",))
    baseline = check_baseline(getattr(args, "baseline", None))
    device = getattr(args, "device", "auto") or "auto"
    tta = TTAConfig() if args.tta else None
    transfer = None
    with sigint_cancels() as token:
        ev = evaluate_run(load_run_for(args), args.data, tta=tta, device=device, cancel=token,
                          listener=ConsoleProgress(),
                          conformal_alpha=getattr(args, "alpha", 0.1))
        if baseline is not None:
            transfer = evaluate_baseline(ev, args.run, baseline, args.data, tta=tta,
                                         device=device, cancel=token,
                                         listener=ConsoleProgress())
    path = write_json(out / "metrics.json", metrics_doc(ev, transfer))
    print(f"evaluated run {ev.run_id} on the {ev.split} split (95% bootstrap CIs):")
    print(summary_table(ev.summary_rows()))
    if transfer is not None:
        print(transfer_lines(transfer))
    print(path)
    return 0
