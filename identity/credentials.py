"""Signed credentials between organizations and vaults: requests, consents, reward receipts.

Each is a W3C Verifiable Credential (data model 1.1) in VC-JWT form, issued and verified with
didkit (``identity.vc_jwt``): ``type`` ["VerifiableCredential", kind], ``issuer`` the signer's
did:key, ``issuanceDate``/``expirationDate`` from ``issued``/``expires``, ``id`` the payload's
id as ``urn:tessera:<id>``, the rest in ``credentialSubject`` (its ``id`` the subject's DID).
A did:key carries its public key, so a verifier needs nothing but the token. Verified, each
gives back the flat payload that is the shared contract with the exchange:

- ``TrainingRequest``, issued by the organization (its ``issuer``);
- ``ConsentReceipt`` and ``ConsentRevocation``, issued by the person's vault about itself (the
  ``subject`` is credentialSubject.id and the issuer);
- ``RewardReceipt``, issued by the ``organization`` it names to the ``person``
  (credentialSubject.id), hash-chained per (organization, person): ``seq`` counts up by one
  and ``prev`` is the SHA-256 hex of the previous receipt's compact token (null for the
  first), so a receipt that is missing, altered or reordered is detected.

Everything that does not verify raises VerificationFailed with a reason a person can read.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from identity.claims import integer, member_object, number, text, verified_token, when
from identity.keys import did_for
from identity.receipts import verify_receipt_chain
from identity.vc_jwt import issue_credential
from vault.errors import VerificationFailed
from vault.timeparse import iso_utc

CLOCK_SKEW_SECONDS = 300
REQUEST_ID = re.compile(r"^req-[0-9a-f]{32}$")
CONSENT_ID = re.compile(r"^consent-[0-9a-f]{32}$")
PACKAGE = re.compile(r"^sha256:[0-9a-f]{64}$")
DATASET = re.compile(r"^[a-z][a-z0-9_]*\.[a-z0-9_]+$")
OPTIMIZERS = ("sgd", "adam")


def token_hash(token: str) -> str:
    """SHA-256 hex of a compact token (how requests and receipts are referred to)."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Privacy:
    """The differential privacy a request asks for."""

    epsilon: float
    delta: float
    clip_norm: float
    noise_multiplier: float


@dataclass(frozen=True)
class RewardTerms:
    """What each accepted update earns, in which unit, up to which total."""

    per_update: float
    unit: str
    cap: float


@dataclass(frozen=True)
class Aggregation:
    """How the exchange combines updates."""

    strategy: str
    min_updates: int
    round_seconds: float
    max_update_norm: float


@dataclass(frozen=True)
class TrainingRequest:
    """A training request whose signature, issuer, expiry and shape were all checked.

    ``jws`` is the compact VC-JWT as received; ``payload`` its flat form.
    """

    jws: str
    payload: dict[str, Any]
    id: str
    issuer: str
    organization: str
    issued: float
    expires: float
    purpose: str
    datasets: tuple[str, ...]
    fields: tuple[str, ...]
    time_from: float
    time_to: float
    recipe: str
    label: str
    package: str
    rounds: int
    local_steps: int
    batch_size: int
    learning_rate: float
    optimizer: str
    privacy: Privacy
    reward: RewardTerms
    aggregation: Aggregation

    @property
    def hash(self) -> str:
        """SHA-256 hex of the request's token (what a consent receipt names)."""
        return token_hash(self.jws)

    def expired(self, now: float | None = None) -> bool:
        """True once the request's expiry has passed."""
        return (time.time() if now is None else now) >= self.expires


def _strings(obj: Mapping[str, Any], key: str, limit: int, pattern: re.Pattern | None) -> tuple:
    value = obj.get(key)
    if not isinstance(value, list) or len(value) > limit:
        raise VerificationFailed(f"request.{key} must be a list of at most {limit}")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 200:
            raise VerificationFailed(f"request.{key} must hold non-empty texts")
        if pattern is not None and not pattern.match(item):
            raise VerificationFailed(f"request.{key}: {item!r} is not a dataset name")
    if len(set(value)) != len(value):
        raise VerificationFailed(f"request.{key} names an entry twice")
    return tuple(value)


