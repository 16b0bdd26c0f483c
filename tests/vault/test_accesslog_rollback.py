"""An old vault.db copied back and then grown past its newest signed head in one write: the
newest checkpoint matches it, so verify checks every head the file ever signed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity.keys import b64url_decode
from tests.conftest import PASSPHRASE
from tests.vault.rollback import copied_back
from vault.accesslog import AccessLog
from vault.core import Vault

DATASET = "health.step_count"


def append(vault: Vault, n: int, dataset: str = DATASET) -> None:
    """``n`` transactions of one entry each: one checkpoint line each."""
    for i in range(n):
        with vault.transaction():
            vault.log.append(dataset, "read", "did:key:z6MkOrg", f"round {i}", rows=i)


def append_at_once(vault: Vault, n: int, dataset: str = DATASET) -> None:
    """One transaction of ``n`` entries: one checkpoint line."""
    with vault.transaction():
        for i in range(n):
            vault.log.append(dataset, "export", vault.did, f"export {i}", rows=i)


def lines(vault_dir: Path) -> list[str]:
    return (vault_dir / "checkpoints.jsonl").read_text().splitlines()


def signed_at(line: str) -> str:
    return json.loads(b64url_decode(json.loads(line)["checkpoint"].split(".")[1]))["time"]


def test_an_old_database_grown_past_its_newest_head_in_one_write_is_detected(
    vault: Vault, vault_dir: Path
) -> None:
    append(vault, 2)
    with copied_back(vault, vault_dir) as later:
        append(later, 3)  # signed at sizes 3, 4, 5; then these three entries are lost
    lost_head_time = signed_at(lines(vault_dir)[2])

    with Vault.unlock(vault_dir, PASSPHRASE) as restored:
        append_at_once(restored, 4)  # size 6: past every signed head, and signed itself
        report = restored.verify()

    assert not report["ok"]
    differ = [p for p in report["problems"] if "differ" in p]
    assert differ == [
        f"{DATASET}: entries before #3 differ from what was signed at {lost_head_time}:"
        " the database was replaced or edited"
    ]  # the first disagreement only, naming the log and the size
    assert not report["datasets"][DATASET]["ok"]
    # the file alone shows nothing: its heads only grow, and the newest one matches the log
    assert not any("contradicts" in p or "behind" in p for p in report["problems"]), report


def test_a_second_log_untouched_by_the_restore_stays_clean(vault: Vault, vault_dir: Path) -> None:
    append(vault, 2, "location.points")
    append(vault, 1)
    with copied_back(vault, vault_dir) as later:
        append(later, 2)
    with Vault.unlock(vault_dir, PASSPHRASE) as restored:
        append_at_once(restored, 3)
        report = restored.verify()
    assert report["datasets"]["location.points"]["ok"]
    assert [p.split(":")[0] for p in report["problems"]] == [DATASET]


def test_an_honest_history_of_many_writes_verifies(vault: Vault, vault_dir: Path) -> None:
    for round_ in range(12):
        append_at_once(vault, 1 + round_ % 5)  # several sizes signed, some far apart
        if round_ % 3 == 0:
            with vault.transaction():  # one line for two logs
                for dataset in (DATASET, "location.points"):
                    vault.log.append(dataset, "read", "did:key:z6MkOrg", "both")
    report = vault.verify()
    assert report["ok"], report["problems"]
    vault.close()
    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        report = reopened.verify()
    assert report["ok"], report["problems"]
    assert report["datasets"][DATASET]["entries"] == sum(1 + r % 5 for r in range(12)) + 4


def test_an_old_database_with_a_mark_is_not_signed_over_an_older_head(
    vault: Vault, vault_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(vault, 2)
    with copied_back(vault, vault_dir) as later:
        append(later, 3)
    with Vault.unlock(vault_dir, PASSPHRASE) as restored:
        append_at_once(restored, 4)  # newest head 6 now matches the restored log
        with monkeypatch.context() as patch:
            patch.setattr(AccessLog, "publish_checkpoints", lambda self: None)
            append(restored, 1)  # committed and marked; the process dies before signing
    written = lines(vault_dir)

    with Vault.unlock(vault_dir, PASSPHRASE) as reopened:
        # the newest head is a prefix of the log, an older one is not: nothing is signed
        assert lines(vault_dir) == written
        report = reopened.verify()
    assert any("entries before #3 differ" in p for p in report["problems"]), report
    assert any("not covered" in p for p in report["problems"]), report
