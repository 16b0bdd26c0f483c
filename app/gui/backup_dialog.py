"""Back up the identity: the vault's did:key private key, sealed under a password you choose
(``identity.backup.write_backup``: Argon2id + AES-256-GCM, the same as `tessera identity
export`). The key derivation takes a moment, so the file is written in the worker.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.errors import plain_message
from app.gui.passphrase_strength import PassphraseFields
from app.gui.session import Session
from app.gui.widgets import dialog_buttons, error_label, label
from app.gui.worker import CancelledFn, ProgressFn


class BackupDialog(QDialog):
    """Password twice and a file; writes the sealed identity backup."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.written: Path | None = None
        self.setWindowTitle("Back up your identity")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        layout.addWidget(
            label(
                "This file holds your identity's private key, locked with the password you"
                " choose here. With it you can prove you are you after losing this computer."
                " Keep it and the password apart.",
                wrap=True,
            )
        )
        form = QFormLayout()
        row = QHBoxLayout()
        self.path = QLineEdit(str(Path.home() / "tessera-identity-backup.json"))
        self.path.setAccessibleName("Backup file")
        browse = QPushButton("Browse…")
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("Save to:", row)
        layout.addLayout(form)
        self.fields = PassphraseFields("Backup password")
        layout.addWidget(self.fields)
        self.message = error_label()
        layout.addWidget(self.message)
        self.buttons, self.save = dialog_buttons(QDialogButtonBox.StandardButton.Save)
        self.save.setEnabled(False)
        layout.addWidget(self.buttons)
        browse.clicked.connect(self._browse)
        self.fields.changed.connect(self._ready)
        self.path.textChanged.connect(self._ready)
        self.buttons.accepted.connect(self._write)
        self.buttons.rejected.connect(self.reject)

    def _browse(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Save backup", self.path.text(), "*.json")
        if chosen:
            self.path.setText(chosen)

    def _ready(self) -> None:
        self.save.setEnabled(bool(self.path.text().strip()) and self.fields.acceptable())

    def _write(self) -> None:
        from identity.backup import write_backup

        vault = self.session.require()
        out, password = Path(self.path.text().strip()), self.fields.value()
        self.save.setEnabled(False)

        def job(progress: ProgressFn, cancelled: CancelledFn) -> dict:
            return write_backup(out, vault.signing_key(), password, vault.keyfile.kdf_params())

        self.session.work.start(job, self._written, self._failed)

    def _written(self, result: dict) -> None:
        self.written = Path(result["file"])
        self.fields.clear()
        self.accept()

    def _failed(self, error: BaseException) -> None:
        self._ready()
        self.message.setText(f"{plain_message(error)} ({error})")
