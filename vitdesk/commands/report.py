"""``vitdesk report RUN --data SRC [--baseline RUN] [--out DIR]``: report.html +
report.pdf (+ metrics.json)."""

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
        transfer_lines,
        write_json,
    )
    from vitdesk.console import ConsoleProgress
    from vitdesk.fileio import check_output_path
    from vitdesk.report.from_run import continual_figures, write_run_report

    # every input and output is checked before the evaluation runs
    out = Path(args.out) if args.out else Path(args.run) / "report"
    if args.out or Path(args.run).is_dir():  # no run folder: load_run names the problem
        check_output_path(out, "--out", folder=True,
                          files=("report.html", "report.pdf", "metrics.json"))
    baseline = check_baseline(getattr(args, "baseline", None))
    if getattr(args, "deid", False) and not getattr(args, "dicom", None):
        from vitdesk.errors import ConfigError

        raise ConfigError("--deid de-identifies the DICOM results: add --dicom DIR")
    dicom = (check_output_path(args.dicom, "--dicom", folder=True)
             if getattr(args, "dicom", None) else None)
    device = getattr(args, "device", "auto") or "auto"
    transfer = None
    with sigint_cancels() as token:
        lr = load_run_for(args)
        ev = evaluate_run(lr, args.data, tta=TTAConfig(), attention_samples=6,
                          device=device, cancel=token, listener=ConsoleProgress(),
                          conformal_alpha=getattr(args, "alpha", 0.1))
        if baseline is not None:
            transfer = evaluate_baseline(ev, args.run, baseline, args.data, tta=TTAConfig(),
                                         device=device, cancel=token,
                                         listener=ConsoleProgress())
        continual = continual_figures(lr, getattr(args, "earlier", None), cancel=token,
                                      listener=ConsoleProgress())
    files = write_run_report(args.run, ev, out, transfer=transfer, continual=continual)
    write_json(out / "metrics.json", metrics_doc(ev, transfer))  # the numbers behind it
    if transfer is not None:
        print(transfer_lines(transfer))
    print(files.html)
    print(f"{files.pdf} ({files.pages} pages)")
    if dicom is not None:
        _write_dicom(args, dicom, files.pdf, ev, lr)
    return 0


def _write_dicom(args: argparse.Namespace, folder: Path, pdf: Path, ev, lr) -> None:
    """The report PDF as an Encapsulated PDF in every DICOM study of the test split, and
    a Comprehensive SR per scored DICOM series (its slices' classes, probabilities and
    conformal sets, as the report counted them)."""
    import numpy as np

    from vitdesk.analysis.conformal import set_labels
    from vitdesk.analysis.evaluation import slice_keys
    from vitdesk.data.splits import load_split
    from vitdesk.report.dicom_results import run_model_info, study_uids, write_pdf, write_results

    deid = getattr(args, "deid", False)
    recs = [r for r in load_split(Path(args.run) / "split.json", data_src=args.data)
            .get("test", []) if r.kind == "dicom"]
    uids = study_uids(sorted({r.path for r in recs}))
    if not uids:
        print("warning: --dicom: the test split holds no DICOM study: no object written")
        return
    written = write_pdf(folder, pdf, uids, deid=deid)
    print(f"{len(written)} Encapsulated PDF -> {folder}")
    # the evaluation's rows (analysis class order) back in the model's class order
    classes = list(lr.classes)
    order = [list(ev.classes).index(c) for c in classes]
    probs = np.asarray(ev.probs)[:, order]
    conf = getattr(ev, "conformal", None)
    sets = (set_labels(np.asarray(conf.sets)[:, order], classes)
            if conf is not None and np.asarray(conf.sets).shape == probs.shape else None)
    by_key = dict(zip(slice_keys(recs).tolist(), recs, strict=True))
    sources: dict[str, list[str]] = {}
    keys, slices, rows = [], [], []
    for i, k in enumerate(np.asarray(ev.keys).tolist()):
        rec = by_key.get(k)
        if rec is None:
            continue
        files = sources.setdefault(rec.series, [])
        files.append(rec.path)
        keys.append(rec.series)
        slices.append(len(files) - 1)
        rows.append(i)
    srs, _ = write_results(folder, keys, slices, probs[rows],
                           [classes[int(j)] for j in probs[rows].argmax(1)],
                           None if sets is None else [sets[i] for i in rows], sources,
                           classes, run_model_info(lr), deid=deid)
    print(f"{len(srs)} DICOM SR -> {folder}")
