"""Approve a request: choose the datasets, the privacy budget and how long the consent lasts.

Everything can only be narrowed: fewer datasets than asked, a smaller budget (a stronger
guarantee), an earlier end. The core (``vault.consent.approve``) enforces the same limits; the
dialog only offers what it would accept.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from PySide6.QtCore import QDate, QDateTime, QTime, QTimeZone
from PySide6.QtWidgets import (
    QCheckBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from app.gui.widgets import dialog_buttons, label


class ApproveDialog(QDialog):
    """The choices of one approval; ``choices()`` returns them once accepted."""

    def __init__(self, request: object, present: set[str], parent: QWidget | None = None):
        from identity.summary import dataset_words

        super().__init__(parent)
        self.request = request
        self.setWindowTitle("Approve request")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        layout.addWidget(label(f"Approve {request.organization}'s request", "title"))
        layout.addWidget(label(request.purpose, "subtitle", wrap=True))
        box = QGroupBox("Data it may use")
        box_layout = QVBoxLayout(box)
        self.checks: dict[str, QCheckBox] = {}
        for name in request.datasets:
            missing = "" if name in present else "  (not in your vault)"
            check = QCheckBox(f"{dataset_words(name)}{missing}")
            check.setChecked(True)
            check.setAccessibleName(f"Allow {name}")
            check.toggled.connect(self._update)
            self.checks[name] = check
            box_layout.addWidget(check)
        layout.addWidget(box)
        form = QFormLayout()
        self.budget = QDoubleSpinBox()
        self.budget.setDecimals(2)
        self.budget.setSingleStep(0.5)
        self.budget.setRange(0.1, float(request.privacy.epsilon))
        self.budget.setValue(float(request.privacy.epsilon))
        self.budget.setPrefix("ε = ")
        self.budget.setAccessibleName("Privacy budget")
        form.addRow("Privacy budget:", self.budget)
        self.budget_words = QLabel()
        self.budget_words.setWordWrap(True)
        form.addRow("", self.budget_words)
        self.until = QDateEdit()
        self.until.setCalendarPopup(True)
        self.until.setAccessibleName("Consent ends on")
        today = QDate.currentDate()
        last = _qdate(request.expires)
        self.until.setDateRange(today.addDays(1) if last > today else last, last)
        self.until.setDate(last)
        form.addRow("Consent ends on:", self.until)
        layout.addLayout(form)
        self.buttons, self.ok = dialog_buttons(QDialogButtonBox.StandardButton.Ok, "Approve")
        layout.addWidget(self.buttons)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.budget.valueChanged.connect(self._update)
        self._update()

    def _update(self) -> None:
        from identity.summary import privacy_strength

        epsilon = self.budget.value()
        self.budget_words.setText(
            f"A {privacy_strength(epsilon)} guarantee. Smaller is stronger; training stops"
            " when this budget is used up."
        )
        self.ok.setEnabled(any(c.isChecked() for c in self.checks.values()))

    def choices(self) -> tuple[list[str], float, float]:
        """(datasets, ε budget, consent end as epoch seconds, capped at the request's expiry)."""
        datasets = [name for name, check in self.checks.items() if check.isChecked()]
        end = QDateTime(self.until.date(), QTime(23, 59, 59), QTimeZone.systemTimeZone())
        until = max(float(end.toSecsSinceEpoch()), time.time() + 60)
        return datasets, round(self.budget.value(), 2), min(until, float(self.request.expires))


def _qdate(epoch: float) -> QDate:
    moment = datetime.fromtimestamp(epoch, tz=UTC).astimezone()
    return QDate(moment.year, moment.month, moment.day)
