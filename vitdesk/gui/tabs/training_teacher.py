"""The Training form's "Teacher (distillation)" group, bound to ``cfg.teacher``.

The box never owns the config: every change goes out as one ``(dotted_path, value)``
write (``("teacher.mode", "hard")``) through the callback the form hands in, and
:meth:`TeacherBox.show_config` puts a :class:`~vitdesk.config.TeacherConfig` back into
the widgets without writing anything. :func:`check_teacher` holds the cheap checks
(no torch) of what :func:`vitdesk.engine.run.train` would refuse, so the form can
flag them before Start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from vitdesk.config import RunConfig, TeacherConfig, load_config, run_folder_problem
from vitdesk.engine.plan import check_teacher_files, distill_mode
from vitdesk.errors import ConfigError, VitdeskError
from vitdesk.gui.run_state import find_runs
from vitdesk.gui.tabs.training_widgets import dspin_box

Write = Callable[[str, Any], None]

# (label, cfg.teacher.mode value, tooltip); "" lets the engine pick by the student
MODES = (
    ("auto", "", "token for a *_distilled student (DeiT distillation token), soft otherwise"),
    ("soft", "soft", "Match the teacher's probabilities softened by the temperature "
     "(KL divergence, Hinton et al.): passes on how sure the teacher is"),
    ("hard", "hard", "Learn the teacher's top class as if it were a label (cross-entropy); "
     "the temperature is not used"),
    ("token", "token", "DeiT: a distillation token and head learn the teacher's top class, "
     "the class token the labels; needs a *_distilled student model"),
)


def effective_mode(mode: str, model: str) -> str:
    """The mode the engine will use (the plan's rule; an invalid pair shows as given)."""
    try:
        return distill_mode(model, mode)
    except ConfigError:
        return mode  # check_teacher names the problem


def run_problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be a teacher (not a trained run folder), or None."""
    return run_folder_problem(folder, "teacher run")


@functools.lru_cache(maxsize=32)
def _run_config(folder: str, _mtime_ns: int) -> RunConfig | None:
    # the form re-checks on every keystroke: read a run's config.toml once per change
    try:
        return load_config(Path(folder) / "config.toml")
    except VitdeskError:
        return None


def teacher_config(folder: str | Path) -> RunConfig | None:
    """The saved config of a run folder (None when it cannot be read)."""
    p = Path(folder).expanduser() / "config.toml"
    try:
        return _run_config(str(p.parent), p.stat().st_mtime_ns)
    except OSError:
        return None


def check_teacher(cfg: RunConfig) -> None:
    """Raise what training would refuse about ``cfg.teacher``, without loading a model
    (the plan's checks: :func:`vitdesk.engine.plan.check_run`).

    Raises:
        ConfigError: the teacher folder is not a run, mode token on a student without
            a distillation token, the window differs from the teacher's, or
            the unlabelled source does not exist.
    """
    if not cfg.teacher.run:
        return
    distill_mode(cfg.model.name, cfg.teacher.mode)
    check_teacher_files(cfg)


class _FolderSession:
    """The slice of :class:`~vitdesk.gui.session.Session` that ``find_runs`` reads,
    for a form that only knows the workspace folder (runs under WORKSPACE/runs)."""

    def __init__(self, folder: str | None) -> None:
        self.workspace = _FolderWorkspace(Path(folder)) if folder else None
        self.opened_folders: list[Path] = []


class _FolderWorkspace:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def runs(self) -> list[Any]:
        return []


def find_teacher_runs(workspace: str | None, extra: list[str] | None = None) -> list[Path]:
    """Trained runs of the workspace folder plus ``extra`` folders, newest first."""
    return find_runs(_FolderSession(workspace), extra)  # type: ignore[arg-type]


def run_label(folder: Path) -> tuple[str, str]:
    """Combo text and tooltip of a run: its name, model and image size."""
    name = f"{folder.parent.name}/{folder.name}" if folder.parent.name != "runs" \
        else folder.name
    tc = teacher_config(folder)
    if tc is None:
        return name, str(folder)
    return (f"{name} · {tc.model.name}",
            f"{folder}\n{tc.model.name}, {tc.model.img_size} px, window {tc.data.window}")


class TeacherBox(QGroupBox):
    """Teacher run, distillation mode, alpha, temperature and unlabelled images.

    Args:
        workspace: returns the open workspace folder (or None).
        write: receives ``(dotted_path, value)`` for every change the user makes.
        student: returns the student's model name (for what "auto" means).
        runs: lists the run folders to offer, given the folders chosen with Dir…;
            default: ``WORKSPACE/runs`` through :func:`~vitdesk.gui.run_state.find_runs`.
    """

    def __init__(self, workspace: Callable[[], str | None], write: Write,
                 student: Callable[[], str] = lambda: "",
                 runs: Callable[[list[str]], list[Path]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Teacher (distillation)", parent)
        self.workspace, self.write, self.student = workspace, write, student
        self.runs = runs or (lambda extra: find_teacher_runs(self.workspace(), extra))
        self.chosen: list[str] = []  # folders picked with Dir… (kept across refreshes)
        self.problem = ""
        self._loading = False
        self._ws_default = ""  # the workspace path the unlabelled line was filled with

        self.run_combo = QComboBox(self)
        self.run_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_combo.setMinimumContentsLength(12)
        self.run_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.run_combo.setToolTip("A trained run whose predictions the student also learns "
                                  "from (same classes and window; it sees each slice at "
                                  "its own image size)")
        self.run_dir_button = QToolButton(self)
        self.run_dir_button.setText("Dir…")
        self.run_dir_button.setToolTip("Any run folder (holds config.toml and checkpoints/)")
        self.mode_combo = QComboBox(self)
        for i, (label, value, tip) in enumerate(MODES):
            self.mode_combo.addItem(label, value)
            self.mode_combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
        defaults = TeacherConfig()
        self.alpha_spin = dspin_box(self, 0.0, 1.0, defaults.alpha, 0.05)
        self.alpha_spin.setToolTip("Weight of the teacher term; 1 − α goes to the labels")
        self.temperature_spin = dspin_box(self, 0.1, 50.0, defaults.temperature, 0.5, 1)
        self.temperature_spin.setToolTip("Soft mode: higher T spreads the teacher's "
                                         "probabilities, passing on more than its top class")
        self.unlabelled_box = QCheckBox("Also train on unlabelled images", self)
        self.unlabelled_box.setToolTip(
            "The teacher labels images nobody labelled; validation/test patients and "
            "labelled training slices are left out automatically. Not with Mixup/CutMix.")
        self.unlabelled_edit = QLineEdit(self)
        self.unlabelled_edit.setPlaceholderText("folder, CSV or workspace of images")
        self.unlabelled_button = QToolButton(self)
        self.unlabelled_button.setText("Folder…")
        self.hint_label = QLabel(self)
        self.hint_label.setObjectName("overlay")
        self.hint_label.setWordWrap(True)
        self.problem_label = QLabel(self)
        self.problem_label.setWordWrap(True)
        self.problem_label.setObjectName("problem")
        self.problem_label.hide()

        form = QFormLayout(self)
        rrow = QHBoxLayout()
        rrow.addWidget(self.run_combo, 1)
        rrow.addWidget(self.run_dir_button)
        form.addRow("Teacher", rrow)
        form.addRow("Mode", self.mode_combo)
        mrow = QHBoxLayout()
        mrow.addWidget(self.alpha_spin, 1)
        mrow.addWidget(QLabel("Temperature", self))
        mrow.addWidget(self.temperature_spin, 1)
        form.addRow("Weight α", mrow)
        form.addRow(self.unlabelled_box)
        urow = QHBoxLayout()
        urow.setContentsMargins(20, 0, 0, 0)
        urow.addWidget(self.unlabelled_edit, 1)
        urow.addWidget(self.unlabelled_button)
        form.addRow(urow)
        form.addRow(self.hint_label)
        form.addRow(self.problem_label)

        self.run_combo.currentIndexChanged.connect(self._on_run)
        self.run_dir_button.clicked.connect(self._browse_run)
        self.mode_combo.currentIndexChanged.connect(self._on_mode)
        self.alpha_spin.valueChanged.connect(lambda v: self._write("teacher.alpha", v))
        self.temperature_spin.valueChanged.connect(
            lambda v: self._write("teacher.temperature", v))
        self.unlabelled_box.toggled.connect(self._on_unlabelled)
        self.unlabelled_edit.textChanged.connect(lambda _t: self._write_unlabelled())
        self.unlabelled_button.clicked.connect(self._browse_unlabelled)

        self.refresh_runs()
        self.show_config(TeacherConfig())

    # ---- state ---------------------------------------------------------------------------
    def teacher_run(self) -> str:
        """The chosen teacher run folder ("" = none)."""
        return self.run_combo.currentData() or ""

    def mode(self) -> str:
        return self.mode_combo.currentData() or ""

    def unlabelled(self) -> str:
        """The unlabelled source the config gets ("" when unticked)."""
        return self.unlabelled_edit.text().strip() if self.unlabelled_box.isChecked() else ""

    # ---- widgets -> writes ---------------------------------------------------------------
    def _write(self, path: str, value: Any) -> None:
        if self._loading:
            return
        self.write(path, value)
        self.update_hint()

    def _on_run(self, _i: int) -> None:
        if self._loading:
            return
        self._set_problem("")
        if not self.teacher_run() and self.unlabelled_box.isChecked():
            self.unlabelled_box.setChecked(False)  # nothing would label them: writes ""
        self._write("teacher.run", self.teacher_run())

    def _on_mode(self, _i: int) -> None:
        tip = MODES[self.mode_combo.currentIndex()][2]
        self.mode_combo.setToolTip(tip)
        self._write("teacher.mode", self.mode())

    def _on_unlabelled(self, on: bool) -> None:
        if on and not self.unlabelled_edit.text().strip() and not self._loading:
            ws = self.workspace() or ""
            self._loading = True  # one write below, not one per filled-in character
            try:
                self.unlabelled_edit.setText(ws)
                self._ws_default = ws
            finally:
                self._loading = False
        self._write_unlabelled()

    def _write_unlabelled(self) -> None:
        self._write("teacher.unlabelled", self.unlabelled())

    def choose_run(self, folder: str | Path) -> bool:
        """Use ``folder`` as the teacher; a folder that is no run is flagged, not used."""
        problem = run_problem(folder)
        if problem:
            self._set_problem(problem)
            return False
        folder = str(Path(folder).expanduser())
        if folder not in self.chosen:
            self.chosen.append(folder)
        self.refresh_runs()
        self._select_run(folder)  # writes through _on_run when it changes the selection
        if self.teacher_run() == folder:
            self._set_problem("")
        return True

    def _browse_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Teacher run folder",
                                                  self.workspace() or "")
        if folder:
            self.choose_run(folder)

    def _browse_unlabelled(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Unlabelled images",
                                                  self.workspace() or "")
        if folder:
            self.unlabelled_edit.setText(folder)
            self.unlabelled_box.setChecked(True)

    # ---- config -> widgets ---------------------------------------------------------------
    def show_config(self, t: TeacherConfig) -> None:
        """Show ``t`` in the widgets; writes nothing."""
        self._loading = True
        try:
            self._select_run(t.run)
            i = self.mode_combo.findData(t.mode)
            self.mode_combo.setCurrentIndex(max(i, 0))
            self.mode_combo.setToolTip(MODES[self.mode_combo.currentIndex()][2])
            self.alpha_spin.setValue(t.alpha)
            self.temperature_spin.setValue(t.temperature)
            self.unlabelled_box.setChecked(bool(t.unlabelled))
            if t.unlabelled:
                self.unlabelled_edit.setText(t.unlabelled)
            elif not self.unlabelled_edit.text().strip():
                self._ws_default = self.workspace() or ""
                self.unlabelled_edit.setText(self._ws_default)
        finally:
            self._loading = False
        self._set_problem((run_problem(t.run) or "") if t.run else "")
        self.update_hint()

    def _select_run(self, folder: str) -> None:
        i = self.run_combo.findData(folder)
        if i < 0 and folder:  # a config's teacher outside the listed runs: show it anyway
            self.run_combo.addItem(run_label(Path(folder))[0], folder)
            i = self.run_combo.count() - 1
        self.run_combo.setCurrentIndex(max(i, 0))

    def refresh_runs(self) -> None:
        """Re-list the workspace's runs, keeping the chosen one; writes nothing."""
        current = self.teacher_run()
        self._loading = True
        try:
            self.run_combo.clear()
            self.run_combo.addItem("none (labels only)", "")
            for p in self.runs(list(self.chosen)):
                text, tip = run_label(p)
                self.run_combo.addItem(text, str(p))
                self.run_combo.setItemData(self.run_combo.count() - 1, tip,
                                           Qt.ItemDataRole.ToolTipRole)
            self._select_run(current)
        finally:
            self._loading = False
        self.update_hint()

    def refresh_workspace(self) -> None:
        """The workspace changed: re-list runs; the default unlabelled source follows it."""
        self.refresh_runs()
        ws = self.workspace() or ""
        text = self.unlabelled_edit.text().strip()
        if text == self._ws_default and ws != text:
            self._loading = not self.unlabelled_box.isChecked()  # write only if in use
            try:
                self.unlabelled_edit.setText(ws)
            finally:
                self._loading = False
        self._ws_default = ws

    def _set_problem(self, text: str) -> None:
        self.problem = text
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))

    def update_hint(self, *_args: Any) -> None:
        """Enable what applies and say in one line what training will do."""
        run = self.teacher_run()
        mode = self.mode()
        for w in (self.mode_combo, self.alpha_spin):
            w.setEnabled(bool(run))
        self.temperature_spin.setEnabled(bool(run) and mode in ("", "soft"))
        ticked = self.unlabelled_box.isChecked()
        self.unlabelled_box.setEnabled(bool(run) or ticked)  # a loaded error stays fixable
        self.unlabelled_edit.setEnabled(ticked)
        self.unlabelled_button.setEnabled(bool(run) or ticked)
        self.hint_label.setText(self.hint())

    def hint(self) -> str:
        """What the current settings do, in one line."""
        run = self.teacher_run()
        if not run:
            return "No teacher: the student learns from the labels only."
        mode = effective_mode(self.mode(), self.student())
        how = {"soft": f"soft, T {self.temperature_spin.value():g}",
               "hard": "the teacher's top class", "token": "distillation token"}[mode]
        alpha = self.alpha_spin.value()
        text = f"Student learns from {Path(run).name} ({how}, {alpha:.0%} teacher)"
        src = self.unlabelled()
        if src:
            ws = self.workspace()
            where = "this workspace" if ws and Path(src) == Path(ws) else Path(src).name
            text += f"; unlabelled images of {where} labelled by it"
        elif self.unlabelled_box.isChecked():
            text += "; choose where the unlabelled images are"
        return text + "."
