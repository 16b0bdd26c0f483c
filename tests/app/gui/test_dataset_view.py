"""The dataset view: the paged model returns the right rows in any order without loading all,
and the screen opens, charts and goes back."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.gui.records_model import PAGE, RecordsModel
from tests.app.gui import PASSPHRASE


@pytest.fixture
def filled(tmp_path: Path):  # noqa: ANN201
    """A vault with 5,000 rows in one dataset, many sharing a start time (ties on id)."""
    from vault.core import Vault
    from vault.writer import BulkWriter

    vault, _ = Vault.create(tmp_path / "v", PASSPHRASE)
    rng = random.Random(5)
    with vault.transaction():
        writer = BulkWriter(vault.conn, None)
        ident = writer.dataset_id("health.test")
        rows = [
            (ident, float(rng.randrange(0, 2000)), i, bytes([i % 256, i // 256]) + b"k" * 14)
            for i in range(5000)
        ]
        vault.conn.executemany(
            "INSERT INTO records (dataset_id, start, value, nkey) VALUES (?, ?, ?, ?)", rows
        )
        from vault.datasets import refresh_stats

        refresh_stats(vault.conn, ident)
    yield vault, ident
    vault.close()


def test_pages_by_key_match_a_full_ordered_read(filled) -> None:
    vault, ident = filled
    expected = [
        r[0]
        for r in vault.conn.execute(
            "SELECT id FROM records WHERE dataset_id = ? ORDER BY start, id", (ident,)
        )
    ]
    model = RecordsModel(vault.conn, ident, len(expected))
    assert model.rowCount() == 5000 and model.queries == 0  # nothing read to know the size
    order = [4999, 0, 2500, 2499, 2501, 1, 4000, 3999, 777, 4998] + random.Random(1).sample(
        range(5000), 300
    )
    for number in order:
        assert model.row(number)[9] == expected[number], number
    # Walking down from the start is one query per page, by key.
    fresh = RecordsModel(vault.conn, ident, len(expected))
    for number in range(0, 5000):
        assert fresh.row(number)[9] == expected[number]
    assert fresh.queries == -(-5000 // PAGE)
    assert model.row(5000) is None and model.row(-1) is None


def test_open_dataset_chart_and_back(qtbot, unlocked_window) -> None:
    window = unlocked_window
    window.show_screen("data")
    data = window.data
    data.select("health.heart_rate")
    qtbot.keyClick(data.table, Qt.Key.Key_Return)
    view = window.dataset
    assert window.data_stack.currentWidget() is view
    assert view.model.rowCount() > 0
    assert view.model.index(0, 0).data()  # the first page shows
    assert view.table.isColumnHidden(5)  # no latitude for heart rate
    view.show_chart()
    qtbot.waitUntil(lambda: view.chart().stack.currentIndex() == 1, timeout=20_000)
    assert view.chart().rows and "days" in view.chart().caption.text()
    qtbot.mouseClick(view.back_button, Qt.MouseButton.LeftButton)
    assert window.data_stack.currentWidget() is data


def test_location_map(qtbot, unlocked_window) -> None:
    window = unlocked_window
    window.open_dataset("location.points")
    view = window.dataset
    assert not view.table.isColumnHidden(5)
    view.tabs.setCurrentWidget(view.map_tab)
    qtbot.waitUntil(lambda: view.scatter().stack.currentIndex() == 1, timeout=20_000)


def test_delete_with_confirmation(qtbot, unlocked_window, monkeypatch) -> None:
    from app.gui import dataset_actions

    window = unlocked_window
    window.show_screen("data")
    monkeypatch.setattr(dataset_actions, "confirm_delete", lambda *a: False)
    dataset_actions.delete_dataset(window, window.session, "health.body_mass")
    qtbot.wait(100)
    assert "health.body_mass" in window.data.names
    monkeypatch.setattr(dataset_actions, "confirm_delete", lambda *a: True)
    dataset_actions.delete_dataset(window, window.session, "health.body_mass")
    qtbot.waitUntil(lambda: "health.body_mass" not in window.data.names, timeout=20_000)
    entries = window.session.vault.log.entries("health.body_mass")
    assert entries[-1]["action"] == "delete"


def test_export_writes_the_file(qtbot, unlocked_window, messages, tmp_path) -> None:
    from app.gui.dataset_actions import export_dataset

    out = tmp_path / "steps.csv"
    export_dataset(unlocked_window, unlocked_window.session, "health.step_count", out)
    qtbot.waitUntil(lambda: any("Export finished" in m for m in messages), timeout=20_000)
    assert out.read_text("utf-8").startswith("start,end,")
