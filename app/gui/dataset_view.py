"""One dataset: its records in a table that stays smooth on millions of rows, its daily values
as a chart, and its positions on a map-like scatter (location datasets).

Opening costs two small queries (the cached statistics and the first page); the charts fill in
from the worker. See ``records_model`` for how the table pages by key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.formatting import count, dataset_title, kind_word, span
from app.gui.records_model import COLUMNS, RecordsModel
from app.gui.session import Session
from app.gui.widgets import LazyRefresh, label

if TYPE_CHECKING:
    from app.gui.dataset_charts import DailyChart, LocationScatter

COLUMN_WIDTHS = (150, 150, 90, 80, 240, 90, 90, 150, 300)


def describe(stats: dict) -> str:
    """One line of statistics in plain words: count, span, and the value range."""
    parts = [count(stats.get("records"), "record"), span(stats.get("first"), stats.get("last"))]
    unit = f" {stats['unit']}" if stats.get("unit") else ""
    if stats.get("mean") is not None:
        parts.append(
            f"values {stats['min']:,.4g} to {stats['max']:,.4g}{unit}, average {stats['mean']:,.4g}"
        )
    return "  ·  ".join(parts)


class DatasetView(LazyRefresh, QWidget):
    """The screen for one dataset; ``open_dataset(name)`` shows it."""

    back = Signal()
    export_requested = Signal(str)
    delete_requested = Signal(str)
    history_requested = Signal(str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.name: str | None = None
        self.model: RecordsModel | None = None
        self._charts_loaded = False
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.back_button = QPushButton("← All data")
        self.back_button.setAccessibleName("Back to all datasets")
        top.addWidget(self.back_button)
        top.addStretch(1)
        self.history_button = QPushButton("Access history")
        self.export_button = QPushButton("Export…")
        self.delete_button = QPushButton("Delete…")
        for button in (self.history_button, self.export_button, self.delete_button):
            top.addWidget(button)
        layout.addLayout(top)
        self.title = label("", "title")
        self.summary = label("", "subtitle", wrap=True)
        layout.addWidget(self.title)
        layout.addWidget(self.summary)
        self.table = QTableView()
        self.table.setAccessibleName("Records")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTabKeyNavigation(False)
        # Never ResizeToContents: it would read every row to measure them.
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.verticalHeader().hide()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Records")
        self.chart_tab = QWidget()
        self.map_tab = QWidget()
        for tab, title in ((self.chart_tab, "Daily chart"), (self.map_tab, "Map")):
            QVBoxLayout(tab).setContentsMargins(0, 0, 0, 0)
            self.tabs.addTab(tab, title)
        self._chart: DailyChart | None = None
        self._scatter: LocationScatter | None = None
        layout.addWidget(self.tabs, 1)
        self.back_button.clicked.connect(self.back)
        self.history_button.clicked.connect(lambda: self.history_requested.emit(self.name or ""))
        self.export_button.clicked.connect(lambda: self.export_requested.emit(self.name or ""))
        self.delete_button.clicked.connect(lambda: self.delete_requested.emit(self.name or ""))
        self.tabs.currentChanged.connect(self._tab_changed)
        session.locked.connect(self.clear)

    # -- charts are created on first use: pyqtgraph takes a moment to import ---------------

    def chart(self) -> DailyChart:
        """The daily-values chart widget (created on first use)."""
        if self._chart is None:
            from app.gui.dataset_charts import DailyChart

            self._chart = DailyChart(self.session)
            self.chart_tab.layout().addWidget(self._chart)
        return self._chart

    def scatter(self) -> LocationScatter:
        """The location scatter widget (created on first use)."""
        if self._scatter is None:
            from app.gui.dataset_charts import LocationScatter

            self._scatter = LocationScatter(self.session)
            self.map_tab.layout().addWidget(self._scatter)
        return self._scatter

    # -- showing a dataset ---------------------------------------------------------------

    def open_dataset(self, name: str) -> None:
        """Show dataset ``name``: statistics and the first page now, charts when asked."""
        from vault.datasets import dataset_id

        vault = self.session.require()
        self.clear()
        self.name = name
        stats = vault.stats(name)
        self._stats = stats
        self._dataset_id = dataset_id(vault.conn, name)
        kind = name.split(".", 1)[0]
        self.title.setText(f"{dataset_title(name)}  ·  {kind_word(kind)}")
        self.summary.setText(describe(stats))
        self.model = RecordsModel(vault.conn, self._dataset_id, stats["records"] or 0, self)
        self.table.setModel(self.model)
        for column, width in enumerate(COLUMN_WIDTHS[: len(COLUMNS)]):
            self.table.setColumnWidth(column, width)
        self.tabs.setTabVisible(self.tabs.indexOf(self.map_tab), kind == "location")
        # Hide what this kind of dataset never has (values for positions, positions for health).
        has_values = stats.get("mean") is not None
        for column, hidden in ((2, not has_values), (3, not has_values), (4, kind == "location")):
            self.table.setColumnHidden(column, hidden)
        for column in (5, 6):
            self.table.setColumnHidden(column, kind != "location")
        self._charts_loaded = False
        if self.tabs.currentIndex() != 0:
            self._tab_changed(self.tabs.currentIndex())

    def show_chart(self) -> None:
        """Switch to the daily chart tab (loading it if needed)."""
        self.tabs.setCurrentWidget(self.chart_tab)

    def _tab_changed(self, index: int) -> None:
        if index == 0 or self._charts_loaded or self.name is None:
            return
        vault = self.session.vault
        if vault is None:
            return
        self._charts_loaded = True
        stats = self._stats
        self.chart().load(vault, self._dataset_id, stats.get("unit"), stats.get("mean") is not None)
        if self.name.startswith("location."):
            self.scatter().load(vault, self._dataset_id, stats["records"] or 0)

    def refresh(self) -> None:
        """Re-read the dataset after a change (import, delete)."""
        if self.name is None or self.session.vault is None:
            return
        try:
            self.open_dataset(self.name)
        except Exception:  # noqa: BLE001 - the dataset was deleted: go back to the list
            self.clear()
            self.back.emit()

    def clear(self) -> None:
        """Forget the dataset (on lock: no records stay on screen or in memory)."""
        for widget in (self._chart, self._scatter):
            if widget is not None:
                widget.stop()
        self.table.setModel(None)
        if self.model is not None:
            self.model.deleteLater()
        self.model = None
        self.name = None
        self.title.clear()
        self.summary.clear()
