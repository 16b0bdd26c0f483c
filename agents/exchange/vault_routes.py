"""The exchange's routes for vaults: requests, packages, consents, rounds, updates, rewards."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import Response

from agents.exchange import (
    MessageRefused,
    check_consent,
    check_revocation,
    check_update_fields,
    decode_delta,
    parse_time,
    update_norm,
)
from agents.exchange.errors import Refused
from agents.exchange.service import NPZ, ExchangeService
from agents.exchange.signed_calls import (
    JSON_LIMIT,
    Caller,
    CallGate,
    body_schema,
    field,
    verified,
    verified_credential,
)


def _signed_message(
    caller: Caller, key: str, kind: str, check: Callable[[dict[str, Any]], Any]
) -> tuple[str, str, dict[str, Any]]:
    """(token, issuer, payload) of the ``kind`` credential under ``key``, checked by ``check``."""
    token = field(caller.json(), key)
    signer, payload = verified_credential(token, kind, key)
    check(payload)
    return token, signer, payload


def add_vault_routes(app: FastAPI, service: ExchangeService, gate: CallGate) -> None:
    """Add the vault routes to ``app``."""
    store, clock, signed = service.store, service.clock, gate.signed

    def update_limit(request: Request) -> int:
        # base64 twice (the array, then the JWS payload) plus JSON and header overhead
        size = service.request_info(request.path_params["request_id"])["size"]
        return JSON_LIMIT + math.ceil(4 * size * 16 / 9)

    @app.get("/v1/requests", summary="Open training requests")
    def open_requests(caller: Caller = signed(0)) -> list[dict[str, str]]:
        return store.open_requests(clock())

    @app.get("/v1/packages/{address}", summary="A task package by its sha256 address")
    def package(address: str, caller: Caller = signed(0)) -> Response:
        data = store.package(address)
        if data is None:
            raise Refused(f"no package {address}", 404)
        return Response(data, media_type=NPZ)

    @app.post(
        "/v1/consents",
        summary="Record a consent receipt signed by its subject",
        openapi_extra=body_schema({"consent": "ConsentReceipt VC-JWT"}),
    )
    def consent(caller: Caller = signed(JSON_LIMIT)) -> dict[str, Any]:
        token, signer, payload = _signed_message(caller, "consent", "ConsentReceipt", check_consent)
        if signer != payload["subject"]:
            raise Refused("consent is not signed by its subject", 400)
        if caller.did != signer:
            raise Refused("a consent can only be sent by its subject", 403)
        info = service.request_info(payload["request"])
        if hashlib.sha256(info["jws"].encode()).hexdigest() != payload["request_hash"]:
            raise Refused("consent is for a different version of the request", 400)
        if payload["organization"] != info["issuer"]:
            raise Refused("consent names another organization than the request's", 400)
        extra = sorted(set(payload["datasets"]) - set(info["payload"]["datasets"]))
        if extra:
            raise Refused(f"consent covers datasets the request did not ask for: {extra}", 400)
        expires = parse_time(payload["expires"], "expires").timestamp()
        if expires <= clock():
            raise Refused("consent has already expired", 400)
        store.add_consent(payload, token, expires)
        return {"recorded": True, "id": payload["id"]}

    @app.post(
        "/v1/revocations",
        summary="Revoke a consent (signed by its subject)",
        openapi_extra=body_schema({"revocation": "ConsentRevocation VC-JWT"}),
    )
    def revocation(caller: Caller = signed(JSON_LIMIT)) -> dict[str, Any]:
        token, signer, payload = _signed_message(
            caller, "revocation", "ConsentRevocation", check_revocation
        )
        if signer != payload["subject"] or caller.did != signer:
            raise Refused("a revocation must be signed and sent by the consent's subject", 403)
        store.revoke(payload["consent"], signer, token)
        return {"revoked": True, "consent": payload["consent"]}

    @app.get("/v1/requests/{request_id}/round", summary="The open round and its deadline")
    def current_round(
        request_id: str, background: BackgroundTasks, caller: Caller = signed(0)
    ) -> dict[str, Any]:
        info = service.request_info(request_id)
        background.add_task(service.advance, request_id)
        return service.round_view(info)

    @app.get("/v1/requests/{request_id}/round/params", summary="The open round's parameters")
    def round_params(
        request_id: str, background: BackgroundTasks, caller: Caller = signed(0)
    ) -> Response:
        info = service.request_info(request_id)
        background.add_task(service.advance, request_id)
        with store.db.transaction(write=False) as tx:
            allowed = caller.did == info["issuer"] or store.has_consent(
                tx, request_id, caller.did, clock()
            )
        if not allowed:
            raise Refused("no active consent from this vault for this request", 403)
        return service.current_params(info)

    @app.post(
        "/v1/requests/{request_id}/updates",
        summary="Submit a signed model update (JSON, or the bare JWS as application/jose)",
        openapi_extra=body_schema({"update": "the signed round result JWS"}),
    )
    def submit_update(
        request_id: str, background: BackgroundTasks, caller: Caller = signed(update_limit)
    ) -> dict[str, Any]:
        info = service.request_info(request_id)
        token = caller.jose() or field(caller.json(), "update")
        signer, payload = verified(token, "update")
        if signer != caller.did:
            raise Refused("the update is signed by another DID than the caller", 403)
        # Ed25519 signatures are deterministic and unique per message: the signature
        # identifies the exact update without hashing megabytes again
        jws_hash = hashlib.sha256(f"{signer} {token.rpartition('.')[2]}".encode()).hexdigest()
        round_index = payload.get("round") if isinstance(payload, dict) else None
        round_index = round_index if isinstance(round_index, int) else -1
        try:
            examples, epsilon = check_update_fields(payload)
            if payload["request"] != request_id:
                raise MessageRefused("the update names another request")
            if payload["package"] != info["package"]:
                raise MessageRefused("the update is for another package")
            # cheap check first: strangers never get megabytes decoded or rows recorded
            problem = store.consent_problem(request_id, signer, payload["consent"], clock())
            if problem:
                raise Refused(problem, 403)
            flat = decode_delta(payload["delta"], info["spec"])
            norm = update_norm(flat)
            bound = info["payload"]["aggregation"]["max_update_norm"]
            if norm > bound:
                raise MessageRefused(f"update norm {norm:.6g} is over the limit of {bound:g}")
            answer = store.rounds.accept_update(
                {
                    "request": request_id,
                    "vault": signer,
                    "round": round_index,
                    "consent": payload["consent"],
                    "jws_hash": jws_hash,
                    "examples": examples,
                    "norm": norm,
                    "epsilon": epsilon,
                },
                flat,
                clock(),
            )
        except (MessageRefused, Refused) as exc:
            # kept for the organization's status view: verdicts on updates from vaults it
            # asked; not "busy, retry" (503) and not strangers or revoked consents (403)
            if getattr(exc, "status", 400) not in (403, 503):
                store.rounds.record_rejection(
                    request_id, round_index, signer, str(exc), jws_hash, clock()
                )
            raise
        background.add_task(service.advance, request_id)
        return answer

    @app.get("/v1/rewards", summary="The caller's reward receipts, by organization and seq")
    def rewards(caller: Caller = signed(0)) -> dict[str, list[str]]:
        return {"receipts": store.receipts_for(caller.did)}
