"""The exchange between organizations and vaults: contract, message checks, shared errors.

This docstring is THE CONTRACT the vault side codes against. Requests, consents, revocations
and reward receipts are W3C Verifiable Credentials in VC-JWT form (EdDSA, ``kid`` = the signer's
did:key), issued and verified with didkit through ``identity.vc_jwt``; the payloads below are
their flat form (``identity.vc_jwt.LAYOUTS`` maps ``type``, the issuer, the subject, ``id``,
``issued`` and ``expires`` to the credential's own properties, the rest to
``credentialSubject``). Model updates are compact JWS (``identity.keys.jws_sign``, EdDSA over
canonical JSON). Times are ISO-8601 UTC with a ``Z`` suffix. Unknown extra fields in a payload
are accepted and ignored.

Training request (credential issued by the organization's key; issuer == ``issuer``)::

    {"type": "TrainingRequest", "id": "req-<uuid4 hex>", "issuer": org DID,
     "organization": {"name": str}, "issued": ISO Z, "expires": ISO Z,
     "purpose": str, "datasets": [str], "fields": [str],
     "time_range": {"from": ISO Z, "to": ISO Z}, "recipe": str, "label": str,
     "package": "sha256:<hex>", "rounds": int, "local_steps": int, "batch_size": int,
     "learning_rate": float, "optimizer": "sgd"|"adam",
     "privacy": {"epsilon", "delta", "clip_norm", "noise_multiplier"},
     "reward": {"per_update": float, "unit": str, "cap": float},
     "aggregation": {"strategy": "fedavg"|"trimmed_mean"|"median", "min_updates": int,
                     "round_seconds": int, "max_update_norm": float,
                     "trim_fraction": float (optional, trimmed_mean only, default 0.1)}}

    The exchange also requires ``recipe`` == task.json ``features.recipe`` and ``label`` ==
    task.json ``label.field`` of the package.

Consent receipt (credential issued by the person's vault DID; issuer == ``subject`` ==
credentialSubject.id == the calling DID)::

    {"type": "ConsentReceipt", "id": "consent-<uuid>", "request": request id,
     "request_hash": sha256 hex of the request token string, "subject": vault DID,
     "organization": org DID, "datasets": [subset of the request's], "epsilon_budget": float,
     "issued": ISO Z, "expires": ISO Z}

Revocation (credential by the subject): ``{"type": "ConsentRevocation", "consent": id, "subject",
"issued"}``. Re-posting an identical consent or revocation is harmless (idempotent).

Model update (JWS by the vault; the runner's round result, ``agents.round_result``, plus
``request``, ``round``, ``consent``): at least ``{"package": address, "delta": {name:
{"shape": [..], "data": base64 float32 little-endian, "dtype"?: "float32"}}, "examples" (or
the runner's "examples_used"): int >= 1, "epsilon" (or the runner's "privacy":
{"epsilon_round"}): float, "request", "round", "consent"}``. Accepted only if: the signer
(== the calling DID) holds a recorded, unrevoked, unexpired consent for that request
(``consent`` names it); ``round`` is the open round; ``package`` is the request's; every
parameter of task.json is present with its shape and nothing else; all values finite; the L2
norm over all parameters is <= ``max_update_norm`` (over-norm is REJECTED, not clipped); one
update per vault per round. Sending the byte-identical update JWS again (a retry
after a lost answer) returns the first answer and receipt again and counts once; a different
second update in the same round is refused as a duplicate. Rejections are HTTP 4xx with
``{"error": "<reason the vault shows>"}``.

Rounds are numbered from 0. ``round`` is the open round; after round ``rounds - 1`` is
aggregated the request is closed (``closed: true``, ``round == rounds``). A round is
aggregated when ``min_updates`` updates were accepted, or when ``round_seconds`` have passed
since it opened and at least one update was accepted (checked after every update and every
round/params/status/model fetch, in the background: the answer does not wait for it, so the
next fetch shows the new round); a round that times out with no update gets a fresh deadline.
While a round is being aggregated its updates are answered 503 (the client retries; after
that the round is closed and a late update gets 409). A request past its ``expires`` is
closed. FedAvg weighs each update by its ``examples`` (clamped to
``local_steps * batch_size``); trimmed mean and median are unweighted and coordinate-wise.

Reward receipt (credential issued with the organization's key, held by the exchange on its
behalf; credentialSubject.id == ``person``)::

    {"type": "RewardReceipt", "id": "reward-<uuid hex>", "request", "round",
     "person": vault DID, "organization": org DID, "amount": float, "unit": str,
     "issued": ISO Z, "seq": int (per organization+person, from 0),
     "prev": sha256 hex of the previous receipt token string for that pair, or null}

    Each accepted update earns ``per_update``; ``cap`` is the most ONE PERSON can earn from
    ONE request: the receipt that reaches the cap carries only what is left (so the total is
    exactly ``cap``) and after that no more receipts are issued for that person and request.
    ``agents.exchange.rewards.verify_receipt_chain`` checks a person's chain.

Organization signing key: ``POST /v1/requests`` carries ``reward_key`` (the org's JWK) the
first time an organization posts (the client sends it by default); the exchange keeps it
AES-GCM wrapped under its own secret and uses it only to sign reward receipts.

HTTP API (base ``/v1``; JSON unless noted; parameters travel as ``.npz`` bytes,
``application/octet-stream``, loaded with ``allow_pickle=False``). Every call carries
``X-Tessera-DID``, ``X-Tessera-Time`` (unix seconds), ``X-Tessera-Nonce`` (16-64 hex chars),
``X-Tessera-Signature`` = base64url Ed25519 over ``METHOD\\nPATH?QUERY\\nsha256(body)
hex\\ntime\\nnonce`` (``PATH`` alone when there is no query). Refused: bad signature, time
skew > 300 s, a nonce seen before (401); organization endpoints from a DID that was not
admitted (403). Bodies: JSON 1 MiB, request posts 1 MiB + the base64 package (256 MiB).

- ``POST /v1/requests`` ``{"request": vc-jwt, "package": base64 .tpkg, "reward_key"?: jwk}`` ->
  ``{"id"}`` (admitted org; signer == issuer == caller; package hash and contents checked)
- ``GET /v1/requests`` -> ``[{"request": vc-jwt, "package": address}]`` (open requests)
- ``GET /v1/packages/{address}`` -> the .tpkg bytes
- ``POST /v1/consents`` ``{"consent": vc-jwt}``; ``POST /v1/revocations``
  ``{"revocation": vc-jwt}``
- ``GET /v1/requests/{id}/round`` -> ``{"round", "rounds", "deadline", "closed"}``
- ``GET /v1/requests/{id}/round/params`` -> .npz (consenting vaults and the issuer)
- ``POST /v1/requests/{id}/updates`` ``{"update": jws}``, or the bare JWS as the body with
  ``Content-Type: application/jose`` (what the client sends) -> ``{"accepted": true,
  "receipt": vc-jwt or null (cap reached), "round"}``
- ``GET /v1/rewards`` -> ``{"receipts": [vc-jwt]}`` for the caller, ordered by org then seq
- ``GET /v1/requests/{id}/status`` (issuer) -> round, per-round counts, rejection reasons,
  participants; ``GET /v1/requests/{id}/model`` (issuer) -> .npz of the current parameters
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np

from vault.errors import TesseraError

STRATEGY_NAMES = ("fedavg", "trimmed_mean", "median")
REQUEST_ID_RE = re.compile(r"^req-[0-9a-f]{32}$")
CONSENT_ID_RE = re.compile(r"^consent-[0-9a-f-]{32,36}$")
ADDRESS_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_ROUNDS = 10_000


class MessageRefused(TesseraError):
    """A request, consent, revocation or update does not follow the exchange contract."""


def parse_time(value: Any, where: str) -> datetime:
    """An aware UTC datetime from an ISO-8601 ``...Z`` string; MessageRefused otherwise."""
    if not isinstance(value, str) or not value.endswith("Z"):
        raise MessageRefused(f"{where} must be an ISO-8601 UTC time ending in Z")
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        raise MessageRefused(f"{where} is not an ISO-8601 time: {value[:40]!r}") from None
    return parsed.astimezone(UTC)


def format_time(moment: datetime | float) -> str:
    """ISO-8601 UTC with a Z suffix, second precision."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _require(payload: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = payload.get(key)
    # bool is an int subclass; never accept true/false as a number
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise MessageRefused(f"field {key!r} is missing or not {_kind_name(kind)}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


def _number(payload: dict[str, Any], key: str, low: float, high: float = math.inf) -> float:
    value = float(_require(payload, key, (int, float)))
    if not math.isfinite(value) or not low <= value <= high:
        raise MessageRefused(f"field {key!r} must be a finite number in [{low}, {high}]")
    return value


def _integer(payload: dict[str, Any], key: str, low: int, high: int) -> int:
    value = _require(payload, key, int)
    if not low <= value <= high:
        raise MessageRefused(f"field {key!r} must be an integer in [{low}, {high}]")
    return value


def _text(payload: dict[str, Any], key: str, max_len: int = 4000) -> str:
    value = _require(payload, key, str)
    if not value.strip() or len(value) > max_len:
        raise MessageRefused(f"field {key!r} must be non-empty text (at most {max_len} chars)")
    return value


def _names(payload: dict[str, Any], key: str) -> list[str]:
    value = _require(payload, key, list)
    if not value or len(value) > 256 or not all(isinstance(v, str) and v for v in value):
        raise MessageRefused(f"field {key!r} must be a non-empty list of names")
    return value


def _table(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return _require(payload, key, dict)


def check_training_request(payload: Any, now: datetime | None = None) -> None:
    """Raise MessageRefused unless ``payload`` is a well-formed, unexpired training request."""
    if not isinstance(payload, dict) or payload.get("type") != "TrainingRequest":
        raise MessageRefused("not a TrainingRequest")
    if not REQUEST_ID_RE.match(str(payload.get("id", ""))):
        raise MessageRefused("request id must look like req-<32 hex>")
    _text(payload, "issuer", 200)
    _text(_table(payload, "organization"), "name", 200)
    issued = parse_time(payload.get("issued"), "issued")
    expires = parse_time(payload.get("expires"), "expires")
    now = now or datetime.now(UTC)
    if expires <= now:
        raise MessageRefused(f"request expired at {format_time(expires)}")
    if expires <= issued:
        raise MessageRefused("request expires before it was issued")
    _text(payload, "purpose")
    _names(payload, "datasets")
    _names(payload, "fields")
    span = _table(payload, "time_range")
    if parse_time(span.get("from"), "time_range.from") > parse_time(
        span.get("to"), "time_range.to"
    ):
        raise MessageRefused("time_range.from is after time_range.to")
    _text(payload, "recipe", 200)
    _text(payload, "label", 200)
    if not ADDRESS_RE.match(str(payload.get("package", ""))):
        raise MessageRefused("package must be sha256:<64 hex>")
    _integer(payload, "rounds", 1, MAX_ROUNDS)
    _integer(payload, "local_steps", 1, 1_000_000)
    _integer(payload, "batch_size", 1, 65_536)
    _number(payload, "learning_rate", 0.0, 1e6)
    if payload.get("optimizer") not in ("sgd", "adam"):
        raise MessageRefused("optimizer must be 'sgd' or 'adam'")
    privacy = _table(payload, "privacy")
    if _number(privacy, "epsilon", 0.0) <= 0:
        raise MessageRefused("privacy.epsilon must be positive")
    _number(privacy, "delta", 0.0, 1.0)
    _number(privacy, "clip_norm", 0.0)
    _number(privacy, "noise_multiplier", 0.0)
    reward = _table(payload, "reward")
    per_update = _number(reward, "per_update", 0.0)
    _text(reward, "unit", 40)
    if _number(reward, "cap", 0.0) < per_update:
        raise MessageRefused("reward.cap must be at least reward.per_update")
    aggregation = _table(payload, "aggregation")
    if aggregation.get("strategy") not in STRATEGY_NAMES:
        raise MessageRefused(f"aggregation.strategy must be one of {list(STRATEGY_NAMES)}")
    _integer(aggregation, "min_updates", 1, 1_000_000)
    _integer(aggregation, "round_seconds", 1, 366 * 86400)
    if _number(aggregation, "max_update_norm", 0.0) <= 0:
        raise MessageRefused("aggregation.max_update_norm must be positive")
    if "trim_fraction" in aggregation:
        _number(aggregation, "trim_fraction", 0.0, 0.49)


def check_consent(payload: Any) -> None:
    """Raise MessageRefused unless ``payload`` is a well-formed consent receipt."""
    if not isinstance(payload, dict) or payload.get("type") != "ConsentReceipt":
        raise MessageRefused("not a ConsentReceipt")
    if not CONSENT_ID_RE.match(str(payload.get("id", ""))):
        raise MessageRefused("consent id must look like consent-<uuid>")
    for key in ("request", "subject", "organization"):
        _text(payload, key, 200)
    if not re.match(r"^[0-9a-f]{64}$", str(payload.get("request_hash", ""))):
        raise MessageRefused("request_hash must be a SHA-256 hex digest")
    _names(payload, "datasets")
    _number(payload, "epsilon_budget", 0.0)
    parse_time(payload.get("issued"), "issued")
    parse_time(payload.get("expires"), "expires")


def check_revocation(payload: Any) -> None:
    """Raise MessageRefused unless ``payload`` is a well-formed consent revocation."""
    if not isinstance(payload, dict) or payload.get("type") != "ConsentRevocation":
        raise MessageRefused("not a ConsentRevocation")
    _text(payload, "consent", 200)
    _text(payload, "subject", 200)
    parse_time(payload.get("issued"), "issued")


def check_update_fields(payload: Any) -> tuple[int, float]:
    """Check the fields the exchange needs in an update; return (examples, epsilon).

    Takes ``examples`` or the runner's ``examples_used``, and ``epsilon`` or the runner's
    ``privacy.epsilon_round``.
    """
    if not isinstance(payload, dict):
        raise MessageRefused("update payload is not an object")
    for key in ("package", "request", "consent"):
        _text(payload, key, 200)
    _integer(payload, "round", 0, MAX_ROUNDS)
    _require(payload, "delta", dict)
    key = "examples" if "examples" in payload else "examples_used"
    examples = _integer(payload, key, 1, 2**53)
    privacy = payload.get("privacy")
    if "epsilon" not in payload and isinstance(privacy, dict):
        return examples, _number(privacy, "epsilon_round", 0.0)
    return examples, _number(payload, "epsilon", 0.0)


def _b64decode(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise MessageRefused(f"{where}: data must be a base64 string")
    try:
        # urlsafe alphabet as well, since some encoders default to it
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MessageRefused(f"{where}: data is not valid base64") from None


def decode_delta(delta: Any, params: list[dict[str, Any]]) -> np.ndarray:
    """The update's parameter delta as one flat float32 vector in task.json parameter order.

    Refuses missing, extra or wrong-shape parameters and non-finite values with a reason.
    """
    if not isinstance(delta, dict):
        raise MessageRefused("delta must be an object of parameters")
    declared = [spec["name"] for spec in params]
    extra = sorted(set(delta) - set(declared))
    if extra:
        raise MessageRefused(f"delta has unknown parameters {extra[:5]}")
    total = sum(math.prod(spec["shape"]) for spec in params)
    flat = np.empty(total, dtype=np.float32)
    offset = 0
    for spec in params:
        name, shape = spec["name"], list(spec["shape"])
        entry = delta.get(name)
        if not isinstance(entry, dict):
            raise MessageRefused(f"delta is missing parameter {name!r}")
        if entry.get("shape") != shape:
            raise MessageRefused(
                f"shape mismatch for {name!r}: got {entry.get('shape')!r}, expected {shape}"
            )
        if entry.get("dtype", "float32") != "float32":
            raise MessageRefused(f"parameter {name!r} must be float32")
        raw = _b64decode(entry.get("data"), f"parameter {name!r}")
        size = math.prod(shape)
        if len(raw) != 4 * size:
            raise MessageRefused(
                f"parameter {name!r} has {len(raw)} bytes of data, expected {4 * size}"
            )
        flat[offset : offset + size] = np.frombuffer(raw, dtype="<f4")
        offset += size
    if not np.isfinite(flat).all():
        raise MessageRefused("update holds NaN or infinite values")
    return flat


def update_norm(flat: np.ndarray) -> float:
    """L2 norm of a flat update, accumulated in float64 so huge values do not overflow."""
    return float(np.sqrt(np.einsum("i,i->", flat, flat, dtype=np.float64)))
