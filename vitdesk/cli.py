"""The ``vitdesk`` command: parse, call, map errors to exit codes.

Thin by design. Each subcommand's handler lives in ``vitdesk.commands.<name>``
and is imported only when that command runs, so ``--version``, ``inspect`` and
``sample`` start without importing torch or Qt.

Exit codes: 0 success, 2 user error (one line, no traceback), 130 cancelled,
1 a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from vitdesk import __version__


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="SRC", help="training data source")
    p.add_argument("--val", metavar="SRC", help="separate validation source")
    p.add_argument("--config", metavar="FILE", help="TOML run configuration")
    p.add_argument("--model", help="timm model name (e.g. vit_tiny_patch16_224), or auto (the "
                   "default without --config): the planner chooses for the data and machine")
    p.add_argument("--pretrained", metavar="PATH|hub|none", help="weights source")
    p.add_argument("--img-size", type=int, metavar="N")
    p.add_argument("--window", metavar="PRESET[,PRESET,PRESET]",
                   help="HU window(s): preset names or W/L, 1 or 3")
    p.add_argument("--recipe", choices=["staged", "full", "head"])
    p.add_argument("--epochs", metavar="N|N1,N2,N3", help="epochs (per stage for staged)")
    p.add_argument("--batch-size", type=int, metavar="N")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", metavar="RUN", help="run folder to write")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last")
    p.add_argument("--folds", type=int, metavar="K",
                   help="K-fold cross-validation by patient: one run per fold in RUN/fold-i, "
                   "each tested on its own patients; RUN/cv.json holds mean, SD, 95%% CI and "
                   "the pooled out-of-fold accuracy/AUC (--resume continues the folds)")
    p.add_argument("--seed", type=int)
    p.add_argument("--teacher", metavar="RUN", help="distil from a trained teacher run")
    p.add_argument("--distill", choices=["soft", "hard", "token"],
                   help="with --teacher: soft KL, hard teacher labels, or a DeiT "
                   "distillation token (a *_distilled model)")
    p.add_argument("--temperature", type=float, metavar="T", help="soft distillation T")
    p.add_argument("--alpha", type=float, metavar="A", help="weight of the teacher term")
    p.add_argument("--unlabelled", metavar="SRC",
                   help="with --teacher: also train on these unlabelled images, which the "
                   "teacher labels (validation/test patients are left out)")
    p.add_argument("--force-staged", action="store_true",
                   help="keep the staged recipe even with a random backbone")
    p.add_argument("--budget", metavar="T",
                   help="with no --model (auto): fit the run to this time, e.g. 20m (10m)")
    p.add_argument("--continue", dest="continue_from", metavar="RUN",
                   help="continual fine-tuning: start from this finished run's weights (same "
                   "model, classes, window and image size) and train on --data")
    p.add_argument("--rehearsal", type=int, metavar="N",
                   help="with --continue: a buffer of N earlier training slices (kept in RUN "
                   "as rehearsal.npz, pixel data); half a batch of them joins every batch")
    p.add_argument("--ewc", type=float, metavar="LAMBDA",
                   help="with --continue: elastic weight consolidation strength (e.g. 100)")
    p.add_argument("--earlier", metavar="SRC",
                   help="with --continue: the data the parent run was trained on, when this "
                   "machine does not know its recorded source")
    p.add_argument("--adapt", metavar="SRC",
                   help="domain-adversarial adaptation (DANN) to these unlabelled images of "
                   "another site (validation/test patients are left out)")
    p.add_argument("--patient-id", choices=["check", "csv", "dicom"],
                   help="a labels.csv patient_id column against the files' DICOM PatientID: "
                   "check they agree (default), or trust the csv or the dicom one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitdesk",
        description="Vision Transformer transfer learning for CT. "
        "Research use only, not for diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"vitdesk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("gui", help="open the workbench")
    p.add_argument("path", nargs="?", help="folder, file or workspace to open")

    p = sub.add_parser("sample", help="write synthetic CT studies (DICOM) + labels.csv")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--patients", type=int, default=24, metavar="N")
    p.add_argument("--slices", type=int, default=24, metavar="N")
    p.add_argument("--size", type=int, default=128, metavar="PX", help="rows = columns")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--scanner", metavar="NAME",
                   help="acquire as scanner profile A, B or C (noise, kernel, HU offset, "
                   "slice thickness, FOV) to produce site shift; default: the original sample")

    p = sub.add_parser("inspect", help="print one line per series found under PATH")
    p.add_argument("path", metavar="PATH")

    p = sub.add_parser("train", help="fine-tune a ViT or train a CNN")
    _add_train_args(p)

    p = sub.add_parser("plan", help="what train would run on this data, machine and budget, "
                       "with estimated time and memory")
    _add_train_args(p)

    p = sub.add_parser("pretrain", help="offline pretraining: MAE on unlabelled images, or "
                       "formula-driven (--formula) with no data")
    p.add_argument("--data", metavar="SRC", help="the unlabelled images (MAE)")
    p.add_argument("--formula", choices=["contours", "fractals"],
                   help="classify generated formula images instead of MAE on --data")
    p.add_argument("--formula-classes", type=int, metavar="N", help="formulas (64)")
    p.add_argument("--formula-per-class", type=int, metavar="N",
                   help="images of each formula per epoch (16)")
    p.add_argument("--model")
    p.add_argument("--img-size", type=int, metavar="N")
    p.add_argument("--window", metavar="PRESET[,PRESET,PRESET]")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--batch-size", type=int, metavar="N")
    p.add_argument("--mask-ratio", type=float, help="fraction of patches hidden (0.75)")
    p.add_argument("--base-lr", type=float, metavar="LR",
                   help="learning rate per 256 images (1.5e-4; the rate is scaled by the batch)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="DataLoader worker processes (0: load in the main process)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", required=True, metavar="DIR")

    p = sub.add_parser("evaluate", help="evaluate a run on a data source")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", required=True, metavar="SRC")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--baseline", metavar="RUN",
                   help="also score this run on the same slices and write the paired "
                        "differences under 'transfer' in metrics.json")
    p.add_argument("--alpha", type=float, default=0.1, metavar="A",
                   help="error rate of the conformal prediction sets (default 0.1: each set "
                        "holds the true class 90%% of the time; a slice whose set is not one "
                        "class is 'refer')")
    p.add_argument("--earlier", metavar="OLD_SRC",
                   help="a run trained with --continue: also score it and its parent on the "
                   "parent's test split of this data (forgetting)")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    p = sub.add_parser("predict", help="predict slices; write probabilities CSV")
    p.add_argument("run", metavar="RUN")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--attention", metavar="DIR", help="write attention overlay PNGs here")
    p.add_argument("--alpha", type=float, default=0.1, metavar="A",
                   help="error rate of the conformal prediction sets (default 0.1: each set "
                        "holds the true class 90%% of the time; a slice whose set is not one "
                        "class is 'refer')")
    p.add_argument("--out", metavar="CSV", help="probabilities CSV (default: stdout)")
    p.add_argument("--dicom", metavar="DIR", help="also write a DICOM Comprehensive SR per "
                   "DICOM series (references the source images; no patient identity)")
    p.add_argument("--deid", action="store_true", help="with --dicom: de-identified copies "
                   "(PS3.15 basic profile; every UID, the referenced ones too, remapped "
                   "consistently)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    p = sub.add_parser("report", help="write report.html and report.pdf")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", required=True, metavar="SRC")
    p.add_argument("--baseline", metavar="RUN",
                   help="a baseline run (e.g. a CNN from scratch) scored on the same slices "
                        "for the transfer-effectiveness section")
    p.add_argument("--alpha", type=float, default=0.1, metavar="A",
                   help="error rate of the conformal prediction sets (default 0.1: each set "
                        "holds the true class 90%% of the time; a slice whose set is not one "
                        "class is 'refer')")
    p.add_argument("--earlier", metavar="OLD_SRC",
                   help="a run trained with --continue: the parent's data, for the forgetting "
                   "figures (default: the source the parent's split recorded)")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--dicom", metavar="DIR", help="also write the report as an Encapsulated "
                   "PDF in each DICOM study of the test split (no patient identity)")
    p.add_argument("--deid", action="store_true", help="with --dicom: de-identified copies "
                   "(PS3.15 basic profile; every UID, the referenced ones too, remapped "
                   "consistently)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    p = sub.add_parser("export", help="the trained model as ONNX or TorchScript, with its "
                       "preprocessing contract (vitdesk-export.json)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--format", required=True, metavar="onnx|torchscript")
    p.add_argument("--int8", action="store_true",
                   help="also an int8 ONNX model (kept when within one accuracy point of fp32)")
    p.add_argument("--data", metavar="SRC",
                   help="the run's data source, to check the export on its test slices")
    p.add_argument("--out", required=True, metavar="DIR")

    p = sub.add_parser("suggest", help="slices or series to label next (uncertainty + "
                       "diversity under the run's model)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--data", required=True, metavar="SRC",
                   help="a workspace (its unlabelled slices) or any source (all its slices)")
    p.add_argument("--n", type=int, default=20, metavar="N", help="suggestions (20)")
    p.add_argument("--by", choices=["slice", "series"], default="slice",
                   help="rank slices, or series by their most uncertain slices")
    p.add_argument("--uncertainty", choices=["entropy", "margin"], default="entropy",
                   help="of the TTA-averaged probabilities (entropy)")
    p.add_argument("--no-tta", action="store_true", help="plain probabilities (faster)")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--batch-size", type=int, default=32, metavar="N")
    p.add_argument("--out", metavar="CSV", help="also write the suggestions as CSV")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")

    p = sub.add_parser("demo", help="sample -> train -> evaluate -> report")
    p.add_argument("--out", default="vitdesk-demo", metavar="DIR")
    p.add_argument("--quick", action="store_true", help="a few minutes on a laptop CPU")
    p.add_argument("--seed", type=int, metavar="N",
                   help="sample and training seed (default 0; others give other patients)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from vitdesk.offline import go_offline

    go_offline()  # first: hub libraries read their offline switch once, when imported
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "gui"
    if args.command is None:
        args.path = None
    from vitdesk.errors import Cancelled, VitdeskError

    try:
        module = importlib.import_module(f"vitdesk.commands.{command}")
        return int(module.run(args) or 0)
    except (KeyboardInterrupt, Cancelled):
        print("vitdesk: cancelled", file=sys.stderr)
        return 130
    except VitdeskError as exc:
        print(f"vitdesk: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # a write that no atomic writer guarded (a plot, an overlay PNG): still one line
        from vitdesk.fileio import NO_SPACE_ERRNOS

        if exc.errno not in NO_SPACE_ERRNOS:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"vitdesk: error: disk full{where}: free some space or write to another disk",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
