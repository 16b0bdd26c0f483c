"""Change the passphrase: the current one, then the new one twice with the strength meter.

The data key is only re-wrapped (a fast, atomic key-file replace); the data is not rewritten.
Both steps run the key derivation, so they run in the worker.
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.gui.errors import plain_message
from app.gui.passphrase_strength import PassphraseFields
from app.gui.session import Session
from app.gui.widgets import dialog_buttons, error_label
from app.gui.worker import CancelledFn, ProgressFn


class ChangePassphraseDialog(QDialog):
    """Asks for the current passphrase and a new one; changes it in the worker."""

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.setWindowTitle("Change passphrase")
        self.setMinimumWidth(480)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.current = QLineEdit()
        self.current.setEchoMode(QLineEdit.EchoMode.Password)
        self.current.setAccessibleName("Current passphrase")
        form.addRow("Current passphrase:", self.current)
        layout.addLayout(form)
        self.fields = PassphraseFields("New passphrase")
        layout.addWidget(self.fields)
        self.message = error_label()
        layout.addWidget(self.message)
        self.buttons, self.ok = dialog_buttons(
            QDialogButtonBox.StandardButton.Ok, "Change passphrase"
        )
        self.ok.setEnabled(False)
        layout.addWidget(self.buttons)
        self.buttons.accepted.connect(self._change)
        self.buttons.rejected.connect(self.reject)
        self.fields.changed.connect(self._ready)
        self.current.textChanged.connect(self._ready)

    def _ready(self) -> None:
        self.ok.setEnabled(bool(self.current.text()) and self.fields.acceptable())

    def _change(self) -> None:
        vault = self.session.require()
        current, new = self.current.text(), self.fields.value()
        self.ok.setEnabled(False)
        self.message.setText("")

        def job(progress: ProgressFn, cancelled: CancelledFn) -> None:
            # Proves the person knows the current passphrase (raises WrongPassphrase if not).
            vault.keyfile.unwrap_with_passphrase(current)
            vault.change_passphrase(new)

        self.session.work.start(job, lambda _r: self.accept(), self._failed)

    def _failed(self, error: BaseException) -> None:
        from vault.errors import WrongPassphrase

        self._ready()
        if isinstance(error, WrongPassphrase):
            self.message.setText("The current passphrase is not right.")
            self.current.selectAll()
            self.current.setFocus()
        else:
            self.message.setText(plain_message(error))
