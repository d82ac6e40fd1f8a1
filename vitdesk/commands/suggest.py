"""``vitdesk suggest RUN --data SRC [--n 20] [--by slice|series] [--out CSV]``: what to
label next (active learning), as a table of series keys, descriptions and slice indices."""

from __future__ import annotations

import argparse
import csv
import io
import sys


def run(args: argparse.Namespace) -> int:
    from vitdesk.analysis.suggest import CSV_HEADER, left_out_text, suggest
    from vitdesk.commands._common import load_run_for, sigint_cancels
    from vitdesk.console import ConsoleProgress
    from vitdesk.errors import ConfigError
    from vitdesk.fileio import atomic_write_text, check_output_path

    if args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    # the output is checked before the model runs
    out = check_output_path(args.out, "--out", folder=False) if args.out else None
    with sigint_cancels() as token:
        lr = load_run_for(args)
        res = suggest(lr, args.data, args.n, unit=args.by, measure=args.uncertainty,
                      tta=None if args.no_tta else "default", seed=args.seed,
                      batch_size=args.batch_size, cancel=token, listener=ConsoleProgress())
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    print(res.table())
    print(left_out_text(res))
    if out is not None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_HEADER)
        w.writerows(s.row() for s in res.suggestions)
        atomic_write_text(out, buf.getvalue())
        print(f"{len(res.suggestions)} suggestions -> {out}", file=sys.stderr)
    return 0
