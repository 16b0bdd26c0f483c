"""The requests inbox: training requests enter verified, with their task package checked.

A request is stored only when its signature, issuer, expiry and shape verify
(`identity.credentials.verify_request`) and its package checks out: the package's hash is the
request's, it reads as a package, its model passes the validator, and its recipe, label and
feature shape are the request's. The same request again is a no-op; another request under a
known id is refused (a replay or a tampered copy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from identity.credentials import TrainingRequest, verify_request
from vault.errors import ModelRefused, TesseraError, VerificationFailed
from vault.recipes import get_recipe
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


def check_package(request: TrainingRequest, package: bytes) -> Any:
    """The request's task package, checked against it; VerificationFailed or ModelRefused."""
    from agents.package import package_address, read_package
    from agents.validator import check_task_io, validate_model

    if package_address(package) != request.package:
        raise VerificationFailed(
            f"the task package does not match the request (expected {request.package})"
        )
    pkg = read_package(package)
    recipe = get_recipe(request.recipe)
    task = pkg.task
    try:
        same_recipe = get_recipe(task["features"]["recipe"]).ref == recipe.ref
    except TesseraError:
        same_recipe = False
    if not same_recipe:
        raise ModelRefused(
            f"the package uses recipe {task['features']['recipe']!r},"
            f" the request {request.recipe!r}"
        )
    label = recipe.label(request.label, request.fields)
    if task["label"]["field"] != request.label:
        raise ModelRefused(
            f"the package's label is {task['label']['field']!r}, not {request.label!r}"
        )
    if task["label"]["dtype"] != label.dtype or (
        label.classes is not None and task["label"]["classes"] != label.classes
    ):
        raise ModelRefused(
            f"the package's label type does not fit label {request.label!r} of {recipe.name}"
        )
    if list(task["features"]["shape"]) != recipe.shape(request.fields):
        raise ModelRefused(
            f"the package expects features {task['features']['shape']}, recipe {recipe.name}"
            f" gives {recipe.shape(request.fields)}"
        )
    check_task_io(validate_model(pkg.model_bytes), dict(task))
    return pkg


def known_request(vault: Vault, jws: str) -> TrainingRequest | None:
    """The request if this exact one is already stored, None if its id is new.

    Raises VerificationFailed for a bad signature or another request under a known id.
    """
    request = verify_request(jws.strip(), allow_expired=True)
    row = vault.conn.execute("SELECT hash FROM requests WHERE id = ?", (request.id,)).fetchone()
    if row is None:
        return None
    if row[0] != request.hash:
        raise VerificationFailed(
            f"a different request with id {request.id} was already received; refused"
        )
    return request


def add_request(
    vault: Vault, jws: str, package: bytes, source: str, now: float | None = None
) -> tuple[TrainingRequest, bool]:
    """Verify and store a request with its package; return (request, newly added).

    The same request again is a no-op; a different request under a known id is refused.
    """
    request = verify_request(jws.strip(), now)
    row = vault.conn.execute("SELECT hash FROM requests WHERE id = ?", (request.id,)).fetchone()
    if row is not None:
        if row[0] != request.hash:
            raise VerificationFailed(
                f"a different request with id {request.id} was already received; refused"
            )
        return request, False
    check_package(request, package)
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
    return request, True


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
