"""The shared run: listing runs of a workspace, loading in the background, the picker."""

from __future__ import annotations

import shutil

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.run_state import CurrentRun, RunPicker, find_runs
from vitdesk.gui.session import Session


def test_runs_of_workspace_are_listed_and_loaded(qtbot, tiny_run, tmp_path):  # noqa: F811
    ws_dir = tmp_path / "ws"
    shutil.copytree(tiny_run, ws_dir / "runs" / "on-disk")  # WORKSPACE/runs/*
    (ws_dir / "runs" / "not-a-run").mkdir()
    session = Session()
    session.open_workspace(ws_dir, create=True)
    session.workspace.add_run(tiny_run, model="vit_test_tiny")  # recorded elsewhere
    runs = find_runs(session)
    assert sorted(p.name for p in runs) == ["on-disk", "tiny"]

    current = CurrentRun(session, device="cpu")
    picker = RunPicker(current)
    qtbot.addWidget(picker)
    paths = [picker.combo.itemData(i) for i in range(picker.combo.count())]
    assert str(ws_dir / "runs" / "on-disk") in paths and str(tiny_run) in paths
    seen = []
    current.changed.connect(seen.append)
    idx = paths.index(str(tiny_run))
    picker.combo.activated.emit(idx)  # what a user's choice does
    qtbot.waitUntil(lambda: bool(seen), timeout=10000)
    qtbot.waitUntil(lambda: current.task.has_ended(), timeout=5000)
    run = seen[0]
    assert run.classes == ["lesion", "normal"] and not run.model.training
    assert picker.combo.currentData() == str(tiny_run)
    assert "vit_test_tiny" in picker.summary.text()
    assert current.load(tiny_run) is None  # already loaded: nothing to do
    session.shutdown()


def test_bad_run_folder_is_reported(qtbot, tmp_path):
    session = Session()
    current = CurrentRun(session, device="cpu")
    errors = []
    current.failed.connect(errors.append)
    with qtbot.waitSignal(current.load(tmp_path).done, timeout=10000):
        pass
    assert current.run is None
    assert errors and "config.toml" in str(errors[0])


def test_runs_beside_an_opened_folder_are_offered(qtbot, sample_dir, tiny_run, tmp_path):  # noqa: F811
    # the layout `vitdesk demo` writes: DIR/sample (DICOM) and DIR/run
    demo = tmp_path / "demo"
    shutil.copytree(sample_dir, demo / "sample")
    shutil.copytree(tiny_run, demo / "run")
    session = Session()
    current = CurrentRun(session, device="cpu")
    picker = RunPicker(current)
    qtbot.addWidget(picker)
    task = session.import_path(demo)
    qtbot.waitUntil(lambda: task.has_ended(), timeout=20000)

    def offered() -> bool:  # the picker refreshes on import_finished, queued after the task
        return str(demo / "run") in [picker.combo.itemData(i)
                                     for i in range(picker.combo.count())]

    qtbot.waitUntil(offered, timeout=10000)
    session.shutdown()
