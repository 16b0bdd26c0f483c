"""Optional passwordless unlock: the data key kept in the OS keyring.

Only backends that encrypt at rest are accepted (Secret Service, macOS Keychain, Windows
Credential Locker). `keyrings.alt` file and plaintext backends, and the null and fail
backends, are refused with a clear message: `keyring` would otherwise pick a plaintext file
silently when `keyrings.alt` is installed. Any keyring failure on unlock means "fall back to
the passphrase", never "locked out".
"""

from __future__ import annotations

import contextlib
from typing import Any

from vault.errors import KeyringRefused

SERVICE = "Tessera vault"
SECURE_BACKENDS = {
    "keyring.backends.SecretService.Keyring",
    "keyring.backends.macOS.Keyring",
    "keyring.backends.Windows.WinVaultKeyring",
    "keyring.backends.libsecret.Keyring",
}


def _name(backend: Any) -> str:
    cls = type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def secure_backend() -> Any:
    """The first available keyring backend that encrypts at rest; KeyringRefused otherwise."""
    try:
        import keyring
        from keyring.backends.chainer import ChainerBackend
    except Exception as exc:  # noqa: BLE001 - any import failure means "no keyring"
        raise KeyringRefused(f"no OS keyring available ({exc})") from None
    backend = keyring.get_keyring()
    candidates = list(backend.backends) if isinstance(backend, ChainerBackend) else [backend]
    for candidate in candidates:
        if _name(candidate) in SECURE_BACKENDS:
            return candidate
    names = ", ".join(_name(c) for c in candidates) or "none"
    raise KeyringRefused(
        f"the OS keyring backend ({names}) does not encrypt secrets at rest; refusing to store"
        " the vault key there (need Secret Service, macOS Keychain or Windows Credential Locker)"
    )


def store_key(vault_id: str, data_key: bytes) -> str:
    """Put the data key in the secure keyring; return the backend's name."""
    backend = secure_backend()
    try:
        backend.set_password(SERVICE, vault_id, data_key.hex())
    except Exception as exc:  # noqa: BLE001 - backends raise many kinds of errors
        raise KeyringRefused(f"the OS keyring refused to store the key ({exc})") from None
    return _name(backend)


def load_key(vault_id: str) -> bytes | None:
    """The data key from the keyring, or None on any problem (then use the passphrase)."""
    try:
        secret = secure_backend().get_password(SERVICE, vault_id)
        return bytes.fromhex(secret) if secret else None
    except Exception:  # noqa: BLE001 - a broken keyring must never block unlock
        return None


def delete_key(vault_id: str) -> None:
    """Remove the data key from the keyring if it is there."""
    # Already absent, or no keyring at all: nothing to remove either way.
    with contextlib.suppress(Exception):
        secure_backend().delete_password(SERVICE, vault_id)


def backend_status() -> dict[str, Any]:
    """Which backend is in use and whether it is acceptable."""
    try:
        return {"backend": _name(secure_backend()), "secure": True, "problem": None}
    except KeyringRefused as exc:
        return {"backend": None, "secure": False, "problem": str(exc)}
