"""Compaction of `checkpoints.jsonl`: one signed head replaces the old lines, and verify still
catches rollbacks, changed logs, forged, moved and removed lines after it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from identity.keys import b64url, b64url_decode, canonical_json
from tests.conftest import PASSPHRASE
from tests.vault.rollback import copied_back
from vault import checkpoints
from vault.core import Vault
from vault.merkle import leaf_hash

THRESHOLD = 5
DATASETS = ("health.step_count", "location.points")


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "COMPACT_AFTER", THRESHOLD)


def write(vault: Vault, transactions: int, dataset: str | None = None) -> None:
    for i in range(transactions):
        with vault.transaction():
            name = dataset or DATASETS[i % len(DATASETS)]
            vault.log.append(name, "read", "did:key:z6MkOrg", f"round {i}", rows=i)


def lines(vault_dir: Path) -> list[str]:
    return (vault_dir / "checkpoints.jsonl").read_text().splitlines()


def payload(line: str) -> dict:
    return json.loads(b64url_decode(json.loads(line)["checkpoint"].split(".")[1]))


def with_payload(line: str, claims: dict) -> str:
    """``line`` with its payload replaced and its old signature kept (a forgery)."""
    head, _, signature = json.loads(line)["checkpoint"].split(".")
    return json.dumps({"checkpoint": f"{head}.{b64url(canonical_json(claims))}.{signature}"})


def rewrite(vault_dir: Path, new_lines: list[str]) -> None:
    (vault_dir / "checkpoints.jsonl").write_text("\n".join(new_lines) + "\n")


def problems(vault: Vault) -> list[str]:
    report = vault.verify()
    assert report["ok"] == (not report["problems"])
    return report["problems"]


def test_past_the_threshold_the_file_is_one_head_and_newer_lines(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[bytes] = []
    real_atomic_write = checkpoints.atomic_write

    def spy(path: Path, data: bytes) -> None:
        replaced.append(path.read_bytes())
        real_atomic_write(path, data)

    monkeypatch.setattr(checkpoints, "atomic_write", spy)
    write(vault, THRESHOLD)
    assert len(lines(vault_dir)) == THRESHOLD  # at the threshold, not past it
    write(vault, 3)

    old = replaced[0].decode().splitlines()
    assert len(old) == THRESHOLD + 1
    now = lines(vault_dir)
    assert len(now) == 3  # the head and the two transactions after it
    head = payload(now[0])
    assert head["prev"] is None and head["vault"] == vault.did
    assert head["compacted"] == {
        "lines": THRESHOLD + 1,
        "last": hashlib.sha256(old[-1].encode()).hexdigest(),
    }
    newest: dict[str, dict] = {}
    for line in old:
        claims = payload(line)
        newest.update({log: {**h, "time": claims["time"]} for log, h in claims["logs"].items()})
    assert head["logs"] == newest  # each log's newest head, with when it was signed
    assert set(head["logs"]) == {vault.log.log_id(d) for d in DATASETS}
    assert payload(now[1])["prev"] == hashlib.sha256(now[0].encode()).hexdigest()
    assert problems(vault) == []


def test_compaction_repeats_and_a_reopened_vault_verifies(vault: Vault, vault_dir: Path) -> None:
    write(vault, 3 * THRESHOLD + 2)
    assert len(lines(vault_dir)) <= THRESHOLD
    assert payload(lines(vault_dir)[0])["compacted"]["lines"] == THRESHOLD + 1
    vault.close()
    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        report = reopened.verify()
        assert report["ok"], report["problems"]
        entries = sum(d["entries"] for d in report["datasets"].values())
        assert entries == 3 * THRESHOLD + 2


def test_an_old_database_restored_after_compaction_is_detected(
    vault: Vault, vault_dir: Path
) -> None:
    write(vault, 2)
    with copied_back(vault, vault_dir) as later:
        write(later, THRESHOLD)
        assert "compacted" in payload(lines(vault_dir)[0])
    with Vault.unlock(vault_dir, PASSPHRASE) as rolled_back:
        found = problems(rolled_back)
    assert any("behind the signed checkpoint" in p for p in found), found


def test_a_changed_log_is_detected_after_compaction(vault: Vault) -> None:
    write(vault, THRESHOLD + 1)
    forged = json.dumps({"forged": True}).encode()
    vault.conn.execute(
        "UPDATE access_log SET entry = ?, leaf = ? WHERE dataset = ? AND seq = 0",
        (forged, leaf_hash(forged), DATASETS[0]),
    )
    found = problems(vault)
    assert any("signed checkpoint" in p or "recorded state" in p for p in found), found


def test_a_forged_head_is_detected(vault: Vault, vault_dir: Path) -> None:
    write(vault, THRESHOLD + 1)
    now = lines(vault_dir)
    assert len(now) == 1
    claims = payload(now[0])
    for head in claims["logs"].values():
        head["size"] = 1
    rewrite(vault_dir, [with_payload(now[0], claims)])
    found = problems(vault)
    assert any("line 1: bad checkpoint signature" in p for p in found), found


def test_an_edited_line_after_the_head_is_detected(vault: Vault, vault_dir: Path) -> None:
    write(vault, THRESHOLD + 3)
    now = lines(vault_dir)
    claims = payload(now[1])
    claims["time"] = "2020-01-01T00:00:00Z"
    rewrite(vault_dir, [now[0], with_payload(now[1], claims), now[2]])
    found = problems(vault)
    assert any("line 2: bad checkpoint signature" in p for p in found), found


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("removed middle line", lambda ls: [ls[0], ls[2]], "line 2: hash chain broken"),
        ("removed head", lambda ls: ls[1:], "line 1: hash chain broken"),
        ("swapped lines", lambda ls: [ls[0], ls[2], ls[1]], "line 2: hash chain broken"),
        ("head repeated", lambda ls: [ls[0], ls[0], *ls[1:]], "only as the first line"),
    ],
)
def test_a_broken_chain_after_compaction_is_detected(
    vault: Vault, vault_dir: Path, name: str, edit, message: str
) -> None:
    write(vault, THRESHOLD + 3)
    now = lines(vault_dir)
    assert len(now) == 3 and "compacted" in payload(now[0])
    rewrite(vault_dir, edit(now))
    found = problems(vault)
    assert any(message in p for p in found), (name, found)


def test_a_failed_rewrite_leaves_the_old_file_whole(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rename(source: object, target: object) -> None:
        raise OSError("disk pulled during the rename")

    write(vault, THRESHOLD)
    with monkeypatch.context() as patch:
        patch.setattr("vault.fsutil.os.replace", no_rename)
        write(vault, 1)  # the write itself succeeds; only the housekeeping failed
    assert len(lines(vault_dir)) == THRESHOLD + 1
    assert not any(payload(line).get("compacted") for line in lines(vault_dir))
    assert sorted(p.name for p in vault_dir.iterdir()) == [
        "checkpoints.jsonl",
        "vault.db",
        "vault.db-shm",
        "vault.db-wal",
        "vault.key.json",
    ]
    assert problems(vault) == []
    write(vault, 1)  # tried again later, and now it works
    assert len(lines(vault_dir)) == 1 and "compacted" in payload(lines(vault_dir)[0])
    assert problems(vault) == []


def test_a_file_that_fails_its_check_is_not_compacted(vault: Vault, vault_dir: Path) -> None:
    write(vault, 3)
    now = lines(vault_dir)
    rewrite(vault_dir, [now[0], now[2]])  # a removed line: evidence to keep
    write(vault, THRESHOLD)
    assert len(lines(vault_dir)) == 2 + THRESHOLD
    assert any("hash chain broken" in p for p in problems(vault))


def test_a_crash_before_publishing_is_signed_at_unlock_after_compaction(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vault.accesslog import AccessLog

    write(vault, THRESHOLD + 2)
    with monkeypatch.context() as patch:
        patch.setattr(AccessLog, "publish_checkpoints", lambda self: None)
        write(vault, 1, DATASETS[1])
    vault.close()
    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        assert problems(reopened) == []


def restore_after(vault: Vault, vault_dir: Path, transactions: int) -> None:
    """Save the database, write ``transactions`` more on one log, then copy the saved one back."""
    with copied_back(vault, vault_dir) as later:
        write(later, transactions, DATASETS[0])


def grow_at_once(vault: Vault, n: int) -> None:
    """One transaction of ``n`` entries on one log: one checkpoint line."""
    with vault.transaction():
        for i in range(n):
            vault.log.append(DATASETS[0], "export", vault.did, f"export {i}", rows=i)


def test_an_old_database_grown_past_a_compacted_head_in_one_write_is_detected(
    vault: Vault, vault_dir: Path
) -> None:
    write(vault, 2, DATASETS[0])
    log_id = vault.log.log_id(DATASETS[0])
    restore_after(vault, vault_dir, THRESHOLD)  # sizes 3..7 signed; compacted at line 6
    head = payload(lines(vault_dir)[0])
    assert "compacted" in head
    lost = head["logs"][log_id]  # the only trace left of sizes 3 to 6
    assert lost["size"] == THRESHOLD + 1

    with Vault.unlock(vault_dir, PASSPHRASE) as restored:
        grow_at_once(restored, 2 * THRESHOLD)  # past every signed head, and signed itself
        found = problems(restored)

    assert [p for p in found if "differ" in p] == [
        f"{DATASETS[0]}: entries before #{THRESHOLD + 1} differ from what was signed at"
        f" {lost['time']}: the database was replaced or edited"
    ], found


def test_a_file_the_database_disagrees_with_is_not_compacted(vault: Vault, vault_dir: Path) -> None:
    write(vault, 2, DATASETS[0])
    restore_after(vault, vault_dir, 2)  # sizes 3 and 4 signed, then lost
    with Vault.unlock(vault_dir, PASSPHRASE) as restored:
        grow_at_once(restored, 4)  # line 5: size 6, matching the restored log
        write(restored, 3)  # past the threshold: compacting would drop sizes 3 and 4
        assert len(lines(vault_dir)) == 5 + 3
        assert not any("compacted" in payload(line) for line in lines(vault_dir))
        assert not restored.log._file.compact()  # asked directly, too
        found = problems(restored)
    assert any(f"{DATASETS[0]}: entries before #3 differ" in p for p in found), found


def test_an_honest_history_verifies_across_compactions(vault: Vault, vault_dir: Path) -> None:
    for round_ in range(4 * THRESHOLD):
        grow_at_once(vault, 1 + round_ % 3)
        if round_ % 4 == 0:
            write(vault, 2)  # both logs
        assert problems(vault) == [], round_
    assert "compacted" in payload(lines(vault_dir)[0])
    vault.close()
    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        assert problems(reopened) == []
