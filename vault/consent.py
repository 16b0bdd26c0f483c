"""Consent decisions and the consent-scoped reader (the requests inbox is re-exported).

Requests enter verified through `agents.request_check` into `vault.inbox`. The person then
approves (a consent receipt signed by the vault DID, logged as ``consent`` on each dataset) or
denies (stored as denied; no dataset is touched, so no dataset log changes). Revoking a
consent signs a revocation and logs ``revoke`` on each dataset; every later read checks the
consent again, so the next round cannot start.

:class:`ConsentScopedReader` is the only way task code reads rows. Each read checks an active
consent that covers the dataset and the time range, reads in one transaction, and appends a
``read`` entry (actor = the organization's DID, purpose and round, consent id, task id, rows,
SHA-256 over the rows read) to that dataset's access log, through the same logged read as the
owner's own task runs (``vault.task_reads``). Without such a consent it raises ConsentMissing
and appends nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from identity.credentials import issue_consent, issue_revocation, verify_request
from vault.errors import ConsentMissing, TesseraError

# the inbox (vault/inbox.py) is re-exported: callers use one module for the whole flow
from vault.inbox import (  # noqa: F401
    RequestNotFound,
    StoredRequest,
    get_request,
    known_request,
    list_requests,
    request_package,
)
from vault.recipes import Record

# the one logged read (re-exported: rows_digest is how a log entry's digest is checked)
from vault.task_reads import read_logged, rows_digest  # noqa: F401
from vault.timeparse import iso_utc

if TYPE_CHECKING:
    from vault.core import Vault

STATUSES = ("pending", "approved", "denied", "revoked")


class DecisionRefused(TesseraError):
    """An approval, denial or revocation that cannot be made (wrong state, bad choice)."""


@dataclass(frozen=True)
class Consent:
    """A consent this vault gave, with what it covers."""

    id: str
    request_id: str
    organization: str
    purpose: str
    datasets: tuple[str, ...]
    epsilon_budget: float
    time_from: float
    time_to: float
    issued: float
    expires: float
    revoked: float | None
    finished: float | None
    jws: str

    def state(self, now: float | None = None) -> str:
        """'active', 'revoked', 'expired' or 'finished'."""
        now = time.time() if now is None else now
        if self.revoked is not None:
            return "revoked"
        if self.finished is not None:
            return "finished"
        if now >= self.expires:
            return "expired"
        return "active"


# ---------------------------------------------------------------------------- decisions


def approve(
    vault: Vault,
    request_id: str,
    datasets: Sequence[str] | None = None,
    epsilon_budget: float | None = None,
    expires: float | None = None,
    now: float | None = None,
) -> Consent:
    """Consent to a pending request: datasets within the request's, a budget up to its epsilon."""
    now = time.time() if now is None else now
    stored = get_request(vault, request_id)
    request = stored.request
    if stored.status != "pending":
        raise DecisionRefused(f"request {request_id} is already {stored.status}")
    if request.expired(now):
        raise DecisionRefused(f"request {request_id} expired on {iso_utc(request.expires)}")
    chosen = list(dict.fromkeys(datasets)) if datasets else list(request.datasets)
    extra = [d for d in chosen if d not in request.datasets]
    if extra:
        raise DecisionRefused(f"the request did not ask for {', '.join(extra)}")
    budget = request.privacy.epsilon if epsilon_budget is None else float(epsilon_budget)
    if not 0 < budget <= request.privacy.epsilon:
        raise DecisionRefused(
            f"the privacy budget must be above 0 and at most the request's ε ="
            f" {request.privacy.epsilon:g}"
        )
    until = request.expires if expires is None else float(expires)
    if until <= now:
        raise DecisionRefused("the consent's expiry must be in the future")
    if until > request.expires:
        raise DecisionRefused(
            f"a consent cannot outlast its request (expires {iso_utc(request.expires)})"
        )
    jws, payload = issue_consent(vault.signing_key(), request, chosen, budget, until, now)
    with vault.transaction():
        vault.conn.execute(
            "INSERT INTO consents (id, request_id, jws, datasets, epsilon_budget, issued,"
            " expires) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (payload["id"], request.id, jws, json.dumps(chosen), budget, int(now), int(until)),
        )
        vault.conn.execute(
            "UPDATE requests SET status = 'approved', decided = ? WHERE id = ?", (now, request.id)
        )
        for name in chosen:
            vault.log.append(
                name,
                "consent",
                vault.did,
                f"consent to {request.organization}: {request.purpose}",
                consent=payload["id"],
                task=request.id,
            )
    return get_consent(vault, payload["id"])


def deny(vault: Vault, request_id: str, now: float | None = None) -> StoredRequest:
    """Deny a pending request; no data is touched, so no dataset log changes."""
    stored = get_request(vault, request_id)
    if stored.status != "pending":
        raise DecisionRefused(f"request {request_id} is already {stored.status}")
    with vault.transaction():
        vault.conn.execute(
            "UPDATE requests SET status = 'denied', decided = ? WHERE id = ?",
            (time.time() if now is None else now, request_id),
        )
    return get_request(vault, request_id)


