"""The demo pipeline (sample -> MAE -> staged fine-tuning -> evaluation -> report), tiny."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vitdesk.commands.demo import DemoSettings, _prepare_out, run_demo
from vitdesk.errors import ConfigError
from vitdesk.jobs import Progress

TINY = DemoSettings(patients=6, slices=6, size=48, img_size=32, mae_epochs=1, mae_batch=16,
                    epochs=(1, 1, 1), batch_size=8, fractions=(0.5, 0.17, 0.33), n_boot=50,
                    robustness_cases=6, attention_samples=1, threads=1, baseline_epochs=1)


def test_demo_writes_sample_backbone_run_and_report(tmp_path):
    events = []
    res = run_demo(tmp_path / "demo", TINY, listeners=[events.append])
    assert (res.sample / "labels.csv").is_file()
    assert (res.pretrain / "encoder.safetensors").is_file()
    cfg = (res.run / "config.toml").read_text()
    assert 'pretrained = "' + str(res.pretrain) in cfg and 'kind = "staged"' in cfg
    # a pinned attention backend: a seed gives the same numbers whatever the load
    assert 'attention = "sdpa"' in cfg
    assert json.loads((res.pretrain / "card.json").read_text())["attention"] == "sdpa"
    stages = [json.loads(x)["stage"] for x in (res.run / "history.jsonl").read_text().splitlines()]
    assert sorted(set(stages)) == [0, 1, 2]  # head, top block, all: staged from the backbone
    m = json.loads(res.metrics.read_text())
    assert m["split"] == "test" and m["tta"]["n_views"] == 6
    assert m["n_patients"] == 2 and m["metrics"]["patient"]["n"] == 2
    # a focal finding: patients are scored by their most suspicious slices, not the mean
    assert m["settings"]["patient_score"] == m["metrics"]["settings"]["patient_score"] == "topk"
    assert m["metrics"]["settings"]["topk"] == 3
    html = res.report_html.read_text()
    assert "MAE self-supervised pretraining" in html and "mask ratio" in html
    assert "Research use only" in html
    assert "mean of its 3 highest slice probabilities per abnormal class" in html
    assert res.report_pdf.read_bytes()[:5] == b"%PDF-"
    # the CNN baseline: from scratch on the same split, compared slice by slice
    base_cfg = (res.baseline / "config.toml").read_text()
    assert 'name = "cnn_test_tiny"' in base_cfg and 'pretrained = "none"' in base_cfg
    assert json.loads((res.baseline / "split.json").read_text())["splits"]["test"] == \
        json.loads((res.run / "split.json").read_text())["splits"]["test"]
    t = m["transfer"]
    # what each side was given is part of the comparison
    assert t["baseline_model"].startswith("cnn_test_tiny (weights: none), 1 epoch in ")
    assert t["model"].startswith("vit_test_tiny_convstem (weights: 'pretrain'), 3 epochs in ")
    assert t["n_slices"] == m["n_slices"] and "paired" in t
    assert "Transfer effectiveness" in html and "Baseline run" in html
    demo_steps = [e.done for e in events if isinstance(e, Progress) and e.task == "demo"]
    assert demo_steps == [0, 1, 2, 3, 4, 5, 6]
    # the plan: 36 labelled slices is a small set, so the CNN (trained first) teaches the ViT
    assert any(r.startswith("distillation: 36 labelled images") for r in res.plan)
    doc = json.loads((res.out / "demo.json").read_text())["settings"]
    assert doc["distill"] == "hard" and doc["img_size"] == 32 and doc["plan"] == list(res.plan)
    teacher = json.loads((res.run / "metrics.json").read_text())["teacher"]
    assert (teacher["mode"], teacher["model"]) == ("hard", "cnn_test_tiny")


def test_plan_fills_in_what_the_settings_leave_open(tmp_path):
    from vitdesk.commands.demo import plan_settings, quick_settings
    from vitdesk.imaging.synthetic import generate_sample

    info = generate_sample(tmp_path / "s", patients=8, slices=4, size=64, seed=0)
    s = quick_settings()
    assert (s.img_size, s.batch_size, s.distill) == (0, 0, "auto")
    p = plan_settings(s, info.out_dir)
    # native 64 px with the model's 8-px patches: 64 px, an 8x8 grid, no upsampling
    assert (p.img_size, p.batch_size, p.distill) == (64, 8, "hard")
    assert "image size 64 px: native 64 px, not upsampled" in p.plan
    given = plan_settings(TINY, info.out_dir)  # what the settings give is kept
    assert (given.img_size, given.batch_size) == (32, 8)
    off = dataclasses.replace(s, baseline_model="")
    assert plan_settings(off, info.out_dir).distill == ""  # no CNN, nothing to distil


def test_a_previous_demo_is_replaced_part_by_part(tmp_path):
    (tmp_path / "demo.json").write_text("{}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    _prepare_out(tmp_path)
    assert not (tmp_path / "run").exists() and (tmp_path / "notes.txt").is_file()


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a previous demo"):
        run_demo(tmp_path, TINY)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_cli_seed_changes_the_sample_and_the_training_seed(tmp_path, monkeypatch):
    import vitdesk.commands.demo as demo
    from vitdesk.cli import main

    seen = []

    def fake(out, settings, **_kw):
        seen.append(settings)
        raise ConfigError("stop here")  # the CLI turns it into exit 2, nothing runs

    monkeypatch.setattr(demo, "run_demo", fake)
    assert main(["demo", "--quick", "--seed", "3", "--out", str(tmp_path / "d")]) == 2
    assert main(["demo", "--quick", "--out", str(tmp_path / "d")]) == 2
    assert (seen[0].sample_seed, seen[0].seed) == (3, 3)
    assert (seen[1].sample_seed, seen[1].seed) == (0, 0)
