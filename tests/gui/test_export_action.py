"""File > Export model…: the dialog, the export in a worker, errors before any work."""

from __future__ import annotations

import json

import numpy as np

from tests.gui.conftest_runs import sample_dir, tiny_run  # noqa: F401
from vitdesk.gui.export_action import (
    DicomResultsAction,
    DicomResultsDialog,
    ExportDialog,
    ExportModelAction,
)
from vitdesk.gui.run_state import CurrentRun
from vitdesk.gui.session import Session


def _setup(qtbot):
    from PySide6.QtWidgets import QWidget

    session = Session()
    current = CurrentRun(session, device="cpu")
    host = QWidget()
    qtbot.addWidget(host)
    return session, current, ExportModelAction(session, current, host)


def test_export_model_from_the_dialog(qtbot, tiny_run, tmp_path):  # noqa: F811
    from vitdesk.engine.exported_model import ExportedModel
    from vitdesk.engine.run import load_run

    session, current, act = _setup(qtbot)
    assert not act.action.isEnabled() and act.open_dialog() is None
    current.set_run(load_run(tiny_run, "cpu"))
    assert act.action.isEnabled()
    dialog = act.open_dialog()
    assert isinstance(dialog, ExportDialog)
    assert dialog.values() == ("onnx", True, str(tiny_run / "export"))
    dialog.format_combo.setCurrentIndex(1)  # TorchScript: no int8
    assert dialog.values()[:2] == ("torchscript", False) and not dialog.int8_check.isEnabled()
    dialog.format_combo.setCurrentIndex(0)
    assert dialog.int8_check.isEnabled()
    dialog.int8_check.setChecked(True)
    dialog.out_edit.setText(str(tmp_path / "exp"))
    messages = []
    session.message.connect(messages.append)
    started = []
    session.task_started.connect(lambda task, text: started.append(text))
    with qtbot.waitSignal(act.exported, timeout=120000) as blocker:
        dialog.accept()
    res = blocker.args[0]
    assert started == ["Exporting the model"]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == [
        "model.int8.onnx", "model.onnx", "vitdesk-export.json"]
    contract = json.loads((tmp_path / "exp" / "vitdesk-export.json").read_text())
    assert contract == res.contract and contract["check"]["max_abs_diff"] <= 1e-4
    assert any("Model exported to" in m and "int8" in m for m in messages)
    # the exported model scores like the loaded run
    run = current.run
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    import torch

    with torch.no_grad():
        p = torch.softmax(run.model(torch.from_numpy(x)), -1).numpy()
    assert np.abs(ExportedModel(tmp_path / "exp", "fp32").probs(x, calibrated=False)
                  - p).max() <= 1e-4
    qtbot.waitUntil(lambda: act.task.has_ended(), timeout=5000)


def test_a_bad_folder_is_refused_before_any_work(qtbot, tiny_run, tmp_path, monkeypatch):  # noqa: F811
    import vitdesk.gui.export_action as ea
    from vitdesk.engine.run import load_run

    shown = []
    monkeypatch.setattr(ea, "show_error", lambda parent, exc: shown.append(str(exc)))
    session, current, act = _setup(qtbot)
    started = []
    session.task_started.connect(lambda task, text: started.append(text))
    assert act.export("onnx", False, str(tmp_path)) is None  # no run loaded
    assert "no run loaded" in shown[-1]
    current.set_run(load_run(tiny_run, "cpu"))
    f = tmp_path / "a_file"
    f.write_text("x")
    assert act.export("onnx", True, str(f)) is None
    assert "is a file" in shown[-1]
    assert act.export("onnx", False, "") is None
    assert "choose a folder" in shown[-1]
    assert started == [] and act.task is None


def test_main_window_file_menu_offers_export_model(qtbot):
    from vitdesk.gui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    file_menu = win.menuBar().actions()[0].menu()
    assert win.export_model.action in file_menu.actions()
    assert win.dicom_results.action in file_menu.actions()
    assert not win.export_model.action.isEnabled()  # no run loaded yet
    assert not win.dicom_results.action.isEnabled()


def test_dicom_results_from_the_dialog(qtbot, tiny_run, sample_dir, tmp_path, monkeypatch):  # noqa: F811
    import pydicom

    import vitdesk.gui.export_action as ea
    from vitdesk.engine.run import load_run

    shown = []
    monkeypatch.setattr(ea, "show_error", lambda parent, exc: shown.append(str(exc)))
    session = Session()
    current = CurrentRun(session, device="cpu")
    from PySide6.QtWidgets import QWidget

    host = QWidget()
    qtbot.addWidget(host)
    act = DicomResultsAction(session, current, host)
    assert not act.action.isEnabled() and act.open_dialog() is None
    current.set_run(load_run(tiny_run, "cpu"))
    assert act.action.isEnabled()
    assert act.write(str(tmp_path / "missing"), str(tmp_path / "o")) is None
    assert "not found" in shown[-1]
    case = sample_dir / "case_001" / "series_1"
    dialog = act.open_dialog()
    assert isinstance(dialog, DicomResultsDialog)
    dialog.input_edit.setText(str(case))
    dialog.out_edit.setText(str(tmp_path / "dcm"))
    dialog.deid_check.setChecked(True)
    messages = []
    session.message.connect(messages.append)
    with qtbot.waitSignal(act.written, timeout=120000) as blocker:
        dialog.accept()
    srs, scs = blocker.args[0]
    assert len(srs) == 1 and scs == [] and messages == ["1 DICOM SR written"]
    sr = pydicom.dcmread(srs[0])
    assert sr.Modality == "SR" and sr.PatientIdentityRemoved == "YES"
    src = pydicom.dcmread(next(case.glob("*.dcm")))
    assert sr.StudyInstanceUID != src.StudyInstanceUID  # de-identified: remapped
    qtbot.waitUntil(lambda: act.task.has_ended(), timeout=5000)
