"""Requests: an honest empty state until the requests core exists in this build.

The screen never shows invented data; it fills from the core as soon as the core provides it.
"""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.gui.session import Session
from app.gui.widgets import empty_state, screen_header


class RequestsScreen(QWidget):
    """Requests of this vault."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        layout = QVBoxLayout(self)
        layout.addWidget(screen_header("Requests"))
        layout.addWidget(
            empty_state(
                "No requests yet",
                "When an organization asks to train a model with your data, its request appears "
                "here in plain words, and nothing happens until you approve it.",
            ),
            1,
        )

    def refresh(self) -> None:
        """Nothing to read yet."""
