"""Export and delete a dataset: confirmation, the work in the worker, a plain result.

Both are written to the dataset's access history by the core, so the screens showing history
are told to refresh afterwards.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox, QProgressDialog, QWidget

from app.gui.errors import show_error
from app.gui.formatting import count, dataset_title
from app.gui.session import Session
from app.gui.worker import CancelledFn, ProgressFn


def _busy(parent: QWidget, text: str) -> QProgressDialog:
    dialog = QProgressDialog(text, "", 0, 0, parent)
    dialog.setCancelButton(None)  # neither export nor delete can stop half-way
    dialog.setWindowModality(Qt.WindowModality.WindowModal)
    dialog.setMinimumDuration(300)
    dialog.setAccessibleName(text)
    return dialog


def export_dataset(parent: QWidget, session: Session, name: str, out: Path | None = None) -> None:
    """Ask where to save ``name`` (CSV or JSON) and export it in the worker."""
    vault = session.require()
    if out is None:
        suggested = str(Path.home() / f"{name}.csv")
        chosen, chosen_filter = QFileDialog.getSaveFileName(
            parent, f"Export {dataset_title(name)}", suggested, "CSV (*.csv);;JSON (*.json)"
        )
        if not chosen:
            return
        out = Path(chosen)
    fmt = "json" if out.suffix.lower() == ".json" else "csv"
    busy = _busy(parent, f"Exporting {dataset_title(name)}…")

    def job(progress: ProgressFn, cancelled: CancelledFn) -> dict:
        return vault.export(name, out, fmt)

    def done(result: dict) -> None:
        busy.close()
        session.history_changed.emit()
        QMessageBox.information(
            parent,
            "Export finished",
            f"{count(result['records'], 'record')} written to {out}.\n\nThis file is not"
            " encrypted: keep it safe, and delete it when you no longer need it.",
        )

    def failed(error: BaseException) -> None:
        busy.close()
        show_error(parent, "Export", error)

    session.work.start(job, done, failed)


def confirm_delete(parent: QWidget, name: str, records: int) -> bool:
    """Ask before deleting; the safe answer (Cancel) is the default."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Delete data")
    box.setText(f"Delete all {count(records, 'record')} of {dataset_title(name)} ({name})?")
    box.setInformativeText(
        "This cannot be undone. The dataset's access history is kept, and it will show"
        " that you deleted it."
    )
    delete = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.exec()
    return box.clickedButton() is delete


def delete_dataset(parent: QWidget, session: Session, name: str, ask: bool = True) -> None:
    """Delete ``name`` after confirmation, in the worker."""
    vault = session.require()
    records = vault.stats(name).get("records") or 0
    if ask and not confirm_delete(parent, name, records):
        return
    busy = _busy(parent, f"Deleting {dataset_title(name)}…")

    def job(progress: ProgressFn, cancelled: CancelledFn) -> dict:
        return vault.delete(name)

    def done(result: dict) -> None:
        busy.close()
        session.data_changed.emit()
        session.history_changed.emit()

    def failed(error: BaseException) -> None:
        busy.close()
        show_error(parent, "Delete", error)

    session.work.start(job, done, failed)
