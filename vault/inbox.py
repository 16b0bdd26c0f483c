"""The requests inbox: verified training requests with their task packages, stored and read.

Requests enter through ``agents.request_check.receive_request``, which verifies the signature,
issuer, expiry and shape (`identity.credentials.verify_request`) and checks the package (its
hash is the request's, it reads as a package, its model passes the validator, its recipe, label
and feature shape are the request's) before :func:`store_request` keeps it. The same request
again is a no-op; another request under a known id is refused (a replay or a tampered copy).
Every read verifies the stored request's signature again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from identity.credentials import TrainingRequest, verify_request
from vault.errors import TesseraError, VerificationFailed
from vault.timeparse import iso_utc

if TYPE_CHECKING:
    from vault.core import Vault


class RequestNotFound(TesseraError):
    """No stored request or consent has that id."""


@dataclass(frozen=True)
class StoredRequest:
    """A request in the inbox with its status."""

    request: TrainingRequest
    status: str
    source: str
    received: float
    decided: float | None


def already_stored(vault: Vault, request: TrainingRequest) -> bool:
    """Whether this exact request is stored; VerificationFailed for another under its id."""
    row = vault.conn.execute("SELECT hash FROM requests WHERE id = ?", (request.id,)).fetchone()
    if row is None:
        return False
    if row[0] != request.hash:
        raise VerificationFailed(
            f"a different request with id {request.id} was already received; refused"
        )
    return True


def known_request(vault: Vault, jws: str) -> TrainingRequest | None:
    """The request if this exact one is already stored, None if its id is new.

    Raises VerificationFailed for a bad signature or another request under a known id.
    """
    request = verify_request(jws.strip(), allow_expired=True)
    return request if already_stored(vault, request) else None


def store_request(
    vault: Vault,
    request: TrainingRequest,
    package: bytes,
    source: str,
    now: float | None = None,
) -> bool:
    """Store a verified request with its task package; return whether it was new.

    The caller has checked the package against the request (``agents.request_check``, which
    is the way requests enter). The same request again is a no-op; a different request under
    a known id is refused with VerificationFailed.
    """
    if already_stored(vault, request):
        return False
    with vault.transaction():
        vault.conn.execute(
            "INSERT INTO requests (id, jws, hash, issuer, expires, package_address, package,"
            " source, status, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (
                request.id,
                request.jws,
                request.hash,
                request.issuer,
                request.expires,
                request.package,
                package,
                source,
                time.time() if now is None else now,
            ),
        )
    return True


def get_request(vault: Vault, request_id: str) -> StoredRequest:
    """A stored request (its signature checked again); RequestNotFound if there is none."""
    row = vault.conn.execute(
        "SELECT jws, status, source, received, decided FROM requests WHERE id = ?", (request_id,)
    ).fetchone()
    if row is None:
        raise RequestNotFound(f"no request {request_id!r} (see `tessera requests list`)")
    jws, status, source, received, decided = row
    return StoredRequest(verify_request(jws, allow_expired=True), status, source, received, decided)


def request_package(vault: Vault, request_id: str) -> bytes:
    """The stored task package bytes of a request."""
    row = vault.conn.execute("SELECT package FROM requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise RequestNotFound(f"no request {request_id!r}")
    return bytes(row[0])


def list_requests(vault: Vault, now: float | None = None) -> list[dict[str, Any]]:
    """Every request in the inbox, newest first, with status ('expired' once past expiry)."""
    now = time.time() if now is None else now
    out = []
    for (request_id,) in vault.conn.execute(
        "SELECT id FROM requests ORDER BY received DESC, id"
    ).fetchall():
        stored = get_request(vault, request_id)
        r = stored.request
        status = stored.status
        if status == "pending" and r.expired(now):
            status = "expired"
        out.append(
            {
                "id": r.id,
                "organization": r.organization,
                "issuer": r.issuer,
                "purpose": r.purpose,
                "recipe": r.recipe,
                "datasets": list(r.datasets),
                "epsilon": r.privacy.epsilon,
                "status": status,
                "expires": iso_utc(r.expires),
                "received": iso_utc(stored.received),
            }
        )
    return out
