"""Ed25519 did:key identities: key generation with didkit, signing and verification.

Keys are JWK strings as didkit writes them. Signatures are raw Ed25519 over bytes, or compact
JWS (``alg: EdDSA``) over canonical JSON; a verifier needs only the signer's DID, since a
did:key carries its public key. Plain JWS signs model updates and log checkpoints; requests,
consents and receipts are verifiable credentials (``identity.vc_jwt``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import didkit
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.errors import VerificationFailed

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ED25519_MULTICODEC = b"\xed\x01"


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; raises ValueError on bad input."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces, UTF-8): what gets hashed and signed."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def generate_key() -> str:
    """A new Ed25519 private key as a JWK string."""
    return didkit.generate_ed25519_key()


def did_for(jwk: str) -> str:
    """The did:key of a JWK."""
    return didkit.key_to_did("key", jwk)


def _private_key(jwk: str) -> Ed25519PrivateKey:
    fields = json.loads(jwk)
    return Ed25519PrivateKey.from_private_bytes(b64url_decode(fields["d"]))


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        index = _B58.find(char)
        if index < 0:
            raise ValueError("bad base58 character")
        number = number * 58 + index
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + raw


def public_key_of(did: str) -> Ed25519PublicKey:
    """The Ed25519 public key that a did:key names; VerificationFailed if it is not one."""
    if not did.startswith("did:key:z"):
        raise VerificationFailed(f"not a did:key: {did[:40]}")
    try:
        raw = _b58decode(did.removeprefix("did:key:z").split("#")[0])
    except ValueError:
        raise VerificationFailed("malformed did:key") from None
    if raw[:2] != _ED25519_MULTICODEC or len(raw) != 34:
        raise VerificationFailed("did:key is not an Ed25519 key")
    return Ed25519PublicKey.from_public_bytes(raw[2:])


def did_document(did: str) -> dict[str, Any]:
    """The DID document of an Ed25519 did:key, exactly as didkit resolves it.

    Built here, not through didkit's async ``resolve_did``: a process that has used didkit's
    async API can die at exit (see :mod:`identity.vc_jwt`). A did:key carries its key, so the
    document is a pure function of the DID; the tests compare it with didkit's.
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key_of(did).public_bytes(Encoding.Raw, PublicFormat.Raw)
    did = did.split("#")[0]
    method = f"{did}#{did.removeprefix('did:key:')}"
    return {
        "@context": [
            "https://www.w3.org/ns/did/v1",
            {
                "Ed25519VerificationKey2018": "https://w3id.org/security#Ed25519VerificationKey2018",
                "publicKeyJwk": {"@id": "https://w3id.org/security#publicKeyJwk", "@type": "@json"},
            },
        ],
        "id": did,
        "verificationMethod": [
            {
                "id": method,
                "type": "Ed25519VerificationKey2018",
                "controller": did,
                "publicKeyJwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)},
            }
        ],
        "authentication": [method],
        "assertionMethod": [method],
    }


def sign(jwk: str, data: bytes) -> bytes:
    """Raw Ed25519 signature of ``data``."""
    return _private_key(jwk).sign(data)


def verify(did: str, data: bytes, signature: bytes) -> None:
    """Check a raw signature by ``did``; raise VerificationFailed when it does not verify."""
    try:
        public_key_of(did).verify(signature, data)
    except InvalidSignature:
        raise VerificationFailed(f"bad signature by {did}") from None


def jws_sign(jwk: str, payload: Any) -> str:
    """Compact JWS (EdDSA) of canonical JSON ``payload``, with the signer's DID as ``kid``."""
    did = did_for(jwk)
    header = {"alg": "EdDSA", "kid": f"{did}#{did.removeprefix('did:key:')}", "typ": "JWT"}
    signing_input = f"{b64url(canonical_json(header))}.{b64url(canonical_json(payload))}"
    signature = sign(jwk, signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def jws_verify(token: str, expected_did: str | None = None) -> tuple[str, Any]:
    """Verify a compact JWS; return (signer DID, payload). Raise VerificationFailed otherwise."""
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = json.loads(b64url_decode(header_b64))
        payload = json.loads(b64url_decode(payload_b64))
        signature = b64url_decode(signature_b64)
    except (ValueError, json.JSONDecodeError):
        raise VerificationFailed("malformed JWS") from None
    if header.get("alg") != "EdDSA":
        raise VerificationFailed(f"unsupported JWS algorithm {header.get('alg')!r}")
    did = str(header.get("kid", "")).split("#")[0]
    if expected_did is not None and did != expected_did:
        raise VerificationFailed(f"signed by {did}, expected {expected_did}")
    verify(did, f"{header_b64}.{payload_b64}".encode("ascii"), signature)
    return did, payload
