"""A report of one run folder: model card, training curves and an evaluation.

:func:`report_data_from_run` reads ``config.toml``, ``env.json``, ``split.json`` and
``history.jsonl`` of a run and combines them with a
:class:`~vitdesk.analysis.evaluation.RunEvaluation` into a
:class:`~vitdesk.report.data.ReportData`. Only safe facts are read: no data paths,
no patient identifiers (split.json holds keyed hashes and paths relative to a
fingerprinted root; only counts are used).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vitdesk.engine.history import read_history
from vitdesk.report.build import ReportFiles, write_report
from vitdesk.report.data import AttentionSample, ModelCard, ReportData


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def backbone_provenance(pretrained: str, weights_source: str = "") -> tuple[str, str]:
    """(weights source, backbone provenance) texts for the model card.

    An MAE pretraining folder is described from its ``card.json``; ``none`` is a
    random initialisation. Only the last path component is shown (full paths may name
    people or hospitals).
    """
    src = (pretrained or "none").strip()
    if src.lower() == "none":
        return "none", "random init (no pretrained backbone)"
    if src.lower() == "hub" or weights_source.startswith("hub:"):
        name = weights_source.split(":", 1)[1] if ":" in weights_source else ""
        return (f"timm hub cache {name}".strip(),
                "timm pretrained weights from the local hub cache (see the model's timm "
                "pretrained config for the pretraining data and licence)")
    p = Path(src).expanduser()
    card = None
    try:
        from vitdesk.engine.pretrain import read_card

        card = read_card(p) if p.exists() else None
    except Exception:  # a corrupt card must not stop the report; the source is still named
        card = None
    if card and card.get("objective") == "formula":
        f = card.get("formula", {})
        text = (f"formula-driven ({f.get('kind', '?')}, {f.get('classes', '?')} classes), "
                f"{card.get('epochs')} epochs, no patient data")
        return f"local formula folder '{p.name}'", text
    if card:
        d = card.get("data", {})
        # short enough for one table row of the PDF; details go to backbone_details()
        text = (f"MAE, {card.get('epochs')} epochs, {d.get('n_images', '?')} unlabelled "
                f"slices ({d.get('n_patients', '?')} patients)")
        return f"local MAE folder '{p.name}'", text
    return f"local file '{p.name}'", "user-supplied weights file (provenance not recorded)"


def backbone_location(run_dir: str | Path, pretrained: str, weights_source: str = "") -> str:
    """Where a run's starting weights are now: ``pretrained`` made findable.

    New runs record an absolute path. Older ones recorded it relative to the working
    directory of the training (the GUI's, often), so a report made elsewhere lost the
    backbone's card: try it beside the run folder and its parents too, then the file
    named in ``env.json`` (``weights.source``) and its folder. Unchanged when not found.
    """
    src = (pretrained or "none").strip()
    if src.lower() in ("none", "hub") or weights_source.startswith("hub:"):
        return src
    run = Path(run_dir)
    for cand in (src, weights_source):
        if not cand:
            continue
        p = Path(cand).expanduser()
        bases = [Path()] if p.is_absolute() else [Path(), run, run.parent, run.parent.parent]
        for base in bases:
            hit = base / p
            if hit.is_dir() or (hit.is_file() and cand == src):
                return str(hit.resolve())
            if hit.is_file() and (hit.parent / "card.json").is_file():
                return str(hit.parent.resolve())  # an MAE/formula folder's encoder file
    return src


def backbone_details(pretrained: str) -> str:
    """A sentence on an MAE backbone for the report notes ("" when it is not one)."""
    try:
        from vitdesk.engine.pretrain import read_card

        p = Path(pretrained).expanduser()
        card = read_card(p) if p.exists() else None
    except Exception:  # a corrupt card only loses this sentence
        card = None
    if not card:
        return ""
    d = card.get("data", {})
    losses = card.get("loss_per_epoch") or []
    if card.get("objective") == "formula":
        f = card.get("formula", {})
        loss = f", classification loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
        return (f"Backbone: formula-driven supervised pretraining (vitdesk pretrain --formula "
                f"{f.get('kind', '?')}) of {card.get('model')} at {card.get('img_size')} px, "
                f"{card.get('epochs')} epochs classifying {f.get('classes', '?')} generated "
                f"formulas ({d.get('n_images', '?')} images per epoch); no patient images "
                f"were used{loss}.")
    loss = f", reconstruction loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
    return (f"Backbone: MAE self-supervised pretraining (vitdesk pretrain) of "
            f"{card.get('model')} at {card.get('img_size')} px, {card.get('epochs')} epochs on "
            f"{d.get('n_images', '?')} unlabelled slices of {d.get('n_patients', '?')} patients "
            f"(data fingerprint {d.get('fingerprint', '?')}), mask ratio "
            f"{card.get('mask_ratio')}, window {card.get('window_label', '?')}{loss}.")


def _split_counts(run_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    doc = _read_json(run_dir / "split.json")
    slices, patients = {}, {}
    for name, rows in (doc.get("splits") or {}).items():
        slices[name] = len(rows)
        patients[name] = len({r.get("patient") for r in rows})
    if not slices and "sizes" in doc:
        slices = {k: int(v) for k, v in doc["sizes"].items()}
    return slices, patients


def model_card(run_dir: str | Path, evaluation: Any = None) -> ModelCard:
    """The model card of a run folder."""
    from vitdesk.config import load_config

    run = Path(run_dir)
    cfg = load_config(run / "config.toml")
    env = _read_json(run / "env.json")
    weights = env.get("weights") or {}
    weights_from = str(weights.get("source", ""))
    source, backbone = backbone_provenance(
        backbone_location(run, cfg.weights.pretrained, weights_from), weights_from)
    from vitdesk.imaging.windowing import WindowSpec

    try:
        windowing = WindowSpec.parse(cfg.data.window, clahe=cfg.data.clahe).label()
    except Exception:
        windowing = cfg.data.window
    stages = [{"stage": s.name, "epochs": s.epochs, "lr": s.lr, "trainable": s.unfreeze,
               "layer_decay": s.layer_decay} for s in cfg.recipe.stages]
    slices, patients = _split_counts(run)
    fr = "/".join(f"{round(f * 100):d}" for f in cfg.data.fractions)
    software = {k: str(env[k]) for k in ("vitdesk", "python", "torch", "timm", "numpy")
                if env.get(k)}
    classes = list(getattr(evaluation, "classes", []) or [])
    # short: the PDF prints one table row per line
    recipe = (f"{cfg.recipe.kind}, {cfg.optim.opt} + cosine, smoothing "
              f"{cfg.data.label_smoothing:g}, balance {cfg.data.balance}, "
              f"batch {cfg.data.batch_size}")
    return ModelCard(
        architecture=cfg.model.name, weights_source=source, backbone=backbone,
        img_size=cfg.model.img_size, windowing=windowing, recipe=recipe, stages=stages,
        classes=classes, data_sizes=slices, patients=patients,
        split=f"by patient {fr} (train/val/test), stratified, seed {cfg.seed}",
        software=software, seed=cfg.seed, device=str(env.get("device", "")),
    )


def adapt_figures(run_dir: str | Path) -> dict | None:
    """An adapted run's source/target accuracy as training recorded it (``metrics.json``
    'adapt'), or None for a run that was not adapted."""
    a = _read_json(Path(run_dir) / "metrics.json").get("adapt")
    return dict(a) if isinstance(a, dict) and a else None


def continual_figures(run: Any, earlier: str | Path | None = None, *,
                      cancel: Any = None, listener: Any = None) -> dict | None:
    """What a report shows about forgetting: :func:`~vitdesk.analysis.forgetting.forgetting`
    of a continued run (``earlier``: the parent's data; None: the source its split.json
    recorded), ``{"parent", "note"}`` when it cannot be measured (the parent or its data
    moved: the report says why instead of failing), or None for a run without a parent.

    The CLI report and the workbench's Report tab both call this, so both show the same.
    """
    from vitdesk.analysis.forgetting import forgetting
    from vitdesk.errors import Cancelled, VitdeskError
    from vitdesk.jobs import NEVER

    name = run.cfg.continual.continue_from
    if not name:
        return None
    try:
        return forgetting(run, earlier, cancel=cancel or NEVER, listener=listener)
    except Cancelled:
        raise
    except VitdeskError as exc:
        # the reason goes to the console or status line only: it may name folders, and
        # a report holds no paths
        from vitdesk.jobs import Notice, emit

        emit(listener, Notice("report", f"forgetting not measured: {exc}"))
        return {"parent": Path(name).name,
                "note": "the parent run or its test split could not be read here (put the "
                        "two run folders side by side and give the parent's training data "
                        "as the earlier data: --earlier SRC, or 'Earlier data' in the "
                        "Report tab)"}


def report_data_from_run(run_dir: str | Path, evaluation: Any,
                         transfer: dict | None = None,
                         continual: dict | None = None) -> ReportData:
    """ReportData for a run and its :class:`~vitdesk.analysis.evaluation.RunEvaluation`
    (``transfer``: :func:`~vitdesk.analysis.baseline.compare_with_baseline`'s figures;
    ``continual``: :func:`~vitdesk.analysis.forgetting.forgetting`'s, or ``{"parent",
    "note"}`` saying why it was not measured)."""
    run = Path(run_dir)
    ev = evaluation
    card = model_card(run, ev)
    where = ("the run's held-out test patients" if ev.split == "test"
             else f"the run's '{ev.split}' split" if ev.split in ("train", "val")
             else "an external data set")
    notes = [f"Evaluated on {where}: {ev.n_slices} slices of {ev.n_patients} patients "
             f"(data fingerprint {ev.fingerprint})"
             + (", with test-time augmentation." if ev.tta else ".")]
    from vitdesk.config import load_config

    weights_from = str((_read_json(run / "env.json").get("weights") or {}).get("source", ""))
    details = backbone_details(backbone_location(
        run, load_config(run / "config.toml").weights.pretrained, weights_from))
    if details:
        notes.append(details)
    notes += list(ev.notes)
    attention = [AttentionSample(a.image, a.caption) for a in ev.attention]
    return ReportData(
        title="vitdesk evaluation report",
        subtitle=f"run {ev.run_id}",
        created=time.strftime("%Y-%m-%d %H:%M"),
        model=card,
        history=read_history(run) or None,
        evaluation=ev.metrics,
        tta=ev.tta,
        fairness=list(ev.fairness) or None,
        robustness=list(ev.robustness) or None,
        shift=ev.shift,
        calibration=getattr(ev, "calibration", None),
        conformal=getattr(ev, "conformal", None),
        attention=attention or None,
        transfer=transfer,
        continual=continual,
        adapt=adapt_figures(run),
        notes=notes,
    )


def write_run_report(run_dir: str | Path, evaluation: Any, out_dir: str | Path,
                     forbidden: Iterable[str] = (), transfer: dict | None = None,
                     continual: dict | None = None) -> ReportFiles:
    """Write ``out_dir/report.html`` and ``report.pdf`` for a run and its evaluation."""
    return write_report(report_data_from_run(run_dir, evaluation, transfer, continual),
                        out_dir, forbidden)
