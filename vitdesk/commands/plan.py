"""``vitdesk plan --data SRC [--budget 20m] [--device ...]``: what ``vitdesk train`` would
run on this data, this machine and this budget, with its estimated time and memory.

The same flags as ``train`` (a model, image size or batch given is kept as given); with
no model named the planner chooses (:func:`vitdesk.engine.plan.plan_for_data`). Nothing
is trained or written.
"""

from __future__ import annotations

import argparse

from vitdesk.engine.plan import plan_lines


def run(args: argparse.Namespace) -> int:
    from vitdesk.commands.train import plan_from_args

    print("\n".join(plan_lines(plan_from_args(args))))
    return 0
