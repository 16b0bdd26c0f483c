"""Tasks: the training rounds run on this computer for approved requests, and running them.

"Run tasks now" runs every due round in the worker (``agents.rounds.run_due_rounds``: read
through the consent-scoped reader, train with DP-SGD in the sandbox, send the signed update,
keep the receipt) and keeps going while rounds remain; Cancel stops after the current step,
and a round cut short is simply redone later (the core never counts it twice).
"""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.formatting import local_time
from app.gui.session import EXCHANGE_CLIENT, Session
from app.gui.widgets import Banner, LazyRefresh, empty_or, fill_table, label, table
from app.gui.worker import CancelledFn, ProgressFn, Worker

STATE_WORDS = {
    "started": "Running",
    "trained": "Waiting to send",
    "accepted": "Accepted",
    "rejected": "Refused by the exchange",
    "withdrawn": "Withdrawn (consent revoked)",
    "budget": "Stopped: privacy budget used up",
    "empty": "No data in the time range",
    "failed": "Failed",
}
DEVICE_WORDS = {
    "cpu": "the processor (CPU)",
    "gpu": "the graphics card (GPU)",
    "auto": "the best available device (the graphics card when one can be used)",
}
PASS_INTERVAL = 3.0  # seconds between passes while rounds remain


class TasksScreen(LazyRefresh, QWidget):
    """Rounds run so far, and the button that runs the due ones."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.worker: Worker | None = None
        self.rounds: list[dict] = []
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(label("Tasks", "title"))
        top.addStretch(1)
        self.cancel_button = QPushButton("Stop")
        self.cancel_button.hide()
        self.run_button = QPushButton("Run tasks now")
        self.run_button.setProperty("role", "primary")
        top.addWidget(self.cancel_button)
        top.addWidget(self.run_button)
        layout.addLayout(top)
        self.device_label = label("", "subtitle", wrap=True)
        layout.addWidget(self.device_label)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(10)
        self.busy.setTextVisible(False)
        self.busy.setAccessibleName("Training in progress")
        self.busy.hide()
        layout.addWidget(self.busy)
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.table = table(
            ["Task", "Round", "State", "Examples", "Privacy spent", "Finished", "Detail"],
            "Training rounds",
            6,
        )
        self.stack = empty_or(
            self.table,
            "No tasks yet",
            "When you approve a request, its training rounds run here on this computer."
            " Only the noisy model changes leave it.",
        )
        layout.addWidget(self.stack, 1)
        self.run_button.clicked.connect(self.run_now)
        self.cancel_button.clicked.connect(self.cancel)
        self.follow(session, session.tasks_changed, session.requests_changed)

    def device(self) -> str:
        """The compute device chosen in the settings (cpu, gpu or auto)."""
        value = str(self.session.settings().value("compute/device", "auto"))
        return value if value in DEVICE_WORDS else "auto"

    def refresh(self) -> None:
        """Re-read the rounds."""
        from vault import consent as vc
        from vault import task_state as ts

        vault = self.session.vault
        if vault is None:
            return
        self.rounds = ts.task_rounds(vault)
        names = {r["id"]: f"{r['organization']}: {r['purpose']}" for r in vc.list_requests(vault)}
        fill_table(
            self.table,
            [
                [
                    names.get(r["request"], r["request"]),
                    (r["round"] or 0) + 1,
                    STATE_WORDS.get(r["state"], r["state"]),
                    r["examples"],
                    f"ε {r['epsilon']:.2g}" if r["epsilon"] is not None else None,
                    local_time(r["finished"]),
                    r["detail"] or "",
                ]
                for r in self.rounds
            ],
        )
        self.stack.setCurrentIndex(1 if self.rounds else 0)
        self.device_label.setText(f"Training runs on {DEVICE_WORDS[self.device()]}.")

    def clear(self) -> None:
        """Forget the rounds (on lock)."""
        self.rounds = []
        self.table.setRowCount(0)
        self.banner.hide()
        self.stack.setCurrentIndex(0)

    # -- running -------------------------------------------------------------------------

    def run_now(self) -> None:
        """Run every due round in the worker until none is left (or Stop)."""
        from agents import rounds
        from agents.vault_sync import client_for

        vault = self.session.require()
        if self.worker is not None:
            return
        device = self.device()

        def job(progress: ProgressFn, cancelled: CancelledFn) -> list[dict]:
            def pause(seconds: float) -> None:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and not cancelled():
                    time.sleep(0.05)

            return rounds.run_due_rounds(
                vault,
                client_for(vault, **EXCHANGE_CLIENT),
                device=device,
                once=False,
                interval=PASS_INTERVAL,
                sleep=pause,
                should_stop=cancelled,
            )

        self._set_running(True)
        self.banner.show_result(True, f"Training on {DEVICE_WORDS[device]}…")
        self.worker = self.session.work.start(job, self._done, self._failed)

    def cancel(self) -> None:
        """Stop after the current step; an unfinished round is redone next time."""
        if self.worker is not None:
            self.worker.cancel()
            self.banner.show_result(True, "Stopping after the current step…")

    def _set_running(self, running: bool) -> None:
        self.busy.setVisible(running)
        self.cancel_button.setVisible(running)
        self.run_button.setEnabled(not running)

    def _done(self, reports: list[dict]) -> None:
        self.worker = None
        self._set_running(False)
        accepted = sum(r["state"] == "accepted" for r in reports)
        problems = [r for r in reports if r["state"] in ("failed", "error", "offline", "rejected")]
        text = f"{accepted} round{'s' * (accepted != 1)} accepted."
        if not reports:
            text = "Nothing to do: no approved task has a round waiting."
        if problems:
            first = problems[0]["detail"] or problems[0]["state"]
            text += f" {len(problems)} did not go through: {first}"
        self.banner.show_result(not problems, text)
        self._changed()

    def _failed(self, error: BaseException) -> None:
        self.worker = None
        self._set_running(False)
        self.banner.show_result(False, f"Training stopped: {error}")
        self._changed()

    def _changed(self) -> None:
        self.session.tasks_changed.emit()
        self.session.history_changed.emit()
