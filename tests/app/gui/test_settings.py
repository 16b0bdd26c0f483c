"""Settings: change the passphrase (wrong current one refused), idle minutes kept, identity."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.gui.passphrase_dialog import ChangePassphraseDialog
from tests.app.gui import PASSPHRASE, unlock

NEW = "amber falcon drifting 58"


def test_change_passphrase(qtbot, unlocked_window) -> None:
    window = unlocked_window
    dialog = ChangePassphraseDialog(window.session, window)
    qtbot.addWidget(dialog)
    qtbot.keyClicks(dialog.current, "wrong passphrase")
    qtbot.keyClicks(dialog.fields.passphrase, NEW)
    qtbot.keyClicks(dialog.fields.confirm, NEW)
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "not right" in dialog.message.text(), timeout=20_000)
    dialog.current.clear()
    qtbot.keyClicks(dialog.current, PASSPHRASE)
    with qtbot.waitSignal(dialog.accepted, timeout=20_000):
        qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    window.lock()
    unlock(qtbot, window, NEW)


def test_idle_minutes_are_kept_with_the_vault(qtbot, unlocked_window) -> None:
    window = unlocked_window
    window.show_screen("settings")
    screen = window.settings
    assert screen.did.text() == window.session.vault.did
    screen.idle.setValue(12)
    assert window.idle.seconds == 12 * 60
    window.lock()
    assert window.session.idle_minutes() == 12
    unlock(qtbot, window)
    assert window.idle.seconds == 12 * 60
    assert screen.idle.value() == 12


def test_exchange_address_is_saved(qtbot, unlocked_window) -> None:
    screen = unlocked_window.settings
    unlocked_window.show_screen("settings")
    screen.exchange.setFocus()
    qtbot.keyClicks(screen.exchange, "http://127.0.0.1:9000")
    qtbot.keyClick(screen.exchange, Qt.Key.Key_Return)
    from agents.vault_sync import exchange_url

    # Kept where `tessera requests sync` finds it too.
    assert exchange_url(unlocked_window.session.vault) == "http://127.0.0.1:9000"


def test_identity_document_is_shown_and_copied(qtbot, unlocked_window, monkeypatch) -> None:
    import json

    from PySide6.QtGui import QGuiApplication

    from app.gui.identity_document_dialog import IdentityDocumentDialog

    shown: list[str] = []

    def exec_(dialog: IdentityDocumentDialog) -> int:
        qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
        shown.append(dialog.text.toPlainText())
        return 0

    monkeypatch.setattr(IdentityDocumentDialog, "exec", exec_)
    window = unlocked_window
    window.show_screen("settings")
    qtbot.mouseClick(window.settings.document_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(shown), timeout=20_000)
    document = json.loads(shown[0])
    assert document["id"] == window.session.vault.did
    assert document["verificationMethod"][0]["controller"] == window.session.vault.did
    assert QGuiApplication.clipboard().text() == shown[0]
