"""The wrapped data key (`vault.key.json`): Argon2id passphrase wrap and recovery-code wrap.

A random 256-bit data key opens SQLCipher. It is stored twice, each time wrapped with
AES-256-GCM: once under a key derived from the passphrase with Argon2id (parameters calibrated
at creation to take 0.5-1 s with at least 64 MiB), once under a key derived from the recovery
code. The file holds no secret in clear. The key file's format version and the vault id are the
AES-GCM associated data, so a wrap cannot be moved to another vault or field.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import VaultNotFound, WrongPassphrase
from vault.fsutil import atomic_write

KEYFILE = "vault.key.json"
FORMAT = "tessera-keyfile/1"
MIN_MEMORY_KIB = 64 * 1024
TARGET_SECONDS = (0.5, 1.0)
# Recovery codes are random (128 bits), so a cheap KDF is enough for them.
RECOVERY_KDF = {"time_cost": 1, "memory_kib": 8 * 1024, "parallelism": 1}
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id parameters stored beside each wrap."""

    time_cost: int
    memory_kib: int
    parallelism: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def derive(secret: str, salt: bytes, params: KdfParams) -> bytes:
    """Argon2id(secret, salt) -> 32-byte wrapping key."""
    return hash_secret_raw(
        secret.encode("utf-8"),
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )


def calibrate(target: tuple[float, float] = TARGET_SECONDS) -> KdfParams:
    """Argon2id parameters taking ``target`` seconds on this machine, memory >= 64 MiB."""
    params = KdfParams(
        time_cost=1, memory_kib=MIN_MEMORY_KIB, parallelism=min(4, os.cpu_count() or 1)
    )
    salt = secrets.token_bytes(16)
    while True:
        started = time.perf_counter()
        derive("calibration", salt, params)
        elapsed = time.perf_counter() - started
        if elapsed >= target[0] or params.time_cost >= 64:
            return params
        # Scale time cost towards the middle of the target window.
        factor = (sum(target) / 2) / max(elapsed, 1e-3)
        params = KdfParams(
            max(params.time_cost + 1, int(params.time_cost * factor)),
            params.memory_kib,
            params.parallelism,
        )


def new_recovery_code() -> str:
    """A random recovery code: 25 characters in 5 groups, about 125 bits."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(25))
    return "-".join(raw[i : i + 5] for i in range(0, 25, 5))


def normalise_recovery_code(code: str) -> str:
    """Accept codes typed in lower case, with or without dashes and spaces."""
    raw = "".join(ch for ch in code.upper() if ch.isalnum())
    return "-".join(raw[i : i + 5] for i in range(0, len(raw), 5))


def _wrap(data_key: bytes, secret: str, params: KdfParams, aad: bytes) -> dict[str, Any]:
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(derive(secret, salt, params)).encrypt(nonce, data_key, aad)
    return {
        "kdf": "argon2id",
        **asdict(params),
        "salt": _b64(salt),
        "nonce": _b64(nonce),
        "wrapped": _b64(sealed),
    }


def _unwrap(entry: dict[str, Any], secret: str, aad: bytes) -> bytes:
    params = KdfParams(entry["time_cost"], entry["memory_kib"], entry["parallelism"])
    key = derive(secret, _unb64(entry["salt"]), params)
    try:
        return AESGCM(key).decrypt(_unb64(entry["nonce"]), _unb64(entry["wrapped"]), aad)
    except InvalidTag:
        raise WrongPassphrase() from None


class KeyFile:
    """The contents of `vault.key.json`."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @property
    def vault_id(self) -> str:
        """A random id naming this vault (not secret)."""
        return self.data["vault_id"]

    def _aad(self, slot: str) -> bytes:
        return f"{FORMAT}|{self.vault_id}|{slot}".encode()

    @classmethod
    def create(
        cls, data_key: bytes, passphrase: str, recovery_code: str, params: KdfParams
    ) -> KeyFile:
        """A key file wrapping ``data_key`` under the passphrase and the recovery code."""
        keyfile = cls({"format": FORMAT, "vault_id": secrets.token_hex(16)})
        keyfile.data["passphrase"] = _wrap(data_key, passphrase, params, keyfile._aad("passphrase"))
        keyfile.data["recovery"] = _wrap(
            data_key,
            normalise_recovery_code(recovery_code),
            KdfParams(**RECOVERY_KDF),
            keyfile._aad("recovery"),
        )
        return keyfile

    @classmethod
    def load(cls, folder: Path) -> KeyFile:
        """Read `vault.key.json` from ``folder``; VaultNotFound if there is none."""
        path = folder / KEYFILE
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise VaultNotFound(f"no vault in {folder} (run `tessera init`)") from None
        except (OSError, ValueError) as exc:
            raise VaultNotFound(f"{path}: unreadable key file ({exc})") from None
        if data.get("format") != FORMAT:
            raise VaultNotFound(f"{path}: unknown key file format {data.get('format')!r}")
        return cls(data)

    def save(self, folder: Path) -> None:
        """Write atomically (temp file + fsync + rename), mode 0600."""
        atomic_write(folder / KEYFILE, json.dumps(self.data, indent=2).encode("utf-8"))

    def unwrap_with_passphrase(self, passphrase: str) -> bytes:
        """The data key; WrongPassphrase when the passphrase does not open it."""
        return _unwrap(self.data["passphrase"], passphrase, self._aad("passphrase"))

    def unwrap_with_recovery_code(self, code: str) -> bytes:
        """The data key; WrongPassphrase('wrong recovery code') when the code is wrong."""
        try:
            return _unwrap(
                self.data["recovery"], normalise_recovery_code(code), self._aad("recovery")
            )
        except WrongPassphrase:
            raise WrongPassphrase("wrong recovery code") from None

    def rewrap_passphrase(self, data_key: bytes, new_passphrase: str) -> None:
        """Replace the passphrase wrap (same KDF cost as before)."""
        self.data["passphrase"] = _wrap(
            data_key, new_passphrase, self.kdf_params(), self._aad("passphrase")
        )

    def kdf_params(self) -> KdfParams:
        """The Argon2id parameters of the passphrase wrap."""
        old = self.data["passphrase"]
        return KdfParams(old["time_cost"], old["memory_kib"], old["parallelism"])
