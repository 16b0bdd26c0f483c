"""GUI tests (pytest-qt, offscreen): shared fixtures, imported by each test module.

The fixtures build real vaults through the core and real windows; tests then drive the widgets
by typing and clicking, as a person would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Message boxes are recorded instead of blocking the test (their text, in order)."""
    from PySide6.QtWidgets import QMessageBox

    shown: list[str] = []

    def fake_exec(box: QMessageBox) -> int:
        shown.append(f"{box.text()} | {box.informativeText()} | {box.detailedText()}")
        return int(QMessageBox.StandardButton.Ok)

    def fake_information(parent: object, title: str, text: str, *a: object) -> int:
        shown.append(f"{title}: {text}")
        return int(QMessageBox.StandardButton.Ok)

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    monkeypatch.setattr(QMessageBox, "information", staticmethod(fake_information))
    return shown


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """Small input files for imports."""
    return write_small_inputs(tmp_path / "inputs")


@pytest.fixture
def vault_folder(tmp_path: Path, inputs: dict[str, Path]) -> Path:
    """A vault (locked again) holding the small health export and the GPX walks."""
    from vault.core import Vault

    folder = tmp_path / "vault"
    vault, _ = Vault.create(folder, PASSPHRASE)
    vault.import_path(inputs["health"])
    vault.import_path(inputs["gpx"])
    vault.close()
    return folder


@pytest.fixture
def window(qtbot, tmp_path: Path, messages: list[str]) -> Iterator:  # noqa: ANN001
    """A main window for an empty folder (first run)."""
    yield _window(qtbot, tmp_path / "vault")


@pytest.fixture
def locked_window(qtbot, vault_folder: Path, messages: list[str]) -> Iterator:  # noqa: ANN001
    """A main window showing the unlock screen of a vault with data."""
    yield _window(qtbot, vault_folder)


@pytest.fixture
def unlocked_window(qtbot, locked_window) -> Iterator:  # noqa: ANN001
    """The same window, unlocked by typing the passphrase."""
    unlock(qtbot, locked_window)
    yield locked_window


def _window(qtbot, folder: Path):  # noqa: ANN001, ANN202
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
