"""`vitdesk train` end to end on a tiny PNG class-folder dataset."""

from __future__ import annotations

import json
import os
import signal
import tomllib

import pytest

from tests.pngdata import write_square_pngs
from vitdesk.cli import main
from vitdesk.data.source_refs import source_ref


@pytest.fixture
def png_data(tmp_path):
    """Class folders of 32 px PNGs: 'lesion' has a bright square, 'normal' does not."""
    return write_square_pngs(tmp_path / "data")


def _args(data, out, *extra):
    return ["train", "--data", str(data), "--model", "vit_test_tiny", "--img-size", "32",
            "--pretrained", "none", "--batch-size", "8", "--device", "cpu", "--out", str(out),
            *extra]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_random_backbone_switches_staged_to_full_and_writes_the_run(
        png_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(png_data, out, "--epochs", "1,1,1")) == 0
    err = capsys.readouterr().err
    assert "staged fine-tuning of a random backbone is meaningless" in err
    assert "4x4 grid of 8-px patches" in err  # the coarse-grid notice reaches the console
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["recipe"]["kind"] == "full"
    assert [s["epochs"] for s in cfg["recipe"]["stages"]] == [3]  # 1+1+1 kept in total
    # the data path is kept as a keyed fingerprint: a folder name may name a patient
    assert cfg["model"]["name"] == "vit_test_tiny" and cfg["data"]["source"] == source_ref(png_data)
    for name in ("config.toml", "history.jsonl", "metrics.json", "env.json", "split.json",
                 "checkpoints/last.json", "checkpoints/best.json"):
        assert (out / name).is_file(), name
    assert len((out / "history.jsonl").read_text().splitlines()) == 3

    # bad inputs: exit 2, one line, and the existing run folder is untouched
    before = _snapshot(out)
    for argv, needle in [
        (_args(png_data, out), "already exists"),
        (_args(png_data, tmp_path / "b", "--img-size", "36"), "divisible"),
        (_args(png_data, tmp_path / "b", "--model", "vit_tiny_patch16_22"), "did you mean"),
        (_args(png_data, tmp_path / "b", "--pretrained", str(tmp_path / "no.pth")), "not found"),
        (_args(png_data, tmp_path / "b", "--epochs", "1,2", "--force-staged"), "3 stage"),
        (_args(png_data, tmp_path / "b", "--epochs", "two"), "--epochs"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("vitdesk: error:")]
        assert len(errors) == 1 and needle in errors[0], err
        assert "Traceback" not in err
    assert _snapshot(out) == before
    assert not (tmp_path / "b").exists()


def test_force_staged_keeps_the_recipe(png_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(png_data, out, "--epochs", "1,1,0", "--force-staged")) == 0
    assert "meaningless" not in capsys.readouterr().err
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["recipe"]["kind"] == "staged"
    assert [s["unfreeze"] for s in cfg["recipe"]["stages"]] == ["head", "top:4", "all"]
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["stage"] for h in hist] == [0, 1]


def test_single_class_data_is_a_user_error(tmp_path, png_data, capsys):
    import shutil

    shutil.rmtree(png_data / "lesion")
    assert main(_args(png_data, tmp_path / "run", "--epochs", "1")) == 2
    assert "class" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_ctrl_c_writes_last_and_exits_130_then_resume_finishes(
        png_data, tmp_path, monkeypatch, capsys):
    import vitdesk.console
    from vitdesk.engine.events import StepDone

    original = vitdesk.console.ConsoleProgress

    class InterruptOnFirstStep(original):
        def __call__(self, event):
            if isinstance(event, StepDone) and not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal does
            super().__call__(event)

    monkeypatch.setattr(vitdesk.console, "ConsoleProgress", InterruptOnFirstStep)
    out = tmp_path / "run"
    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text("log_every = 1\n[recipe]\nkind = 'full'\n")
    assert main(_args(png_data, out, "--config", str(cfg_path), "--epochs", "2")) == 130
    last = json.loads((out / "checkpoints" / "last.json").read_text())
    assert last["train_state"]["global_step"] == 1 and last["train_state"]["batch"] == 1
    monkeypatch.setattr(vitdesk.console, "ConsoleProgress", original)
    assert main(_args(png_data, out, "--resume")) == 0
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [0, 1]
    assert json.loads((out / "metrics.json").read_text())["finished"] is True


