"""The exchange's routes for organizations: post a request, watch its rounds, fetch the model."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import Response

from agents.exchange import check_training_request, parse_time
from agents.exchange.errors import Refused
from agents.exchange.service import ExchangeService
from agents.exchange.signed_calls import (
    POST_REQUEST_LIMIT,
    Caller,
    CallGate,
    body_schema,
    field,
    verified_credential,
)
from agents.package import package_address, read_package
from identity.keys import did_for


def add_org_routes(app: FastAPI, service: ExchangeService, gate: CallGate) -> None:
    """Add the organization routes to ``app``."""
    store, clock, signed = service.store, service.clock, gate.signed

    @app.post(
        "/v1/requests",
        summary="Post a signed training request with its task package",
        openapi_extra=body_schema(
            {"request": "TrainingRequest VC-JWT", "package": "base64 of the .tpkg bytes"},
            {"reward_key": "the organization's JWK, for signing reward receipts"},
        ),
    )
    def post_request(caller: Caller = signed(POST_REQUEST_LIMIT, org=True)) -> dict[str, Any]:
        data = caller.json()
        token = field(data, "request")
        signer, payload = verified_credential(token, "TrainingRequest", "request")
        if signer != payload.get("issuer"):
            raise Refused("request is not signed by its issuer", 400)
        if signer != caller.did:
            raise Refused("request is issued by another organization than the caller", 403)
        check_training_request(payload)
        try:
            package = base64.b64decode(field(data, "package"), validate=True)
        except (binascii.Error, ValueError):
            raise Refused("package is not valid base64", 400) from None
        if package_address(package) != payload["package"]:
            raise Refused(
                "package hash mismatch: the bytes are not the package the request names", 400
            )
        task = read_package(package)
        if task.task["features"]["recipe"] != payload["recipe"]:
            raise Refused("the request's recipe differs from the package's", 400)
        if task.task["label"]["field"] != payload["label"]:
            raise Refused("the request's label differs from the package's", 400)
        key = data.get("reward_key")
        if key is not None:
            if not isinstance(key, str) or _did_of(key) != caller.did:
                raise Refused("reward_key is not the calling organization's key", 400)
            store.set_org_key(caller.did, key)
        with store.db.transaction(write=False) as tx:
            if store.org_key(tx, caller.did) is None:
                raise Refused("send reward_key: the exchange signs receipts with it", 400)
        spec = [{"name": p["name"], "shape": p["shape"]} for p in task.task["params"]]
        initial = np.concatenate([task.params[p["name"]].ravel() for p in spec]).astype("<f4")
        expires = parse_time(payload["expires"], "expires").timestamp()
        store.add_request(payload, token, package, spec, initial.tobytes(), expires, clock())
        return {"id": payload["id"], "package": payload["package"]}

    @app.get("/v1/requests/{request_id}/status", summary="Round status (issuer only)")
    def status(
        request_id: str, background: BackgroundTasks, caller: Caller = signed(0)
    ) -> dict[str, Any]:
        info = service.issuer_only(caller, request_id)
        background.add_task(service.advance, request_id)
        rounds = store.rounds.round_status(request_id)
        return {
            "id": request_id,
            **service.round_view(info),
            "strategy": info["payload"]["aggregation"]["strategy"],
            "received": sum(r["accepted"] + r["rejected"] for r in rounds),
            "accepted": sum(r["accepted"] for r in rounds),
            "rejected": sum(r["rejected"] for r in rounds),
            "participants": sorted({v for r in rounds for v in r["participants"]}),
            "per_round": rounds,
        }

    @app.get("/v1/requests/{request_id}/model", summary="Current global parameters (issuer)")
    def model(request_id: str, background: BackgroundTasks, caller: Caller = signed(0)) -> Response:
        info = service.issuer_only(caller, request_id)
        background.add_task(service.advance, request_id)
        return service.current_params(info)


def _did_of(jwk: str) -> str | None:
    try:
        return did_for(jwk)
    except Exception:  # noqa: BLE001 - didkit raises its own types on a malformed key
        return None
