"""Data: every dataset with its record count and time span; open, import, export, delete.

Files dropped anywhere on the window are imported too (the main window forwards them here).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from app.gui.formatting import dataset_title, kind_word, local_time
from app.gui.session import Session
from app.gui.widgets import LazyRefresh, empty_or, fill_table, screen_header, table


class DataScreen(LazyRefresh, QWidget):
    """The list of datasets."""

    open_requested = Signal(str)
    import_requested = Signal()
    export_requested = Signal(str)
    delete_requested = Signal(str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.names: list[str] = []
        layout = QVBoxLayout(self)
        layout.addWidget(
            screen_header(
                "Your data",
                "Everything here is encrypted on this computer. Open a dataset to see its"
                " records and charts. You can also drop an export file on this window.",
            )
        )
        buttons = QHBoxLayout()
        self.import_button = QPushButton("Import…")
        self.import_button.setProperty("role", "primary")
        self.open_button = QPushButton("Open")
        self.export_button = QPushButton("Export…")
        self.delete_button = QPushButton("Delete…")
        for button in (self.import_button, self.open_button, self.export_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        layout.addLayout(buttons)
        self.table = table(["Dataset", "Name", "Kind", "Records", "From", "To"], "Datasets", 1)
        self.stack = empty_or(
            self.table,
            "No data yet",
            "Import an Apple Health export, Google location history, a GPX track or a"
            " preferences file — or drop one on this window.",
        )
        layout.addWidget(self.stack, 1)
        self.import_button.clicked.connect(self.import_requested)
        self.open_button.clicked.connect(self._open)
        self.export_button.clicked.connect(lambda: self._with_selected(self.export_requested))
        self.delete_button.clicked.connect(lambda: self._with_selected(self.delete_requested))
        self.table.doubleClicked.connect(lambda _index: self._open())
        self.table.activated.connect(lambda _index: self._open())
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.follow(session, session.data_changed)
        self._selection_changed()

    def refresh(self) -> None:
        """Re-read the dataset list from the vault."""
        vault = self.session.vault
        if vault is None:
            return
        datasets = vault.datasets()
        self.names = [d["name"] for d in datasets]
        fill_table(
            self.table,
            [
                [
                    dataset_title(d["name"]),
                    d["name"],
                    kind_word(d["kind"]),
                    d["records"],
                    local_time(d["first"], False),
                    local_time(d["last"], False),
                ]
                for d in datasets
            ],
        )
        self.stack.setCurrentIndex(1 if datasets else 0)
        if datasets and not self.table.selectedItems():
            self.table.selectRow(0)
        self._selection_changed()

    def clear(self) -> None:
        """Forget the list (on lock)."""
        self.names = []
        self.table.setRowCount(0)
        self.stack.setCurrentIndex(0)

    def selected(self) -> str | None:
        """The selected dataset's name, if any."""
        rows = self.table.selectionModel().selectedRows()
        return self.names[rows[0].row()] if rows else None

    def select(self, name: str) -> None:
        """Select dataset ``name`` in the list."""
        if name in self.names:
            self.table.selectRow(self.names.index(name))

    def _selection_changed(self) -> None:
        has = self.selected() is not None
        for button in (self.open_button, self.export_button, self.delete_button):
            button.setEnabled(has)

    def _open(self) -> None:
        self._with_selected(self.open_requested)

    def _with_selected(self, signal: Signal) -> None:
        name = self.selected()
        if name is not None:
            signal.emit(name)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # Qt API name
        """Delete key asks to delete the selected dataset."""
        if event.key() == Qt.Key.Key_Delete and self.selected():
            self.delete_requested.emit(self.selected())
            return
        super().keyPressEvent(event)
