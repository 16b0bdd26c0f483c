"""Small building blocks shared by screens: titles, cards, banners, empty states, tables.

Kept here so every screen looks the same and stays short; no screen logic lives in this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, SignalInstance
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.gui.style import BAD_COLOR

if TYPE_CHECKING:
    from app.gui.session import Session


class LazyRefresh:
    """Mixin for screens: refresh now when visible, else when next shown.

    After an import every screen learns that the data changed; only the visible one reads the
    vault at once, so the window answers immediately and hidden screens catch up when opened.
    List it before the Qt class: ``class Screen(LazyRefresh, QWidget)``.
    """

    _stale = False

    def refresh(self) -> None:
        """Re-read what the screen shows (screens override this)."""

    def clear(self) -> None:
        """Forget what the screen shows, on lock (screens override this)."""

    def follow(self, session: Session, *changes: SignalInstance) -> None:
        """Refresh soon on unlock and on each of ``changes``; clear on lock."""
        session.unlocked.connect(self.refresh_soon)
        for signal in changes:
            signal.connect(self.refresh_soon)
        session.locked.connect(self.clear)

    def refresh_soon(self) -> None:
        """Refresh if visible, otherwise remember to when shown."""
        if self.isVisible():  # type: ignore[attr-defined]
            self._stale = False
            self.refresh()
        else:
            self._stale = True

    def showEvent(self, event: QShowEvent) -> None:  # Qt API name
        """Catch up on a change that happened while hidden."""
        super().showEvent(event)  # type: ignore[misc]
        if self._stale:
            self._stale = False
            self.refresh()


def label(text: str, role: str | None = None, wrap: bool = False) -> QLabel:
    """A QLabel with a style role (title, subtitle, empty, big, code)."""
    widget = QLabel(text)
    if role:
        widget.setProperty("role", role)
    widget.setWordWrap(wrap)
    return widget


def error_label() -> QLabel:
    """An empty word-wrapped label that shows a dialog's problem in the warning colour."""
    widget = QLabel()
    widget.setWordWrap(True)
    widget.setStyleSheet(f"color: {BAD_COLOR};")
    return widget


def dialog_buttons(
    primary: QDialogButtonBox.StandardButton, text: str | None = None
) -> tuple[QDialogButtonBox, QPushButton]:
    """A dialog's ``primary`` and Cancel buttons, and the primary button (renamed ``text``)."""
    buttons = QDialogButtonBox(primary | QDialogButtonBox.StandardButton.Cancel)
    button = buttons.button(primary)
    if text is not None:
        button.setText(text)
    return buttons, button


def screen_header(title: str, subtitle: str = "") -> QWidget:
    """The title block at the top of a screen."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 8)
    layout.addWidget(label(title, "title"))
    if subtitle:
        layout.addWidget(label(subtitle, "subtitle", wrap=True))
    return box


class Card(QFrame):
    """A framed panel with a caption and a big number or text."""

    def __init__(self, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setProperty("role", "card")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 10, 14, 12)
        self.caption = label(caption, "subtitle")
        self.value = label("–", "big")
        self.value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note = label("", "subtitle", wrap=True)
        layout.addWidget(self.caption)
        layout.addWidget(self.value)
        layout.addWidget(self.note)
        layout.addStretch(1)
        self.setAccessibleName(caption)

    def set(self, value: str, note: str = "") -> None:
        """Show ``value`` with an optional note under it."""
        self.value.setText(value)
        self.note.setText(note)


class Banner(QFrame):
    """A coloured one-line result (green for good news, red for a problem)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.text, 1)
        self.hide()

    # (background, border, text) for light and dark palettes: readable in both.
    COLORS = {
        (True, False): ("#e3f1e4", "#2e7d32", "#1b1b1b"),
        (False, False): ("#fbe4e4", "#c62828", "#1b1b1b"),
        (True, True): ("#1f3a24", "#4caf50", "#e6f4e7"),
        (False, True): ("#4a2020", "#ef5350", "#fde8e8"),
    }

    def show_result(self, ok: bool, text: str) -> None:
        """Show ``text`` styled as success or failure."""
        from app.gui.style import is_dark

        background, border, color = self.COLORS[(ok, is_dark())]
        self.setProperty("role", "banner-ok" if ok else "banner-bad")
        self.setStyleSheet(
            f"Banner {{ background: {background}; border: 1px solid {border};"
            f" border-radius: 6px; }} QLabel {{ color: {color}; }}"
        )
        self.text.setText(text)
        self.setAccessibleName(text)
        self.show()


def centered(inner: QWidget, width: int = 560) -> QWidget:
    """``inner`` in a column of at most ``width`` pixels, centred in the page."""
    inner.setMaximumWidth(width)
    outer = QWidget()
    row = QHBoxLayout(outer)
    row.addStretch(1)
    column = QVBoxLayout()
    column.addStretch(1)
    column.addWidget(inner)
    column.addStretch(2)
    row.addLayout(column, 3)
    row.addStretch(1)
    return outer


def empty_state(text: str, detail: str = "") -> QWidget:
    """A centred, honest "nothing here yet" message."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.addStretch(1)
    main = label(text, "empty")
    main.setAlignment(Qt.AlignmentFlag.AlignCenter)
    layout.addWidget(main)
    if detail:
        sub = label(detail, "subtitle", wrap=True)
        sub.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(sub)
    layout.addStretch(2)
    return box


def empty_or(content: QWidget, text: str, detail: str = "") -> QStackedWidget:
    """A stack of an empty state (page 0) and ``content`` (page 1), for a screen's body."""
    stack = QStackedWidget()
    stack.addWidget(empty_state(text, detail))
    stack.addWidget(content)
    return stack


def table(headers: list[str], name: str, stretch: int | None = None) -> QTableWidget:
    """A read-only, row-selecting table; column ``stretch`` (default: the last) takes the rest."""
    widget = QTableWidget(0, len(headers))
    widget.setHorizontalHeaderLabels(headers)
    widget.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    widget.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    widget.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    widget.setAlternatingRowColors(True)
    widget.verticalHeader().hide()
    widget.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    if stretch is None:
        widget.horizontalHeader().setStretchLastSection(True)
    else:
        widget.horizontalHeader().setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    widget.setAccessibleName(name)
    widget.setTabKeyNavigation(False)  # Tab leaves the table; arrows move inside it
    return widget


def fill_table(widget: QTableWidget, rows: list[list[object]]) -> None:
    """Replace the table's rows; numbers are right-aligned, None shows as a dash."""
    widget.setSortingEnabled(False)
    widget.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if value is None:
                text = "–"
            elif isinstance(value, int) and not isinstance(value, bool):
                text = f"{value:,}"
            elif isinstance(value, float):
                text = f"{value:,.6g}"
            else:
                text = str(value)
            item = QTableWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, value)
            if isinstance(value, int | float) and not isinstance(value, bool):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            widget.setItem(r, c, item)
