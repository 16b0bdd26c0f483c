"""First run: create a vault (passphrase, strength, confirmation, recovery code), open an
existing vault folder, or try a demo.

The recovery code is shown exactly once, after creation; "Continue" stays disabled until the
person ticks "I saved it", because without the code a forgotten passphrase loses everything.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.errors import show_error
from app.gui.passphrase_strength import PassphraseFields
from app.gui.session import Session, vault_exists
from app.gui.widgets import centered, label
from app.gui.worker import CancelledFn, ProgressFn


class FirstRunScreen(QWidget):
    """Welcome page, create page and recovery-code page, in one stacked screen."""

    demo_requested = Signal()
    folder_opened = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.pending_vault = None
        self.pages = QStackedWidget()
        self.pages.addWidget(centered(self._welcome_page()))
        self.pages.addWidget(centered(self._create_page()))
        self.pages.addWidget(centered(self._recovery_page()))
        QVBoxLayout(self).addWidget(self.pages)

    # -- pages ---------------------------------------------------------------------------

    def _welcome_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(label("Welcome to Tessera", "title"))
        layout.addWidget(
            label(
                "Tessera keeps your health, location and preference data encrypted on this"
                " computer. You decide who may learn from it, and every use is recorded.",
                "subtitle",
                wrap=True,
            )
        )
        layout.addSpacing(16)
        self.create_button = QPushButton("Create a new vault")
        self.create_button.setProperty("role", "primary")
        self.open_button = QPushButton("Open an existing vault folder…")
        self.demo_button = QPushButton("Try a demo with sample data")
        for button in (self.create_button, self.open_button, self.demo_button):
            button.setMinimumHeight(36)
            layout.addWidget(button)
        self.create_button.clicked.connect(self.show_create)
        self.open_button.clicked.connect(self._open_folder)
        self.demo_button.clicked.connect(self.demo_requested)
        return page

    def _create_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(label("Create your vault", "title"))
        self.folder_label = label("", "subtitle", wrap=True)
        layout.addWidget(self.folder_label)
        layout.addWidget(
            label(
                "Choose a passphrase you can remember. It is never stored; without it (or the"
                " recovery code you will see next) nobody can open the vault, not even you.",
                wrap=True,
            )
        )
        self.fields = PassphraseFields("Passphrase")
        layout.addWidget(self.fields)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setAccessibleName("Creating the vault")
        self.busy.hide()
        layout.addWidget(self.busy)
        buttons = QHBoxLayout()
        self.back_button = QPushButton("Back")
        self.create_vault_button = QPushButton("Create vault")
        self.create_vault_button.setProperty("role", "primary")
        self.create_vault_button.setEnabled(False)
        buttons.addWidget(self.back_button)
        buttons.addStretch(1)
        buttons.addWidget(self.create_vault_button)
        layout.addLayout(buttons)
        self.fields.changed.connect(
            lambda: self.create_vault_button.setEnabled(self.fields.acceptable())
        )
        self.fields.confirm.returnPressed.connect(self._create)
        self.back_button.clicked.connect(lambda: self.pages.setCurrentIndex(0))
        self.create_vault_button.clicked.connect(self._create)
        return page

    def _recovery_page(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(label("Save your recovery code", "title"))
        layout.addWidget(
            label(
                "If you forget your passphrase, this code is the only way back into your"
                " vault. Write it down or print it and keep it somewhere safe, away from this"
                " computer. It is shown only now.",
                wrap=True,
            )
        )
        self.code_label = QLabel()
        self.code_label.setProperty("role", "code")
        self.code_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.code_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.code_label.setWordWrap(True)
        self.code_label.setAccessibleName("Recovery code")
        self.code_label.setMinimumHeight(60)
        layout.addWidget(self.code_label)
        self.copy_button = QPushButton("Copy to clipboard")
        layout.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignLeft)
        self.saved_check = QCheckBox("I saved my recovery code somewhere safe")
        layout.addWidget(self.saved_check)
        self.continue_button = QPushButton("Continue")
        self.continue_button.setProperty("role", "primary")
        self.continue_button.setEnabled(False)
        layout.addWidget(self.continue_button, 0, Qt.AlignmentFlag.AlignRight)
        self.copy_button.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.code_label.text())
        )
        self.saved_check.toggled.connect(self.continue_button.setEnabled)
        self.continue_button.clicked.connect(self._finish)
        return page

    # -- actions -------------------------------------------------------------------------

    def show_welcome(self) -> None:
        """Show the three first-run choices."""
        self.pages.setCurrentIndex(0)
        self.create_button.setFocus()

    def show_create(self) -> None:
        """Show the create page for the session's folder."""
        self.folder_label.setText(f"The vault will be kept in {self.session.folder}")
        self.fields.clear()
        self.pages.setCurrentIndex(1)
        self.fields.passphrase.setFocus()

    def _open_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Open a vault folder", str(Path.home()))
        if not chosen:
            return
        folder = Path(chosen)
        if not vault_exists(folder):
            from vault.errors import VaultNotFound

            show_error(self, "Open a vault", VaultNotFound(f"no vault in {folder}"))
            return
        self.session.set_folder(folder)
        self.folder_opened.emit()

    def _create(self) -> None:
        if not self.fields.acceptable() or not self.busy.isHidden():
            return
        folder, passphrase = self.session.folder, self.fields.value()
        self._set_busy(True)

        def job(progress: ProgressFn, cancelled: CancelledFn) -> object:
            from vault.core import Vault

            return Vault.create(folder, passphrase)

        self.session.work.start(job, self._created, self._failed)

    def _set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        for widget in (self.fields, self.create_vault_button, self.back_button):
            widget.setEnabled(not busy)
        if not busy:
            self.create_vault_button.setEnabled(self.fields.acceptable())

    def _created(self, result: object) -> None:
        self._set_busy(False)
        vault, recovery = result  # type: ignore[misc]
        self.pending_vault = vault
        self.fields.clear()
        self.code_label.setText(recovery)
        self.saved_check.setChecked(False)
        self.pages.setCurrentIndex(2)
        self.saved_check.setFocus()

    def _failed(self, error: BaseException) -> None:
        self._set_busy(False)
        show_error(self, "Create a vault", error)

    def _finish(self) -> None:
        vault, self.pending_vault = self.pending_vault, None
        self.code_label.clear()  # the code is never shown again
        if vault is not None:
            self.session.open(vault)
