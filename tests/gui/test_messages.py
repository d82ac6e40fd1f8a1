"""Messages that said the wrong thing (issue 16 #8): progress counts, command-line words
in the workbench, a workspace of unlabelled images, "0 series" after adding some, and
the Pretrain page asking for a workspace that is open."""

from __future__ import annotations

import numpy as np
import pytest

from vitdesk.errors import CheckpointError, DataError
from vitdesk.gui.dialogs import error_box, gui_words
from vitdesk.gui.job_bar import JobBar, progress_text
from vitdesk.gui.session import Session
from vitdesk.imaging.dicom_write import write_ct_series
from vitdesk.jobs import Progress


def test_progress_without_a_total_is_not_read_as_a_count():
    assert progress_text(Progress("evaluate", 1, None, "metrics with bootstrap intervals")) \
        == "evaluate: metrics with bootstrap intervals…"
    assert progress_text(Progress("load dataset", 63, 64)) == "load dataset: 63/64"
    assert progress_text(Progress("scan", 50, None, "3 series")) == "scan: 3 series…"
    assert progress_text(Progress("thumbnails", 2, 5, "Chest")) == "thumbnails: 2/5 · Chest"
    assert progress_text(Progress("previews", 0, None)) == "previews…"


def test_job_bar_shows_the_evaluation_steps_in_words(qtbot):
    from vitdesk.gui.worker import Task

    bar = JobBar()
    qtbot.addWidget(bar)

    def job(cancel=None, listener=None):
        listener(Progress("evaluate", 1, None, "metrics with bootstrap intervals"))
        return 1

    task = Task(job, name="t")
    seen = []
    bar.attach(task, "Evaluating")
    task.event.connect(lambda _ev: seen.append(bar.label.text()))  # after the bar's slot
    with qtbot.waitSignal(task.done, timeout=5000):
        task.start()
    assert seen == ["evaluate: metrics with bootstrap intervals…"]


@pytest.mark.parametrize(("cli", "gui"), [
    ("cancelled; resume with --resume", "cancelled; resume it with Resume in the Training tab"),
    ("output folder /r already exists and is not empty: choose a new --out, or add "
     "--resume to continue it", "output folder /r already exists and is not empty: choose "
     "a new run folder, or resume it from the Training tab"),
    ("x is a test model without hub weights: use --pretrained none or a file",
     "x is a test model without hub weights: choose 'none' or a weights file under Weights"),
    ("device='cuda' but no CUDA GPU is available: use --device cpu or auto",
     "device='cuda' but no CUDA GPU is available: use device cpu or auto"),
    ("give the unlabelled images with --data SRC", "give the unlabelled images with the data "
     "source"),
    ("recipe: use --recipe full for a CNN", "recipe: use the 'full' recipe for a CNN"),
    ("odd: --img-size 36", "odd: the 'img size' setting 36"),
    ("full instead; set recipe.force_staged to keep the stages (--force-staged, or 'Keep "
     "staged without weights' in the workbench)", "full instead; set recipe.force_staged to "
     "keep the stages ('Keep staged without weights')"),
    ("or start a new run with another --out", "or start a new run with another run folder"),
])
def test_command_line_words_become_the_workbenchs(cli, gui):
    assert gui_words(cli) == gui
    assert "--" not in gui_words(cli)


def test_error_dialog_uses_gui_words_for_engine_errors(qtbot):
    from vitdesk.engine.weights import build_model

    with pytest.raises(Exception) as err:
        build_model("vit_test_tiny", 2, 32, pretrained="hub")
    box = error_box(None, err.value)
    assert "--" not in box.text() and "test model" in box.text()
    box = error_box(None, CheckpointError("cancelled; resume with --resume"))
    assert box.text() == "cancelled; resume it with Resume in the Training tab"


def _workspace_with_unlabelled_series(folder, n_series=2):
    from vitdesk.data.workspace import Workspace
    from vitdesk.imaging.scan import scan_path

    hu = np.zeros((4, 16, 16), np.float32)
    for i in range(n_series):
        write_ct_series(folder / "data" / f"s{i}", hu, spacing=(3.0, 0.8, 0.8),
                        origin=(0.0, 0.0, 0.0), patient={"PatientID": f"P{i}"},
                        series_description=f"s{i}", rng_seed=i + 1)
    with Workspace.open(folder / "ws", create=True) as ws:
        ws.import_scan(scan_path(folder / "data"))
    return folder / "ws"


def test_workspace_of_unlabelled_images_says_label_them(tmp_path):
    from vitdesk.data.sources import load_records

    ws = _workspace_with_unlabelled_series(tmp_path)
    with pytest.raises(DataError) as err:
        load_records(ws)
    msg = str(err.value)
    assert "no labelled images" in msg and "Dataset tab" in msg
    assert "no images found" not in msg
    # pretraining reads them all (labels not needed)
    assert len(load_records(ws, require_labels=False, min_classes=1)) == 8


def test_new_workspace_reports_the_series_it_holds(qtbot, tmp_path, volume):
    session = Session()
    messages = []
    session.message.connect(messages.append)
    session.add_volume(volume)
    from tests.gui.helpers import make_volume

    session.add_volume(make_volume(key="second000001"))
    session.new_workspace(tmp_path / "ws")
    assert messages == ["Workspace ws open: 2 series (2 added from the open folder)."]
    session.shutdown()


def test_pretrain_page_stops_asking_for_a_workspace_once_one_is_open(qtbot, tmp_path):
    from vitdesk.gui.tabs.training_pretrain import NO_WORKSPACE
    from vitdesk.gui.tabs.training_tab import TrainingTab

    session = Session()
    tab = TrainingTab(session)
    qtbot.addWidget(tab)
    panel = tab.pretrain
    assert panel.status.text() == NO_WORKSPACE and not panel.start_button.isEnabled()
    session.new_workspace(tmp_path / "ws")
    assert panel.start_button.isEnabled()
    assert "workspace's images" in panel.status.text()
    assert "Open a workspace" not in panel.status.text()
    session.close_workspace()
    assert panel.status.text() == NO_WORKSPACE
    session.shutdown()
