"""W3C Verifiable Credentials in VC-JWT form, as didkit issues and verifies them.

Our credentials travel as flat payloads (``{"type": "ConsentReceipt", "id": ..., "subject":
..., "issued": ..., ...}``, the shapes in ``agents.exchange``). On the wire each is a VC Data
Model 1.1 credential signed as a JWT (``alg: EdDSA``, ``kid`` = the signer's did:key
verification method), as ``didkit.issue_credential`` writes it. :data:`LAYOUTS` says, per
kind, which payload fields become the credential's own properties:

- ``type`` -> ``["VerifiableCredential", kind]``;
- the signer's DID -> ``issuer``; a request's own ``issuer`` field is that property (a request
  names its issuer), while consents and revocations are issued by their ``subject`` and reward
  receipts by the ``organization`` they name, fields kept as they are for the verifier to
  compare with the issuer;
- the subject's field (``subject``, ``person``) -> ``credentialSubject.id``;
- ``id`` -> ``id`` as ``urn:tessera:<id>`` (a VC id is a URI); ``issued`` ->
  ``issuanceDate``; ``expires`` -> ``expirationDate``;
- everything else -> ``credentialSubject``.

The JWT claims are those of the VC-JWT encoding (VC Data Model 1.1, section 6.3.1) exactly as
didkit writes them: ``iss``, ``sub``, ``jti``, ``nbf`` and ``exp`` mirror the credential, which
stays whole under ``vc``. :func:`verify_credential` refuses a token that is not such a JWT (an
old plain JWS included), whose claims disagree with the ``vc`` body, whose ``kid`` is not its
issuer's, of another kind, or whose Ed25519 signature by the issuer's did:key does not check,
and gives back the flat payload again, so callers check fields as before. Time policy (clock
skew, expiry, reading an expired credential from the history) stays with the caller.

Signing and checking run here, with the same Ed25519 code as every other signature in the
vault, not through didkit's async API: a process that had used it died at exit in about one
run in seven (didkit's tokio threads still touching Python while the interpreter finalized:
"PyGILState_Release ... must be current"), after its work was done. didkit remains the
reference: the tests check that didkit verifies the credentials issued here and that credentials
issued by didkit verify here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from identity.keys import b64url, b64url_decode, did_for, sign, verify
from vault.errors import TesseraError, VerificationFailed

MAX_TOKEN_BYTES = 64 * 1024
CONTEXT = "https://www.w3.org/2018/credentials/v1"
ID_PREFIX = "urn:tessera:"


@dataclass(frozen=True)
class Layout:
    """Which flat payload fields of one credential kind are VC properties."""

    issuer: str | None  # the payload field naming the signer, if it names one
    subject: str | None  # the payload field that becomes credentialSubject.id
    has_id: bool
    has_expiry: bool


LAYOUTS: dict[str, Layout] = {
    "TrainingRequest": Layout(issuer="issuer", subject=None, has_id=True, has_expiry=True),
    "ConsentReceipt": Layout(issuer=None, subject="subject", has_id=True, has_expiry=True),
    "ConsentRevocation": Layout(issuer=None, subject="subject", has_id=False, has_expiry=False),
    # a receipt keeps the organization it names in its subject: the verifier compares it with
    # the issuer (a receipt signed by one key in another organization's name is refused there)
    "RewardReceipt": Layout(issuer=None, subject="person", has_id=True, has_expiry=False),
}


def _epoch(value: Any, what: str) -> float:
    if not isinstance(value, str) or not value.endswith("Z"):
        raise VerificationFailed(f"{what} must be an ISO 8601 UTC time ending in Z")
    try:
        return datetime.fromisoformat(value[:-1] + "+00:00").timestamp()
    except ValueError:
        raise VerificationFailed(f"{what} is not a valid time: {value[:40]!r}") from None


# ---------------------------------------------------------------------------- issuing


def to_credential(payload: Mapping[str, Any], issuer: str) -> dict[str, Any]:
    """The unsigned VC for a flat payload of a known ``type``, issued by ``issuer``."""
    kind = payload.get("type")
    layout = LAYOUTS.get(kind)  # type: ignore[arg-type]
    if layout is None:
        raise TesseraError(f"no credential layout for type {kind!r}")
    rest = {k: v for k, v in payload.items() if k not in ("type", "issued", "expires", "id")}
    named = rest.pop(layout.issuer, issuer) if layout.issuer else issuer
    if named != issuer:
        raise TesseraError(f"the payload names {layout.issuer} {named}, but the key is {issuer}")
    subject: dict[str, Any] = {}
    if layout.subject:
        subject["id"] = rest.pop(layout.subject, None)
        if not isinstance(subject["id"], str):
            raise TesseraError(f"a {kind} needs its {layout.subject} DID")
    if layout.has_id and not isinstance(payload.get("id"), str):
        raise TesseraError(f"a {kind} needs an id")
    subject.update(rest)
    credential: dict[str, Any] = {"@context": [CONTEXT], "type": ["VerifiableCredential", kind]}
    if layout.has_id:
        credential["id"] = ID_PREFIX + str(payload["id"])
    credential |= {"issuer": issuer, "issuanceDate": payload.get("issued")}
    if layout.has_expiry:
        credential["expirationDate"] = payload.get("expires")
    credential["credentialSubject"] = subject
    return credential


def issue_credential(jwk: str, payload: Mapping[str, Any]) -> str:
    """A VC-JWT of the flat ``payload`` (its ``type`` picks the layout), signed by ``jwk``."""
    issuer = did_for(jwk)
    credential = to_credential(payload, issuer)
    header = {"alg": "EdDSA", "kid": f"{issuer}#{issuer.removeprefix('did:key:')}"}
    claims: dict[str, Any] = {}
    if "expirationDate" in credential:
        claims["exp"] = _epoch(credential["expirationDate"], "expires")
    claims |= {"iss": issuer, "nbf": _epoch(credential["issuanceDate"], "issued")}
    if "id" in credential:
        claims["jti"] = credential["id"]
    if "id" in credential["credentialSubject"]:
        claims["sub"] = credential["credentialSubject"]["id"]
    claims["vc"] = credential
    signing_input = f"{_json64(header)}.{_json64(claims)}"
    return f"{signing_input}.{b64url(sign(jwk, signing_input.encode('ascii')))}"


def _json64(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


# ---------------------------------------------------------------------------- verifying


def _decode(token: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, claims, signing input) of a compact JWT, not yet verified."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise VerificationFailed("not a credential token, or too large")
    try:
        header_b64, claims_b64, _ = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        claims = json.loads(b64url_decode(claims_b64))
    except ValueError:  # json.JSONDecodeError and binascii.Error are ValueErrors
        raise VerificationFailed("malformed token (not a compact JWT)") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise VerificationFailed("malformed token (not a compact JWT)")
    if header.get("alg") != "EdDSA":
        raise VerificationFailed(f"unsupported signature algorithm {header.get('alg')!r}")
    return header, claims, f"{header_b64}.{claims_b64}"


def _same_time(claim: Any, date: Any, what: str) -> bool:
    if claim is None and date is None:
        return True
    if isinstance(claim, bool) or not isinstance(claim, int | float) or not math.isfinite(claim):
        return False
    return date is not None and abs(_epoch(date, what) - claim) < 1


def _credential(claims: dict[str, Any], kind: str) -> dict[str, Any]:
    """The ``vc`` body, checked against the JWT claims and ``kind``."""
    credential = claims.get("vc")
    if not isinstance(credential, dict):
        raise VerificationFailed("a plain signed token, not a verifiable credential")
    types = credential.get("type")
    if types != ["VerifiableCredential", kind]:
        shown = types[-1] if isinstance(types, list) and types else types
        raise VerificationFailed(f"not a {kind} credential (type {shown!r})")
    if credential.get("@context") != [CONTEXT]:
        raise VerificationFailed("the credential's @context is not the W3C VC 1.1 context")
    subject = credential.get("credentialSubject")
    if not isinstance(subject, dict):
        raise VerificationFailed("the credential has no credentialSubject object")
    disagree = [
        name
        for name, same in (
            ("iss", claims.get("iss") == credential.get("issuer")),
            ("sub", claims.get("sub") == subject.get("id")),
            ("jti", claims.get("jti") == credential.get("id")),
            ("nbf", _same_time(claims.get("nbf"), credential.get("issuanceDate"), "issuanceDate")),
            ("exp", _same_time(claims.get("exp"), credential.get("expirationDate"), "expiration")),
        )
        if not same
    ]
    if disagree:
        raise VerificationFailed(f"the JWT claims {disagree} disagree with the credential")
    return credential


def from_credential(credential: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The flat payload of a checked credential of ``kind`` (the inverse of to_credential)."""
    layout = LAYOUTS[kind]
    subject = dict(credential["credentialSubject"])
    payload: dict[str, Any] = {"type": kind}
    if layout.has_id:
        vc_id = credential.get("id")
        if not isinstance(vc_id, str) or not vc_id.startswith(ID_PREFIX):
            raise VerificationFailed(f"the credential id must start with {ID_PREFIX}")
        payload["id"] = vc_id.removeprefix(ID_PREFIX)
    if layout.issuer:
        payload[layout.issuer] = credential["issuer"]
    if layout.subject:
        if "id" not in subject:
            raise VerificationFailed("the credential names no subject (credentialSubject.id)")
        payload[layout.subject] = subject.pop("id")
    payload["issued"] = credential.get("issuanceDate")
    if layout.has_expiry:
        payload["expires"] = credential.get("expirationDate")
    clash = sorted(set(subject) & set(payload))
    if clash or "id" in subject:
        raise VerificationFailed(f"credentialSubject repeats {clash or ['id']}")
    payload.update(subject)
    return payload


def verify_credential(
    token: Any, kind: str, expected_did: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(issuer DID, flat payload) of a VC-JWT of ``kind``; VerificationFailed with a reason.

    ``expected_did``, when given, must be the issuer. Times are not judged here: the caller
    checks issuance and expiry.
    """
    header, claims, signing_input = _decode(token)
    credential = _credential(claims, kind)
    issuer = credential.get("issuer")
    if not isinstance(issuer, str) or not issuer.startswith("did:key:"):
        raise VerificationFailed("the credential's issuer is not a did:key")
    if str(header.get("kid", "")).split("#")[0] != issuer:
        raise VerificationFailed(f"signed by {header.get('kid')!r}, not by its issuer {issuer}")
    if expected_did is not None and issuer != expected_did:
        raise VerificationFailed(f"issued by {issuer}, expected {expected_did}")
    payload = from_credential(credential, kind)
    try:
        signature = b64url_decode(token.rpartition(".")[2])
    except ValueError:
        raise VerificationFailed("malformed signature") from None
    try:
        verify(issuer, signing_input.encode("ascii"), signature)
    except VerificationFailed as exc:
        raise VerificationFailed(f"bad signature by {issuer} ({exc})") from None
    return issuer, payload
