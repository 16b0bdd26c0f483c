"""The vault and its exchange: the address it remembers, its client, fetching requests.

One implementation for both faces (``tessera requests sync`` and the GUI's sync): the
exchange address is the vault's ``exchange.url`` meta value ($TESSERA_EXCHANGE overrides it),
every request is received through ``agents.request_check`` exactly as from a request file, and
decisions and revocations not yet delivered are sent along.

Offline request file, for requests passed on by mail or USB instead of an exchange: UTF-8 JSON
``{"format": "tessera-request-file/1", "request": "<the request credential (VC-JWT)>", "package":
"<base64 of the .tpkg task package>"}`` (``format`` may be left out).

The address functions are cheap to import (the GUI reads the address on every settings visit);
the exchange client and the package check load when a client is made or a sync runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from identity.vc_jwt import ID_PREFIX
from vault.consent import known_request
from vault.errors import ModelRefused, TesseraError, VerificationFailed

if TYPE_CHECKING:
    from agents.exchange.client import ExchangeClient
    from vault.core import Vault

EXCHANGE_KEY = "exchange.url"
REQUEST_FILE_FORMAT = "tessera-request-file/1"


class ExchangeNotSet(TesseraError):
    """No exchange address was given, set in the environment, or remembered by the vault."""


def exchange_url(vault: Vault) -> str | None:
    """The exchange this vault talks to: $TESSERA_EXCHANGE, else the remembered one."""
    row = vault.conn.execute("SELECT value FROM meta WHERE key = ?", (EXCHANGE_KEY,)).fetchone()
    return os.environ.get("TESSERA_EXCHANGE") or (row[0] if row else None)


def set_exchange_url(vault: Vault, url: str | None) -> None:
    """Remember (or forget, with None or '') the exchange address."""
    with vault.transaction():
        if url:
            vault.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (EXCHANGE_KEY, url)
            )
        else:
            vault.conn.execute("DELETE FROM meta WHERE key = ?", (EXCHANGE_KEY,))


def client_for(vault: Vault, url: str | None = None, **options: Any) -> ExchangeClient:
    """A client acting as this vault's DID, for ``url`` or the vault's exchange.

    ``options`` go to :class:`ExchangeClient` (timeout, retries, backoff). Raises
    ExchangeNotSet when there is no address.
    """
    from agents.exchange.client import ExchangeClient

    url = url or exchange_url(vault)
    if not url:
        raise ExchangeNotSet("no exchange address is set")
    return ExchangeClient(url, vault.signing_key(), **options)


def claimed_id(token: str) -> str:
    """The id a request credential claims, read without verifying (for naming a refused one)."""
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return str(claims.get("jti")).removeprefix(ID_PREFIX)[:60]
    except (ValueError, IndexError, AttributeError):
        return "?"


def sync_requests(vault: Vault, client: ExchangeClient | None = None) -> dict[str, list[dict]]:
    """Fetch open requests and packages into the inbox; deliver pending decisions.

    Returns {"new": [...], "known": [...], "refused": [...], "delivered": [...]}: new items
    carry ``id`` and ``organization``, known ones ``id``, refused ones ``id`` (as claimed) and
    ``reason``, delivered ones the outbox's round report (``request``, ``state``, ``detail``).
    """
    from agents.outbox import deliver_decisions
    from agents.request_check import receive_request

    client = client_for(vault) if client is None else client
    found: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("new", "known", "refused", "delivered")
    }
    for item in client.open_requests():
        try:
            known = known_request(vault, item["request"])
            if known is not None:
                found["known"].append({"id": known.id})
                continue
            package = client.package(item["package"])
            request, _ = receive_request(vault, item["request"], package, client.base_url)
            found["new"].append({"id": request.id, "organization": request.organization})
        except (VerificationFailed, ModelRefused) as exc:
            found["refused"].append({"id": claimed_id(item["request"]), "reason": str(exc)})
    found["delivered"] = [r.to_dict() for r in deliver_decisions(vault, client)]
    return found


def read_request_file(path: Path) -> tuple[str, bytes]:
    """(request token, package bytes) from an offline request file; VerificationFailed if it is
    not one."""
    try:
        data = json.loads(path.read_text("utf-8"))
        token, package = data["request"], base64.b64decode(data["package"], validate=True)
        if data.get("format", REQUEST_FILE_FORMAT) != REQUEST_FILE_FORMAT or not isinstance(
            token, str
        ):
            raise ValueError("unknown format")
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise VerificationFailed(f"{path}: not a request file ({exc})") from None
    return token, package
