"""Unlock: the passphrase (or the OS keyring when enabled), a plain wrong-passphrase message,
and recovery with the recovery code.

The key derivation takes about a second on purpose, so unlocking runs in the worker and the
window stays responsive. The keyring is offered as a button, never tried automatically:
otherwise an idle lock would be undone the moment it happened.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.errors import plain_message, show_error
from app.gui.passphrase_strength import PassphraseFields
from app.gui.session import Session
from app.gui.widgets import centered, error_label, label
from app.gui.worker import CancelledFn, ProgressFn


class UnlockScreen(QWidget):
    """The locked state of the window: unlock, use the keyring, or recover."""

    other_folder = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.pages = QStackedWidget()
        self.pages.addWidget(centered(self._unlock_page(), 480))
        self.pages.addWidget(centered(self._recover_page(), 560))
        QVBoxLayout(self).addWidget(self.pages)

    def _unlock_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(label("Unlock your vault", "title"))
        self.folder_label = label("", "subtitle", wrap=True)
        layout.addWidget(self.folder_label)
        layout.addSpacing(8)
        self.passphrase = QLineEdit()
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase.setPlaceholderText("Passphrase")
        self.passphrase.setAccessibleName("Passphrase")
        self.passphrase.setMinimumHeight(32)
        layout.addWidget(self.passphrase)
        self.message = error_label()
        self.message.setAccessibleName("Unlock message")
        layout.addWidget(self.message)
        self.hint = label("", "subtitle", wrap=True)
        layout.addWidget(self.hint)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setAccessibleName("Unlocking")
        self.busy.setMaximumHeight(8)
        self.busy.setTextVisible(False)
        self.busy.hide()
        layout.addWidget(self.busy)
        self.unlock_button = QPushButton("Unlock")
        self.unlock_button.setProperty("role", "primary")
        self.unlock_button.setMinimumHeight(32)
        self.unlock_button.setDefault(True)
        layout.addWidget(self.unlock_button)
        self.keyring_button = QPushButton("Unlock with the system keyring")
        self.keyring_button.hide()
        layout.addWidget(self.keyring_button)
        links = QHBoxLayout()
        self.recover_button = QPushButton("Forgot it? Use the recovery code")
        self.recover_button.setFlat(True)
        self.other_button = QPushButton("Open another vault…")
        self.other_button.setFlat(True)
        links.addWidget(self.recover_button)
        links.addStretch(1)
        links.addWidget(self.other_button)
        layout.addLayout(links)
        self.passphrase.returnPressed.connect(self._unlock)
        self.unlock_button.clicked.connect(self._unlock)
        self.keyring_button.clicked.connect(self._unlock_keyring)
        self.recover_button.clicked.connect(self.show_recover)
        self.other_button.clicked.connect(self.other_folder)
        return page

    def _recover_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(label("Recover with your recovery code", "title"))
        layout.addWidget(
            label(
                "Type the recovery code you saved when you created the vault, then choose a"
                " new passphrase. Your data stays as it is.",
                "subtitle",
                wrap=True,
            )
        )
        form = QFormLayout()
        self.code = QLineEdit()
        self.code.setAccessibleName("Recovery code")
        self.code.setPlaceholderText("XXXXX-XXXXX-…")
        form.addRow("Recovery code:", self.code)
        layout.addLayout(form)
        self.new_fields = PassphraseFields("New passphrase")
        layout.addWidget(self.new_fields)
        self.recover_message = error_label()
        layout.addWidget(self.recover_message)
        buttons = QHBoxLayout()
        self.recover_back = QPushButton("Back")
        self.recover_go = QPushButton("Set new passphrase and unlock")
        self.recover_go.setProperty("role", "primary")
        self.recover_go.setEnabled(False)
        buttons.addWidget(self.recover_back)
        buttons.addStretch(1)
        buttons.addWidget(self.recover_go)
        layout.addLayout(buttons)
        self.new_fields.changed.connect(self._recover_ready)
        self.code.textChanged.connect(self._recover_ready)
        self.recover_back.clicked.connect(self.show_unlock)
        self.recover_go.clicked.connect(self._recover)
        return page

    # -- showing -------------------------------------------------------------------------

    def show_unlock(self) -> None:
        """Show the passphrase page for the session's folder, empty and focused."""
        self.pages.setCurrentIndex(0)
        self.folder_label.setText(f"Vault in {self.session.folder}")
        self.passphrase.clear()
        self.message.clear()
        self._set_busy(False)
        self.passphrase.setFocus(Qt.FocusReason.OtherFocusReason)
        # Reading the key file imports the crypto stack: after the window is up, not before.
        QTimer.singleShot(0, self._read_keyfile)

    def _read_keyfile(self) -> None:
        demo = self.session.settings().value("demo/passphrase")
        self.hint.setText(f"This is a demo vault. Its passphrase is: {demo}" if demo else "")
        try:
            from vault.keyfile import KeyFile

            enabled = bool(KeyFile.load(self.session.folder).data.get("keyring"))
        except Exception:  # noqa: BLE001 - an unreadable key file shows up when unlocking
            enabled = False
        self.keyring_button.setVisible(enabled)

    def show_recover(self) -> None:
        """Show the recovery page."""
        self.code.clear()
        self.new_fields.clear()
        self.recover_message.clear()
        self.pages.setCurrentIndex(1)
        self.code.setFocus()

    def _set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        for widget in (self.passphrase, self.unlock_button, self.keyring_button):
            widget.setEnabled(not busy)
        self.recover_go.setEnabled(not busy and self._recover_ok())

    # -- unlocking -----------------------------------------------------------------------

    def _unlock(self) -> None:
        passphrase = self.passphrase.text()
        if not passphrase or not self.busy.isHidden():
            return
        folder = self.session.folder
        self.message.clear()
        self._set_busy(True)

        def job(progress: ProgressFn, cancelled: CancelledFn) -> object:
            from vault.core import Vault

            return Vault.unlock(folder, passphrase)

        self.session.work.start(job, self._opened, self._failed)

    def _unlock_keyring(self) -> None:
        folder = self.session.folder
        self.message.clear()
        self._set_busy(True)

        def job(progress: ProgressFn, cancelled: CancelledFn) -> object:
            from vault.core import Vault
            from vault.errors import WrongPassphrase
            from vault.keyfile import KeyFile
            from vault.keyring_unlock import load_key

            key = load_key(KeyFile.load(folder).vault_id)
            if key is None:
                raise WrongPassphrase("the system keyring has no key for this vault")
            return Vault.unlock_with_key(folder, key)

        self.session.work.start(job, self._opened, self._keyring_failed)

    def _opened(self, vault: object) -> None:
        self._set_busy(False)
        self.passphrase.clear()
        self.session.open(vault)  # type: ignore[arg-type]

    def _failed(self, error: BaseException) -> None:
        self._set_busy(False)
        from vault.errors import WrongPassphrase

        if isinstance(error, WrongPassphrase):
            self.message.setText("That passphrase does not open this vault. Try again.")
            self.passphrase.selectAll()
            self.passphrase.setFocus()
        else:
            self.message.setText(plain_message(error))
            show_error(self, "Unlock", error)

    def _keyring_failed(self, error: BaseException) -> None:
        self._set_busy(False)
        # A keyring problem always falls back to the passphrase (DESIGN.md).
        self.message.setText("The system keyring could not unlock the vault. Use your passphrase.")
        self.passphrase.setFocus()

    # -- recovery ------------------------------------------------------------------------

    def _recover_ok(self) -> bool:
        return bool(self.code.text().strip()) and self.new_fields.acceptable()

    def _recover_ready(self) -> None:
        self.recover_go.setEnabled(self._recover_ok())

    def _recover(self) -> None:
        if not self._recover_ok() or not self.recover_go.isEnabled():
            return
        folder, code, new = self.session.folder, self.code.text(), self.new_fields.value()
        self.recover_go.setEnabled(False)
        self.recover_message.setText("Checking the recovery code…")

        def job(progress: ProgressFn, cancelled: CancelledFn) -> object:
            from vault.core import Vault

            return Vault.recover(folder, code, new)

        self.session.work.start(job, self._recovered, self._recover_failed)

    def _recovered(self, vault: object) -> None:
        self.recover_message.clear()
        self.new_fields.clear()
        self.code.clear()
        self.session.open(vault)  # type: ignore[arg-type]

    def _recover_failed(self, error: BaseException) -> None:
        from vault.errors import WrongPassphrase

        self.recover_go.setEnabled(self._recover_ok())
        if isinstance(error, WrongPassphrase):
            self.recover_message.setText("That recovery code does not open this vault.")
        else:
            self.recover_message.setText(plain_message(error))
