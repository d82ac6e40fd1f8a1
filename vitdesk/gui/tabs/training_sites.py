"""The Training form's "Sites and time" group: continue from a finished run (rehearsal,
EWC) and adapt to a new site's unlabelled studies (DANN), bound to ``cfg.continual`` and
``cfg.adapt``.

Like :class:`~vitdesk.gui.tabs.training_teacher.TeacherBox`, the box never owns the
config: every change goes out as one ``(dotted_path, value)`` write through the callback
the form hands in, and :meth:`SitesBox.show_config` puts a config back into the widgets
without writing. Every rule (the parent must have finished, shares the model and window,
the target must exist) is :mod:`vitdesk.engine.plan`'s; the form shows its refusals.
"""

from __future__ import annotations

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

from vitdesk.config import AdaptConfig, ContinualConfig, RunConfig
from vitdesk.gui.tabs.training_teacher import find_teacher_runs, run_label
from vitdesk.gui.tabs.training_widgets import dspin_box, spin_box

Write = Callable[[str, Any], None]


class SitesBox(QGroupBox):
    """"Continue from run" (parent, rehearsal N, EWC lambda) and "Adapt to unlabelled
    studies" (target source, adaptation weight).

    Args:
        workspace: returns the open workspace folder (or None).
        write: receives ``(dotted_path, value)`` for every change the user makes.
        runs: lists the run folders to offer, given the folders chosen with Dir…;
            default: ``WORKSPACE/runs``.
    """

    def __init__(self, workspace: Callable[[], str | None], write: Write,
                 runs: Callable[[list[str]], list[Path]] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Sites and time", parent)
        self.workspace, self.write = workspace, write
        self.runs = runs or (lambda extra: find_teacher_runs(self.workspace(), extra))
        self.chosen: list[str] = []  # parents picked with Dir… (kept across refreshes)
        self._loading = False

        self.continue_box = QCheckBox("Continue from run", self)
        self.continue_box.setToolTip(
            "Start from a finished run's weights and train on new data; the new run keeps "
            "its parent's model, image size and window and records the parent")
        self.run_combo = QComboBox(self)
        self.run_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.run_combo.setMinimumContentsLength(12)
        self.run_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.run_dir_button = QToolButton(self)
        self.run_dir_button.setText("Dir…")
        self.run_dir_button.setToolTip("Any finished run folder")
        defaults = ContinualConfig()
        self.rehearsal_spin = spin_box(self, 0, 1_000_000, defaults.rehearsal, 50)
        self.rehearsal_spin.setSpecialValueText("off")
        self.rehearsal_spin.setSuffix(" slices")
        self.rehearsal_spin.setToolTip(
            "Earlier training slices kept in the parent run (pixel data, no paths or IDs) "
            "and replayed beside every batch, so the new data does not overwrite them")
        self.ewc_spin = dspin_box(self, 0.0, 1e7, defaults.ewc, 10.0, 1)
        self.ewc_spin.setSpecialValueText("off")
        self.ewc_spin.setToolTip("Elastic weight consolidation: how strongly weights that "
                                 "mattered for the earlier data are held in place (e.g. 100)")

        self.adapt_box = QCheckBox("Adapt to unlabelled studies", self)
        self.adapt_box.setToolTip(
            "Domain-adversarial adaptation (DANN): the features learn not to tell this site "
            "from the target site's unlabelled images; target patients in a test split "
            "are left out")
        self.adapt_edit = QLineEdit(self)
        self.adapt_edit.setPlaceholderText("folder, CSV or workspace of the new site's images")
        self.adapt_button = QToolButton(self)
        self.adapt_button.setText("Folder…")
        self.weight_spin = dspin_box(self, 0.01, 100.0, AdaptConfig().weight, 0.1)
        self.weight_spin.setToolTip("Weight of the domain loss (the reversal schedule ramps "
                                    "its gradient up from 0 over the run)")
        self.hint_label = QLabel(self)
        self.hint_label.setObjectName("overlay")
        self.hint_label.setWordWrap(True)

        form = QFormLayout(self)
        form.addRow(self.continue_box)
        rrow = QHBoxLayout()
        rrow.setContentsMargins(20, 0, 0, 0)
        rrow.addWidget(self.run_combo, 1)
        rrow.addWidget(self.run_dir_button)
        form.addRow(rrow)
        form.addRow("Rehearsal", self.rehearsal_spin)
        form.addRow("EWC λ", self.ewc_spin)
        form.addRow(self.adapt_box)
        arow = QHBoxLayout()
        arow.setContentsMargins(20, 0, 0, 0)
        arow.addWidget(self.adapt_edit, 1)
        arow.addWidget(self.adapt_button)
        form.addRow(arow)
        form.addRow("Adaptation weight", self.weight_spin)
        form.addRow(self.hint_label)

        self.continue_box.toggled.connect(lambda _v: self._write_continual())
        self.run_combo.currentIndexChanged.connect(lambda _i: self._write_continual())
        self.run_dir_button.clicked.connect(self._browse_run)
        self.rehearsal_spin.valueChanged.connect(lambda _v: self._write_continual())
        self.ewc_spin.valueChanged.connect(lambda _v: self._write_continual())
        self.adapt_box.toggled.connect(lambda _v: self._write_adapt())
        self.adapt_edit.textChanged.connect(lambda _t: self._write_adapt())
        self.adapt_button.clicked.connect(self._browse_adapt)
        self.weight_spin.valueChanged.connect(lambda _v: self._write_adapt())

        self.refresh_runs()
        self.show_config(RunConfig())

    # ---- state ---------------------------------------------------------------------------
    def parent_run(self) -> str:
        """The chosen parent run folder ("" when not continuing)."""
        return (self.run_combo.currentData() or "") if self.continue_box.isChecked() else ""

    def target(self) -> str:
        """The unlabelled target source ("" when not adapting)."""
        return self.adapt_edit.text().strip() if self.adapt_box.isChecked() else ""

    # ---- widgets -> writes ---------------------------------------------------------------
    def _write_continual(self) -> None:
        if self._loading:
            return
        parent = self.parent_run()
        # without a parent nothing is remembered: rehearsal/EWC are written as off, so an
        # unticked box never leaves a refused "rehearsal needs a parent" behind
        self.write("continual.rehearsal", self.rehearsal_spin.value() if parent else 0)
        self.write("continual.ewc", round(self.ewc_spin.value(), 6) if parent else 0.0)
        self.write("continual.continue_from", parent)
        self.update_hint()

    def _write_adapt(self) -> None:
        if self._loading:
            return
        self.write("adapt.weight", round(self.weight_spin.value(), 6))
        self.write("adapt.source", self.target())
        self.update_hint()

    def choose_parent(self, folder: str | Path) -> None:
        """Continue from ``folder`` (listed if it is not yet); the plan judges it."""
        folder = str(Path(folder).expanduser())
        if folder not in self.chosen:
            self.chosen.append(folder)
        self._loading = True
        try:
            self.refresh_runs()
            self._select_run(folder)
            self.continue_box.setChecked(True)
        finally:
            self._loading = False
        self._write_continual()

    def choose_target(self, source: str | Path) -> None:
        """Adapt to the unlabelled images of ``source``."""
        self._loading = True
        try:
            self.adapt_edit.setText(str(source))
            self.adapt_box.setChecked(True)
        finally:
            self._loading = False
        self._write_adapt()

    def _browse_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Run to continue from",
                                                  self.workspace() or "")
        if folder:
            self.choose_parent(folder)

    def _browse_adapt(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Unlabelled images of the new site",
                                                  self.workspace() or "")
        if folder:
            self.choose_target(folder)

    # ---- config -> widgets ---------------------------------------------------------------
    def show_config(self, cfg: RunConfig) -> None:
        """Show ``cfg.continual`` and ``cfg.adapt`` in the widgets; writes nothing."""
        c, a = cfg.continual, cfg.adapt
        self._loading = True
        try:
            if c.continue_from:
                self._select_run(c.continue_from)
            self.continue_box.setChecked(bool(c.continue_from))
            self.rehearsal_spin.setValue(c.rehearsal)
            self.ewc_spin.setValue(c.ewc)
            self.adapt_box.setChecked(bool(a.source))
            if a.source:
                self.adapt_edit.setText(a.source)
            self.weight_spin.setValue(a.weight)
        finally:
            self._loading = False
        self.update_hint()

    def _select_run(self, folder: str) -> None:
        i = self.run_combo.findData(folder)
        if i < 0 and folder:  # a config's parent outside the listed runs: show it anyway
            self.run_combo.addItem(run_label(Path(folder))[0], folder)
            i = self.run_combo.count() - 1
        self.run_combo.setCurrentIndex(max(i, 0))

    def refresh_runs(self) -> None:
        """Re-list the workspace's runs, keeping the chosen one; writes nothing."""
        current = self.run_combo.currentData() or ""
        was = self._loading
        self._loading = True
        try:
            self.run_combo.clear()
            for p in self.runs(list(self.chosen)):
                text, tip = run_label(p)
                self.run_combo.addItem(text, str(p))
                self.run_combo.setItemData(self.run_combo.count() - 1, tip,
                                           Qt.ItemDataRole.ToolTipRole)
            if not self.run_combo.count():
                self.run_combo.addItem("no finished runs: Dir…", "")
            self._select_run(current)
        finally:
            self._loading = was
        self.update_hint()

    def update_hint(self, *_args: Any) -> None:
        """Enable what applies and say in one line what training will do."""
        on = self.continue_box.isChecked()
        for w in (self.run_combo, self.run_dir_button, self.rehearsal_spin, self.ewc_spin):
            w.setEnabled(on)
        adapting = self.adapt_box.isChecked()
        for w in (self.adapt_edit, self.adapt_button, self.weight_spin):
            w.setEnabled(adapting)
        self.hint_label.setText(self.hint())

    def hint(self) -> str:
        """What the current settings do, in one line."""
        parts = []
        parent = self.parent_run()
        if parent:
            keep = [f"{self.rehearsal_spin.value()} earlier slices replayed"
                    if self.rehearsal_spin.value() else "",
                    f"EWC λ {self.ewc_spin.value():g}" if self.ewc_spin.value() else ""]
            keep = [k for k in keep if k]
            parts.append(f"Continues {Path(parent).name} with its model and window"
                         + (f" ({', '.join(keep)})" if keep else " (no rehearsal, no EWC)"))
        elif self.continue_box.isChecked():
            parts.append("Choose the run to continue from")
        src = self.target()
        if src:
            ws = self.workspace()
            where = "this workspace" if ws and Path(src) == Path(ws) else Path(src).name
            parts.append(f"adapts to the unlabelled images of {where} "
                         f"(weight {self.weight_spin.value():g})")
        elif self.adapt_box.isChecked():
            parts.append("choose where the new site's images are")
        if not parts:
            return "A new run on one site's labelled data."
        text = "; ".join(parts)
        return text[0].upper() + text[1:] + "."
