"""Password-protected backups of the vault's identity key (its did:key private JWK).

The file is JSON: ``format``, the ``did``, the Argon2id parameters and salt, and the key
sealed with AES-256-GCM under Argon2id(password, salt). The format and the DID are the AES-GCM
associated data, so a backup cannot be relabelled as another identity's. Key derivation reuses
the vault's own (``vault.keyfile.derive`` with at least 64 MiB of memory).
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from identity.keys import did_for
from vault.errors import VerificationFailed, WrongPassphrase
from vault.fsutil import atomic_write
from vault.keyfile import MIN_MEMORY_KIB, KdfParams, derive

FORMAT = "tessera-identity-backup/1"
MIN_PASSWORD = 8


def _aad(did: str) -> bytes:
    return f"{FORMAT}|{did}".encode()


def write_backup(path: Path, jwk: str, password: str, params: KdfParams) -> dict[str, Any]:
    """Seal ``jwk`` under ``password`` into ``path`` (atomic, mode 0600); return a summary."""
    if len(password) < MIN_PASSWORD:
        raise VerificationFailed(
            f"the backup password must have at least {MIN_PASSWORD} characters"
        )
    params = KdfParams(params.time_cost, max(params.memory_kib, MIN_MEMORY_KIB), params.parallelism)
    did = did_for(jwk)
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(derive(password, salt, params)).encrypt(nonce, jwk.encode("utf-8"), _aad(did))
    data = {
        "format": FORMAT,
        "did": did,
        "kdf": {"name": "argon2id", **asdict(params)},
        "salt": base64.b64encode(salt).decode("ascii"),
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "sealed": base64.b64encode(sealed).decode("ascii"),
    }
    atomic_write(path, json.dumps(data, indent=2).encode("utf-8"))
    return {"did": did, "file": str(path), "format": FORMAT}


def read_backup(path: Path, password: str) -> str:
    """The identity JWK from a backup; WrongPassphrase if the password does not open it."""
    try:
        data = json.loads(path.read_text("utf-8"))
        kdf = data["kdf"]
        params = KdfParams(int(kdf["time_cost"]), int(kdf["memory_kib"]), int(kdf["parallelism"]))
        salt, nonce, sealed = (base64.b64decode(data[k]) for k in ("salt", "nonce", "sealed"))
        did = data["did"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VerificationFailed(f"{path}: not an identity backup ({exc})") from None
    if data.get("format") != FORMAT:
        raise VerificationFailed(f"{path}: unknown backup format {data.get('format')!r}")
    try:
        jwk = AESGCM(derive(password, salt, params)).decrypt(nonce, sealed, _aad(did)).decode()
    except InvalidTag:
        raise WrongPassphrase("wrong backup password") from None
    if did_for(jwk) != did:
        raise VerificationFailed(f"{path}: the key inside does not belong to {did}")
    return jwk
