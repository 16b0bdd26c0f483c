"""`tessera gui --screenshots DIR [--demo]`: render every main screen at 1280x800 and exit.

With ``--demo`` a throwaway vault is created and filled through the real importers first;
every screen then shows what that vault really holds. Without it, the vault in the chosen
folder is used, unlocked with $TESSERA_PASSPHRASE when set (otherwise only the unlock screen
can be shown). The import-in-progress shot runs a real import of a larger file and cancels it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QPoint
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QApplication, QWidget

SIZE = (1280, 800)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Run the event loop until ``condition()`` holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QApplication.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def settle(seconds: float = 0.15) -> None:
    """Let layouts, repaints and queued signals finish."""
    wait_until(lambda: False, seconds)


class Shooter:
    """Saves numbered screenshots of the main window (and a dialog over it)."""

    def __init__(self, window: QWidget, folder: Path) -> None:
        self.window = window
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.saved: list[Path] = []

    def shot(self, number: int, name: str, dialog: QWidget | None = None) -> Path:
        """Save the window as ``NN-name.png``, with ``dialog`` drawn centred over it."""
        settle()
        pixmap = self.window.grab()
        if dialog is not None:
            over = dialog.grab()
            painter = QPainter(pixmap)
            painter.fillRect(pixmap.rect(), QColor(0, 0, 0, 70))  # the window behind, dimmed
            corner = QPoint(
                (pixmap.width() - over.width()) // 2, (pixmap.height() - over.height()) // 3
            )
            painter.drawPixmap(corner, over)
            painter.end()
        path = self.folder / f"{number:02d}-{name}.png"
        pixmap.save(str(path))
        self.saved.append(path)
        return path


def render_all(app: QApplication, out: Path, folder: Path, demo: bool) -> int:
    """Render the screens into ``out``; return the process exit code."""
    from app.gui.main_window import MainWindow
    from app.gui.session import Session

    demo_folder = None
    passphrase = os.environ.get("TESSERA_PASSPHRASE")
    if demo:
        from app.gui.demo import DEMO_PASSPHRASE, DemoFolder, create_demo_vault

        demo_folder = DemoFolder()
        create_demo_vault(demo_folder).close()
        folder, passphrase = demo_folder.vault, DEMO_PASSPHRASE
    session = Session(folder)
    window = MainWindow(session)
    window.resize(*SIZE)
    window.show()
    shooter = Shooter(window, out)
    try:
        shooter.shot(1, "unlock")
        if passphrase is None or not session.is_unlocked() and not _unlock(window, passphrase):
            print(
                "screenshots: vault not unlocked; only the unlock screen was saved", file=sys.stderr
            )
            return 1 if not demo else 0
        from app.gui.screenshot_tour import tour

        tour(window, shooter, demo_folder)
    finally:
        window.close()
        if demo_folder is not None:
            demo_folder.cleanup()
    for path in shooter.saved:
        print(path)
    return 0


def _unlock(window: QWidget, passphrase: str) -> bool:
    """Type the passphrase into the unlock screen and wait for the overview."""
    window.unlock.passphrase.setText(passphrase)  # type: ignore[attr-defined]
    window.unlock.unlock_button.click()  # type: ignore[attr-defined]
    return wait_until(window.session.is_unlocked, 30)  # type: ignore[attr-defined]
