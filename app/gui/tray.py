"""The tray icon: show the window, lock, quit, and a notification when a new request arrives.

Not every desktop has a tray (and offscreen tests have none): then nothing is shown and
notifications fall back to the window's status bar, through the ``fallback`` callback.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon, QWidget


class Tray:
    """Tray icon and menu for the main window."""

    def __init__(
        self,
        window: QWidget,
        icon: QIcon,
        lock: Callable[[], None],
        quit_app: Callable[[], None],
        fallback: Callable[[str], None],
    ) -> None:
        self.window = window
        self.fallback = fallback
        self.icon: QSystemTrayIcon | None = None
        self.notified: list[str] = []  # what was announced (tests read this)
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        self.icon = QSystemTrayIcon(icon, window)
        self.icon.setToolTip("Tessera")
        menu = QMenu(window)
        show = QAction("Show Tessera", menu)
        lock_action = QAction("Lock now", menu)
        quit_action = QAction("Quit", menu)
        show.triggered.connect(self.show_window)
        lock_action.triggered.connect(lock)
        quit_action.triggered.connect(quit_app)
        menu.addActions([show, lock_action, quit_action])
        self.icon.setContextMenu(menu)
        self.icon.activated.connect(lambda _reason: self.show_window())
        self.icon.messageClicked.connect(self.show_window)
        self.icon.show()

    def show_window(self) -> None:
        """Bring the main window to the front."""
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()

    def notify(self, title: str, text: str) -> None:
        """A desktop notification (or a status-bar message without a tray)."""
        self.notified.append(f"{title}: {text}")
        if self.icon is not None and QSystemTrayIcon.supportsMessages():
            self.icon.showMessage(title, text, QSystemTrayIcon.MessageIcon.Information, 10_000)
        else:
            self.fallback(f"{title}: {text}")
