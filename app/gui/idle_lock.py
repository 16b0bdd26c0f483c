"""Auto-lock: lock the vault after some idle minutes, and when the system suspends or the
session's screen locks where Qt (or the login manager on D-Bus) tells us.

Input events only stamp the time of the last activity (cheap: no timer restarts on every mouse
move); a coarse timer compares that stamp with the allowed idle time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import SLOT, QEvent, QObject, Qt, QTimer, Slot
from PySide6.QtGui import QGuiApplication

ACTIVITY = {
    QEvent.Type.KeyPress,
    QEvent.Type.MouseButtonPress,
    QEvent.Type.MouseMove,
    QEvent.Type.Wheel,
    QEvent.Type.TouchBegin,
    QEvent.Type.TabletPress,
}


class IdleLock(QObject):
    """Calls ``lock()`` after ``minutes`` without input, on suspend, and on screen lock."""

    def __init__(
        self, lock: Callable[[], None], minutes: float, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._lock = lock
        self._last = time.monotonic()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._check)
        self.set_minutes(minutes)
        app = QGuiApplication.instance()
        app.installEventFilter(self)
        app.applicationStateChanged.connect(self._state_changed)
        self._watch_login_manager()

    def set_minutes(self, minutes: float) -> None:
        """Change the idle time; checks run often enough to lock within ~1/4 of it."""
        self.seconds = max(0.05, minutes * 60)
        self._timer.start(int(min(5000, max(20, self.seconds * 250))))

    def touch(self) -> None:
        """Count now as activity."""
        self._last = time.monotonic()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt API name
        """Stamp user input as activity; never consumes the event."""
        if event.type() in ACTIVITY:
            self._last = time.monotonic()
        return False

    def _check(self) -> None:
        if time.monotonic() - self._last >= self.seconds:
            self._last = time.monotonic()
            self._lock()

    def _state_changed(self, state: Qt.ApplicationState) -> None:
        # Suspended: the platform is about to sleep us (Qt reports it on some platforms).
        if state == Qt.ApplicationState.ApplicationSuspended:
            self._lock()

    # -- Linux: logind says when the screen locks or the machine goes to sleep -------------

    def _watch_login_manager(self) -> None:
        try:
            from PySide6.QtDBus import QDBusConnection
        except ImportError:
            return
        bus = QDBusConnection.systemBus()
        if not bus.isConnected():
            return
        # "Lock" on any session object and "PrepareForSleep" on the manager.
        bus.connect(
            "org.freedesktop.login1",
            "",
            "org.freedesktop.login1.Session",
            "Lock",
            self,
            SLOT("_on_lock()"),
        )
        bus.connect(
            "org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.login1.Manager",
            "PrepareForSleep",
            self,
            SLOT("_on_sleep(bool)"),
        )

    @Slot()
    def _on_lock(self) -> None:
        self._lock()

    @Slot(bool)
    def _on_sleep(self, going: bool) -> None:
        if going:
            self._lock()
