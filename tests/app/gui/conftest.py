"""Fixtures of the GUI tests: recorded message boxes, input files, vaults and main windows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.gui import PASSPHRASE, open_window, unlock, write_small_inputs


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
    yield open_window(qtbot, tmp_path / "vault")


@pytest.fixture
def locked_window(qtbot, vault_folder: Path, messages: list[str]) -> Iterator:  # noqa: ANN001
    """A main window showing the unlock screen of a vault with data."""
    yield open_window(qtbot, vault_folder)


@pytest.fixture
def unlocked_window(qtbot, locked_window) -> Iterator:  # noqa: ANN001
    """The same window, unlocked by typing the passphrase."""
    unlock(qtbot, locked_window)
    yield locked_window