def parse_request(jws: str, payload: Mapping[str, Any]) -> TrainingRequest:
    """A TrainingRequest from a verified payload; VerificationFailed if it is malformed."""
    w = "request"
    if payload.get("type") != "TrainingRequest":
        raise VerificationFailed(f"not a training request (type {payload.get('type')!r})")
    if not isinstance(payload.get("id"), str) or not REQUEST_ID.match(payload["id"]):
        raise VerificationFailed("request.id must be 'req-' and 32 hex digits")
    issued = when(payload.get("issued"), "request.issued")
    expires = when(payload.get("expires"), "request.expires")
    if expires <= issued:
        raise VerificationFailed("request expires before it was issued")
    time_range = member_object(payload, "time_range", w)
    time_from = when(time_range.get("from"), "request.time_range.from")
    time_to = when(time_range.get("to"), "request.time_range.to")
    if time_to <= time_from:
        raise VerificationFailed("request.time_range ends before it starts")
    if not isinstance(payload.get("package"), str) or not PACKAGE.match(payload["package"]):
        raise VerificationFailed("request.package must be 'sha256:' and 64 hex digits")
    optimizer = payload.get("optimizer")
    if optimizer not in OPTIMIZERS:
        raise VerificationFailed(f"request.optimizer must be one of {list(OPTIMIZERS)}")
    privacy = member_object(payload, "privacy", w)
    reward = member_object(payload, "reward", w)
    aggregation = member_object(payload, "aggregation", w)
    datasets = _strings(payload, "datasets", 64, DATASET)
    if not datasets:
        raise VerificationFailed("request names no datasets")
    request = TrainingRequest(
        jws=jws,
        payload=dict(payload),
        id=payload["id"],
        issuer=text(payload, "issuer", w, 200),
        organization=text(
            member_object(payload, "organization", w), "name", "request.organization"
        ),
        issued=issued,
        expires=expires,
        purpose=text(payload, "purpose", w, 2000),
        datasets=datasets,
        fields=_strings(payload, "fields", 512, None),
        time_from=time_from,
        time_to=time_to,
        recipe=text(payload, "recipe", w, 100),
        label=text(payload, "label", w, 200),
        package=payload["package"],
        rounds=integer(payload, "rounds", w, 1, 10_000),
        local_steps=integer(payload, "local_steps", w, 1, 100_000),
        batch_size=integer(payload, "batch_size", w, 1, 65_536),
        learning_rate=number(payload, "learning_rate", w, 1e-12, 1e3),
        optimizer=optimizer,
        privacy=Privacy(
            epsilon=number(privacy, "epsilon", "request.privacy", 1e-6, 1e3),
            delta=number(privacy, "delta", "request.privacy", 1e-30, 0.1),
            clip_norm=number(privacy, "clip_norm", "request.privacy", 1e-9, 1e9),
            noise_multiplier=number(privacy, "noise_multiplier", "request.privacy", 1e-3, 1e6),
        ),
        reward=RewardTerms(
            per_update=number(reward, "per_update", "request.reward", 0, 1e12),
            unit=text(reward, "unit", "request.reward", 40),
            cap=number(reward, "cap", "request.reward", 0, 1e15),
        ),
        aggregation=Aggregation(
            strategy=text(aggregation, "strategy", "request.aggregation", 40),
            min_updates=integer(aggregation, "min_updates", "request.aggregation", 1, 10**7),
            round_seconds=number(aggregation, "round_seconds", "request.aggregation", 1, 1e8),
            max_update_norm=number(aggregation, "max_update_norm", "request.aggregation", 0, 1e12),
        ),
    )
    _check_recipe(request)
    return request


def _check_recipe(request: TrainingRequest) -> None:
    # the organization may only pick a recipe and a label from the vault's own catalogue
    from vault.recipes import RecipeRefused, get_recipe

    try:
        get_recipe(request.recipe).check(request.datasets, request.fields, request.label)
    except RecipeRefused as exc:
        raise VerificationFailed(f"request refused: {exc}") from None


def verify_request(
    jws: str, now: float | None = None, allow_expired: bool = False
) -> TrainingRequest:
    """Verify a training request: signature, signer == issuer, well-formed, not expired."""
    signer, payload = verified_token(jws, "TrainingRequest", "training request")
    request = parse_request(jws, payload)
    if signer != request.issuer:
        raise VerificationFailed(
            f"training request claims issuer {request.issuer} but is signed by {signer}"
        )
    now = time.time() if now is None else now
    if request.issued > now + CLOCK_SKEW_SECONDS:
        raise VerificationFailed("training request is issued in the future")
    if not allow_expired and request.expired(now):
        raise VerificationFailed(f"training request expired at {iso_utc(request.expires)}")
    return request


# ---------------------------------------------------------------------------- consent


