"""Overview: your data at a glance, requests waiting for you, running tasks, rewards earned,
and the most recent accesses to your data.

It is the first screen after unlocking, so it reads only cached counts and the access logs;
anything slower belongs to the screens behind it.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from app.gui import activity
from app.gui.formatting import (
    action_word,
    actor_word,
    count,
    dataset_title,
    local_time,
    organization_names,
    short_did,
)
from app.gui.session import Session
from app.gui.widgets import Card, LazyRefresh, fill_table, label, table

RECENT = 12


def recent_entries(vault: object, limit: int = RECENT) -> list[tuple[str, dict]]:
    """The newest ``limit`` access-log entries over all datasets, newest first."""
    found: list[tuple[str, dict]] = []
    for name in vault.log.datasets():  # type: ignore[attr-defined]
        found.extend((name, e) for e in vault.log.entries(name)[-limit:])  # type: ignore[attr-defined]
    found.sort(key=lambda item: item[1]["time"] or "", reverse=True)
    return found[:limit]


class OverviewScreen(LazyRefresh, QWidget):
    """Cards with counts and a table of recent accesses; each card leads to its screen."""

    go = Signal(str)  # name of the screen to open

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        layout = QVBoxLayout(self)
        layout.addWidget(label("Overview", "title"))
        self.subtitle = label("", "subtitle", wrap=True)
        layout.addWidget(self.subtitle)
        grid = QGridLayout()
        grid.setSpacing(12)
        self.data_card = Card("Your data")
        self.requests_card = Card("Requests waiting for you")
        self.tasks_card = Card("Active tasks")
        self.rewards_card = Card("Rewards earned")
        cards = (
            (self.data_card, "data", "See your data"),
            (self.requests_card, "requests", "See requests"),
            (self.tasks_card, "tasks", "See tasks"),
            (self.rewards_card, "rewards", "See rewards"),
        )
        for column, (card, target, caption) in enumerate(cards):
            button = QPushButton(caption)
            button.setFlat(True)
            button.setAccessibleName(caption)
            button.clicked.connect(lambda _=False, t=target: self.go.emit(t))
            card.layout().addWidget(button)
            grid.addWidget(card, 0, column)
        layout.addLayout(grid)
        row = QHBoxLayout()
        row.addWidget(label("Recent activity", "title"))
        row.addStretch(1)
        self.history_button = QPushButton("Full access history")
        self.history_button.clicked.connect(lambda: self.go.emit("history"))
        row.addWidget(self.history_button)
        layout.addSpacing(8)
        layout.addLayout(row)
        self.recent = table(["When", "Dataset", "Who", "What", "Why", "Rows"], "Recent activity", 4)
        layout.addWidget(self.recent, 1)
        self.follow(
            session,
            session.data_changed,
            session.history_changed,
            session.requests_changed,
            session.tasks_changed,
        )

    def refresh(self) -> None:
        """Re-read the counts and the recent accesses."""
        vault = self.session.vault
        if vault is None:
            return
        datasets = vault.datasets()
        records = sum(d["records"] for d in datasets)
        self.subtitle.setText(f"Vault in {vault.folder} · your identity {short_did(vault.did)}")
        self.data_card.set(
            count(records, "record"),
            f"in {count(len(datasets), 'dataset')}" if datasets else "Import data to begin",
        )
        summary = activity.summary(vault)
        self.requests_card.set(*summary.requests)
        self.tasks_card.set(*summary.tasks)
        self.rewards_card.set(*summary.rewards)
        own, names = vault.did, organization_names(vault)
        fill_table(
            self.recent,
            [
                [
                    local_time(e["time"]),
                    dataset_title(name),
                    actor_word(e["actor"], own, names),
                    action_word(e["action"]),
                    e["purpose"],
                    e["rows"],
                ]
                for name, e in recent_entries(vault)
            ],
        )

    def clear(self) -> None:
        """Forget the numbers (on lock)."""
        for card in (self.data_card, self.requests_card, self.tasks_card, self.rewards_card):
            card.set("–")
        self.recent.setRowCount(0)