def revoke(vault: Vault, consent_id: str, now: float | None = None) -> Consent:
    """Revoke a consent: no round starts after this; logged ``revoke`` on each dataset."""
    now = time.time() if now is None else now
    consent = get_consent(vault, consent_id)
    if consent.revoked is not None:
        raise DecisionRefused(f"consent {consent_id} was already revoked")
    revocation = issue_revocation(vault.signing_key(), consent.id, now)
    with vault.transaction():
        vault.conn.execute(
            "UPDATE consents SET revoked = ?, revocation = ? WHERE id = ?",
            (now, revocation, consent.id),
        )
        vault.conn.execute(
            "UPDATE requests SET status = 'revoked' WHERE id = ?", (consent.request_id,)
        )
        for name in consent.datasets:
            vault.log.append(
                name,
                "revoke",
                vault.did,
                f"consent to {consent.organization} revoked",
                consent=consent.id,
                task=consent.request_id,
            )
    return get_consent(vault, consent.id)


# ---------------------------------------------------------------------------- consents


def get_consent(vault: Vault, consent_id: str) -> Consent:
    """A consent by id; RequestNotFound if there is none."""
    row = vault.conn.execute(
        "SELECT c.id, c.request_id, r.jws, c.datasets, c.epsilon_budget, c.issued, c.expires,"
        " c.revoked, c.finished, c.jws FROM consents c JOIN requests r ON r.id = c.request_id"
        " WHERE c.id = ?",
        (consent_id,),
    ).fetchone()
    if row is None:
        raise RequestNotFound(f"no consent {consent_id!r} (see `tessera consents list`)")
    cid, request_id, request_jws, datasets, budget, issued, expires, revoked, finished, jws = row
    request = verify_request(request_jws, allow_expired=True)
    return Consent(
        id=cid,
        request_id=request_id,
        organization=request.issuer,
        purpose=request.purpose,
        datasets=tuple(json.loads(datasets)),
        epsilon_budget=budget,
        time_from=request.time_from,
        time_to=request.time_to,
        issued=issued,
        expires=expires,
        revoked=revoked,
        finished=finished,
        jws=jws,
    )


def consent_for_request(vault: Vault, request_id: str) -> Consent | None:
    """The consent given to a request, if any."""
    row = vault.conn.execute(
        "SELECT id FROM consents WHERE request_id = ?", (request_id,)
    ).fetchone()
    return get_consent(vault, row[0]) if row else None


def consents(vault: Vault) -> list[Consent]:
    """Every consent, newest first."""
    rows = vault.conn.execute("SELECT id FROM consents ORDER BY issued DESC, id").fetchall()
    return [get_consent(vault, r[0]) for r in rows]


def consent_summary(consent: Consent, now: float | None = None) -> dict[str, Any]:
    """A consent as a JSON-ready dict."""
    return {
        "id": consent.id,
        "request": consent.request_id,
        "organization": consent.organization,
        "datasets": list(consent.datasets),
        "epsilon_budget": consent.epsilon_budget,
        "issued": iso_utc(consent.issued),
        "expires": iso_utc(consent.expires),
        "revoked": iso_utc(consent.revoked),
        "state": consent.state(now),
    }


def mark_finished(vault: Vault, consent_id: str, now: float | None = None) -> None:
    """Record that the consent's task is closed (no more rounds)."""
    with vault.transaction():
        vault.conn.execute(
            "UPDATE consents SET finished = ? WHERE id = ? AND finished IS NULL",
            (time.time() if now is None else now, consent_id),
        )


# ---------------------------------------------------------------------------- the reader


class ConsentScopedReader:
    """Reads rows for one consent's task; every read checked against the consent and logged."""

    def __init__(
        self,
        vault: Vault,
        consent_id: str,
        round_index: int | None = None,
        now: float | None = None,
    ) -> None:
        self._vault = vault
        self._consent_id = consent_id
        self._round = round_index
        self._now = now

    def _active(self, dataset: str, time_from: float, time_to: float) -> Consent:
        consent = get_consent_or_missing(self._vault, self._consent_id)
        state = consent.state(time.time() if self._now is None else self._now)
        if state != "active":
            raise ConsentMissing(f"consent {consent.id} is {state}: nothing was read")
        if dataset not in consent.datasets:
            raise ConsentMissing(f"consent {consent.id} does not cover {dataset}")
        if time_from < consent.time_from or time_to > consent.time_to or time_to < time_from:
            raise ConsentMissing(
                f"consent {consent.id} covers {iso_utc(consent.time_from)} to"
                f" {iso_utc(consent.time_to)} only"
            )
        return consent

    def read(
        self,
        dataset: str,
        columns: Sequence[str] | None = None,
        time_from: float | None = None,
        time_to: float | None = None,
    ) -> list[Record]:
        """Records of ``dataset`` in the consented time range; only ``columns`` are filled.

        Raises ConsentMissing, and logs nothing, unless an active consent covers the read.
        """
        consent = get_consent_or_missing(self._vault, self._consent_id)
        start = consent.time_from if time_from is None else time_from
        end = consent.time_to if time_to is None else time_to
        # rounds count from 0 on the wire; people read them from 1, as the GUI shows them
        where = f" (round {self._round + 1})" if self._round is not None else ""
        # check inside the write transaction, so a revocation cannot slip in between
        with self._vault.transaction():
            consent = self._active(dataset, start, end)
            return read_logged(
                self._vault,
                dataset,
                columns,
                actor=consent.organization,
                purpose=f"{consent.purpose}{where}",
                time_from=start,
                time_to=end,
                consent=consent.id,
                task=consent.request_id,
            )


def get_consent_or_missing(vault: Vault, consent_id: str) -> Consent:
    """The consent, or ConsentMissing when there is none."""
    try:
        return get_consent(vault, consent_id)
    except RequestNotFound:
        raise ConsentMissing(f"no consent {consent_id!r}: nothing was read") from None
