"""The exchange's storage of organizations, nonces, packages, requests and consents.

Organization reward keys are AES-GCM wrapped under the exchange's secret
(:mod:`agents.exchange.keybox`); the rounds of each request live in
:mod:`agents.exchange.rounds_store`, the SQL plumbing in :mod:`agents.exchange.database`.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from agents.exchange.database import Database, Tx
from agents.exchange.errors import Refused
from agents.exchange.keybox import KeyBox
from agents.exchange.rounds_store import Rounds, consent_problem, read_request

NONCE_TTL = 900  # seconds a nonce is remembered; comfortably over the 300 s skew window


class Store:
    """Organizations, nonces, packages, requests, consents: the simple parts of the state."""

    def __init__(self, url: str, secret: bytes | None = None) -> None:
        self.db = Database(url)
        # without a persistent secret, wrapped keys only live as long as this process
        self.keys = KeyBox(secret or secrets.token_bytes(32))
        self.rounds = Rounds(self.db, self.org_key)

    def close(self) -> None:
        """Release the database connections."""
        self.db.close()

    def admit(self, did: str, name: str) -> None:
        """Admit (or rename) an organization so it may post requests."""
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO organizations (did, name, admitted) VALUES (?, ?, ?) "
                "ON CONFLICT (did) DO UPDATE SET name = excluded.name",
                (did, name, time.time()),
            )

    def organization(self, did: str) -> str | None:
        """The admitted organization's name, or None."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT name FROM organizations WHERE did = ?", (did,))
        return row[0] if row else None

    def set_org_key(self, did: str, jwk: str) -> None:
        """Keep the organization's signing key (wrapped) for reward receipts."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE organizations SET wrapped_key = ? WHERE did = ?",
                (self.keys.wrap(did, jwk), did),
            )

    def org_key(self, tx: Tx, did: str) -> str | None:
        """The organization's signing key, unwrapped, or None if it never sent one."""
        row = tx.one("SELECT wrapped_key FROM organizations WHERE did = ?", (did,))
        return self.keys.unwrap(did, bytes(row[0])) if row and row[0] is not None else None

    def remember_nonce(self, did: str, nonce: str, now: float) -> bool:
        """Record a nonce; False if this signer used it before (a replay)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM nonces WHERE seen < ?", (now - NONCE_TTL,))
            cursor = tx.execute(
                "INSERT INTO nonces (did, nonce, seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                (did, nonce, now),
            )
            return cursor.rowcount == 1

    def package(self, address: str) -> bytes | None:
        """A stored package's bytes, or None."""
        with self.db.transaction(write=False) as tx:
            row = tx.one("SELECT data FROM packages WHERE address = ?", (address,))
        return bytes(row[0]) if row else None

    def add_request(
        self,
        payload: dict[str, Any],
        jws: str,
        package: bytes,
        spec: list[dict[str, Any]],
        initial: bytes,
        expires: float,
        now: float,
    ) -> None:
        """Store a verified request, its package and its round-0 parameters."""
        with self.db.transaction() as tx:
            if tx.one("SELECT 1 FROM requests WHERE id = ?", (payload["id"],)):
                raise Refused(f"request {payload['id']} was already posted", 409)
            tx.execute(
                "INSERT INTO packages (address, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (payload["package"], package),
            )
            tx.execute(
                "INSERT INTO requests (id, issuer, jws, payload, package, spec, expires, round,"
                " round_opened, closed, posted) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?)",
                (
                    payload["id"],
                    payload["issuer"],
                    jws,
                    json.dumps(payload),
                    payload["package"],
                    json.dumps(spec),
                    expires,
                    now,
                    now,
                ),
            )
            tx.execute(
                "INSERT INTO params (request_id, round, data) VALUES (?, 0, ?)",
                (payload["id"], initial),
            )

    def request(self, tx: Tx, request_id: str, lock: bool = False) -> dict[str, Any]:
        """One request's row as a dict (``lock`` holds it until the transaction ends)."""
        return read_request(tx, request_id, lock)

    def open_requests(self, now: float) -> list[dict[str, str]]:
        """Requests still taking part: not closed, not expired, oldest first."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT jws, package FROM requests WHERE closed = 0 AND expires > ?"
                " ORDER BY posted, id",
                (now,),
            )
        return [{"request": jws, "package": package} for jws, package in rows]

    def params(self, request_id: str, round_index: int) -> bytes:
        """The raw float32 global parameters at the start of ``round_index``."""
        with self.db.transaction(write=False) as tx:
            row = tx.one(
                "SELECT data FROM params WHERE request_id = ? AND round = ?",
                (request_id, round_index),
            )
        if row is None:
            raise Refused(f"no parameters for round {round_index}", 404)
        return bytes(row[0])

    def add_consent(self, payload: dict[str, Any], jws: str, expires: float) -> None:
        """Record a consent receipt; re-posting the identical receipt is a no-op."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT jws FROM consents WHERE id = ?", (payload["id"],))
            if row is not None:
                if row[0] != jws:
                    raise Refused(f"consent {payload['id']} was already recorded differently")
                return
            tx.execute(
                "INSERT INTO consents (id, request_id, subject, jws, expires, revoked)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                (payload["id"], payload["request"], payload["subject"], jws, expires),
            )

    def revoke(self, consent_id: str, subject: str, jws: str) -> None:
        """Mark a consent revoked; later updates under it are refused."""
        with self.db.transaction() as tx:
            row = tx.one("SELECT subject FROM consents WHERE id = ?", (consent_id,))
            if row is None:
                raise Refused(f"no consent {consent_id}", 404)
            if row[0] != subject:
                raise Refused("only the consent's subject can revoke it", 403)
            tx.execute(
                "UPDATE consents SET revoked = 1, revocation = COALESCE(revocation, ?)"
                " WHERE id = ?",
                (jws, consent_id),
            )

    def consent_problem(
        self, request_id: str, subject: str, consent_id: str, now: float
    ) -> str | None:
        """Why ``consent_id`` does not let ``subject`` send updates for the request, or None."""
        with self.db.transaction(write=False) as tx:
            return consent_problem(tx, request_id, subject, consent_id, now)

    def has_consent(self, tx: Tx, request_id: str, subject: str, now: float) -> bool:
        """Whether ``subject`` holds an active consent for the request."""
        return (
            tx.one(
                "SELECT 1 FROM consents WHERE request_id = ? AND subject = ? AND revoked = 0"
                " AND expires > ?",
                (request_id, subject, now),
            )
            is not None
        )

    def receipts_for(self, person: str) -> list[str]:
        """Every reward receipt of a person, by organization then seq."""
        with self.db.transaction(write=False) as tx:
            rows = tx.all(
                "SELECT jws FROM receipts WHERE person = ? ORDER BY organization, seq", (person,)
            )
        return [row[0] for row in rows]