def test_resume_accepts_the_original_flags_and_refuses_a_real_difference(
        png_data, tmp_path, monkeypatch, capsys):
    """`--pretrained none --epochs 1,1,1` trained one full stage of 3: the same command
    plus --resume goes on; a changed flag is refused naming the field and both values."""
    import vitdesk.console
    from vitdesk.engine.events import StepDone

    original = vitdesk.console.ConsoleProgress

    class InterruptOnFirstStep(original):
        def __call__(self, event):
            if isinstance(event, StepDone) and not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)
            super().__call__(event)

    out = tmp_path / "run"
    command = _args(png_data, out, "--epochs", "1,1,1", "--seed", "3")
    monkeypatch.setattr(vitdesk.console, "ConsoleProgress", InterruptOnFirstStep)
    assert main(command) == 130
    monkeypatch.setattr(vitdesk.console, "ConsoleProgress", original)
    capsys.readouterr()
    before = _snapshot(out)
    for extra, needle in [
        (["--seed", "4"], "seed is 3 in the run but 4 here"),
        (["--epochs", "2,2,2"], "epochs are 3 (3 in total) in the run but --epochs 2,2,2 here"),
        (["--img-size", "64"], "model.img_size is 32 in the run but 64 here"),
        (["--force-staged"], "recipe.kind is 'full' in the run but 'staged' here"),
    ]:
        argv = [*command, "--resume"]
        for i in range(0, len(extra), 2):  # replace the flag's value, or add it
            if extra[i] in argv and i + 1 < len(extra):
                argv[argv.index(extra[i]) + 1] = extra[i + 1]
            else:
                argv += extra[i:i + 2]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("vitdesk: error:")]
        assert len(errors) == 1 and needle in errors[0] and "cannot resume" in errors[0], err
        assert "Traceback" not in err
    assert _snapshot(out) == before
    # the original command, per stage or as the total, plus --resume: it goes on
    assert main([*command, "--resume"]) == 0
    hist = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [0, 1, 2]
    assert json.loads((out / "metrics.json").read_text())["finished"] is True
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert [s["epochs"] for s in cfg["recipe"]["stages"]] == [3] and cfg["seed"] == 3
    assert main([*_args(png_data, out, "--epochs", "3", "--seed", "3"), "--resume"]) == 0


def test_plan_prints_the_run_and_train_without_a_model_runs_it(png_data, tmp_path, capsys):
    """No --model: the planner chooses for 32 px images (no upsampling, a grid of 8x8 to
    16x16 patches, random weights, full recipe) and `train` runs what `plan` printed (the
    step times are measured once per process, so both see the same machine)."""
    import re

    common = ["--data", str(png_data), "--device", "cpu", "--budget", "20s"]
    assert main(["plan", *common]) == 0
    out = capsys.readouterr().out
    assert "image size 32 px: native 32 px, not upsampled" in out and "estimate: about" in out
    m = re.search(r"run: (\S+) at (\d+) px, (\d+)-px patches, weights none", out)
    assert m, out
    model, img, patch = m.group(1), int(m.group(2)), int(m.group(3))
    assert model in ("vit_test_tiny_convstem", "vit_tiny_patch16_224") and img == 32
    assert patch in (2, 4) and f"patch {patch} px: a {32 // patch}x{32 // patch} grid" in out
    epochs = int(out.split("1. full: ")[1].split(" ep")[0])
    assert 3 <= epochs <= 300
    run = tmp_path / "auto"
    assert main(["train", *common, "--out", str(run), "--epochs", "2"]) == 0
    err = capsys.readouterr().err
    assert f"plan: model: {model}" in err and "grid of" not in err  # no coarse-grid warning
    assert "the plan estimated" in err.splitlines()[-1]  # the closing line: actual vs plan
    env = json.loads((run / "env.json").read_text())
    assert env["plan_estimate"]["seconds"] > 0 and env["train_seconds"] > 0
    cfg = tomllib.loads((run / "config.toml").read_text())
    assert (cfg["model"]["name"], cfg["model"]["img_size"], cfg["model"]["patch_size"]) == (
        model, 32, patch)
    assert cfg["weights"]["pretrained"] == "none" and cfg["recipe"]["kind"] == "full"
    assert [s["epochs"] for s in cfg["recipe"]["stages"]] == [2]  # --epochs given: kept
    from vitdesk.engine.run import load_run

    loaded = load_run(run)
    assert loaded.model.patch_embed.patch_size == (patch, patch)  # rebuilt at its patch
    # a bad budget is one line, exit 2
    assert main(["plan", "--data", str(png_data), "--budget", "soon"]) == 2
    assert "--budget 'soon' is not a duration" in capsys.readouterr().err


