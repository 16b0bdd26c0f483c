"""Errors of the exchange's core that the server turns into HTTP answers."""

from __future__ import annotations

from vault.errors import TesseraError


class Refused(TesseraError):
    """The exchange refuses an operation; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status
