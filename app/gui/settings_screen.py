"""Identity & settings: your DID (copy, identity document), keyring unlock, passphrase,
auto-lock minutes, exchange address, compute device, and how to back up.

Settings that are not secret live beside the vault (``gui-settings.ini``); the keyring choice
lives in the key file, as the CLI's `tessera keyring enable` keeps it.
"""

from __future__ import annotations

from importlib import metadata

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.gui.backup_dialog import BackupDialog
from app.gui.errors import show_error
from app.gui.identity_document_dialog import IdentityDocumentDialog
from app.gui.passphrase_dialog import ChangePassphraseDialog
from app.gui.session import Session
from app.gui.widgets import LazyRefresh, label, screen_header


def gpu_runtime_installed() -> bool:
    """True when the CUDA build of ONNX Runtime is installed (checked without importing it)."""
    try:
        metadata.version("onnxruntime-gpu")
        return True
    except metadata.PackageNotFoundError:
        return False


class SettingsScreen(LazyRefresh, QWidget):
    """Identity, security and preferences."""

    idle_minutes_changed = Signal(float)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        outer = QVBoxLayout(self)
        outer.addWidget(screen_header("Identity & settings"))
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self._identity_box())
        layout.addWidget(self._security_box())
        layout.addWidget(self._work_box())
        layout.addWidget(self._backup_box())
        layout.addStretch(1)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)
        self.follow(session)

    # -- sections ------------------------------------------------------------------------

    def _identity_box(self) -> QGroupBox:
        box = QGroupBox("Your identity")
        layout = QVBoxLayout(box)
        layout.addWidget(
            label(
                "Organizations know you only by this identifier. Your consents and the history"
                " of your data are signed with it.",
                "subtitle",
                wrap=True,
            )
        )
        self.did = QLineEdit()
        self.did.setReadOnly(True)
        self.did.setAccessibleName("Your identifier (DID)")
        row = QHBoxLayout()
        row.addWidget(self.did, 1)
        self.copy_button = QPushButton("Copy")
        self.document_button = QPushButton("Show identity document…")
        row.addWidget(self.copy_button)
        row.addWidget(self.document_button)
        layout.addLayout(row)
        self.copy_button.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.did.text())
        )
        self.document_button.clicked.connect(self._show_document)
        return box

    def _security_box(self) -> QGroupBox:
        box = QGroupBox("Unlocking and locking")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.keyring = QCheckBox("Unlock with the system keyring (no passphrase needed)")
        self.keyring_status = label("", "subtitle", wrap=True)
        form.addRow(self.keyring)
        form.addRow(self.keyring_status)
        self.passphrase_button = QPushButton("Change passphrase…")
        form.addRow("Passphrase:", self.passphrase_button)
        self.idle = QSpinBox()
        self.idle.setRange(1, 240)
        self.idle.setSuffix(" minutes")
        self.idle.setAccessibleName("Lock after this many idle minutes")
        form.addRow("Lock when idle for:", self.idle)
        self.keyring.toggled.connect(self._keyring_toggled)
        self.passphrase_button.clicked.connect(self._change_passphrase)
        self.idle.valueChanged.connect(self._idle_changed)
        return box

    def _work_box(self) -> QGroupBox:
        box = QGroupBox("Requests and training")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.exchange = QLineEdit()
        self.exchange.setPlaceholderText("http://127.0.0.1:8765")
        self.exchange.setAccessibleName("Exchange address")
        self.exchange.setMinimumWidth(360)
        form.addRow("Exchange address:", self.exchange)
        self.device = QComboBox()
        self.device.setAccessibleName("Compute device")
        self.device.addItem("The best available", "auto")
        self.device.addItem("Processor (CPU)", "cpu")
        self.device.addItem("Graphics card (CUDA GPU)", "gpu")
        if not gpu_runtime_installed():
            self.device.model().item(2).setEnabled(False)
            self.device.setItemText(2, "Graphics card (needs onnxruntime-gpu)")
        form.addRow("Train on:", self.device)
        self.exchange.editingFinished.connect(self._exchange_changed)
        self.device.currentIndexChanged.connect(
            lambda: self._save("compute/device", self.device.currentData())
        )
        return box

    def _backup_box(self) -> QGroupBox:
        box = QGroupBox("Backup")
        layout = QVBoxLayout(box)
        self.backup_text = QLabel()
        self.backup_text.setWordWrap(True)
        layout.addWidget(self.backup_text)
        buttons = QHBoxLayout()
        self.backup_button = QPushButton("Back up your identity…")
        self.folder_button = QPushButton("Open the vault folder")
        buttons.addWidget(self.backup_button)
        buttons.addWidget(self.folder_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.backup_button.clicked.connect(self._backup)
        self.folder_button.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.session.folder)))
        )
        return box

    # -- state ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Show the open vault's identity and settings."""
        from agents import vault_sync

        vault = self.session.vault
        if vault is None:
            return
        self.did.setText(vault.did)
        self.keyring.blockSignals(True)
        self.keyring.setChecked(bool(vault.keyfile.data.get("keyring")))
        self.keyring.blockSignals(False)
        self._show_keyring_status()
        settings = self.session.settings()
        self.idle.blockSignals(True)
        self.idle.setValue(round(self.session.idle_minutes()))
        self.idle.blockSignals(False)
        self.exchange.setText(vault_sync.exchange_url(vault) or "")
        self.device.blockSignals(True)
        self.device.setCurrentIndex(max(0, self.device.findData(settings.value("compute/device"))))
        self.device.blockSignals(False)
        self.backup_text.setText(
            "Your identity, data and history live in one encrypted folder: "
            f"{vault.folder}. To back everything up, lock or quit Tessera and copy that whole"
            " folder somewhere safe. The copy stays encrypted; you need your passphrase or"
            " recovery code to open it."
        )

    def clear(self) -> None:
        """Forget the identity shown (on lock)."""
        self.did.clear()

    def _save(self, key: str, value: object) -> None:
        self.session.settings().setValue(key, value)

    def _exchange_changed(self) -> None:
        from agents import vault_sync

        vault = self.session.vault
        if vault is not None and self.exchange.text().strip() != (
            vault_sync.exchange_url(vault) or ""
        ):
            vault_sync.set_exchange_url(vault, self.exchange.text().strip())

    def _backup(self) -> None:
        dialog = BackupDialog(self.session, self)
        if dialog.exec() and dialog.written is not None:
            QMessageBox.information(
                self, "Identity backed up", f"Your identity backup was saved to {dialog.written}."
            )

    def _idle_changed(self, minutes: int) -> None:
        self._save("lock/idle_minutes", minutes)
        self.idle_minutes_changed.emit(float(minutes))

    def _show_keyring_status(self) -> None:
        from vault.keyring_unlock import backend_status

        status = backend_status()
        if status["secure"]:
            self.keyring_status.setText(f"Uses {status['backend']}, which encrypts secrets.")
            self.keyring.setEnabled(True)
        else:
            self.keyring_status.setText(
                "Not available: this computer has no keyring that encrypts secrets at rest."
            )
            self.keyring.setEnabled(self.keyring.isChecked())  # can still be switched off

    def _keyring_toggled(self, on: bool) -> None:
        from vault.errors import KeyringRefused
        from vault.keyring_unlock import delete_key, store_key

        vault = self.session.require()
        try:
            if on:
                store_key(vault.keyfile.vault_id, vault.data_key)
                vault.keyfile.data["keyring"] = True
            else:
                delete_key(vault.keyfile.vault_id)
                vault.keyfile.data.pop("keyring", None)
            vault.keyfile.save(vault.folder)
        except KeyringRefused as exc:
            self.keyring.blockSignals(True)
            self.keyring.setChecked(False)
            self.keyring.blockSignals(False)
            show_error(self, "System keyring", exc)
        self._show_keyring_status()

    def _change_passphrase(self) -> None:
        dialog = ChangePassphraseDialog(self.session, self)
        if dialog.exec():
            QMessageBox.information(self, "Passphrase changed", "Your new passphrase is set.")

    def _show_document(self) -> None:
        IdentityDocumentDialog(self.session.require().did, self).exec()
