"""Access history: entries and filters, "Check history" passing, a tampered log failing,
and a proof file for one entry that checks out on its own."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt


def _history(qtbot, window, dataset: str = "health.step_count"):  # noqa: ANN001, ANN202
    qtbot.keyClick(window, Qt.Key.Key_7, Qt.KeyboardModifier.ControlModifier)
    screen = window.history
    assert window.screens.currentWidget() is screen
    screen.dataset.setCurrentIndex(screen.dataset.findData(dataset))
    return screen


def test_entries_filters_and_verify_ok(qtbot, unlocked_window) -> None:
    window = unlocked_window
    vault = window.session.vault
    with vault.transaction():
        vault.log.append("health.step_count", "read", "did:key:z6MkOrganization", "round 1", 42)
    window.session.history_changed.emit()
    screen = _history(qtbot, window)
    assert screen.table.rowCount() == 2
    assert screen.table.item(0, 3).text() == "Read by a task"  # newest first, plain words
    screen.actor.setCurrentIndex(screen.actor.findText("You"))
    assert screen.table.rowCount() == 1 and screen.table.item(0, 3).text() == "Imported"
    screen.actor.setCurrentIndex(0)
    screen.action.setCurrentIndex(screen.action.findData("read"))
    assert screen.table.rowCount() == 1 and screen.table.item(0, 5).text() == "42"
    screen.action.setCurrentIndex(0)
    screen.period.setCurrentIndex(1)  # last 24 hours: everything here is new
    assert screen.table.rowCount() == 2

    qtbot.mouseClick(screen.verify_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.report is not None, timeout=20_000)
    assert screen.report["ok"]
    assert screen.banner.property("role") == "banner-ok"
    assert "intact" in screen.banner.text.text()
    assert "Merkle" not in screen.banner.text.text()  # jargon stays under Details


def test_tampered_log_fails_verification(qtbot, unlocked_window, messages) -> None:
    window = unlocked_window
    vault = window.session.vault
    entry = vault.conn.execute(
        "SELECT entry FROM access_log WHERE dataset = 'health.step_count' AND seq = 0"
    ).fetchone()[0]
    forged = entry.replace(b'"action":"import"', b'"action":"delete"')
    assert forged != entry
    vault.conn.execute(
        "UPDATE access_log SET entry = ? WHERE dataset = 'health.step_count' AND seq = 0",
        (forged,),
    )
    screen = _history(qtbot, window)
    qtbot.mouseClick(screen.verify_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: screen.report is not None, timeout=20_000)
    assert not screen.report["ok"]
    assert screen.banner.property("role") == "banner-bad"
    assert "changed" in screen.banner.text.text()
    qtbot.mouseClick(screen.details_button, Qt.MouseButton.LeftButton)
    assert "entry 0 was changed" in messages[-1]


def test_export_proof_of_an_entry(qtbot, unlocked_window, tmp_path) -> None:
    from vault.accesslog import check_proof

    screen = _history(qtbot, unlocked_window, "location.points")
    assert not screen.proof_button.isEnabled()
    screen.table.selectRow(0)
    assert screen.proof_button.isEnabled()
    out = screen.export_proof(tmp_path / "entry.proof.json")
    assert out is not None and "saved" in screen.banner.text.text()
    checked = check_proof(json.loads(out.read_text("utf-8")))
    assert checked["ok"] and checked["dataset"] == "location.points"
