"""The main window: assembles panels, menus, toolbar and status bar. No logic of its own.

Left: study browser. Centre: slice viewer. Right: one tab per task. Background
work shows in the status bar with a Cancel button. Research use only is stated
in the title and permanently in the status bar.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QWidget,
)

from vitdesk import __version__
from vitdesk.gui import preferences
from vitdesk.gui import settings as gui_settings
from vitdesk.gui.dialogs import FileErrorsDialog, show_error
from vitdesk.gui.export_action import DicomResultsAction, ExportModelAction
from vitdesk.gui.job_bar import JobBar
from vitdesk.gui.resources import icon
from vitdesk.gui.run_compare import RunCompareDialog
from vitdesk.gui.run_state import CurrentRun, find_runs
from vitdesk.gui.session import Session
from vitdesk.gui.slice_view import SliceView
from vitdesk.gui.study_browser import StudyBrowser
from vitdesk.gui.tabs.attention_tab import AttentionTab
from vitdesk.gui.tabs.dataset_tab import DatasetTab
from vitdesk.gui.tabs.fairness_tab import FairnessTab
from vitdesk.gui.tabs.inference_tab import InferenceTab
from vitdesk.gui.tabs.report_tab import ReportTab
from vitdesk.gui.tabs.robustness_tab import RobustnessTab
from vitdesk.gui.tabs.training_tab import TrainingTab
from vitdesk.gui.tabs.windowing_tab import WindowingTab
from vitdesk.gui.widgets import RailTabs
from vitdesk.gui.worker import Task

RUO = "Research use only — not for diagnosis or treatment"
TAB_ORDER = ("Windowing", "Dataset", "Training", "Attention", "Inference", "Fairness",
             "Robustness", "Report")


class MainWindow(QMainWindow):
    """Top-level window over one :class:`Session`."""

    def __init__(self, session: Session | None = None, settings: QSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session or Session()
        self.settings = settings or gui_settings.open_settings()
        self.setWindowTitle(f"vitdesk {__version__} — {RUO}")
        self.setWindowIcon(icon("app"))
        self.setAcceptDrops(True)
        self.last_errors_dialog: FileErrorsDialog | None = None

        s = self.session
        self.browser = StudyBrowser(s.library, s.viewer, self)
        self.viewer = SliceView(s.viewer, s.window, self)
        self.viewer.install_window_keys(self)  # viewer keys wherever the focus is
        self.tabs = RailTabs(self)
        self.windowing_tab = WindowingTab(s.window, s.viewer, self.settings, self)
        self.tabs.addTab(self.windowing_tab, "Windowing")
        self.dataset_tab = DatasetTab(self.session, self)
        self.dataset_tab.install_shortcuts(self)
        self.tabs.addTab(self.dataset_tab, "Dataset")
        self.training_tab = TrainingTab(self.session, self.dataset_tab.training_input, self)
        # the form keeps its last values in the open workspace
        self.training_tab.form.store = lambda: self.session.workspace
        self.tabs.addTab(self.training_tab, "Training")
        # One loaded run shared by the analysis tabs (see vitdesk.gui.run_state).
        self.current_run = CurrentRun(self.session, self)
        self.training_tab.run_finished.connect(self.current_run.load)
        self.dataset_tab.suggest_panel.set_current_run(self.current_run)
        self.attention_tab = AttentionTab(self.session, self.current_run, self.viewer, self)
        self.inference_tab = InferenceTab(self.session, self.current_run, self)
        self.inference_tab.slice_opened.connect(self.viewer.grab_focus)
        self.fairness_tab = FairnessTab(self.session, self.current_run, self)
        self.robustness_tab = RobustnessTab(self.session, self.current_run, self)
        self.report_tab = ReportTab(self.session, self.current_run, self)
        for tab, title in zip((self.attention_tab, self.inference_tab, self.fairness_tab,
                               self.robustness_tab, self.report_tab), TAB_ORDER[3:],
                              strict=True):
            self.tabs.addTab(tab, title)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.browser)
        self.splitter.addWidget(self.viewer)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([280, 630, 530])
        self.setCentralWidget(self.splitter)

        self.job_bar = JobBar(self)
        self.ruo_label = QLabel(RUO, self)
        self.ruo_label.setObjectName("ruoNotice")
        self.statusBar().addPermanentWidget(self.job_bar)
        self.statusBar().addPermanentWidget(self.ruo_label)

        self._make_actions()
        self._make_menus()
        self.preferences = preferences.load(self.settings)
        preferences.apply(self.preferences, self, theme=self.preferences.theme != "dark")

        self.browser.series_selected.connect(s.open_series)
        self.browser.slice_requested.connect(self.open_slice)
        s.series_shown.connect(lambda key: self.browser.select(key, notify=False))
        s.task_started.connect(self._on_task_started)
        s.failed.connect(lambda exc: show_error(self, exc))
        s.import_errors.connect(self.show_file_errors)
        s.series_problems.connect(self.show_series_problems)
        s.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        s.workspace_changed.connect(self._on_workspace)

        geom = self.settings.value("window/geometry")
        if isinstance(geom, QByteArray | bytes) and geom:
            self.restoreGeometry(QByteArray(geom))
        else:
            self.resize(1440, 880)

    # ------------------------------------------------------------------ actions
    def _action(self, text: str, slot, shortcut: str | QKeySequence | None = None,
                icon_name: str | None = None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if icon_name:
            act.setIcon(icon(icon_name))
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(tip)
        act.triggered.connect(slot)
        return act

    def _make_actions(self) -> None:
        self.open_folder_action = self._action(
            "Open &folder…", self.open_folder_dialog, QKeySequence.StandardKey.Open,
            "open_folder", "Import every DICOM series under a folder")
        self.open_file_action = self._action(
            "Open f&ile…", self.open_file_dialog, "Ctrl+Shift+O", "open_file",
            "Open one DICOM, NIfTI, MHA or NRRD file")
        self.open_ws_action = self._action(
            "Open &workspace…", self.open_workspace_dialog, "Ctrl+Shift+W", "workspace",
            "Open a workspace folder (series, labels, runs)")
        self.new_ws_action = self._action(
            "&New workspace…", self.new_workspace_dialog, "Ctrl+N", "new_workspace",
            "Create a workspace folder; the open series are added to it")
        self.export_action = self._action(
            "&Export report…", self.export_report, "Ctrl+E", "report",
            "Evaluate the current run and write report.html and report.pdf to a folder")
        self.settings_action = self._action(
            "&Settings…", self.show_settings, QKeySequence.StandardKey.Preferences, "settings",
            "Preferences: default device, threads, output folder, theme")
        self.about_action = self._action("&About vitdesk", self.show_about, None, "about")
        self.compare_action = self._action(
            "&Compare runs…", self.compare_runs, None, None,
            "The trained runs side by side: model, data, date, validation metrics")
        self.export_model = ExportModelAction(self.session, self.current_run, self)
        self.dicom_results = DicomResultsAction(self.session, self.current_run, self)
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)

    def _make_menus(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        for a in (self.open_folder_action, self.open_file_action, self.open_ws_action,
                  self.new_ws_action):
            file_menu.addAction(a)
        self.recent_menu = file_menu.addMenu("Recent workspaces")
        self._fill_recent()
        file_menu.addSeparator()
        file_menu.addAction(self.export_action)
        file_menu.addAction(self.export_model.action)
        file_menu.addAction(self.dicom_results.action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        edit_menu = mb.addMenu("&Edit")
        edit_menu.addAction(self.settings_action)
        view_menu = mb.addMenu("&View")
        for axis in ("axial", "coronal", "sagittal"):
            view_menu.addAction(self._action(
                axis.capitalize(), lambda _c=False, a=axis: self.session.viewer.set_axis(a)))
        view_menu.addAction(self._action("Reset window", self.session.window.reset, None,
                                         "reset"))
        view_menu.addSeparator()
        view_menu.addAction(self.compare_action)
        help_menu = mb.addMenu("&Help")
        help_menu.addAction(self.about_action)

        tb = self.addToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for a in (self.open_folder_action, self.open_file_action, self.open_ws_action,
                  self.new_ws_action):
            tb.addAction(a)
        tb.addSeparator()
        tb.addAction(self.export_action)
        tb.addSeparator()
        tb.addAction(self.settings_action)
        tb.addAction(self.about_action)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = gui_settings.recent_workspaces(self.settings)
        for folder in recent:
            self.recent_menu.addAction(folder, lambda f=folder: self.session.open_workspace(f))
        self.recent_menu.setEnabled(bool(recent))

    # ------------------------------------------------------------------ slots
    def open_path(self, path: str | Path) -> Task | None:
        """Import a folder, file or workspace (what the command line PATH does)."""
        return self.session.import_path(path)

    def open_slice(self, series_key: str, slice_index: int) -> bool:
        """Show axial slice ``slice_index`` (0-based) of a series (its key, or the first
        characters tables show) in the viewer; for rows of test-split tables."""
        ok = self.session.open_slice(series_key, slice_index)
        if ok:
            self.viewer.grab_focus()
        return ok

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of DICOM series")
        if folder:
            self.open_path(folder)

    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open an image file", "",
            "Medical images (*.dcm *.nii *.nii.gz *.mha *.mhd *.nrrd *.nhdr);;All files (*)")
        if path:
            self.open_path(path)

    def open_workspace_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a workspace folder")
        if folder:
            self.session.open_workspace(folder, create=False)

    def export_report(self) -> None:
        """Show the Report tab and export the report of the current run to a folder."""
        self.tabs.setCurrentIndex(TAB_ORDER.index("Report"))
        self.report_tab.export_dialog()

    def new_workspace_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose an empty folder for the workspace")
        if folder:
            self.new_workspace(folder)

    def new_workspace(self, folder: str | Path) -> None:
        """Create a workspace in ``folder`` and add the series already open to it."""
        self.session.new_workspace(folder)

    def _on_workspace(self, ws) -> None:
        if ws is None:
            self.setWindowTitle(f"vitdesk {__version__} — {RUO}")
            return
        folder = str(getattr(ws, "folder", ""))
        self.setWindowTitle(f"vitdesk — {Path(folder).name} — {RUO}")
        if folder:
            gui_settings.add_recent_workspace(self.settings, folder)
            self._fill_recent()

    def _on_task_started(self, task: Task, text: str) -> None:
        self.job_bar.attach(task, text)

    def show_file_errors(self, result) -> None:
        """List the files of an import that were not imported, or carry a remark."""
        self.last_errors_dialog = FileErrorsDialog(
            result.errors, self, notes=result.notes,
            imported=(len(result.entries), result.n_imported_files), ignored=result.ignored)
        self.last_errors_dialog.open()

    def show_series_problems(self, series: str, left_out: list[tuple[str, str]]) -> None:
        """A series opened without some of its files: which ones, and why."""
        n = len(left_out)
        self.last_errors_dialog = FileErrorsDialog(
            left_out, self, title="Series opened with files left out", error_status="left out",
            intro=f"'{series}' is shown without {n} of its files (the viewer marks the gap); "
                  "the reason for each is below.")
        self.last_errors_dialog.open()

    def compare_runs(self) -> RunCompareDialog:
        """Open the table of the runs found (workspace, opened folders, loaded runs)."""
        dlg = RunCompareDialog(find_runs(self.session, self.current_run.recent), self)
        self.compare_dialog = dlg
        dlg.open()
        return dlg

    def show_about(self) -> None:
        QMessageBox.about(
            self, "About vitdesk",
            f"<b>vitdesk {__version__}</b><br>Vision Transformer transfer learning for CT, "
            "offline.<br><br><b>Research use only.</b> vitdesk is not a medical device; its "
            "outputs are not for diagnosis, treatment or any clinical decision.")

    def show_settings(self) -> preferences.PreferencesDialog:
        """Open the Preferences dialog; OK saves and applies them."""
        dlg = preferences.PreferencesDialog(self.preferences, self.settings.fileName(), self)
        dlg.accepted.connect(lambda: self.set_preferences(dlg.preferences()))
        self.preferences_dialog = dlg
        dlg.open()
        return dlg

    def set_preferences(self, prefs: preferences.Preferences) -> None:
        """Keep ``prefs`` (QSettings) and put them into effect."""
        theme_changed = prefs.theme != self.preferences.theme
        self.preferences = prefs
        preferences.save(self.settings, prefs)
        preferences.apply(prefs, self, theme=theme_changed)

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, ev: QDragEnterEvent) -> None:  # noqa: N802 - Qt naming
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev: QDropEvent) -> None:  # noqa: N802 - Qt naming
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        for p in paths[:1] if len(paths) == 1 else [self._common_parent(paths)]:
            self.open_path(p)
        ev.acceptProposedAction()

    @staticmethod
    def _common_parent(paths: list[str]) -> str:
        # Several dropped files usually belong to one series: import their folder.
        parents = {str(Path(p).parent) for p in paths}
        return parents.pop() if len(parents) == 1 else str(Path(paths[0]).parent)

    def closeEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        if not self.training_tab.confirm_close():  # asks, then cancels and waits
            ev.ignore()
            return
        self.training_tab.form.remember()  # edits of the last moments
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        self.session.shutdown()
        self.current_run.shutdown()  # analysis tasks: cancel and wait
        super().closeEvent(ev)
