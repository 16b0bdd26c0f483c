"""The signed-call dependency of the exchange's routes: bounded body, signature, fresh nonce.

Every route reads the raw body itself (bounded, before parsing) because the call signature
covers the body's hash; see :mod:`agents.exchange.auth` for the signature itself.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from agents.exchange.auth import HEADER_DID, AuthRefused, precheck_call, verify_call
from agents.exchange.errors import Refused
from agents.exchange.store import Store
from identity.keys import jws_verify
from identity.vc_jwt import verify_credential
from vault.errors import VerificationFailed

MIB = 1024**2
JSON_LIMIT = MIB
PACKAGE_LIMIT = 256 * MIB
# base64 of the package inside JSON, plus the request credential and the key
POST_REQUEST_LIMIT = JSON_LIMIT + 4 * math.ceil(PACKAGE_LIMIT / 3)


@dataclass(frozen=True)
class Caller:
    """The verified DID of a call and its raw body."""

    did: str
    body: bytes
    content_type: str = ""

    def jose(self) -> str | None:
        """The body as a bare compact JWS when sent as application/jose, else None."""
        if not self.content_type.startswith("application/jose"):
            return None
        try:
            return self.body.decode("ascii")
        except UnicodeDecodeError:
            raise Refused("the JWS body is not ASCII", 400) from None

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; 400 otherwise."""
        try:
            data = json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            raise Refused("the body is not JSON", 400) from None
        if not isinstance(data, dict):
            raise Refused("the body must be a JSON object", 400)
        return data


def field(data: dict[str, Any], key: str) -> str:
    """``data[key]`` as a non-empty string; 400 otherwise."""
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise Refused(f"the body needs a {key!r} string", 400)
    return value


def verified(token: str, what: str) -> tuple[str, Any]:
    """(signer, payload) of a JWS; 400 naming ``what`` if the signature does not verify."""
    try:
        return jws_verify(token)
    except VerificationFailed as exc:
        raise Refused(f"{what} signature does not verify ({exc})", 400) from None


def verified_credential(token: str, kind: str, what: str) -> tuple[str, dict[str, Any]]:
    """(issuer, flat payload) of a VC-JWT of ``kind``; 400 naming ``what`` if it does not verify."""
    try:
        return verify_credential(token, kind)
    except VerificationFailed as exc:
        raise Refused(f"{what} does not verify as a {kind} credential ({exc})", 400) from None


def body_schema(required: dict[str, str], optional: dict[str, str] | None = None) -> dict[str, Any]:
    """OpenAPI request body for a route that reads its JSON body itself (it is signed)."""
    fields = {**required, **(optional or {})}
    schema = {
        "type": "object",
        "required": list(required),
        "properties": {k: {"type": "string", "description": v} for k, v in fields.items()},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class CallGate:
    """Makes the ``signed(limit)`` route dependency that yields a verified :class:`Caller`."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock

    def signed(self, limit: int | Callable[[Request], int], org: bool = False) -> Any:
        """A dependency: the call's body (at most ``limit`` bytes) from a verified signer.

        ``org`` admits only organizations admitted on this exchange.
        """
        clock = self.clock

        async def dependency(request: Request) -> Caller:
            # refuse what cannot pass before reading a body of up to hundreds of megabytes:
            # unsigned or stale calls, and strangers on organization routes
            precheck_call(request.headers, now=clock())
            if org:
                await run_in_threadpool(self.org_only, request.headers.get(HEADER_DID, ""))
            cap = limit if isinstance(limit, int) else await run_in_threadpool(limit, request)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise Refused(f"the body is over the limit of {cap} bytes", 413)
            body = bytearray()
            async for part in request.stream():
                body += part
                if len(body) > cap:
                    raise Refused(f"the body is over the limit of {cap} bytes", 413)
            raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
            target = raw_path.decode("latin-1")
            if request.scope.get("query_string"):
                target += "?" + request.scope["query_string"].decode("latin-1")
            return await run_in_threadpool(self._verify, request, target, bytes(body))

        return Depends(dependency)

    def _verify(self, request: Request, target: str, body: bytes) -> Caller:
        now = self.clock()
        digest = hashlib.sha256(body).hexdigest()
        call = verify_call(request.headers, request.method, target, digest, now=now)
        if not self.store.remember_nonce(call.did, call.nonce, now):
            raise AuthRefused("replayed call: this nonce was already used")
        return Caller(call.did, body, request.headers.get("content-type", ""))

    def org_only(self, did: str) -> None:
        """403 unless ``did`` is an admitted organization."""
        if self.store.organization(did) is None:
            raise Refused("this organization is not admitted on this exchange", 403)
