"""``vitdesk plan --data SRC [--budget 20m] [--device ...]``: what ``vitdesk train`` would
run on this data, this machine and this budget, with its estimated time and memory.

The same flags as ``train`` (a model, image size or batch given is kept as given); with
no model named the planner chooses (:func:`vitdesk.engine.plan.plan_for_data`). Nothing
is trained or written.
"""

from __future__ import annotations

import argparse

from vitdesk.engine.plan import describe_stage


def run(args: argparse.Namespace) -> int:
    from vitdesk.commands.train import plan_from_args

    plan = plan_from_args(args)
    cfg = plan.cfg
    m = cfg.model
    patch = m.patch_size or None
    lines = ["plan:" if plan.reasons else "plan (model given, nothing chosen):"]
    lines += [f"  {r}" for r in plan.reasons]
    lines.append(f"  run: {m.name} at {m.img_size} px"
                 + (f", {patch}-px patches" if patch else "")
                 + f", weights {cfg.weights.pretrained}, batch {cfg.data.batch_size}, "
                 f"recipe {cfg.recipe.kind}")
    for i, s in enumerate(cfg.recipe.stages):
        lines.append(f"    {i + 1}. {describe_stage(s)}")
    if plan.estimate is not None:
        lines.append(f"  estimate: {plan.estimate.describe()}")
    for n in plan.notices:
        lines.append(f"  note: {n}")
    print("\n".join(lines))
    return 0
