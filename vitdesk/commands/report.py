"""``vitdesk report RUN --data SRC [--baseline RUN] [--out DIR]``: report.html +
report.pdf (+ metrics.json)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vitdesk.errors import ConfigError


def check_baseline(baseline: str | None) -> Path | None:
    """The baseline run folder, or None; a ConfigError names a folder that is no run."""
    if not baseline:
        return None
    p = Path(baseline).expanduser()
    if not (p / "config.toml").is_file() or not (p / "checkpoints").is_dir():
        raise ConfigError(f"--baseline {baseline}: not a vitdesk run folder (no config.toml "
                          "and checkpoints/): give the folder of a finished run")
    return p


def run(args: argparse.Namespace) -> int:
    from vitdesk.analysis.baseline import evaluate_baseline
    from vitdesk.analysis.evaluation import evaluate_run, json_safe
    from vitdesk.analysis.tta import TTAConfig
    from vitdesk.commands._common import sigint_cancels, write_json
    from vitdesk.console import ConsoleProgress
    from vitdesk.report.from_run import write_run_report

    baseline = check_baseline(getattr(args, "baseline", None))
    out = Path(args.out) if args.out else Path(args.run) / "report"
    device = getattr(args, "device", "auto") or "auto"
    transfer = None
    with sigint_cancels() as token:
        ev = evaluate_run(args.run, args.data, tta=TTAConfig(), attention_samples=6,
                          device=device, cancel=token, listener=ConsoleProgress())
        if baseline is not None:
            transfer = evaluate_baseline(ev, args.run, baseline, args.data, tta=TTAConfig(),
                                         device=device, cancel=token,
                                         listener=ConsoleProgress())
    files = write_run_report(args.run, ev, out, transfer=transfer)
    metrics = ev.to_dict()
    if transfer is not None:
        metrics["transfer"] = json_safe(transfer)
    write_json(out / "metrics.json", metrics)  # the numbers behind the report
    print(files.html)
    print(f"{files.pdf} ({files.pages} pages)")
    return 0
