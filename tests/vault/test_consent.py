"""Requests inbox, approve/deny/revoke, and the consent-scoped reader with its access log."""

from __future__ import annotations

import time

import pytest

from identity.credentials import verify_consent, verify_revocation
from identity.keys import did_for
from tests.fixtures.inbox import (  # noqa: F401
    add_request,
    data_vault_fixture,
    org_fixture,
    package_fixture,
)
from vault import consent as vc
from vault.errors import ConsentMissing

STEPS, HEART, SLEEP = "health.step_count", "health.heart_rate", "health.sleep_analysis"


def _log(vault, dataset):
    return vault.log.entries(dataset)


# ----------------------------------------------------------------------------- decisions


def test_approve_signs_a_consent_receipt_and_logs_consent_on_each_dataset(data_vault, org, package):
    request = add_request(data_vault, org, package)
    consent = vc.approve(data_vault, request.id, [STEPS, SLEEP], 1.5)
    payload = verify_consent(consent.jws, data_vault.did, request)
    assert payload["datasets"] == [STEPS, SLEEP] and payload["epsilon_budget"] == 1.5
    assert consent.state() == "active"
    for name in (STEPS, SLEEP):
        last = _log(data_vault, name)[-1]
        assert (last["action"], last["consent"], last["task"]) == (
            "consent",
            consent.id,
            request.id,
        )
    assert all(e["action"] != "consent" for e in _log(data_vault, HEART))
    assert vc.get_request(data_vault, request.id).status == "approved"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"datasets": ["location.points"]}, "did not ask"),
        ({"epsilon_budget": 3.5}, "at most"),
        ({"epsilon_budget": 0}, "above 0"),
        ({"expires": time.time() + 365 * 86_400}, "outlast"),
        ({"expires": time.time() - 10}, "future"),
    ],
)
def test_approval_may_only_narrow_the_request(data_vault, org, package, kwargs, reason):
    request = add_request(data_vault, org, package)
    with pytest.raises(vc.DecisionRefused, match=reason):
        vc.approve(data_vault, request.id, **kwargs)
    assert vc.get_request(data_vault, request.id).status == "pending"


def test_a_request_is_decided_once(data_vault, org, package):
    request = add_request(data_vault, org, package)
    vc.deny(data_vault, request.id)
    with pytest.raises(vc.DecisionRefused, match="denied"):
        vc.approve(data_vault, request.id)


def test_deny_touches_no_dataset_log_and_no_read_is_possible(data_vault, org, package):
    before = {d: _log(data_vault, d) for d in (STEPS, HEART, SLEEP)}
    request = add_request(data_vault, org, package)
    denied = vc.deny(data_vault, request.id)
    assert denied.status == "denied"
    assert {d: _log(data_vault, d) for d in before} == before
    assert vc.consent_for_request(data_vault, request.id) is None
    with pytest.raises(ConsentMissing):
        vc.ConsentScopedReader(data_vault, "consent-" + "0" * 32).read(STEPS)
    assert {d: _log(data_vault, d) for d in before} == before
    assert all(e["action"] != "read" for d in before for e in _log(data_vault, d))


# ------------------------------------------------------------------------------ reader


def test_reads_are_checked_logged_and_digested(data_vault, org, package):
    request = add_request(data_vault, org, package)
    consent = vc.approve(data_vault, request.id, [STEPS, HEART])
    reader = vc.ConsentScopedReader(data_vault, consent.id, round_index=2)
    rows = reader.read(STEPS, columns=("start", "value"))
    assert len(rows) == 20 and rows[0].value is not None
    assert rows[0].source is None and rows[0].unit is None  # only the columns asked for
    entry = _log(data_vault, STEPS)[-1]
    assert entry["action"] == "read"
    assert entry["actor"] == did_for(org)
    assert (entry["consent"], entry["task"], entry["rows"]) == (consent.id, request.id, 20)
    assert entry["purpose"].endswith("(round 3)")
    assert entry["digest"] == vc.rows_digest(rows)
    assert data_vault.verify()["ok"]


def test_reads_outside_the_consent_raise_and_append_nothing(data_vault, org, package):
    request = add_request(data_vault, org, package)
    consent = vc.approve(data_vault, request.id, [STEPS])
    reader = vc.ConsentScopedReader(data_vault, consent.id)
    before = {d: _log(data_vault, d) for d in (STEPS, SLEEP)}
    with pytest.raises(ConsentMissing, match="does not cover"):
        reader.read(SLEEP)
    with pytest.raises(ConsentMissing, match="covers"):
        reader.read(STEPS, time_from=0.0)
    with pytest.raises(ConsentMissing, match="expired"):
        vc.ConsentScopedReader(data_vault, consent.id, now=time.time() + 400 * 86_400).read(STEPS)
    with pytest.raises(ConsentMissing, match="no consent"):
        vc.ConsentScopedReader(data_vault, "consent-" + "f" * 32).read(STEPS)
    assert {d: _log(data_vault, d) for d in before} == before


def test_revocation_is_logged_and_stops_reads(data_vault, org, package):
    request = add_request(data_vault, org, package)
    consent = vc.approve(data_vault, request.id, [STEPS, SLEEP])
    reader = vc.ConsentScopedReader(data_vault, consent.id)
    reader.read(STEPS)
    revoked = vc.revoke(data_vault, consent.id)
    assert revoked.state() == "revoked"
    assert (
        verify_revocation(
            data_vault.conn.execute(
                "SELECT revocation FROM consents WHERE id = ?", (consent.id,)
            ).fetchone()[0],
            data_vault.did,
        )["consent"]
        == consent.id
    )
    for name in (STEPS, SLEEP):
        assert _log(data_vault, name)[-1]["action"] == "revoke"
    size = len(_log(data_vault, STEPS))
    with pytest.raises(ConsentMissing, match="revoked"):
        reader.read(STEPS)
    assert len(_log(data_vault, STEPS)) == size
    with pytest.raises(vc.DecisionRefused):
        vc.revoke(data_vault, consent.id)
    assert vc.get_request(data_vault, request.id).status == "revoked"
    assert data_vault.verify()["ok"]
