"""Domain exceptions of the vault. Only the CLI maps them to exit codes (see app/errors.py)."""

from __future__ import annotations


class TesseraError(Exception):
    """Base class of every error a user may see; its message is one clear line."""


class WrongPassphrase(TesseraError):
    """The passphrase, recovery code or keyring key does not open the vault."""

    def __init__(self, message: str = "wrong passphrase") -> None:
        super().__init__(message)


class VaultLocked(TesseraError):
    """The vault is locked, missing, or cannot be opened without a secret."""


class VaultNotFound(TesseraError):
    """No vault exists in the chosen folder."""


class VaultExists(TesseraError):
    """A vault already exists where a new one was to be created."""


class ImportRefused(TesseraError):
    """An input file was refused; the message names the file and what is wrong."""

    def __init__(self, file: str, problem: str) -> None:
        self.file = file
        self.problem = problem
        super().__init__(f"{file}: {problem}")


class DatasetNotFound(TesseraError):
    """The named dataset does not exist in this vault."""


class VerificationFailed(TesseraError):
    """A signature, proof, hash chain or checkpoint did not verify."""


class KeyringRefused(TesseraError):
    """The OS keyring backend is missing or does not encrypt at rest."""


class ConsentMissing(TesseraError):
    """A read was attempted without an active consent covering it."""


class ModelRefused(TesseraError):
    """A task package or ONNX model failed validation."""


class VaultIncompatible(TesseraError):
    """The vault was written by a newer Tessera (schema or key-file format)."""
