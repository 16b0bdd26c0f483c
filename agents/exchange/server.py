"""The exchange's HTTP API (FastAPI): requests, packages, consents, rounds, updates, rewards.

Every route reads the raw body itself (bounded, before parsing) because the call signature
covers the body's hash; see :mod:`agents.exchange.signed_calls`, :mod:`agents.exchange.auth`
and the contract in :mod:`agents.exchange`. Routes are plain ``def`` functions, so FastAPI runs
them on its thread pool and the blocking database calls never stall the event loop. The routes
live in :mod:`agents.exchange.org_routes` and :mod:`agents.exchange.vault_routes`; aggregation
of due rounds in :mod:`agents.exchange.service`. This module assembles them and maps errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agents.exchange.auth import AuthRefused
from agents.exchange.errors import Refused
from agents.exchange.org_routes import add_org_routes
from agents.exchange.rewards import SignerMissing
from agents.exchange.service import ExchangeService
from agents.exchange.signed_calls import CallGate
from agents.exchange.store import Store
from agents.exchange.vault_routes import add_vault_routes
from vault.errors import TesseraError


def create_app(
    db_url: str, *, secret: bytes | None = None, clock: Callable[[], float] = time.time
) -> FastAPI:
    """The exchange app over the database at ``db_url``; ``secret`` wraps organization keys."""
    store = Store(db_url, secret)
    service = ExchangeService(store, clock)
    app = FastAPI(title="Tessera exchange", version="1")
    app.state.store = store
    app.state.aggregations = service.aggregations  # this process's timings, for benchmarks
    _add_error_handlers(app)
    gate = CallGate(store, clock)
    add_org_routes(app, service, gate)
    add_vault_routes(app, service, gate)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Answer every refusal as ``{"error": message}`` with its HTTP status."""

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
