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
    earlier = None
    with sigint_cancels() as token:
        loaded = load_run_for(args)
        if getattr(args, "earlier", None):
            from vitdesk.analysis.forgetting import parent_of

            parent_of(loaded)  # a run without a parent is refused before scoring
        ev = evaluate_run(loaded, args.data, tta=tta, device=device, cancel=token,
                          listener=ConsoleProgress(),
                          conformal_alpha=getattr(args, "alpha", 0.1))
        if getattr(args, "earlier", None):
            from vitdesk.analysis.forgetting import forgetting

            earlier = forgetting(loaded, args.earlier, cancel=token)
        if baseline is not None:
            transfer = evaluate_baseline(ev, args.run, baseline, args.data, tta=tta,
                                         device=device, cancel=token,
                                         listener=ConsoleProgress())
    doc = metrics_doc(ev, transfer)
    if earlier is not None:
        doc["continual"] = earlier
    path = write_json(out / "metrics.json", doc)
    print(f"evaluated run {ev.run_id} on the {ev.split} split (95% bootstrap CIs):")
    print(summary_table(ev.summary_rows()))
    if transfer is not None:
        print(transfer_lines(transfer))
    adapt = _adapt_figures(Path(args.run))
    if adapt:
        print(adapt)
    if earlier is not None:
        from vitdesk.analysis.forgetting import forgetting_line

        print(forgetting_line(earlier))  # the new data's accuracy is the table's
    print(path)
    return 0


def _adapt_figures(run: Path) -> str:
    """The adapted run's training-time source/target accuracy (``metrics.json`` adapt)."""
    import json

    try:
        a = json.loads((run / "metrics.json").read_text(encoding="utf-8")).get("adapt") or {}
    except (OSError, ValueError, AttributeError):
        return ""
    if "target_acc" not in a and "source_test_acc" not in a:
        return ""

    def num(key: str) -> str:
        v = a.get(key)
        return "n/a" if v is None else f"{v:.3f}"

    return (f"adaptation (DANN, {a.get('target_slices', '?')} target slices): source test "
            f"accuracy {num('source_test_acc')}, target accuracy {num('target_acc')} "
            "(target labels used for this figure only)")
