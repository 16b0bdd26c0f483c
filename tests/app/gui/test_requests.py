"""Requests, consents, tasks and rewards through the GUI, on the real core: approve, deny,
revoke, a sync from a real exchange with its notification, and training rounds with rewards."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.gui.demo_exchange import REQUESTS, request_payload, task_package
from tests.app.gui import unlock


def add_requests(vault, count: int = 2) -> list[str]:  # noqa: ANN001
    """Sign and add demo requests straight into the inbox (no exchange)."""
    from agents.package import package_address
    from agents.request_check import receive_request
    from identity.keys import generate_key
    from identity.vc_jwt import issue_credential

    org = generate_key()
    ids = []
    for spec in REQUESTS[:count]:
        package = task_package(spec["label"])
        token = issue_credential(org, request_payload(org, package_address(package), spec, days=10))
        request, _ = receive_request(vault, token, package, "test")
        ids.append(request.id)
    return ids


def _requests_screen(qtbot, window):  # noqa: ANN001, ANN202
    window.session.requests_changed.emit()
    qtbot.keyClick(window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert window.screens.currentWidget() is window.requests
    return window.requests


def test_inbox_detail_in_plain_words(qtbot, unlocked_window) -> None:
    add_requests(unlocked_window.session.vault)
    screen = _requests_screen(qtbot, unlocked_window)
    assert screen.table.rowCount() == 2
    text = screen.detail.text()
    assert "Northwind Sleep Lab" in text and "signature verified" in text
    assert "Your privacy" in text and "ε" in text
    assert screen.approve_button.isEnabled() and screen.deny_button.isEnabled()
    assert unlocked_window.overview.requests_card.value.text() == "2"


def test_approve_then_revoke(qtbot, unlocked_window, monkeypatch) -> None:
    from PySide6.QtWidgets import QMessageBox

    from app.gui.approve_dialog import ApproveDialog

    window = unlocked_window
    vault = window.session.vault
    first = add_requests(vault, 1)[0]
    screen = _requests_screen(qtbot, window)

    def choose(dialog: ApproveDialog) -> int:
        dialog.checks["health.heart_rate"].setChecked(False)  # narrower than asked
        dialog.budget.setValue(1.5)
        return 1

    monkeypatch.setattr(ApproveDialog, "exec", choose)
    qtbot.mouseClick(screen.approve_button, Qt.MouseButton.LeftButton)
    assert "Approved" in screen.banner.text.text()
    assert not screen.approve_button.isEnabled()

    from vault import consent as vc

    consent = vc.consent_for_request(vault, first)
    assert consent.epsilon_budget == 1.5
    assert "health.heart_rate" not in consent.datasets
    assert vault.log.entries("health.step_count")[-1]["action"] == "consent"

    qtbot.keyClick(window, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    consents = window.consents
    assert consents.table.rowCount() == 1
    consents.table.selectRow(0)
    assert consents.revoke_button.isEnabled()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(consents.revoke_button, Qt.MouseButton.LeftButton)
    assert vc.get_consent(vault, consent.id).revoked is not None
    assert consents.table.item(0, 4).text() == "Revoked"
    assert vault.log.entries("health.step_count")[-1]["action"] == "revoke"


def test_deny_touches_no_data(qtbot, unlocked_window, monkeypatch) -> None:
    from PySide6.QtWidgets import QMessageBox

    from vault import consent as vc

    window = unlocked_window
    vault = window.session.vault
    before = {n: len(vault.log.entries(n)) for n in vault.log.datasets()}
    request_id = add_requests(vault, 1)[0]
    screen = _requests_screen(qtbot, window)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(screen.deny_button, Qt.MouseButton.LeftButton)
    assert vc.get_request(vault, request_id).status == "denied"
    assert screen.table.item(0, 2).text() == "Denied"
    assert {n: len(vault.log.entries(n)) for n in vault.log.datasets()} == before


@pytest.mark.slow
def test_sync_notify_approve_train_and_rewards(qtbot, tmp_path: Path, messages) -> None:
    """The demo's whole loop against a real exchange on loopback."""
    from app.gui.demo import DEMO_PASSPHRASE, DemoFolder, create_demo_vault
    from tests.app.gui import open_window

    demo = DemoFolder()
    try:
        create_demo_vault(demo, exchange=False).close()
        window = open_window(qtbot, demo.vault)
        unlock(qtbot, window, DEMO_PASSPHRASE)
        from agents.vault_sync import set_exchange_url
        from app.gui.demo_exchange import DemoExchange

        demo.exchange = DemoExchange(demo.root)
        demo.exchange.post_demo_requests(days=120)
        window.show_screen("settings")
        window.settings.exchange.clear()
        qtbot.keyClicks(window.settings.exchange, demo.exchange.url)
        qtbot.keyClick(window.settings.exchange, Qt.Key.Key_Return)
        from agents.vault_sync import exchange_url

        assert exchange_url(window.session.vault) == demo.exchange.url
        screen = _requests_screen(qtbot, window)
        qtbot.mouseClick(screen.sync_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: len(screen.rows) == 2, timeout=30_000)
        assert len(window.tray.notified) == 2  # one notification per new request
        assert "Northwind Sleep Lab" in window.tray.notified[0]
        target = next(r for r in screen.rows if r["purpose"] == REQUESTS[0]["purpose"])
        screen.approve(target["id"], REQUESTS[0]["datasets"], 3.0, target_expiry(window, target))
        window.show_screen("tasks")
        qtbot.mouseClick(window.tasks.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.tasks.worker is None, timeout=180_000)
        assert "3 rounds accepted" in window.tasks.banner.text.text()
        assert window.tasks.table.rowCount() == 3
        window.show_screen("rewards")
        assert "3 credits" in window.rewards.total.text()
        # receipts seconds apart: the time axis still spans an hour of clock time
        (left, right), _ = window.rewards._plot.getViewBox().viewRange()
        assert right - left >= 3600
        qtbot.mouseClick(window.rewards.verify_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.rewards.report is not None, timeout=30_000)
        assert window.rewards.report["ok"]
        reads = [e for e in window.session.vault.log.entries("health.step_count")
                 if e["action"] == "read"]  # fmt: skip
        assert len(reads) == 3
        set_exchange_url(window.session.vault, None)
        window.close()
    finally:
        demo.cleanup()


def target_expiry(window, row: dict) -> float:  # noqa: ANN001
    """The request's own expiry (the longest a consent may last)."""
    from vault import consent as vc

    return vc.get_request(window.session.vault, row["id"]).request.expires
