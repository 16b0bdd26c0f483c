"""The exchange as the GUI reaches it: its address, and fetching requests into the inbox.

Both mirror `tessera requests sync` (app/commands/requests_cmds.py) call for call, so the two
faces behave the same: the address is the vault's ``exchange.url`` meta value (the one the CLI
remembers), every request is verified by ``vault.inbox`` exactly as from the command line, and
decisions and revocations not yet delivered are sent along. These run in the worker.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vault.core import Vault

EXCHANGE_KEY = "exchange.url"  # the CLI's key (app/commands/requests_cmds.py)


def exchange_url(vault: Vault) -> str | None:
    """The exchange this vault talks to: $TESSERA_EXCHANGE, else the remembered one."""
    row = vault.conn.execute("SELECT value FROM meta WHERE key = ?", (EXCHANGE_KEY,)).fetchone()
    return os.environ.get("TESSERA_EXCHANGE") or (row[0] if row else None)


def set_exchange_url(vault: Vault, url: str | None) -> None:
    """Remember (or forget, with None or '') the exchange address, as the CLI does."""
    with vault.transaction():
        if url:
            vault.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (EXCHANGE_KEY, url)
            )
        else:
            vault.conn.execute("DELETE FROM meta WHERE key = ?", (EXCHANGE_KEY,))


def client_for(vault: Vault) -> Any:
    """An exchange client acting as this vault's DID; VaultLocked-style error if none is set."""
    from agents.exchange.client import ExchangeClient
    from vault.errors import TesseraError

    url = exchange_url(vault)
    if not url:
        raise TesseraError("no exchange address is set (Identity & settings)")
    return ExchangeClient(url, vault.signing_key(), retries=1, backoff=0.2)


def sync_requests(vault: Vault) -> dict[str, list[dict[str, Any]]]:
    """Fetch open requests and packages into the inbox; deliver pending decisions.

    Returns {"new": [...], "known": [...], "refused": [...], "delivered": [...]}, each item
    with ``id`` (and ``organization`` or ``reason``).
    """
    from agents.outbox import deliver_decisions
    from agents.request_check import receive_request
    from vault import consent as vc
    from vault.errors import ModelRefused, VerificationFailed

    client = client_for(vault)
    found: dict[str, list[dict[str, Any]]] = {
        "new": [],
        "known": [],
        "refused": [],
        "delivered": [],
    }
    for item in client.open_requests():
        try:
            known = vc.known_request(vault, item["request"])
            if known is not None:
                found["known"].append({"id": known.id})
                continue
            package = client.package(item["package"])
            request, _ = receive_request(vault, item["request"], package, client.base_url)
            found["new"].append({"id": request.id, "organization": request.organization})
        except (VerificationFailed, ModelRefused) as exc:
            found["refused"].append({"id": "?", "reason": str(exc)})
    found["delivered"] = [r.to_dict() for r in deliver_decisions(vault, client)]
    return found
