"""Shared plumbing of the evaluation commands: Ctrl-C to a cancel token, JSON writing."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vitdesk.jobs import CancelToken


@contextlib.contextmanager
def sigint_cancels() -> Iterator[CancelToken]:
    """A token cancelled by the first Ctrl-C (the work stops at the next batch); a second
    Ctrl-C interrupts at once. The previous handler is restored afterwards."""
    token = CancelToken()

    def on_sigint(signum: int, frame: Any) -> None:
        print("\nvitdesk: stopping (Ctrl-C again to abort)", file=sys.stderr)
        token.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread (embedded use): Ctrl-C stays KeyboardInterrupt
        yield token
        return
    try:
        yield token
    finally:
        signal.signal(signal.SIGINT, previous)


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically (a crash or a full disk never leaves half a metrics file)."""
    from vitdesk.fileio import atomic_write_json

    return atomic_write_json(path, data, allow_nan=False)


def load_run_for(args: Any) -> Any:
    """Load ``args.run`` once, up front, with its notices (a corrupt ``best`` checkpoint
    replaced by ``last``) printed to the console; the analysis functions take it as is."""
    from vitdesk.console import ConsoleProgress
    from vitdesk.engine.run import load_run

    return load_run(args.run, device=getattr(args, "device", "auto") or "auto",
                    listener=ConsoleProgress())


def summary_table(rows: list[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def check_baseline(baseline: str | None) -> Path | None:
    """The ``--baseline`` run folder, or None; a ConfigError names a folder that is no run
    (checked before any work, so a typo costs no evaluation)."""
    from vitdesk.config import run_folder_problem
    from vitdesk.errors import ConfigError

    if not baseline:
        return None
    problem = run_folder_problem(baseline, "--baseline")
    if problem:
        raise ConfigError(problem)
    return Path(baseline).expanduser()


def metrics_doc(ev: Any, transfer: dict | None) -> dict:
    """``metrics.json``: the evaluation, plus the baseline comparison when there is one."""
    from vitdesk.analysis.evaluation import json_safe

    doc = ev.to_dict()
    if transfer is not None:
        doc["transfer"] = json_safe(transfer)
    return doc


def transfer_lines(t: dict) -> str:
    """Console lines for a baseline comparison (run minus baseline, paired CIs)."""
    d = t["paired"]

    def ci(e: dict) -> str:
        return f"{e['value']:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}]"

    return (f"{t['model']}\n  minus the baseline {t['baseline_model']}, on the same "
            f"{t['n_slices']} slices (95% patient-bootstrap CIs):\n"
            f"  accuracy {ci(d['accuracy'])}, AUC {ci(d['auc'])}"
            + (f", patient AUC {ci(d['patient_auc'])}" if "patient_auc" in d else ""))
