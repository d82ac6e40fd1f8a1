"""``vitdesk`` and ``vitdesk gui [PATH]``: open the workbench."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    # Imported here: the rest of the command line must start without Qt.
    from vitdesk.gui.app import main

    return main(getattr(args, "path", None))
