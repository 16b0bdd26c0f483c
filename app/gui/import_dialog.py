"""Import a file: choose it (or drop it on the window), watch the progress, cancel at any time,
and read what was added.

The core runs the import in one transaction; cancelling raises ImportCancelled at the next
batch and rolls everything back, so the dialog can promise "nothing was imported".
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.errors import error_box, plain_message
from app.gui.session import Session
from app.gui.widgets import fill_table, label, table
from app.gui.worker import CancelledFn, ProgressFn, Worker

FILE_FILTER = (
    "Exports (*.zip *.xml *.json *.gpx *.csv *.tsv *.jsonl);;All files (*)"  # what importers read
)


def preload_importers(progress: ProgressFn, cancelled: CancelledFn) -> int:
    """Import every importer module (a worker job), so the dialog later opens at once."""
    from vault.importers.plan import load_formats

    return len(load_formats())


def megabytes(n: int) -> str:
    """Bytes as '12.3 MB'."""
    return f"{n / 1e6:,.1f} MB"


class ImportDialog(QDialog):
    """Choose, run and summarise one import."""

    def __init__(self, session: Session, path: Path | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        self.worker: Worker | None = None
        self.summary: dict | None = None
        self.outcome = ""  # "imported", "cancelled", "refused" once finished
        self.setWindowTitle("Import data")
        self.setMinimumWidth(560)
        self.pages = QStackedWidget()
        self.pages.addWidget(self._choose_page())
        self.pages.addWidget(self._progress_page())
        self.pages.addWidget(self._result_page())
        QVBoxLayout(self).addWidget(self.pages)
        if path is not None:
            self.path.setText(str(path))

    # -- pages ---------------------------------------------------------------------------

    def _choose_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(label("Import data", "title"))
        layout.addWidget(
            label(
                "Apple Health (export.zip), Google location history (Takeout), GPX tracks,"
                " FHIR health records, or preferences as CSV/JSON. Importing the same file"
                " twice adds nothing twice.",
                "subtitle",
                wrap=True,
            )
        )
        form = QFormLayout()
        row = QHBoxLayout()
        self.path = QLineEdit()
        self.path.setAccessibleName("File to import")
        self.browse = QPushButton("Browse…")
        row.addWidget(self.path, 1)
        row.addWidget(self.browse)
        form.addRow("File:", row)
        self.format = QComboBox()
        self.format.setAccessibleName("Format")
        self.format.addItem("Detect automatically", None)
        from vault.importers.plan import load_formats

        for name, cls in sorted(load_formats().items(), key=lambda kv: kv[1].label or kv[0]):
            self.format.addItem(cls.label or name, name)
        form.addRow("Format:", self.format)
        self.dataset = QLineEdit()
        self.dataset.setAccessibleName("Dataset name")
        self.dataset.setPlaceholderText("Preferences only; default: the file name")
        form.addRow("Dataset:", self.dataset)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.close_button = QPushButton("Close")
        self.start_button = QPushButton("Import")
        self.start_button.setProperty("role", "primary")
        self.start_button.setDefault(True)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.start_button)
        layout.addLayout(buttons)
        self.browse.clicked.connect(self._browse)
        self.close_button.clicked.connect(self.reject)
        self.start_button.clicked.connect(self.start)
        self.path.textChanged.connect(lambda t: self.start_button.setEnabled(bool(t.strip())))
        self.start_button.setEnabled(False)
        return page

    def _progress_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.progress_title = label("", "title")
        layout.addWidget(self.progress_title)
        self.bar = QProgressBar()
        self.bar.setAccessibleName("Import progress")
        self.bar.setRange(0, 0)
        layout.addWidget(self.bar)
        self.progress_text = label("Reading the file…", "subtitle")
        layout.addWidget(self.progress_text)
        layout.addWidget(
            label("You can cancel at any time: an import is kept whole or not at all.", wrap=True)
        )
        layout.addStretch(1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.cancel_button = QPushButton("Cancel import")
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.cancel_button.clicked.connect(self.cancel)
        return page

    def _result_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        self.result_title = label("", "title")
        self.result_text = label("", wrap=True)
        self.result_table = table(["Dataset", "Added", "Already there"], "Import result")
        layout.addWidget(self.result_title)
        layout.addWidget(self.result_text)
        layout.addWidget(self.result_table, 1)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.details_button = QPushButton("Details…")
        self.details_button.hide()
        self.done_button = QPushButton("Done")
        self.done_button.setDefault(True)
        buttons.addWidget(self.details_button)
        buttons.addWidget(self.done_button)
        layout.addLayout(buttons)
        self.done_button.clicked.connect(self.accept)
        self.details_button.clicked.connect(self.details)
        return page

    # -- running -------------------------------------------------------------------------

    def _browse(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(
            self, "Choose a file", str(Path.home()), FILE_FILTER
        )
        if chosen:
            self.path.setText(chosen)

    def start(self) -> None:
        """Start importing the chosen file in the worker."""
        text = self.path.text().strip()
        if not text or self.worker is not None:
            return
        vault = self.session.require()
        path = Path(text)
        fmt = self.format.currentData()
        dataset = self.dataset.text().strip() or None
        self.progress_title.setText(f"Importing {path.name}")
        self.progress_text.setText("Reading the file…")
        self.bar.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.pages.setCurrentIndex(1)
        self.cancel_button.setFocus()

        def job(progress: ProgressFn, cancelled: CancelledFn) -> dict:
            return vault.import_path(
                path, fmt, dataset, progress=progress, cancelled=cancelled
            ).to_dict()

        self.worker = self.session.work.start(job, self._done, self._failed, self._progress)

    def _progress(self, done: int, total: int) -> None:
        if total <= 0:
            return
        self.bar.setRange(0, 1000)
        self.bar.setValue(min(1000, int(1000 * done / total)))
        self.progress_text.setText(f"{megabytes(done)} of {megabytes(total)} read")

    def fraction(self) -> float:
        """How far the running import is, 0..1 (for screenshots and tests)."""
        return self.bar.value() / 1000 if self.bar.maximum() == 1000 else 0.0

    def cancel(self) -> None:
        """Ask the import to stop; it rolls back and then reports "cancelled"."""
        if self.worker is not None:
            self.worker.cancel()
            self.cancel_button.setEnabled(False)
            self.progress_text.setText("Cancelling… nothing will be kept.")

    def _done(self, summary: dict) -> None:
        self.worker = None
        self.summary = summary
        self.outcome = "imported"
        self.result_title.setText("Import finished")
        self.result_text.setText(
            f"{summary['added']:,} new records added, {summary['skipped']:,} were already in"
            f" your vault ({summary['seconds']:.1f} s)."
        )
        rows = [[name, c["added"], c["skipped"]] for name, c in sorted(summary["datasets"].items())]
        fill_table(self.result_table, rows)
        self.pages.setCurrentIndex(2)
        self.done_button.setFocus()
        self.session.data_changed.emit()
        self.session.history_changed.emit()

    def _failed(self, error: BaseException) -> None:
        from vault.importing import ImportCancelled

        self.worker = None
        self.result_table.setRowCount(0)
        if isinstance(error, ImportCancelled):
            self.outcome = "cancelled"
            self.result_title.setText("Import cancelled")
            self.result_text.setText("Nothing was imported; your vault is as it was.")
        else:
            self.outcome = "refused"
            self.result_title.setText("This file could not be imported")
            problem = getattr(error, "problem", None) or plain_message(error)
            self.result_text.setText(f"{problem}\n\nNothing was imported.")
            self._details = error
            self.details_button.show()
        self.pages.setCurrentIndex(2)
        self.done_button.setFocus()
        self.session.data_changed.emit()

    def details(self) -> None:
        """Show the technical detail of a refused import."""
        error_box(self, "Import", self._details).exec()

    # -- closing -------------------------------------------------------------------------

    def reject(self) -> None:
        """Escape or the close button: cancel a running import first, then close."""
        if self.worker is not None:
            self.cancel()
            self.worker.signals.finished.connect(super().reject, Qt.ConnectionType.QueuedConnection)
            return
        super().reject()