def test_folds_cross_validate_partition_summarise_and_resume_after_ctrl_c(
        png_data, tmp_path, monkeypatch, capsys):
    """--folds 3: every patient is tested exactly once, by the fold whose config.toml says
    so; cv.json holds each fold's evaluate numbers, their mean/SD/t interval and the pooled
    out-of-fold metrics; Ctrl-C in fold 2 keeps fold 1 and --resume finishes the rest."""
    import numpy as np
    from scipy import stats

    import vitdesk.console
    from vitdesk.analysis.cv import mean_interval
    from vitdesk.data.sources import load_records
    from vitdesk.data.splits import kfold_patients, load_split
    from vitdesk.engine.events import StepDone
    from vitdesk.jobs import Progress

    original = vitdesk.console.ConsoleProgress

    class InterruptInFold2(original):
        def __call__(self, event):
            if isinstance(event, Progress) and event.task == "cross-validate":
                self.fold = event.done + 1
            if (isinstance(event, StepDone) and getattr(self, "fold", 0) == 2
                    and not getattr(self, "sent", False)):
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)
            super().__call__(event)

    out = tmp_path / "cv"
    command = _args(png_data, out, "--epochs", "1", "--folds", "3", "--seed", "5")
    monkeypatch.setattr(vitdesk.console, "ConsoleProgress", InterruptInFold2)
    assert main(command) == 130
    doc = json.loads((out / "cv.json").read_text())
    assert doc["finished"] is False and [f["fold"] for f in doc["folds"]] == [1]
    fold1 = _snapshot(out / "fold-1")
    assert (out / "fold-2" / "checkpoints" / "last.json").is_file()
    monkeypatch.setattr(vitdesk.console, "ConsoleProgress", original)
    capsys.readouterr()

    # the same command again (no --resume) is refused; with --resume it continues
    assert main(command) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main([*command, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "mean +- SD" in printed and "pooled" in printed and str(out / "cv.json") in printed
    assert _snapshot(out / "fold-1") == fold1  # the finished fold was not touched

    doc = json.loads((out / "cv.json").read_text())
    assert doc["finished"] is True and doc["k"] == 3
    folds = kfold_patients(load_records(png_data), 3, seed=5)
    tested = []
    for i, f in enumerate(doc["folds"], start=1):
        run = out / f"fold-{i}"
        assert tomllib.loads((run / "config.toml").read_text())["data"]["fold"] == f"{i}/3"
        split = load_split(run / "split.json")
        test_patients = {r.patient for r in split["test"]}
        assert test_patients == set(folds[i - 1])  # the fold's own test patients
        assert not test_patients & {r.patient for r in split["train"] + split["val"]}
        tested += sorted(test_patients)
        m = json.loads((run / "eval" / "metrics.json").read_text())
        assert m["split"] == "test" and m["n_patients"] == len(test_patients)
        for level in ("slice", "patient"):
            for key in ("accuracy", "auc"):
                assert f[f"{level}_{key}"] == m["metrics"][level]["metrics"][key]["value"]
            assert f["cuts"][level] == m["metrics"][level]["cut"]
        classes = {r.label for r in split["test"]}
        assert classes == {"normal", "lesion"}  # stratified: 20 patients, 10 per class
    assert sorted(tested) == sorted({r.patient for r in load_records(png_data)})
    for key, s in doc["summary"].items():
        values = [f[key] for f in doc["folds"]]
        # reference: scipy's t interval of the mean, clipped to [0, 1] (a rate)
        lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                  scale=stats.sem(values))
        assert s["mean"] == pytest.approx(np.mean(values)) and s["n"] == 3
        assert s["sd"] == pytest.approx(np.std(values, ddof=1))
        assert (s["lo"], s["hi"]) == (pytest.approx(max(lo, 0.0)), pytest.approx(min(hi, 1.0)))
        spread = mean_interval(values, bounds=(0.0, 1.0))
        assert (spread.lo, spread.hi) == (pytest.approx(s["lo"]), pytest.approx(s["hi"]))
    pooled = doc["pooled"]
    assert pooled["n_slices"] == pooled["n_patients"] == 20
    correct = sum(f["slice_accuracy"] * f["n_slices"] for f in doc["folds"])
    assert pooled["slice"]["accuracy"] == pytest.approx(correct / 20)
    # the fold runs are reproducible from their own config.toml: the same split again
    from vitdesk.config import load_config

    cfg = load_config(out / "fold-2" / "config.toml")
    assert (cfg.seed, cfg.data.fold, cfg.model.name) == (5, "2/3", "vit_test_tiny")


def test_folds_bad_requests_are_one_line_and_write_nothing(png_data, tmp_path, capsys):
    for extra, needle in [
        (["--folds", "1"], "2 or more folds"),
        (["--folds", "30"], "needs at least 30 patients"),
        (["--folds", "3", "--val", str(png_data)], "leave out --val"),
    ]:
        out = tmp_path / "cv"
        assert main(_args(png_data, out, "--epochs", "1", *extra)) == 2, extra
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("vitdesk: error:")]
        assert len(errors) == 1 and needle in errors[0], err
        assert not out.exists()
    # a plain --resume of a cross-validation folder says how to resume it
    out = tmp_path / "cv"
    out.mkdir()
    (out / "cv.json").write_text('{"format": "vitdesk-cv-1", "k": 3, "folds": []}')
    assert main(_args(png_data, out, "--resume")) == 2
    assert "resume it with the --folds K" in capsys.readouterr().err
