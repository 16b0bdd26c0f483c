"""The exchange client (``requests``): signed calls, retries with backoff, strict answers.

Connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff
(``backoff * 2**attempt`` seconds), each attempt freshly signed (a new nonce, so the exchange's
replay check never refuses a retry). After the last retry :class:`ExchangeUnavailable` is raised
and nothing is dropped: the caller still holds its update and can queue it. A 4xx answer is the
exchange's verdict and raises :class:`ExchangeError` with its reason, without retrying. An
answer that is not what the contract promises (not JSON, wrong shape, an unreadable .npz, a
package whose hash is not its address) also raises ExchangeError. Re-sending an identical
update is safe: the exchange answers it with the first receipt and counts it once.
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import requests

from agents.exchange.auth import sign_call
from agents.package import package_address
from identity.keys import did_for
from vault.errors import TesseraError

JSON_ANSWER_LIMIT = 64 * 1024**2
BYTES_ANSWER_LIMIT = 600 * 1024**2
_RETRY_STATUS = {429, 500, 502, 503, 504}


class ExchangeError(TesseraError):
    """The exchange refused a call (its reason is the message) or answered garbage."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ExchangeUnavailable(TesseraError):
    """The exchange could not be reached (or kept failing) after every retry."""


class ExchangeClient:
    """A signed-call client for one exchange, acting as the DID of ``jwk``."""

    def __init__(
        self,
        base_url: str,
        jwk: str,
        timeout: float = 10,
        retries: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.jwk = jwk
        self.did = did_for(jwk)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self.session = requests.Session()

    # ------------------------------------------------------------------ transport

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        limit: int = JSON_ANSWER_LIMIT,
        content_type: str = "application/json",
    ) -> bytes:
        if isinstance(body, bytes):
            data = body
        else:
            data = b"" if body is None else json.dumps(body).encode()
        failure = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            prepared = self.session.prepare_request(
                requests.Request(method, self.base_url + path, data=data or None)
            )
            if data:
                prepared.headers["Content-Type"] = content_type
            prepared.headers.update(sign_call(self.jwk, self.did, method, prepared.path_url, data))
            try:
                with self.session.send(prepared, timeout=self.timeout, stream=True) as answer:
                    content = _read(answer, limit)
                    status = answer.status_code
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = f"{type(exc).__name__}"
                continue
            except requests.RequestException as exc:
                raise ExchangeError(f"exchange answered badly: {exc}") from None
            if status in _RETRY_STATUS:
                failure = f"HTTP {status}: {_reason(content)}"
                continue
            if status >= 400:
                raise ExchangeError(f"exchange refused: {_reason(content)}", status)
            return content
        raise ExchangeUnavailable(
            f"exchange {self.base_url} unavailable after {self.retries + 1} attempts ({failure})"
        )

    def _json(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        content = self._call(method, path, body, content_type=content_type)
        try:
            return json.loads(content)
        except (UnicodeDecodeError, ValueError):
            raise ExchangeError(f"exchange answered {path} with something not JSON") from None

    # -------------------------------------------------------------- organizations

    def post_request(self, request_jws: str, package_bytes: bytes, send_key: bool = True) -> str:
        """Post a signed request with its package; return the request id.

        With ``send_key`` the organization's key goes along so the exchange can sign reward
        receipts on its behalf (the contract's "held by the exchange").
        """
        body = {"request": request_jws, "package": base64.b64encode(package_bytes).decode()}
        if send_key:
            body["reward_key"] = self.jwk
        answer = self._json("POST", "/v1/requests", body)
        return _expect(answer, {"id": str}, "post_request")["id"]

    def status(self, request_id: str) -> dict[str, Any]:
        """Round status of one of this organization's requests."""
        answer = self._json("GET", f"/v1/requests/{request_id}/status")
        return _expect(answer, {"round": int, "closed": bool, "per_round": list}, "status")

    def model(self, request_id: str) -> dict[str, np.ndarray]:
        """The current global parameters of one of this organization's requests."""
        return _npz(self._call("GET", f"/v1/requests/{request_id}/model", limit=BYTES_ANSWER_LIMIT))

    # ---------------------------------------------------------------------- vaults

    def open_requests(self) -> list[dict[str, str]]:
        """Open requests as ``{"request": jws, "package": address}``."""
        answer = self._json("GET", "/v1/requests")
        if not isinstance(answer, list):
            raise ExchangeError("exchange answered open requests with something not a list")
        return [_expect(item, {"request": str, "package": str}, "open_requests") for item in answer]

    def package(self, address: str) -> bytes:
        """A task package's bytes, checked against its address."""
        data = self._call("GET", f"/v1/packages/{address}", limit=BYTES_ANSWER_LIMIT)
        if package_address(data) != address:
            raise ExchangeError(f"exchange sent a package that does not hash to {address}")
        return data

    def send_consent(self, consent_jws: str) -> dict[str, Any]:
        """Record a consent receipt at the exchange."""
        answer = self._json("POST", "/v1/consents", {"consent": consent_jws})
        return _expect(answer, {"recorded": bool, "id": str}, "send_consent")

    def send_revocation(self, revocation_jws: str) -> dict[str, Any]:
        """Record a consent revocation at the exchange."""
        answer = self._json("POST", "/v1/revocations", {"revocation": revocation_jws})
        return _expect(answer, {"revoked": bool}, "send_revocation")

    def current_round(self, request_id: str) -> dict[str, Any]:
        """``{"round", "rounds", "deadline", "closed"}`` of a request."""
        answer = self._json("GET", f"/v1/requests/{request_id}/round")
        _expect(answer, {"round": int, "closed": bool}, "current_round")
        if answer.get("deadline") is not None and not isinstance(answer["deadline"], str):
            raise ExchangeError("exchange answered current_round with a malformed deadline")
        return answer

    def round_params(self, request_id: str) -> dict[str, np.ndarray]:
        """The open round's global parameters."""
        path = f"/v1/requests/{request_id}/round/params"
        return _npz(self._call("GET", path, limit=BYTES_ANSWER_LIMIT))

    def submit_update(self, request_id: str, update_jws: str) -> dict[str, Any]:
        """Submit a signed update; ``{"accepted": True, "receipt": jws or None, "round"}``."""
        # the bare JWS (application/jose) spares both sides a JSON pass over megabytes
        path = f"/v1/requests/{request_id}/updates"
        answer = self._json("POST", path, update_jws.encode("ascii"), "application/jose")
        _expect(answer, {"accepted": bool}, "submit_update")
        if answer.get("receipt") is not None and not isinstance(answer["receipt"], str):
            raise ExchangeError("exchange answered submit_update with a malformed receipt")
        return answer

    def rewards(self) -> list[str]:
        """Every reward receipt the exchange holds for this DID, by organization and seq."""
        answer = _expect(self._json("GET", "/v1/rewards"), {"receipts": list}, "rewards")
        if not all(isinstance(r, str) for r in answer["receipts"]):
            raise ExchangeError("exchange answered rewards with something not a list of JWS")
        return answer["receipts"]


def _read(answer: requests.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for chunk in answer.iter_content(1024 * 1024):
        total += len(chunk)
        if total > limit:
            raise ExchangeError(f"exchange answer is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _reason(content: bytes) -> str:
    try:
        error = json.loads(content).get("error")
    except (UnicodeDecodeError, ValueError, AttributeError):
        error = None
    if isinstance(error, str) and error:
        return error[:500]
    return "no reason given" if not content else f"unexpected answer {content[:80]!r}"


def _expect(answer: Any, fields: dict[str, type], what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise ExchangeError(f"exchange answered {what} with something that is not an object")
    for key, kind in fields.items():
        value = answer.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ExchangeError(f"exchange answered {what} without a valid {key!r}")
    return answer


def _npz(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ExchangeError(f"exchange sent parameters that are no readable .npz ({exc})") from None
    for name, array in arrays.items():
        if array.dtype != np.float32 or not np.isfinite(array).all():
            raise ExchangeError(f"exchange sent parameter {name!r} that is not finite float32")
    return arrays
