"""Rewards: an honest empty state until the rewards core exists in this build.

The screen never shows invented data; it fills from the core as soon as the core provides it.
"""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.gui.session import Session
from app.gui.widgets import empty_state, screen_header


class RewardsScreen(QWidget):
    """Rewards of this vault."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        layout = QVBoxLayout(self)
        layout.addWidget(screen_header("Rewards"))
        layout.addWidget(
            empty_state(
                "No rewards yet",
                "Rewards arrive with a receipt signed by the organization; they are listed and "
                "totalled here.",
            ),
            1,
        )

    def refresh(self) -> None:
        """Nothing to read yet."""
