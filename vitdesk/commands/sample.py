"""``vitdesk sample --out DIR [--scanner A|B|C]``: write synthetic CT studies (DICOM)
and labels.csv, optionally acquired as one scanner profile (site shift).

Imports neither torch nor Qt, so it starts fast. A bad ``--out`` (an existing
file, a non-empty folder that is not a sample) is a user error: one line, exit 2.
"""

from __future__ import annotations

import argparse
import time

from vitdesk.console import ConsoleProgress
from vitdesk.errors import ConfigError
from vitdesk.imaging.synthetic import SCANNERS, generate_sample


def run(args: argparse.Namespace) -> int:
    """Generate the sample described by ``args`` and print a short summary."""
    for name in ("patients", "slices"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 16 <= args.size <= 1024:
        raise ConfigError(f"--size must be between 16 and 1024 px, got {args.size}")
    scanner = getattr(args, "scanner", None)
    if scanner is not None and scanner.strip().upper() not in SCANNERS:
        raise ConfigError(f"--scanner '{scanner}' is not a scanner profile: use one of "
                          f"{', '.join(SCANNERS)}")
    start = time.perf_counter()
    info = generate_sample(args.out, patients=args.patients, slices=args.slices,
                           size=args.size, seed=args.seed, listener=ConsoleProgress(),
                           scanner=scanner)
    seconds = time.perf_counter() - start
    print(info.describe())
    print(f"labels: {info.labels_csv}  classes: {', '.join(info.classes)}  "
          f"({seconds:.1f} s)")
    print("synthetic data for testing and teaching; research use only, not for diagnosis")
    return 0
