"""Task state as the vault stores it: rounds, the outbox, decisions to deliver, privacy.

Plain reads and writes of the ``task_rounds`` and ``outbox`` tables, the delivery flags and
stored privacy ledger of ``consents``, and the vault-wide privacy settings in ``meta``. The
functions that change rows work inside the caller's transaction unless they say otherwise.
Running rounds, and talking to the exchange, is ``agents.rounds`` and ``agents.outbox``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from vault.errors import TesseraError
from vault.timeparse import iso_utc

if TYPE_CHECKING:
    from vault.core import Vault

# vault-wide privacy settings in the meta table; each may only tighten a request
SETTINGS = {
    "clip_norm": "privacy.max_clip_norm",
    "noise_multiplier": "privacy.min_noise_multiplier",
    "epsilon_budget": "privacy.max_epsilon",
    "delta": "privacy.max_delta",
}
# a round in one of these states is never run again
DONE_STATES = ("trained", "accepted", "rejected", "withdrawn", "budget", "empty", "failed")
DELIVERY_COLUMNS = ("sent", "revocation_sent")


# ---------------------------------------------------------------------------- settings


def privacy_settings(vault: Vault) -> dict[str, float]:
    """The vault's privacy settings that are set (clip_norm, noise_multiplier, ...)."""
    found = {}
    for name, key in SETTINGS.items():
        row = vault.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            found[name] = float(row[0])
    return found


def set_privacy_settings(vault: Vault, **values: float | None) -> dict[str, float]:
    """Set (a number) or clear (None) privacy settings in one transaction; return them all."""
    unknown = set(values) - set(SETTINGS)
    if unknown:
        raise TesseraError(f"unknown privacy settings: {', '.join(sorted(unknown))}")
    with vault.transaction():
        for name, value in values.items():
            if value is None:
                vault.conn.execute("DELETE FROM meta WHERE key = ?", (SETTINGS[name],))
                continue
            if not value > 0 or (name == "delta" and value >= 1):
                raise TesseraError(f"{name} must be positive (delta below 1)")
            vault.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (SETTINGS[name], repr(float(value))),
            )
    return privacy_settings(vault)


# ---------------------------------------------------------------------------- rounds


def round_state(vault: Vault, request_id: str, rnd: int) -> str | None:
    """The state of one round of a task, None if this vault never started it."""
    row = vault.conn.execute(
        "SELECT state FROM task_rounds WHERE request_id = ? AND round = ?", (request_id, rnd)
    ).fetchone()
    return None if row is None else row[0]


def start_round(vault: Vault, request_id: str, rnd: int, consent_id: str) -> None:
    """Record an attempt at a round (state ``started``), in its own transaction."""
    with vault.transaction():
        vault.conn.execute(
            "INSERT INTO task_rounds (request_id, round, consent_id, state, attempts, started)"
            " VALUES (?, ?, ?, 'started', 1, ?) ON CONFLICT (request_id, round) DO UPDATE"
            " SET state = 'started', attempts = attempts + 1, started = excluded.started",
            (request_id, rnd, consent_id, time.time()),
        )


def set_round(vault: Vault, request_id: str, rnd: int, **fields: Any) -> None:
    """Update fields of one task_rounds row (inside the caller's transaction)."""
    assignments = ", ".join(f"{name} = ?" for name in fields)
    vault.conn.execute(
        f"UPDATE task_rounds SET {assignments} WHERE request_id = ? AND round = ?",
        (*fields.values(), request_id, rnd),
    )


def task_rounds(vault: Vault) -> list[dict[str, Any]]:
    """Every round this vault worked on, newest first."""
    rows = vault.conn.execute(
        "SELECT t.request_id, t.round, t.state, t.attempts, t.rows, t.examples, t.epsilon,"
        " t.receipt_id, t.error, t.finished, o.tries FROM task_rounds t LEFT JOIN outbox o"
        " ON o.request_id = t.request_id AND o.round = t.round"
        " ORDER BY t.started DESC, t.request_id, t.round DESC"
    ).fetchall()
    keys = (
        "request", "round", "state", "attempts", "rows", "examples", "epsilon", "receipt",
        "detail", "finished", "queued_tries",
    )  # fmt: skip
    out = [dict(zip(keys, row, strict=True)) for row in rows]
    for item in out:
        item["finished"] = iso_utc(item["finished"])
    return out


