"""The DID document of a did:key, built in process, is the one didkit resolves."""

from __future__ import annotations

import json

import pytest

from identity.keys import did_document, did_for, generate_key
from tests.identity.test_vc_jwt import _didkit
from vault.errors import VerificationFailed


@pytest.mark.parametrize("count", range(3))
def test_the_document_is_didkits(count: int):
    did = did_for(generate_key())
    assert did_document(did) == json.loads(_didkit("resolve_did", did, "{}"))


def test_a_fragment_names_the_same_document(org):
    did = did_for(org)
    assert did_document(f"{did}#{did.removeprefix('did:key:')}") == did_document(did)


@pytest.mark.parametrize("bad", ["did:web:example.org", "did:key:zQ3sNotEd25519", "did:key:z0OIl"])
def test_anything_but_an_ed25519_did_key_is_refused(bad: str):
    with pytest.raises(VerificationFailed):
        did_document(bad)
