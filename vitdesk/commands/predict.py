"""``vitdesk predict RUN INPUT [--tta] [--attention DIR] [--out CSV]``."""

from __future__ import annotations

import argparse
import csv
import io
import sys


def run(args: argparse.Namespace) -> int:
    from vitdesk.engine.export_contract import is_export_dir

    if is_export_dir(args.run):  # an exported model: ONNX Runtime, no torch
        return _run_exported(args)
    from vitdesk.analysis.evaluation import predict_input
    from vitdesk.analysis.tta import TTAConfig
    from vitdesk.commands._common import load_run_for, sigint_cancels
    from vitdesk.console import ConsoleProgress
    from vitdesk.fileio import atomic_write_text, check_output_path

    # every output is checked before the prediction runs
    out = check_output_path(args.out, "--out", folder=False) if args.out else None
    if args.attention:
        check_output_path(args.attention, "--attention", folder=True)
    dicom = _check_dicom(args)
    sources: dict[str, list[str]] = {}
    with sigint_cancels() as token:
        lr = load_run_for(args)
        res = predict_input(lr, args.input, sources=sources,
                            tta=TTAConfig() if args.tta else None,
                            attention_dir=args.attention,
                            device=getattr(args, "device", "auto") or "auto", cancel=token,
                            listener=ConsoleProgress(),
                            conformal_alpha=getattr(args, "alpha", 0.1))
    for err in res.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if out is not None:
        buf = io.StringIO()
        _write(buf, res)
        atomic_write_text(out, buf.getvalue())  # a full disk leaves no half (or empty) CSV
        print(f"{len(res.rows)} slices -> {out}", file=sys.stderr)
    else:
        _write(sys.stdout, res)
    if res.overlays:
        print(f"{len(res.overlays)} attention overlays -> {args.attention}", file=sys.stderr)
    if dicom is not None:
        from vitdesk.report.dicom_results import run_model_info

        r = res.rows
        _write_dicom(dicom, [x.key for x in r], [x.slice_index for x in r],
                     [x.probs for x in r], [x.predicted for x in r], [x.set for x in r],
                     sources, res.classes, run_model_info(lr), args.deid,
                     [x.overlay for x in r])
    return 0


def _check_dicom(args: argparse.Namespace):
    from vitdesk.errors import ConfigError
    from vitdesk.fileio import check_output_path

    if getattr(args, "deid", False) and not getattr(args, "dicom", None):
        raise ConfigError("--deid de-identifies the DICOM results: add --dicom DIR")
    return (check_output_path(args.dicom, "--dicom", folder=True)
            if getattr(args, "dicom", None) else None)


def _write_dicom(folder, keys, slices, probs, predicted, sets, sources, classes, model,
                 deid: bool = False, overlays=None) -> None:
    """The DICOM results (SR per series, overlays as Secondary Capture) into ``folder``."""
    from vitdesk.report.dicom_results import write_results

    srs, scs = write_results(folder, keys, slices, probs, predicted, sets, sources, classes,
                             model, overlays, deid)
    if not srs:
        print("warning: --dicom: no DICOM series among the inputs: nothing written",
              file=sys.stderr)
        return
    print(f"{len(srs)} DICOM SR -> {folder}", file=sys.stderr)
    if scs:
        print(f"{len(scs)} DICOM Secondary Capture overlays -> {folder}", file=sys.stderr)


def _run_exported(args: argparse.Namespace) -> int:
    """``vitdesk predict EXPORTED_DIR INPUT``: the same CSV, scored by the exported model."""
    from vitdesk.analysis.exported import predict_exported
    from vitdesk.commands._common import sigint_cancels
    from vitdesk.console import ConsoleProgress
    from vitdesk.errors import ConfigError
    from vitdesk.fileio import atomic_write_text, check_output_path

    for flag in ("tta", "attention"):
        if getattr(args, flag, None):
            raise ConfigError(f"--{flag} needs the run's PyTorch model: predict with the run "
                              "folder instead of the export")
    out = check_output_path(args.out, "--out", folder=False) if args.out else None
    dicom = _check_dicom(args)
    sources: dict[str, list[str]] = {}
    with sigint_cancels() as token:
        res = predict_exported(args.run, args.input, alpha=getattr(args, "alpha", 0.1),
                               sources=sources, cancel=token, listener=ConsoleProgress())
    for err in res.errors:
        print(f"warning: skipped {err}", file=sys.stderr)
    if out is not None:
        buf = io.StringIO()
        _write(buf, res)
        atomic_write_text(out, buf.getvalue())
        print(f"{len(res.keys)} slices ({res.precision}) -> {out}", file=sys.stderr)
    else:
        _write(sys.stdout, res)
    if dicom is not None:
        from vitdesk.report.dicom_results import export_model_info

        _write_dicom(dicom, res.keys, res.slices, res.probs, res.predicted, res.sets,
                     sources, res.classes, export_model_info(res.contract, res.precision),
                     args.deid)
    return 0


def _write(fh, res) -> None:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(res.csv_header())
    w.writerows(res.csv_rows())
