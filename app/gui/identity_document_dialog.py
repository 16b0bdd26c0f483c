"""The vault's public DID document, to read and to copy: it holds no secret."""

from __future__ import annotations

import json

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.gui.widgets import label
from identity.keys import did_document


class IdentityDocumentDialog(QDialog):
    """The DID document of ``did`` as indented JSON, read-only, with Copy and Close."""

    def __init__(self, did: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Identity document")
        self.resize(720, 460)
        layout = QVBoxLayout(self)
        layout.addWidget(
            label(
                "Your public identity document: what anyone who checks your signatures sees. "
                "It holds no secret.",
                wrap=True,
            )
        )
        self.text = QPlainTextEdit(json.dumps(did_document(did), indent=2))
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(
            lambda: QGuiApplication.clipboard().setText(self.text.toPlainText())
        )
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
