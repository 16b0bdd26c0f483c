"""The one place that maps core exceptions to CLI exit codes (see DESIGN.md)."""

from __future__ import annotations

from vault.errors import (
    ConsentMissing,
    ImportRefused,
    ModelRefused,
    TesseraError,
    VaultLocked,
    VerificationFailed,
    WrongPassphrase,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3

_CODES: dict[type[TesseraError], int] = {
    WrongPassphrase: EXIT_LOCKED,
    VaultLocked: EXIT_LOCKED,
    ImportRefused: EXIT_REFUSED,
    ModelRefused: EXIT_REFUSED,
    ConsentMissing: EXIT_REFUSED,
    VerificationFailed: EXIT_REFUSED,
}


def exit_code_for(error: TesseraError) -> int:
    """The exit code for a core error: 3 for locked/wrong secret, 1 for everything else."""
    for cls in type(error).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return EXIT_REFUSED
