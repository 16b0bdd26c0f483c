"""Starting the app: the QApplication, style, session and main window, or the screenshots.

Imports stay lean until the first window is on screen: the crypto stack, the importers and
pyqtgraph are loaded when first needed, so the unlock window appears in well under a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication

from app.gui.style import apply_style, prepare_high_dpi


def make_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication (created once) with Tessera's name, style and palette."""
    app = QApplication.instance()
    if app is None:
        prepare_high_dpi()
        app = QApplication(argv if argv is not None else sys.argv[:1])
        app.setApplicationName("Tessera")
        app.setOrganizationName("Tessera")
        app.setDesktopFileName("tessera")
        apply_style(app)
    return app  # type: ignore[return-value]


def run(folder: Path, screenshots: Path | None = None, demo: bool = False) -> int:
    """Show the main window for ``folder`` (or render screenshots); return the exit code."""
    app = make_app()
    if screenshots is not None:
        from app.gui.screenshots import render_all

        return render_all(app, screenshots, folder, demo)
    from app.gui.main_window import MainWindow
    from app.gui.session import Session

    session = Session(folder)
    window = MainWindow(session)
    window.show()
    if demo:
        window.start_demo()
    code = app.exec()
    session.lock()
    return code