def issue_consent(
    jwk: str,
    request: TrainingRequest,
    datasets: Sequence[str],
    epsilon_budget: float,
    expires: float,
    now: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """A consent receipt credential issued by the vault key ``jwk``; returns (token, payload)."""
    now = time.time() if now is None else now
    payload = {
        "type": "ConsentReceipt",
        "id": f"consent-{uuid.uuid4().hex}",
        "request": request.id,
        "request_hash": request.hash,
        "subject": did_for(jwk),
        "organization": request.issuer,
        "datasets": list(datasets),
        "epsilon_budget": float(epsilon_budget),
        "issued": iso_utc(int(now)),
        "expires": iso_utc(int(expires)),
    }
    return issue_credential(jwk, payload), payload


def verify_consent(
    jws: str, subject: str | None = None, request: TrainingRequest | None = None
) -> dict[str, Any]:
    """Check a consent receipt's signature, shape and (if given) its subject and request."""
    signer, payload = verified_token(jws, "ConsentReceipt", "consent receipt", subject)
    if payload.get("type") != "ConsentReceipt":
        raise VerificationFailed("not a consent receipt")
    if payload.get("subject") != signer:
        raise VerificationFailed("consent receipt names a subject other than its signer")
    if not isinstance(payload.get("id"), str) or not CONSENT_ID.match(payload["id"]):
        raise VerificationFailed("consent receipt id must be 'consent-' and 32 hex digits")
    when(payload.get("issued"), "consent.issued")
    when(payload.get("expires"), "consent.expires")
    number(payload, "epsilon_budget", "consent", 1e-9, 1e3)
    if request is not None:
        if (payload.get("request"), payload.get("request_hash")) != (request.id, request.hash):
            raise VerificationFailed("consent receipt is for a different request")
        if payload.get("organization") != request.issuer:
            raise VerificationFailed("consent receipt names a different organization")
        if not set(payload.get("datasets") or []) <= set(request.datasets):
            raise VerificationFailed("consent covers datasets the request did not ask for")
    return payload


def issue_revocation(jwk: str, consent_id: str, now: float | None = None) -> str:
    """A consent revocation credential issued by the vault key ``jwk``."""
    payload = {
        "type": "ConsentRevocation",
        "consent": consent_id,
        "subject": did_for(jwk),
        "issued": iso_utc(int(time.time() if now is None else now)),
    }
    return issue_credential(jwk, payload)


def verify_revocation(jws: str, subject: str | None = None) -> dict[str, Any]:
    """Check a revocation's signature and shape."""
    signer, payload = verified_token(jws, "ConsentRevocation", "consent revocation", subject)
    if payload.get("type") != "ConsentRevocation" or payload.get("subject") != signer:
        raise VerificationFailed("not a consent revocation by its subject")
    if not isinstance(payload.get("consent"), str) or not CONSENT_ID.match(payload["consent"]):
        raise VerificationFailed("revocation names no consent")
    when(payload.get("issued"), "revocation.issued")
    return payload


# ---------------------------------------------------------------------------- rewards


@dataclass(frozen=True)
class RewardReceipt:
    """A reward receipt whose signature and shape were checked."""

    jws: str
    id: str
    request: str
    round: int
    person: str
    organization: str
    amount: float
    unit: str
    issued: float
    seq: int
    prev: str | None

    @property
    def hash(self) -> str:
        """SHA-256 hex of the receipt's token (what the next receipt's ``prev`` holds)."""
        return token_hash(self.jws)


def verify_reward_receipt(
    jws: str, person: str | None = None, organization: str | None = None
) -> RewardReceipt:
    """Check a reward receipt: signed by its organization, for ``person``, well-formed."""
    signer, p = verified_token(jws, "RewardReceipt", "reward receipt", organization)
    w = "receipt"
    if p.get("type") != "RewardReceipt":
        raise VerificationFailed("not a reward receipt")
    if p.get("organization") != signer:
        raise VerificationFailed("reward receipt is not signed by the organization it names")
    if person is not None and p.get("person") != person:
        raise VerificationFailed("reward receipt is for someone else")
    prev = p.get("prev")
    if prev is not None and (not isinstance(prev, str) or not re.match(r"^[0-9a-f]{64}$", prev)):
        raise VerificationFailed("reward receipt prev must be a SHA-256 hex or null")
    return RewardReceipt(
        jws=jws,
        id=text(p, "id", w),
        request=text(p, "request", w),
        round=integer(p, "round", w, 0, 10**9),
        person=text(p, "person", w),
        organization=signer,
        amount=number(p, "amount", w, 0, 1e15),
        unit=text(p, "unit", w, 40),
        issued=when(p.get("issued"), "receipt.issued"),
        seq=integer(p, "seq", w, 0, 10**12),
        prev=prev,
    )


def check_receipt_chains(
    receipts: Iterable[RewardReceipt], terms: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """Problems with a person's receipts, one chain per organization (empty when all verify).

    Each chain is checked by the rule the exchange issues by (``identity.receipts``): seq from
    0 without gaps, ``prev`` the previous receipt's hash, ids unique, and with ``terms`` (request
    id -> the request's ``reward``) every amount as the terms say, the total within the cap.
    """
    chains: dict[tuple[str, str], list[RewardReceipt]] = {}
    for receipt in receipts:
        chains.setdefault((receipt.organization, receipt.person), []).append(receipt)
    problems: list[str] = []
    for (org, person), chain in sorted(chains.items()):
        chain.sort(key=lambda r: r.seq)
        try:
            verify_receipt_chain([r.jws for r in chain], org, person, terms)
        except VerificationFailed as exc:
            problems.append(f"receipts from {org}: {exc}")
    return problems