# ---------------------------------------------------------------------------- consents


def consent_delivered(vault: Vault, consent_id: str) -> bool:
    """Whether the exchange has recorded this consent."""
    row = vault.conn.execute("SELECT sent FROM consents WHERE id = ?", (consent_id,)).fetchone()
    return bool(row and row[0])


def undelivered_decisions(vault: Vault) -> list[tuple[str, str, str, bool, str | None]]:
    """(consent id, request id, consent JWS, sent, revocation JWS or None) for each consent or
    revocation the exchange has not had yet."""
    rows = vault.conn.execute(
        "SELECT id, request_id, jws, sent, revocation FROM consents"
        " WHERE (sent = 0 AND revoked IS NULL) OR (revoked IS NOT NULL AND revocation_sent = 0)"
    ).fetchall()
    return [(cid, rid, jws, bool(sent), revocation) for cid, rid, jws, sent, revocation in rows]


def mark_delivered(vault: Vault, consent_id: str, column: str) -> None:
    """Record that the consent (``sent``) or its revocation (``revocation_sent``) arrived."""
    if column not in DELIVERY_COLUMNS:
        raise ValueError(f"not a delivery flag: {column!r}")
    with vault.transaction():
        vault.conn.execute(f"UPDATE consents SET {column} = 1 WHERE id = ?", (consent_id,))


def consent_privacy(vault: Vault, consent_id: str) -> tuple[dict[str, Any] | None, float | None]:
    """(the stored privacy ledger state or None, the consent's epsilon budget or None)."""
    row = vault.conn.execute(
        "SELECT privacy, epsilon_budget FROM consents WHERE id = ?", (consent_id,)
    ).fetchone()
    if row is None:
        return None, None
    return (None if row[0] is None else json.loads(row[0])), row[1]


def save_consent_privacy(vault: Vault, consent_id: str, state: dict[str, Any]) -> None:
    """Store a consent's privacy ledger state (inside the caller's transaction)."""
    vault.conn.execute(
        "UPDATE consents SET privacy = ? WHERE id = ?", (json.dumps(state), consent_id)
    )


# ---------------------------------------------------------------------------- outbox


def queue_update(vault: Vault, request_id: str, rnd: int, update: str) -> None:
    """Put a signed update in the outbox (inside the caller's transaction)."""
    vault.conn.execute(
        "INSERT OR REPLACE INTO outbox (request_id, round, update_jws, created)"
        " VALUES (?, ?, ?, ?)",
        (request_id, rnd, update, time.time()),
    )


def queued_updates(vault: Vault) -> list[tuple[str, int, str, float | None]]:
    """(request id, round, update JWS, when its consent was revoked or None), oldest first."""
    return vault.conn.execute(
        "SELECT o.request_id, o.round, o.update_jws, c.revoked FROM outbox o"
        " JOIN task_rounds t ON t.request_id = o.request_id AND t.round = o.round"
        " JOIN consents c ON c.id = t.consent_id ORDER BY o.created"
    ).fetchall()


def outbox_size(vault: Vault) -> int:
    """How many updates wait in the outbox."""
    return int(vault.conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def note_retry(vault: Vault, request_id: str, rnd: int, error: str) -> None:
    """Count one more failed try of a queued update, in its own transaction."""
    with vault.transaction():
        vault.conn.execute(
            "UPDATE outbox SET tries = tries + 1, last_error = ?"
            " WHERE request_id = ? AND round = ?",
            (error, request_id, rnd),
        )


def drop_update(vault: Vault, request_id: str, rnd: int) -> None:
    """Remove an update from the outbox (inside the caller's transaction)."""
    vault.conn.execute("DELETE FROM outbox WHERE request_id = ? AND round = ?", (request_id, rnd))
