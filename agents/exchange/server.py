"""The exchange's HTTP API (FastAPI): requests, packages, consents, rounds, updates, rewards.

Every route reads the raw body itself (bounded, before parsing) because the call signature
covers the body's hash; see :mod:`agents.exchange.auth` and the contract in
:mod:`agents.exchange`. Routes are plain ``def`` functions, so FastAPI runs them on its thread
pool and the blocking database calls never stall the event loop. Aggregation is a background
task (FastAPI ``BackgroundTasks``, run after the answer is sent) scheduled by every update and
every round/status/model fetch; it starts only when the round is due (enough updates, or the
deadline passed) and a claim in the database makes sure only one runs, even across processes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from agents.exchange import (
    MessageRefused,
    check_consent,
    check_revocation,
    check_training_request,
    check_update_fields,
    decode_delta,
    format_time,
    parse_time,
    update_norm,
)
from agents.exchange.auth import HEADER_DID, AuthRefused, precheck_call, verify_call
from agents.exchange.errors import Refused
from agents.exchange.rewards import SignerMissing
from agents.exchange.store import Store
from agents.exchange.strategies import RoundInputs, strategy_for
from agents.package import package_address, read_package
from identity.keys import did_for, jws_verify
from vault.errors import TesseraError, VerificationFailed

log = logging.getLogger("tessera.exchange")

MIB = 1024**2
JSON_LIMIT = MIB
PACKAGE_LIMIT = 256 * MIB
# base64 of the package inside JSON, plus the request JWS and the key
POST_REQUEST_LIMIT = JSON_LIMIT + 4 * math.ceil(PACKAGE_LIMIT / 3)
NPZ = "application/octet-stream"


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


def _field(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise Refused(f"the body needs a {key!r} string", 400)
    return value


def _body(required: dict[str, str], optional: dict[str, str] | None = None) -> dict[str, Any]:
    """OpenAPI request body for a route that reads its JSON body itself (it is signed)."""
    fields = {**required, **(optional or {})}
    schema = {
        "type": "object",
        "required": list(required),
        "properties": {k: {"type": "string", "description": v} for k, v in fields.items()},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def params_npz(spec: list[dict[str, Any]], flat: np.ndarray) -> bytes:
    """Flat float32 parameters as .npz bytes, one array per task.json parameter."""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for entry in spec:
        size = math.prod(entry["shape"])
        arrays[entry["name"]] = flat[offset : offset + size].reshape(entry["shape"])
        offset += size
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def create_app(
    db_url: str, *, secret: bytes | None = None, clock: Callable[[], float] = time.time
) -> FastAPI:
    """The exchange app over the database at ``db_url``; ``secret`` wraps organization keys."""
    store = Store(db_url, secret)
    app = FastAPI(title="Tessera exchange", version="1")
    app.state.store = store
    app.state.aggregations = []  # this process's aggregation timings, for benchmarks
    specs: dict[str, dict[str, Any]] = {}  # requests never change once posted

    def request_info(request_id: str) -> dict[str, Any]:
        """The immutable parts of a request (round state is always read fresh)."""
        if request_id not in specs:
            with store.db.transaction(write=False) as tx:
                row = store.request(tx, request_id)
            info = {k: row[k] for k in ("id", "issuer", "jws", "payload", "package", "spec")}
            info["size"] = sum(math.prod(e["shape"]) for e in row["spec"])
            specs[request_id] = info
        return specs[request_id]

    def update_limit(request: Request) -> int:
        # base64 twice (the array, then the JWS payload) plus JSON and header overhead
        size = request_info(request.path_params["request_id"])["size"]
        return JSON_LIMIT + math.ceil(4 * size * 16 / 9)

    def signed(limit: int | Callable[[Request], int], org: bool = False) -> Any:
        async def dependency(request: Request) -> Caller:
            # refuse what cannot pass before reading a body of up to hundreds of megabytes:
            # unsigned or stale calls, and strangers on organization routes
            precheck_call(request.headers, now=clock())
            if org:
                await run_in_threadpool(org_only, request.headers.get(HEADER_DID, ""))
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
            return await run_in_threadpool(_verify, request, target, bytes(body))

        return Depends(dependency)

    def _verify(request: Request, target: str, body: bytes) -> Caller:
        now = clock()
        digest = hashlib.sha256(body).hexdigest()
        call = verify_call(request.headers, request.method, target, digest, now=now)
        if not store.remember_nonce(call.did, call.nonce, now):
            raise AuthRefused("replayed call: this nonce was already used")
        return Caller(call.did, body, request.headers.get("content-type", ""))

    def org_only(did: str) -> None:
        if store.organization(did) is None:
            raise Refused("this organization is not admitted on this exchange", 403)

    def issuer_only(caller: Caller, request_id: str) -> dict[str, Any]:
        info = request_info(request_id)
        if caller.did != info["issuer"]:
            raise Refused("only the issuing organization may see this", 403)
        return info

    def advance(request_id: str) -> None:
        """Aggregate the open round if it is due (enough updates, or the deadline passed).

        Runs as a background task after the answer is sent, so no caller waits for it. A
        failure is logged, not raised: every update is already stored, the claim on the round
        is released, and the next update or round fetch tries again.
        """
        try:
            aggregate_due_round(request_id)
        except Exception:
            log.exception("aggregation of %s failed; it is retried on the next call", request_id)

    def aggregate_due_round(request_id: str) -> None:
        work = store.rounds.begin_aggregation(request_id, clock())
        if work is None:
            return
        started = time.perf_counter()
        try:
            info = request_info(request_id)
            strategy = strategy_for(info["payload"])
            inputs = RoundInputs(examples=work["examples"], norms=work["norms"])
            chunks = store.rounds.round_chunks(request_id, work["round"], work["ids"], info["size"])
            delta = strategy.aggregate(chunks, inputs, info["size"])
            params = np.frombuffer(store.params(request_id, work["round"]), dtype="<f4") + delta
            seconds = time.perf_counter() - started
            store.rounds.finish_aggregation(
                request_id, work["round"], params.tobytes(), clock(), seconds
            )
        except BaseException:
            store.rounds.abort_aggregation(request_id)
            raise
        started = time.perf_counter()
        store.rounds.drop_chunks(request_id, work["round"], info["size"])
        cleanup = time.perf_counter() - started
        app.state.aggregations.append(
            {
                "request": request_id,
                "round": work["round"],
                "updates": len(work["ids"]),
                "seconds": seconds,
                "cleanup_seconds": cleanup,
            }
        )
        log.info(
            "request %s round %d: %d updates aggregated in %.2f s (cleanup %.2f s)",
            request_id,
            work["round"],
            len(work["ids"]),
            seconds,
            cleanup,
        )

    # -------------------------------------------------------------------- errors

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(Refused)
    def _refused(_: Request, exc: Refused) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(AuthRefused)
    def _auth(_: Request, exc: AuthRefused) -> JSONResponse:
        return error(401, str(exc))

    @app.exception_handler(SignerMissing)
    def _signer(_: Request, exc: SignerMissing) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(TesseraError)
    def _tessera(_: Request, exc: TesseraError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "malformed call: " + "; ".join(str(e.get("msg")) for e in exc.errors()))

    # ------------------------------------------------------------ organizations

    @app.post(
        "/v1/requests",
        summary="Post a signed training request with its task package",
        openapi_extra=_body(
            {"request": "TrainingRequest JWS", "package": "base64 of the .tpkg bytes"},
            {"reward_key": "the organization's JWK, for signing reward receipts"},
        ),
    )
    def post_request(caller: Caller = signed(POST_REQUEST_LIMIT, org=True)) -> dict[str, Any]:
        data = caller.json()
        token = _field(data, "request")
        try:
            signer, payload = jws_verify(token)
        except VerificationFailed as exc:
            raise Refused(f"request signature does not verify ({exc})", 400) from None
        if not isinstance(payload, dict) or signer != payload.get("issuer"):
            raise Refused("request is not signed by its issuer", 400)
        if signer != caller.did:
            raise Refused("request is issued by another organization than the caller", 403)
        check_training_request(payload)
        try:
            package = base64.b64decode(_field(data, "package"), validate=True)
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
        info = issuer_only(caller, request_id)
        background.add_task(advance, request_id)
        rounds = store.rounds.round_status(request_id)
        return {
            "id": request_id,
            **_round_view(store, info, clock()),
            "strategy": info["payload"]["aggregation"]["strategy"],
            "received": sum(r["accepted"] + r["rejected"] for r in rounds),
            "accepted": sum(r["accepted"] for r in rounds),
            "rejected": sum(r["rejected"] for r in rounds),
            "participants": sorted({v for r in rounds for v in r["participants"]}),
            "per_round": rounds,
        }

    @app.get("/v1/requests/{request_id}/model", summary="Current global parameters (issuer)")
    def model(request_id: str, background: BackgroundTasks, caller: Caller = signed(0)) -> Response:
        info = issuer_only(caller, request_id)
        background.add_task(advance, request_id)
        round_index = _round_view(store, info, clock())["round"]
        flat = np.frombuffer(store.params(request_id, round_index), dtype="<f4")
        return Response(params_npz(info["spec"], flat), media_type=NPZ)

    # ------------------------------------------------------------------- vaults

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
        openapi_extra=_body({"consent": "ConsentReceipt JWS"}),
    )
    def consent(caller: Caller = signed(JSON_LIMIT)) -> dict[str, Any]:
        token = _field(caller.json(), "consent")
        signer, payload = _verified(token, "consent")
        check_consent(payload)
        if signer != payload["subject"]:
            raise Refused("consent is not signed by its subject", 400)
        if caller.did != signer:
            raise Refused("a consent can only be sent by its subject", 403)
        info = request_info(payload["request"])
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
        openapi_extra=_body({"revocation": "ConsentRevocation JWS"}),
    )
    def revocation(caller: Caller = signed(JSON_LIMIT)) -> dict[str, Any]:
        token = _field(caller.json(), "revocation")
        signer, payload = _verified(token, "revocation")
        check_revocation(payload)
        if signer != payload["subject"] or caller.did != signer:
            raise Refused("a revocation must be signed and sent by the consent's subject", 403)
        store.revoke(payload["consent"], signer, token)
        return {"revoked": True, "consent": payload["consent"]}

    @app.get("/v1/requests/{request_id}/round", summary="The open round and its deadline")
    def current_round(
        request_id: str, background: BackgroundTasks, caller: Caller = signed(0)
    ) -> dict[str, Any]:
        info = request_info(request_id)
        background.add_task(advance, request_id)
        return _round_view(store, info, clock())

    @app.get("/v1/requests/{request_id}/round/params", summary="The open round's parameters")
    def round_params(
        request_id: str, background: BackgroundTasks, caller: Caller = signed(0)
    ) -> Response:
        info = request_info(request_id)
        background.add_task(advance, request_id)
        with store.db.transaction(write=False) as tx:
            allowed = caller.did == info["issuer"] or store.has_consent(
                tx, request_id, caller.did, clock()
            )
        if not allowed:
            raise Refused("no active consent from this vault for this request", 403)
        round_index = _round_view(store, info, clock())["round"]
        flat = np.frombuffer(store.params(request_id, round_index), dtype="<f4")
        return Response(params_npz(info["spec"], flat), media_type=NPZ)

    @app.post(
        "/v1/requests/{request_id}/updates",
        summary="Submit a signed model update (JSON, or the bare JWS as application/jose)",
        openapi_extra=_body({"update": "the signed round result JWS"}),
    )
    def submit_update(
        request_id: str, background: BackgroundTasks, caller: Caller = signed(update_limit)
    ) -> dict[str, Any]:
        info = request_info(request_id)
        token = caller.jose() or _field(caller.json(), "update")
        signer, payload = _verified(token, "update")
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
        background.add_task(advance, request_id)
        return answer

    @app.get("/v1/rewards", summary="The caller's reward receipts, by organization and seq")
    def rewards(caller: Caller = signed(0)) -> dict[str, list[str]]:
        return {"receipts": store.receipts_for(caller.did)}

    return app


def _did_of(jwk: str) -> str | None:
    try:
        return did_for(jwk)
    except Exception:  # noqa: BLE001 - didkit raises its own types on a malformed key
        return None


def _verified(token: str, what: str) -> tuple[str, Any]:
    try:
        return jws_verify(token)
    except VerificationFailed as exc:
        raise Refused(f"{what} signature does not verify ({exc})", 400) from None


def _round_view(store: Store, info: dict[str, Any], now: float) -> dict[str, Any]:
    with store.db.transaction(write=False) as tx:
        row = store.request(tx, info["id"])
    terms = info["payload"]["aggregation"]
    closed = row["closed"] or row["expires"] <= now
    deadline = None if closed else format_time(row["round_opened"] + terms["round_seconds"])
    return {
        "round": row["round"],
        "rounds": info["payload"]["rounds"],
        "deadline": deadline,
        "closed": bool(closed),
    }
