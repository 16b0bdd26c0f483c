"""Requests entering the inbox: verified, their package checked, stored once."""

from __future__ import annotations

import pytest

from agents.package import package_address
from agents.request_check import receive_request
from tests.fixtures.inbox import (  # noqa: F401
    add_request,
    data_vault_fixture,
    org_fixture,
    package_fixture,
)
from tests.fixtures.training_requests import package_bytes, signed_request
from vault import consent as vc
from vault.errors import ModelRefused, VerificationFailed


def test_a_verified_request_lands_in_the_inbox_once(data_vault, org, package):
    token = signed_request(org, package_address(package))
    request, new = receive_request(data_vault, token, package, "exchange")
    assert new
    again, new_again = receive_request(data_vault, token, package, "exchange")
    assert (again.id, new_again) == (request.id, False)
    listed = vc.list_requests(data_vault)
    assert [(r["id"], r["status"]) for r in listed] == [(request.id, "pending")]
    assert vc.request_package(data_vault, request.id) == package


def test_a_replayed_id_with_other_content_is_refused(data_vault, org, package):
    request = add_request(data_vault, org, package)
    with pytest.raises(VerificationFailed, match="already received"):
        receive_request(
            data_vault,
            signed_request(org, package_address(package), id=request.id, purpose="Something else"),
            package,
            "exchange",
        )


def test_a_package_that_does_not_match_the_request_is_refused(data_vault, org, package, tmp_path):
    with pytest.raises(VerificationFailed, match="does not match"):
        receive_request(data_vault, signed_request(org, "sha256:" + "0" * 64), package, "x")
    other = package_bytes(tmp_path, recipe="mobility_daily", d=4)
    with pytest.raises(ModelRefused, match="recipe"):
        receive_request(data_vault, signed_request(org, package_address(other)), other, "x")
    wrong_label = package_bytes(tmp_path, label="resting_heart_rate")
    with pytest.raises(ModelRefused, match="label"):
        receive_request(
            data_vault, signed_request(org, package_address(wrong_label)), wrong_label, "x"
        )
    assert vc.list_requests(data_vault) == []


def test_an_expired_request_never_enters(data_vault, org, package):
    token = signed_request(
        org,
        package_address(package),
        issued="2024-01-01T00:00:00Z",
        expires="2024-01-02T00:00:00Z",
    )
    with pytest.raises(VerificationFailed, match="expired"):
        receive_request(data_vault, token, package, "x")
