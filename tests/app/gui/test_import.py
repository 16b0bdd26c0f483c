"""Import through the dialog: progress, cancel keeps nothing, a finished import's summary,
a refused file, and files dropped on the window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from app.gui.import_dialog import ImportDialog
from tests.app.gui import dataset_counts


def test_import_csv_shows_a_summary(qtbot, unlocked_window, inputs) -> None:
    window = unlocked_window
    window.show_screen("data")
    qtbot.mouseClick(window.data.import_button, Qt.MouseButton.LeftButton)
    dialog = window.findChild(ImportDialog)
    qtbot.keyClicks(dialog.path, str(inputs["csv"]))
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.outcome != "", timeout=20_000)
    assert dialog.outcome == "imported"
    assert "12 new records" in dialog.result_text.text()
    assert dialog.result_table.item(0, 0).text() == "preferences.movie_ratings"
    qtbot.mouseClick(dialog.done_button, Qt.MouseButton.LeftButton)
    assert "preferences.movie_ratings" in window.data.names  # the list refreshed


def test_cancel_keeps_nothing(qtbot, unlocked_window, tmp_path: Path) -> None:
    from app.gui.demo_data import write_health_export

    window = unlocked_window
    folder = window.session.folder
    before = dataset_counts(folder)
    log_before = {n: len(window.session.vault.log.entries(n)) for n in before}
    big = write_health_export(tmp_path / "big.xml", days=120, heart_every=1, seed=99)
    dialog = window.import_file(big, start=True)
    qtbot.waitUntil(lambda: dialog.fraction() >= 0.05, timeout=60_000)
    assert dialog.worker is not None  # still running: the window kept responding meanwhile
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.outcome != "", timeout=60_000)
    assert dialog.outcome == "cancelled"
    assert "Nothing was imported" in dialog.result_text.text()
    assert dataset_counts(folder) == before
    assert {n: len(window.session.vault.log.entries(n)) for n in before} == log_before


def test_refused_file_says_why_and_keeps_nothing(qtbot, unlocked_window, tmp_path) -> None:
    bad = tmp_path / "export.xml"
    bad.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE HealthData [<!ENTITY a "aaaa">]>\n'
        "<HealthData>&a;</HealthData>\n",
        encoding="utf-8",
    )
    before = dataset_counts(unlocked_window.session.folder)
    dialog = unlocked_window.import_file(bad, start=True)
    qtbot.waitUntil(lambda: dialog.outcome != "", timeout=20_000)
    assert dialog.outcome == "refused"
    assert "entit" in dialog.result_text.text().lower()
    assert "Nothing was imported" in dialog.result_text.text()
    assert dialog.details_button.isVisible()
    assert dataset_counts(unlocked_window.session.folder) == before


def test_dropping_a_file_imports_it(qtbot, unlocked_window, inputs) -> None:
    window = unlocked_window
    window.show_screen("data")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(inputs["csv"]))])
    event = QDropEvent(
        QPointF(300, 300),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(event)
    qtbot.waitUntil(lambda: "preferences.movie_ratings" in window.data.names, timeout=20_000)
