"""A crash between a write's COMMIT and its checkpoint: the next unlock signs what it left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlcipher3

from identity.keys import b64url_decode
from tests.conftest import PASSPHRASE
from tests.vault.rollback import copied_back
from vault.accesslog import AccessLog
from vault.core import Vault
from vault.schema import SCHEMA_VERSION

DATASET = "health.step_count"


def append(vault: Vault, dataset: str, n: int) -> None:
    for i in range(n):
        with vault.transaction():
            vault.log.append(dataset, "read", "did:key:z6MkOrg", f"round {i}", rows=i)


def marked(vault: Vault) -> list[str]:
    return [
        r[0]
        for r in vault.conn.execute(
            "SELECT dataset FROM checkpoint_state WHERE needs_checkpoint = 1 ORDER BY 1"
        )
    ]


def signed_heads(line: str) -> dict[str, tuple[int, str]]:
    """The (size, root) of every log that one checkpoint line signs."""
    payload = json.loads(b64url_decode(json.loads(line)["checkpoint"].split(".")[1]))
    return {log_id: (head["size"], head["root"]) for log_id, head in payload["logs"].items()}


def lines(vault_dir: Path) -> list[str]:
    return (vault_dir / "checkpoints.jsonl").read_text().splitlines()


def test_a_failed_append_after_commit_is_signed_at_the_next_unlock(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(vault, DATASET, 2)

    def power_cut(path: Path, line: str) -> None:
        raise OSError("power cut before the checkpoint reached the disk")

    monkeypatch.setattr("vault.checkpoints.append_line", power_cut)
    with pytest.raises(OSError, match="power cut"), vault.transaction():
        vault.log.append(DATASET, "export", vault.did, "export to a.csv (csv)", rows=7)
    monkeypatch.undo()
    assert len(vault.log.entries(DATASET)) == 3  # the entry committed
    assert marked(vault) == [DATASET]
    assert any("not covered" in p for p in vault.verify()["problems"])
    vault.close()

    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        report = reopened.verify()
        assert report["ok"], report["problems"]
        assert marked(reopened) == []
        newest = signed_heads(lines(vault_dir)[-1])
        assert newest == {reopened.log.log_id(DATASET): (3, report["datasets"][DATASET]["root"])}


def test_a_kill_before_publishing_is_signed_at_the_next_unlock(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(vault, DATASET, 1)
    before = lines(vault_dir)
    # kill -9 right after COMMIT: nothing after it runs, in two transactions on two logs
    monkeypatch.setattr(AccessLog, "publish_checkpoints", lambda self: None)
    append(vault, DATASET, 2)
    append(vault, "location.points", 1)
    monkeypatch.undo()
    assert lines(vault_dir) == before
    vault.close()

    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        report = reopened.verify()
        assert report["ok"], report["problems"]
        assert len(lines(vault_dir)) == len(before) + 1  # one checkpoint for both logs
        assert set(signed_heads(lines(vault_dir)[-1])) == {
            reopened.log.log_id(DATASET),
            reopened.log.log_id("location.points"),
        }
    # nothing left to do: a second unlock writes nothing
    Vault.unlock(vault_dir, PASSPHRASE).close()
    assert len(lines(vault_dir)) == len(before) + 1


def test_a_crash_after_the_append_before_the_clear_is_harmless(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(vault, DATASET, 1)

    def killed(self: AccessLog, heads: object) -> None:
        raise SystemExit("killed after the checkpoint line was written")

    monkeypatch.setattr(AccessLog, "_clear", killed)
    with pytest.raises(SystemExit):
        append(vault, DATASET, 1)
    monkeypatch.undo()
    assert marked(vault) == [DATASET]
    written = lines(vault_dir)
    vault.close()

    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        assert marked(reopened) == []
        assert lines(vault_dir) == written  # already covered: cleared, nothing re-signed
        assert reopened.verify()["ok"]


def test_a_duplicate_checkpoint_is_harmless(vault: Vault, vault_dir: Path) -> None:
    append(vault, DATASET, 3)
    # the same heads signed again, as a crash between the append and the clear could cause
    vault.conn.execute("UPDATE checkpoint_state SET needs_checkpoint = 1")
    vault.log._pending.add(DATASET)
    vault.log.publish_checkpoints()
    last, previous = signed_heads(lines(vault_dir)[-1]), signed_heads(lines(vault_dir)[-2])
    assert last == previous
    report = vault.verify()
    assert report["ok"], report["problems"]
    append(vault, DATASET, 1)
    assert vault.verify()["ok"]


def test_an_old_database_with_a_mark_is_not_signed_at_unlock(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(vault, DATASET, 2)
    monkeypatch.setattr(AccessLog, "publish_checkpoints", lambda self: None)
    append(vault, DATASET, 1)  # committed and marked, never signed
    monkeypatch.undo()
    with copied_back(vault, vault_dir) as later:
        append(later, DATASET, 3)  # the file now vouches for 6 entries
    written = lines(vault_dir)

    with Vault.unlock(vault_dir, PASSPHRASE) as rolled_back:
        assert lines(vault_dir) == written  # the 3-entry log is not signed over the 6
        assert marked(rolled_back) == [DATASET]
        report = rolled_back.verify()
    assert any("behind the signed checkpoint" in p for p in report["problems"]), report


def test_a_vault_at_the_previous_schema_upgrades_and_verifies(
    vault: Vault, vault_dir: Path
) -> None:
    append(vault, DATASET, 3)
    key = vault.data_key
    vault.close()
    conn = sqlcipher3.connect(str(vault_dir / "vault.db"), isolation_level=None)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    conn.execute("ALTER TABLE checkpoint_state DROP COLUMN needs_checkpoint")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.close()

    with Vault.unlock(vault_dir, PASSPHRASE) as upgraded:
        version = upgraded.conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == SCHEMA_VERSION
        assert marked(upgraded) == []
        assert upgraded.verify()["ok"]
        append(upgraded, DATASET, 2)
        report = upgraded.verify()
        assert report["ok"], report["problems"]
        assert report["datasets"][DATASET]["entries"] == 5


def test_a_busy_lock_after_commit_defers_the_checkpoint_to_the_next_write(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(vault, DATASET, 1)
    vault.conn.execute("PRAGMA busy_timeout = 0")
    other = sqlcipher3.connect(str(vault_dir / "vault.db"), isolation_level=None)
    other.execute(f"PRAGMA key = \"x'{vault.data_key.hex()}'\"")
    publish = AccessLog.publish_checkpoints

    def another_writer_first(self: AccessLog) -> None:
        other.execute("BEGIN IMMEDIATE")  # between our COMMIT and our checkpoint
        publish(self)

    with monkeypatch.context() as patch:
        patch.setattr(AccessLog, "publish_checkpoints", another_writer_first)
        append(vault, DATASET, 1)  # committed; the checkpoint could not take the lock
    other.execute("ROLLBACK")
    other.close()
    assert marked(vault) == [DATASET]
    with pytest.raises(RuntimeError), vault.transaction():
        vault.log.append("location.points", "read", "did:key:z6MkOrg", "doomed")
        raise RuntimeError("rolled back")
    append(vault, "location.points", 1)  # the next write signs the deferred log too
    assert marked(vault) == []
    report = vault.verify()
    assert report["ok"], report["problems"]
