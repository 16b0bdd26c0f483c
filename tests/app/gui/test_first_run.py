"""First run: create a vault by typing a passphrase twice, see the recovery code once."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from tests.app.gui import PASSPHRASE


def test_create_vault_with_strength_meter_and_recovery_code(qtbot, window) -> None:
    screen = window.first_run
    assert window.root.currentWidget() is screen
    qtbot.mouseClick(screen.create_button, Qt.MouseButton.LeftButton)
    fields = screen.fields

    qtbot.keyClicks(fields.passphrase, "password")
    assert fields.meter.value() == 0 and fields.meter.format() == "Very weak"
    assert not screen.create_vault_button.isEnabled()

    fields.passphrase.clear()
    qtbot.keyClicks(fields.passphrase, PASSPHRASE)
    assert fields.score >= 3
    qtbot.keyClicks(fields.confirm, PASSPHRASE[:-1])
    assert "do not match" in fields.match.text()
    assert not screen.create_vault_button.isEnabled()
    qtbot.keyClicks(fields.confirm, PASSPHRASE[-1])
    assert screen.create_vault_button.isEnabled()

    qtbot.mouseClick(screen.create_vault_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.pages.currentIndex() == 2, timeout=20_000)
    code = screen.code_label.text()
    assert len(code.replace("-", "")) >= 20
    assert not screen.continue_button.isEnabled()
    qtbot.mouseClick(screen.saved_check, Qt.MouseButton.LeftButton)
    assert screen.continue_button.isEnabled()
    qtbot.mouseClick(screen.continue_button, Qt.MouseButton.LeftButton)

    assert window.session.is_unlocked()
    assert window.screens.currentWidget() is window.overview
    assert screen.code_label.text() == ""  # shown once only
    folder: Path = window.session.folder
    assert (folder / "vault.key.json").exists() and (folder / "vault.db").exists()
    # The code really recovers the vault.
    window.lock()
    from vault.core import Vault

    Vault.recover(folder, code, "a brand new passphrase 77").close()


def test_weak_passphrase_cannot_be_used(qtbot, window) -> None:
    screen = window.first_run
    screen.show_create()
    qtbot.keyClicks(screen.fields.passphrase, "abc12345")
    qtbot.keyClicks(screen.fields.confirm, "abc12345")
    assert not screen.fields.acceptable()
    assert not screen.create_vault_button.isEnabled()
    assert screen.fields.hint.text()


def test_try_the_demo(qtbot, window) -> None:
    """The demo button builds a throwaway vault with data and two waiting requests."""
    qtbot.mouseClick(window.first_run.demo_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(window.session.is_unlocked, timeout=60_000)
    try:
        assert window.demo is not None and window.demo.exchange is not None
        assert window.session.folder == window.demo.vault  # never the real vault folder
        assert window.overview.requests_card.value.text() == "2"
        window.show_screen("data")
        assert "health.step_count" in window.data.names
    finally:
        window.close()  # stops the demo exchange and removes the folder
    assert window.demo is None
