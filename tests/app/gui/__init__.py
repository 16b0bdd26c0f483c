"""GUI tests (pytest-qt, offscreen): the passphrase, input files, unlocking, dataset counts.

The fixtures (``conftest.py``) build real vaults through the core and real windows; tests then
drive the widgets by typing and clicking, as a person would.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TESSERA_KDF_TIME_COST", "1")

PASSPHRASE = "correct horse battery staple"


def write_small_inputs(folder: Path) -> dict[str, Path]:
    """A short Apple Health export, a GPX walk and a ratings CSV (the demo generator, small)."""
    from app.gui.demo_data import write_health_export, write_ratings_csv, write_walks_gpx

    folder.mkdir(parents=True, exist_ok=True)
    return {
        "health": write_health_export(folder / "export.xml", days=6, heart_every=30),
        "gpx": write_walks_gpx(folder / "walks.gpx", days=4),
        "csv": write_ratings_csv(folder / "movie_ratings.csv"),
    }


def open_window(qtbot, folder: Path):  # noqa: ANN001, ANN202
    """A shown main window (and its session) for the vault in ``folder``."""
    from app.gui.application import make_app
    from app.gui.main_window import MainWindow
    from app.gui.session import Session

    make_app()
    session = Session(folder)
    window = MainWindow(session)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    qtbot.waitExposed(window)
    return window


def unlock(qtbot, window, passphrase: str = PASSPHRASE) -> None:  # noqa: ANN001
    """Type the passphrase, press Enter, wait for the overview."""
    from PySide6.QtCore import Qt

    screen = window.unlock
    screen.passphrase.clear()
    qtbot.keyClicks(screen.passphrase, passphrase)
    qtbot.keyClick(screen.passphrase, Qt.Key.Key_Return)
    qtbot.waitUntil(window.session.is_unlocked, timeout=20_000)


def dataset_counts(folder: Path) -> dict[str, int]:
    """Record counts per dataset, read through the core in a separate unlock."""
    from vault.core import Vault

    with Vault.unlock(folder, PASSPHRASE) as vault:
        return {d["name"]: d["records"] for d in vault.datasets()}
