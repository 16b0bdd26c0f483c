"""Consents: what you approved, how much of each privacy budget is used, and revoke.

Revoking signs a revocation with your DID, logs it on each dataset, and stops the next round
at once (``vault.consent.revoke``); the exchange is told on the next check.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QHBoxLayout,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.errors import show_error
from app.gui.formatting import dataset_title, local_time, organization_names, short_did
from app.gui.session import Session
from app.gui.widgets import Banner, LazyRefresh, empty_or, fill_table, label, table

STATE_WORDS = {
    "active": "Active",
    "revoked": "Revoked",
    "expired": "Ended",
    "finished": "Finished",
}


def privacy_used(spent: float, budget: float | None) -> str:
    """'ε 1.2 of 3 used (40%)'."""
    if not budget:
        return f"ε {spent:.2g} used"
    return f"ε {spent:.2g} of {budget:g} used ({min(100, round(100 * spent / budget))}%)"


class ConsentsScreen(LazyRefresh, QWidget):
    """Every consent, newest first, with Revoke."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.consents: list = []
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(label("Consents", "title"))
        top.addStretch(1)
        self.revoke_button = QPushButton("Revoke…")
        top.addWidget(self.revoke_button)
        layout.addLayout(top)
        layout.addWidget(
            label(
                "What you agreed to. Revoking stops any further training at once; what was"
                " already sent cannot be taken back.",
                "subtitle",
                wrap=True,
            )
        )
        self.banner = Banner()
        layout.addWidget(self.banner)
        self.table = table(
            ["Organization", "Purpose", "Data", "Privacy used", "State", "Ends"], "Consents", 1
        )
        self.stack = empty_or(
            self.table,
            "No consents yet",
            "Requests you approve become consents. You can revoke any of them here.",
        )
        layout.addWidget(self.stack, 1)
        self.revoke_button.clicked.connect(lambda: self.revoke_selected())
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.follow(session, session.requests_changed, session.tasks_changed)
        self._selection_changed()

    def refresh(self) -> None:
        """Re-read the consents and the privacy spent under each."""
        from vault import consent as vc

        vault = self.session.vault
        if vault is None:
            return
        self.consents = vc.consents(vault)
        names = organization_names(vault)
        rows = []
        for c in self.consents:
            # the accountant (dp-accounting, slow to load) only once there is a consent
            from agents.rounds import privacy_spent

            spent = privacy_spent(vault, c.id)
            rows.append(
                [
                    names.get(c.organization, short_did(c.organization)),
                    c.purpose,
                    ", ".join(dataset_title(d) for d in c.datasets),
                    privacy_used(spent["epsilon"], c.epsilon_budget),
                    STATE_WORDS.get(c.state(), c.state()),
                    local_time(_iso(c.revoked or c.expires), False),
                ]
            )
        fill_table(self.table, rows)
        self.stack.setCurrentIndex(1 if rows else 0)
        self._selection_changed()

    def clear(self) -> None:
        """Forget the consents (on lock)."""
        self.consents = []
        self.table.setRowCount(0)
        self.banner.hide()
        self.stack.setCurrentIndex(0)

    def selected(self) -> object | None:
        """The selected consent."""
        rows = self.table.selectionModel().selectedRows()
        return self.consents[rows[0].row()] if rows and self.consents else None

    def _selection_changed(self) -> None:
        consent = self.selected()
        self.revoke_button.setEnabled(consent is not None and consent.state() == "active")

    def revoke_selected(self, ask: bool = True) -> None:
        """Revoke the selected consent after a confirmation."""
        from vault import consent as vc

        consent = self.selected()
        if consent is None:
            return
        if ask and (
            QMessageBox.question(
                self,
                "Revoke consent",
                "Revoke this consent? No further training will use your data for it.",
            )
            != QMessageBox.StandardButton.Yes
        ):
            return
        try:
            vc.revoke(self.session.require(), consent.id)
        except Exception as exc:  # noqa: BLE001 - shown to the person, never raised
            show_error(self, "Revoke", exc)
            return
        self.banner.show_result(True, "Revoked. No further round will use your data for it.")
        self.session.requests_changed.emit()
        self.session.history_changed.emit()


def _iso(epoch: float | None) -> str | None:
    from vault.timeparse import iso_utc

    return iso_utc(epoch)
