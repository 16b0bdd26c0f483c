"""The vault's exchange address, request sync and request files: one core for CLI and GUI."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from agents import vault_sync
from agents.package import package_address
from identity.keys import b64url, b64url_decode
from tests.fixtures.training_requests import new_org, package_bytes, signed_request
from vault import consent as vc
from vault.errors import VerificationFailed


class OneShelf:
    """An exchange client stand-in that offers fixed requests and records decisions."""

    base_url = "http://exchange.test"

    def __init__(self, offers: list[tuple[str, bytes]]) -> None:
        self.offers = offers
        self.consents: list[str] = []

    def open_requests(self) -> list[dict]:
        return [{"request": token, "package": package_address(pkg)} for token, pkg in self.offers]

    def package(self, address: str) -> bytes:
        return next(pkg for _, pkg in self.offers if package_address(pkg) == address)

    def send_consent(self, jws: str) -> dict:
        self.consents.append(jws)
        return {"recorded": True}


def _forged(token: str) -> str:
    head, payload, sig = token.split(".")
    return f"{head}.{b64url(b64url_decode(payload).replace(b'Sleep Lab', b'Sleep Lad'))}.{sig}"


def test_the_exchange_address_is_remembered_forgotten_and_overridden(vault, monkeypatch):
    monkeypatch.delenv("TESSERA_EXCHANGE", raising=False)
    assert vault_sync.exchange_url(vault) is None
    with pytest.raises(vault_sync.ExchangeNotSet):
        vault_sync.client_for(vault)
    vault_sync.set_exchange_url(vault, "http://127.0.0.1:9000")
    assert vault_sync.exchange_url(vault) == "http://127.0.0.1:9000"
    assert vault_sync.client_for(vault, retries=1).base_url == "http://127.0.0.1:9000"
    monkeypatch.setenv("TESSERA_EXCHANGE", "http://127.0.0.1:9100")
    assert vault_sync.exchange_url(vault) == "http://127.0.0.1:9100"
    monkeypatch.delenv("TESSERA_EXCHANGE")
    vault_sync.set_exchange_url(vault, None)
    assert vault_sync.exchange_url(vault) is None


def test_sync_sorts_requests_into_new_known_and_refused_and_delivers_consents(vault, tmp_path):
    org = new_org()
    package = package_bytes(tmp_path)
    token = signed_request(org, package_address(package))
    forged = _forged(signed_request(org, package_address(package)))
    shelf = OneShelf([(token, package), (forged, package)])

    found = vault_sync.sync_requests(vault, shelf)

    (new,) = found["new"]
    assert new["organization"] == "Sleep Lab"
    (refused,) = found["refused"]
    assert refused["id"] == json.loads(b64url_decode(forged.split(".")[1]))["jti"].removeprefix(
        "urn:tessera:"
    )
    assert "signature" in refused["reason"]
    assert (found["known"], found["delivered"]) == ([], [])
    vc.approve(vault, new["id"])
    again = vault_sync.sync_requests(vault, shelf)
    assert again["known"] == [{"id": new["id"]}] and again["new"] == []
    assert again["delivered"] == [] and len(shelf.consents) == 1


def test_a_request_file_reads_back_and_anything_else_is_refused(tmp_path: Path):
    package = package_bytes(tmp_path)
    token = signed_request(new_org(), package_address(package))
    good = tmp_path / "request.json"
    good.write_text(
        json.dumps({"request": token, "package": base64.b64encode(package).decode()}),
        encoding="utf-8",
    )
    assert vault_sync.read_request_file(good) == (token, package)
    for name, text in [
        ("garbage.json", "{not json"),
        ("list.json", "[1, 2]"),
        ("other.json", json.dumps({"format": "x/1", "request": token, "package": ""})),
    ]:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        with pytest.raises(VerificationFailed, match="not a request file"):
            vault_sync.read_request_file(path)
