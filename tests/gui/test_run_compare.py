"""Runs by a human name and the run comparison table (from the runs' own files)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vitdesk.gui.run_compare import RunCompareDialog, human_name, run_summary


def _run(folder: Path, model: str, accs: list[float], best: float | None = None,
         source: str = "/data/chest_sample", mtime: float | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "config.toml").write_text(
        f'[model]\nname = "{model}"\nimg_size = 64\n[data]\nsource = "{source}"\n'
        '[recipe]\nkind = "staged"\n', encoding="utf-8")
    lines = [json.dumps({"stage": 1, "epoch": i + 1, "val_acc": a, "val_loss": 1.0 - a})
             for i, a in enumerate(accs)]
    (folder / "history.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    metrics = {"finished": best is not None, "final": {"val_acc": accs[-1]}}
    if best is not None:
        metrics["best_val_acc"], metrics["best_val_loss"] = best, 1.0 - best
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    if mtime is not None:
        for p in folder.iterdir():
            os.utime(p, (mtime, mtime))
    return folder


def test_summary_and_human_name(tmp_path):
    stamp = time.mktime((2026, 12, 1, 9, 30, 0, 0, 0, -1))
    run = _run(tmp_path / "20261201-093000", "vit_small_patch16_224", [0.6, 0.81, 0.78],
               best=0.81, mtime=stamp)
    s = run_summary(run)
    assert (s.model, s.img_size, s.data, s.recipe) == ("vit_small_patch16_224", 64,
                                                       "chest_sample", "staged")
    assert s.epochs == 3 and s.best_val_acc == 0.81 and s.final_val_acc == 0.78
    assert s.date == "2026-12-01 09:30" and s.finished
    assert human_name(s) == "vit_small_patch16_224 · chest_sample · 2026-12-01 09:30 · val acc 0.81"
    assert "/data" not in human_name(s)  # the folder name only, not the path
    ref = run_summary(_run(tmp_path / "ref", "vit_test_tiny", [0.5], source="ref:9d78fb526bb1"))
    assert ref.data == "data 9d78fb52"  # run folders keep a keyed reference, no path


def test_unfinished_run_takes_the_best_of_its_history(tmp_path):
    s = run_summary(_run(tmp_path / "r", "vit_test_tiny", [0.5, 0.7, 0.6]))
    assert s.best_val_acc == 0.7 and abs(s.best_val_loss - 0.3) < 1e-9
    assert not s.finished
    empty = tmp_path / "empty"
    empty.mkdir()
    e = run_summary(empty)  # nothing recorded: empty fields, no crash
    assert (e.model, e.epochs, e.best_val_acc) == ("?", 0, None)
    assert human_name(e).endswith("not trained")


def test_comparison_table_lists_runs_side_by_side(qtbot, tmp_path):
    a = _run(tmp_path / "a", "vit_test_tiny", [0.6, 0.7], best=0.7)
    b = _run(tmp_path / "b", "cnn_test_tiny", [0.8, 0.9], best=0.9)
    dlg = RunCompareDialog([a, b])
    qtbot.addWidget(dlg)
    assert dlg.table.rowCount() == 2
    rows = {dlg.cell(r, "Run"): r for r in range(2)}
    assert dlg.cell(rows["a"], "Model") == "vit_test_tiny"
    assert dlg.cell(rows["b"], "Best val acc") == "0.900"
    assert dlg.cell(rows["a"], "Best val acc") == "0.700"
    assert dlg.cell(rows["b"], "Epochs") == "2"
    best_item = dlg.table.item(rows["b"], 7)
    assert best_item.font().bold() and not dlg.table.item(rows["a"], 7).font().bold()


def test_main_window_compare_and_run_picker_names(qtbot, tmp_path):
    from vitdesk.gui.main_window import MainWindow

    a = _run(tmp_path / "runs" / "20261201-093000", "vit_test_tiny", [0.6, 0.7], best=0.7)
    win = MainWindow()
    qtbot.addWidget(win)
    win.current_run.recent.append(str(a))
    dlg = win.compare_runs()
    assert dlg.table.rowCount() == 1 and dlg.cell(0, "Model") == "vit_test_tiny"
    dlg.close()
    from vitdesk.gui.run_state import RunPicker

    pickers = win.findChildren(RunPicker)
    assert pickers
    pickers[0].refresh()
    texts = [pickers[0].combo.itemText(i) for i in range(pickers[0].combo.count())]
    assert any(t.startswith("vit_test_tiny · ") and t.endswith("val acc 0.70") for t in texts)
