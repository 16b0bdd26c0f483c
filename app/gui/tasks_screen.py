"""Tasks: an honest empty state until the tasks core exists in this build.

The screen never shows invented data; it fills from the core as soon as the core provides it.
"""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.gui.session import Session
from app.gui.widgets import empty_state, screen_header


class TasksScreen(QWidget):
    """Tasks of this vault."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        layout = QVBoxLayout(self)
        layout.addWidget(screen_header("Tasks"))
        layout.addWidget(
            empty_state(
                "No tasks yet",
                "Training rounds you agreed to run here on this computer, with their progress and"
                " the privacy they used.",
            ),
            1,
        )

    def refresh(self) -> None:
        """Nothing to read yet."""
