"""The per-dataset access log: verification catches changes, removals, forgeries, rollbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity.keys import b64url, b64url_decode, canonical_json
from tests.conftest import PASSPHRASE
from tests.vault.rollback import copied_back
from vault.accesslog import check_proof
from vault.core import Vault
from vault.errors import VerificationFailed


def append(vault: Vault, dataset: str, n: int) -> None:
    for i in range(n):
        with vault.transaction():
            vault.log.append(dataset, "read", "did:key:z6MkOrg", f"round {i}", rows=10 + i)


def test_appends_are_listed_and_verify(vault: Vault) -> None:
    append(vault, "health.step_count", 5)
    append(vault, "location.points", 2)
    entries = vault.log.entries("health.step_count")
    assert [e["seq"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[3]["purpose"] == "round 3" and entries[3]["rows"] == 13
    report = vault.verify()
    assert report["ok"], report["problems"]
    assert report["datasets"]["health.step_count"]["entries"] == 5


def test_a_changed_entry_is_detected(vault: Vault) -> None:
    append(vault, "health.step_count", 4)
    entry = vault.conn.execute(
        "SELECT entry FROM access_log WHERE dataset = 'health.step_count' AND seq = 2"
    ).fetchone()[0]
    forged = entry.replace(b'"rows":12', b'"rows":1')
    vault.conn.execute(
        "UPDATE access_log SET entry = ? WHERE dataset = 'health.step_count' AND seq = 2",
        (forged,),
    )
    report = vault.verify()
    assert not report["ok"]
    assert any("entry 2 was changed" in p for p in report["problems"])


def test_a_changed_entry_with_recomputed_leaf_is_caught_by_checkpoints(vault: Vault) -> None:
    from vault.merkle import leaf_hash

    append(vault, "health.step_count", 4)
    forged = json.dumps({"forged": True}).encode()
    vault.conn.execute(
        "UPDATE access_log SET entry = ?, leaf = ? WHERE dataset = 'health.step_count' AND seq = 1",
        (forged, leaf_hash(forged)),
    )
    report = vault.verify()
    assert not report["ok"]
    assert any("signed checkpoint" in p or "recorded state" in p for p in report["problems"])


def test_a_removed_entry_is_detected(vault: Vault) -> None:
    append(vault, "health.step_count", 4)
    vault.conn.execute("DELETE FROM access_log WHERE dataset = 'health.step_count' AND seq = 3")
    report = vault.verify()
    assert not report["ok"]


def test_a_bad_checkpoint_signature_is_detected(vault: Vault, vault_dir: Path) -> None:
    append(vault, "health.step_count", 2)
    path = vault_dir / "checkpoints.jsonl"
    lines = path.read_text().splitlines()
    token = json.loads(lines[-1])["checkpoint"]
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[5] != "A" else "B").join([signature[:5], signature[6:]])
    lines[-1] = json.dumps({"checkpoint": f"{head}.{payload}.{flipped}"})
    path.write_text("\n".join(lines) + "\n")
    report = vault.verify()
    assert not report["ok"]
    assert any("bad checkpoint" in p for p in report["problems"])


def test_an_old_database_copied_back_is_detected(vault: Vault, vault_dir: Path) -> None:
    append(vault, "health.step_count", 2)
    with copied_back(vault, vault_dir) as later:
        append(later, "health.step_count", 3)
    with Vault.unlock(vault_dir, PASSPHRASE) as rolled_back:
        report = rolled_back.verify()
    assert not report["ok"]
    assert any("behind the signed checkpoint" in p for p in report["problems"]), report


def test_rolled_back_transaction_leaves_no_entry_and_no_checkpoint(
    vault: Vault, vault_dir: Path
) -> None:
    append(vault, "health.step_count", 1)
    lines_before = (vault_dir / "checkpoints.jsonl").read_text()
    with pytest.raises(RuntimeError), vault.transaction():
        vault.log.append("health.step_count", "read", "did:key:z6MkOrg", "doomed")
        raise RuntimeError("crash mid-transaction")
    assert len(vault.log.entries("health.step_count")) == 1
    assert (vault_dir / "checkpoints.jsonl").read_text() == lines_before
    assert vault.verify()["ok"]


def test_inclusion_proof_checks_alone_and_fails_when_edited(vault: Vault) -> None:
    append(vault, "health.step_count", 7)
    proof = vault.log.proof("health.step_count", 4)
    result = check_proof(json.loads(json.dumps(proof)))
    assert result["ok"] and result["vault"] == vault.did and result["seq"] == 4
    edited = json.loads(json.dumps(proof))
    edited["entry"]["rows"] = 0
    with pytest.raises(VerificationFailed):
        check_proof(edited)
    moved = json.loads(json.dumps(proof))
    moved["seq"] = 3
    with pytest.raises(VerificationFailed):
        check_proof(moved)


def test_an_edited_older_checkpoint_breaks_the_hash_chain(vault: Vault, vault_dir: Path) -> None:
    append(vault, "health.step_count", 3)
    path = vault_dir / "checkpoints.jsonl"
    lines = path.read_text().splitlines()
    lines[0] = lines[1]  # replace the first checkpoint with a copy of the second
    path.write_text("\n".join(lines) + "\n")
    report = vault.verify()
    assert not report["ok"]
    assert any("hash chain broken" in p for p in report["problems"])


def test_checkpoints_cover_each_transaction_once(vault: Vault, vault_dir: Path) -> None:
    with vault.transaction():
        for dataset in ("health.step_count", "location.points"):
            vault.log.append(dataset, "read", "did:key:z6MkOrg", "one round")
    lines = (vault_dir / "checkpoints.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert vault.verify()["ok"]


def test_a_forged_checkpoint_stays_detected_after_later_writes_chain_onto_it(
    vault: Vault, vault_dir: Path
) -> None:
    append(vault, "health.step_count", 2)
    path = vault_dir / "checkpoints.jsonl"
    lines = path.read_text().splitlines()
    head, payload, signature = json.loads(lines[-1])["checkpoint"].split(".")
    claims = json.loads(b64url_decode(payload))
    for log in claims["logs"].values():
        log["size"] = 1  # claim the log was shorter, to hide a rollback later
    lines[-1] = json.dumps({"checkpoint": f"{head}.{b64url(canonical_json(claims))}.{signature}"})
    path.write_text("\n".join(lines) + "\n")
    append(vault, "location.points", 1)  # a later, honestly signed line chains onto the forgery
    report = vault.verify()
    assert not report["ok"]
    assert any("line 2: bad checkpoint signature" in p for p in report["problems"]), report


def test_an_old_database_restored_and_written_to_is_detected(vault: Vault, vault_dir: Path) -> None:
    append(vault, "health.step_count", 2)
    with copied_back(vault, vault_dir) as later:
        append(later, "health.step_count", 3)
    with Vault.unlock(vault_dir, PASSPHRASE) as rolled_back:
        append(rolled_back, "health.step_count", 1)  # its newest checkpoint now matches the DB
        report = rolled_back.verify()
    assert not report["ok"]
    assert any("contradicts an earlier one" in p for p in report["problems"]), report
