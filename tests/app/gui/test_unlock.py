"""Unlock, wrong passphrase, lock, recovery, and the idle lock."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt

from tests.app.gui import PASSPHRASE, unlock


def test_wrong_passphrase_is_said_plainly(qtbot, locked_window) -> None:
    screen = locked_window.unlock
    assert locked_window.root.currentWidget() is screen
    qtbot.keyClicks(screen.passphrase, "not my passphrase")
    qtbot.mouseClick(screen.unlock_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(screen.message.text()), timeout=20_000)
    assert "does not open this vault" in screen.message.text()
    assert not locked_window.session.is_unlocked()
    assert screen.passphrase.isEnabled()


def test_unlock_then_lock_drops_the_vault(qtbot, locked_window) -> None:
    unlock(qtbot, locked_window)
    vault = locked_window.session.vault
    assert locked_window.screens.currentWidget() is locked_window.overview
    assert "records" in locked_window.overview.data_card.value.text()
    qtbot.mouseClick(locked_window.lock_button, Qt.MouseButton.LeftButton)
    assert locked_window.session.vault is None
    assert vault.conn is None  # closed: the key is gone with it
    assert locked_window.root.currentWidget() is locked_window.unlock
    assert locked_window.overview.recent.rowCount() == 0  # nothing left on screen


def test_ctrl_l_locks(qtbot, unlocked_window) -> None:
    qtbot.keyClick(unlocked_window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert not unlocked_window.session.is_unlocked()


def test_recover_with_the_recovery_code(qtbot, tmp_path, window) -> None:
    from vault.core import Vault

    folder = window.session.folder
    vault, code = Vault.create(folder, PASSPHRASE)
    vault.close()
    window.show_start()
    screen = window.unlock
    qtbot.mouseClick(screen.recover_button, Qt.MouseButton.LeftButton)
    qtbot.keyClicks(screen.code, "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE")
    qtbot.keyClicks(screen.new_fields.passphrase, "quiet lantern meadow 19")
    qtbot.keyClicks(screen.new_fields.confirm, "quiet lantern meadow 19")
    qtbot.mouseClick(screen.recover_go, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "does not open" in screen.recover_message.text(), timeout=20_000)
    screen.code.clear()
    qtbot.keyClicks(screen.code, code)
    qtbot.mouseClick(screen.recover_go, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(window.session.is_unlocked, timeout=20_000)
    window.lock()
    unlock(qtbot, window, "quiet lantern meadow 19")


def test_idle_lock(qtbot, unlocked_window) -> None:
    unlocked_window.idle.set_minutes(0.3 / 60)  # 0.3 seconds
    qtbot.waitUntil(lambda: not unlocked_window.session.is_unlocked(), timeout=5_000)
    assert unlocked_window.root.currentWidget() is unlocked_window.unlock


def test_activity_postpones_the_idle_lock(qtbot, unlocked_window) -> None:
    unlocked_window.idle.set_minutes(0.6 / 60)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        qtbot.keyClick(unlocked_window.nav, Qt.Key.Key_Down)  # a person at work
        qtbot.wait(100)
    assert unlocked_window.session.is_unlocked()
    qtbot.waitUntil(lambda: not unlocked_window.session.is_unlocked(), timeout=5_000)


def test_suspend_locks(qtbot, unlocked_window) -> None:
    unlocked_window.idle._state_changed(Qt.ApplicationState.ApplicationSuspended)
    assert not unlocked_window.session.is_unlocked()
