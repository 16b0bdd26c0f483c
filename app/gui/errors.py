"""Clear error dialogs: one plain sentence first, the technical detail only on demand.

Never a traceback dump: the "Details" part holds the exception type and message, which is
what a person can paste into a bug report without leaking secrets.
"""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget

# Core error class name -> what a person should read first.
_PLAIN = {
    "WrongPassphrase": "That passphrase does not open this vault. Check it and try again.",
    "VaultLocked": "The vault is locked. Unlock it and try again.",
    "VaultNotFound": "There is no vault in that folder.",
    "VaultExists": "A vault already exists in that folder.",
    "ImportRefused": "This file could not be imported. Nothing was added to your vault.",
    "ImportCancelled": "The import was cancelled. Nothing was added to your vault.",
    "DatasetNotFound": "That dataset no longer exists.",
    "VerificationFailed": "A check failed: something does not match what was signed.",
    "KeyringRefused": "The system keyring cannot be used safely on this computer.",
    "ConsentMissing": "There is no active consent that allows this.",
    "ModelRefused": "The task was refused because its model failed the safety checks.",
}


def plain_message(error: BaseException) -> str:
    """The first line a person reads for ``error``: plain words, no jargon."""
    for cls in type(error).__mro__:
        if cls.__name__ in _PLAIN:
            return _PLAIN[cls.__name__]
    if isinstance(error, PermissionError):
        return "Tessera is not allowed to read or write that file or folder."
    if isinstance(error, OSError):
        return "A file could not be read or written."
    return "Something went wrong. Nothing was changed."


def details_of(error: BaseException) -> str:
    """The technical detail shown under "Details": the error's own one-line message."""
    message = str(error).strip() or "(no message)"
    return f"{type(error).__name__}: {message}"


def error_box(parent: QWidget | None, title: str, error: BaseException) -> QMessageBox:
    """A ready (not yet shown) message box for ``error``, details folded away."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(plain_message(error))
    problem = getattr(error, "problem", None)
    if problem:
        # ImportRefused carries what is wrong with the file: useful in plain view.
        box.setInformativeText(str(problem)[:300])
    box.setDetailedText(details_of(error))
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setAccessibleName(title)
    return box


def show_error(parent: QWidget | None, title: str, error: BaseException) -> None:
    """Show ``error`` in a clear dialog with "Show Details..." for the technical part."""
    error_box(parent, title, error).exec()
