"""Training tab's "Plan": what the planner would run on the form's data in a time budget.

The same plan as ``vitdesk plan --data SRC --budget B``: the panel runs
:func:`vitdesk.engine.probe.plan_with_budget` (data fingerprint, measured steps on this
machine) in a worker and shows :func:`vitdesk.engine.plan.plan_lines` as they are: the
model, image and patch size, batch, epochs per stage, the estimated time and peak memory,
and the reasons. "Use this plan" puts the planned run into the form, so Start trains it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from vitdesk.config import RunConfig
from vitdesk.gui.dialogs import gui_words
from vitdesk.gui.worker import Task
from vitdesk.jobs import NEVER, CancelToken, Listener

DEFAULT_BUDGET = "10m"  # the planner's own default when no budget is given


def plan_job(cfg: RunConfig, budget: str, threads: Callable[[int], int] | None = None,
             cancel: CancelToken = NEVER, listener: Listener | None = None) -> Any:
    """Worker side: the plan (imports torch and times a few steps: seconds), timed with
    the torch threads the workbench's run will train with (``threads(current)``)."""
    import torch

    from vitdesk.engine.probe import plan_with_budget

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads(before))
    try:
        return plan_with_budget(cfg, budget or None, cancel=cancel, listener=listener)
    finally:
        torch.set_num_threads(before)


class PlanPanel(QGroupBox):
    """Budget field, Plan button, the plan's lines, and "Use this plan".

    Args:
        config: returns the form's current config (data source, window, split, seed...).
        apply: called with the planned :class:`~vitdesk.config.RunConfig` on "Use this plan".
        threads: ``current torch threads -> the threads a run trains with`` (the steps
            are timed with those); None: as they are.
    """

    planned = Signal(object)  # the Plan, once computed

    def __init__(self, config: Callable[[], RunConfig], apply: Callable[[RunConfig], None],
                 parent: QWidget | None = None,
                 threads: Callable[[int], int] | None = None) -> None:
        super().__init__("Plan for a time budget", parent)
        self.config, self.apply, self.threads = config, apply, threads
        self.task: Task | None = None
        self.plan: Any = None
        self.budget_edit = QLineEdit(DEFAULT_BUDGET, self)
        self.budget_edit.setPlaceholderText("e.g. 90s, 20m, 1h30m")
        self.budget_edit.setToolTip("Wall-clock time the training may take; the planner "
                                    "chooses the model, sizes, batch and epochs to fit it")
        self.plan_button = QPushButton("Plan", self)
        self.plan_button.setToolTip("Measure a few training steps on this machine and plan "
                                    "the run for the data and the budget (as vitdesk plan)")
        self.use_button = QPushButton("Use this plan", self)
        self.use_button.setToolTip("Put the planned run into the settings below; Start "
                                   "trains it")
        self.use_button.setEnabled(False)
        self.status = QLabel(self)
        self.status.setObjectName("hint")
        self.status.setWordWrap(True)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setMinimumHeight(90)
        self.text.setPlaceholderText("No plan yet: choose the data, a budget, then Plan.")
        lay = QGridLayout(self)
        lay.addWidget(QLabel("Budget", self), 0, 0)
        lay.addWidget(self.budget_edit, 0, 1)
        lay.addWidget(self.plan_button, 0, 2)
        lay.addWidget(self.use_button, 0, 3)
        lay.addWidget(self.status, 1, 0, 1, 4)
        lay.addWidget(self.text, 2, 0, 1, 4)
        lay.setColumnStretch(1, 1)
        self.plan_button.clicked.connect(self.start)
        self.use_button.clicked.connect(self.use)
        self.budget_edit.returnPressed.connect(self.start)

    def is_running(self) -> bool:
        return self.task is not None and self.task.is_running()

    def start(self) -> Task | None:
        """Plan the form's data for the budget in a worker."""
        if self.is_running():
            return None
        from vitdesk.engine.plan import parse_budget
        from vitdesk.errors import ConfigError

        budget = self.budget_edit.text().strip()
        try:
            parse_budget(budget)  # a bad budget is named at once, without a worker
            cfg = self.config()
            if not cfg.data.source:
                raise ConfigError("no training data: open a workspace or choose a "
                                  "folder/CSV, then Plan")
        except ConfigError as exc:
            self._show_problem(str(exc))
            return None
        self.plan = None
        self.use_button.setEnabled(False)
        self.plan_button.setEnabled(False)
        self.status.setText("Planning: measuring a few training steps on this machine…")
        self.task = Task(plan_job, cfg, budget, self.threads, parent=self, name="Plan")
        self.task.finished.connect(self._on_plan)
        self.task.errored.connect(lambda exc: self._show_problem(str(exc)))
        self.task.done.connect(lambda: self.plan_button.setEnabled(True))
        return self.task.start()

    def _on_plan(self, plan: Any) -> None:
        from vitdesk.engine.plan import plan_lines

        self.plan = plan
        self.text.setPlainText("\n".join(plan_lines(plan)))
        self.status.setText("Planned. 'Use this plan' puts it into the settings below.")
        self.use_button.setEnabled(True)
        self.planned.emit(plan)

    def _show_problem(self, message: str) -> None:
        self.plan = None
        self.use_button.setEnabled(False)
        self.text.clear()
        self.status.setText(gui_words(message))

    def use(self) -> None:
        """Put the planned run into the form."""
        if self.plan is not None:
            self.apply(self.plan.cfg)
            self.status.setText("The planned run is in the settings below: Start trains it.")

    def shown_lines(self) -> list[str]:
        """The plan as shown (one entry per line)."""
        return self.text.toPlainText().splitlines()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
