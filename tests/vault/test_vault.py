"""Vault life cycle and its security properties: keys, passphrases, files at rest."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE, snapshot
from vault.core import Vault
from vault.errors import VaultExists, VaultNotFound, WrongPassphrase
from vault.keyfile import MIN_MEMORY_KIB, KeyFile, calibrate

SECRET_VALUE = "Zebrafinch-Clinic-4711"


def write_prefs(folder: Path) -> Path:
    path = folder / "favourites.csv"
    path.write_text(f"item,rating\n{SECRET_VALUE},5\nquiet trains,4\n", encoding="utf-8")
    return path


def test_create_makes_private_files_and_an_identity(vault: Vault, vault_dir: Path) -> None:
    assert stat.S_IMODE(vault_dir.stat().st_mode) == 0o700
    for name in ("vault.db", "vault.key.json"):
        assert stat.S_IMODE((vault_dir / name).stat().st_mode) == 0o600
    assert vault.did.startswith("did:key:z6Mk")
    stored = vault.conn.execute("SELECT did FROM identity").fetchone()[0]
    assert stored == vault.did


def test_key_file_holds_no_secret_in_clear(vault: Vault, vault_dir: Path) -> None:
    text = (vault_dir / "vault.key.json").read_text()
    assert vault.data_key.hex() not in text
    assert PASSPHRASE not in text
    data = json.loads(text)
    assert data["passphrase"]["kdf"] == "argon2id"
    assert data["passphrase"]["memory_kib"] >= MIN_MEMORY_KIB


def test_kdf_calibration_takes_at_least_half_a_second_and_64_mib() -> None:
    params = calibrate()
    assert params.memory_kib >= 64 * 1024
    assert params.time_cost >= 1


def test_wrong_passphrase_leaves_every_file_byte_identical(vault: Vault, vault_dir: Path) -> None:
    vault.close()
    before = snapshot(vault_dir)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Vault.unlock(vault_dir, "not the passphrase")
    assert snapshot(vault_dir) == before


def test_creating_over_an_existing_vault_is_refused(vault: Vault, vault_dir: Path) -> None:
    with pytest.raises(VaultExists):
        Vault.create(vault_dir, "another passphrase")


def test_unlocking_a_missing_vault_says_so(tmp_path: Path) -> None:
    with pytest.raises(VaultNotFound):
        Vault.unlock(tmp_path / "nothing", PASSPHRASE)


def test_change_passphrase_rewraps_without_rewriting_data(vault: Vault, vault_dir: Path) -> None:
    db_before = (vault_dir / "vault.db").read_bytes()
    vault.change_passphrase("a brand new passphrase")
    vault.close()
    assert (vault_dir / "vault.db").read_bytes() == db_before
    with pytest.raises(WrongPassphrase):
        Vault.unlock(vault_dir, PASSPHRASE)
    Vault.unlock(vault_dir, "a brand new passphrase").close()


def test_recovery_code_sets_a_new_passphrase(vault_dir: Path) -> None:
    created, code = Vault.create(vault_dir, PASSPHRASE)
    did = created.did
    created.close()
    with pytest.raises(WrongPassphrase, match="recovery code"):
        Vault.recover(vault_dir, "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE", "new passphrase 1")
    Vault.recover(vault_dir, code.lower().replace("-", " "), "new passphrase 1").close()
    with Vault.unlock(vault_dir, "new passphrase 1") as reopened:
        assert reopened.did == did


def test_a_key_wrap_cannot_be_moved_between_vaults(tmp_path: Path) -> None:
    a, _ = Vault.create(tmp_path / "a", PASSPHRASE)
    b, _ = Vault.create(tmp_path / "b", PASSPHRASE)
    a.close()
    b.close()
    key_a = json.loads((tmp_path / "a" / "vault.key.json").read_text())
    key_b = json.loads((tmp_path / "b" / "vault.key.json").read_text())
    key_b["passphrase"] = key_a["passphrase"]
    with pytest.raises(WrongPassphrase):
        KeyFile(key_b).unwrap_with_passphrase(PASSPHRASE)


def test_no_plaintext_of_values_or_sources_at_rest(vault: Vault, vault_dir: Path) -> None:
    vault.import_path(write_prefs(vault_dir.parent))
    # Read back so WAL and SHM are in use, then look at every file while the vault is open.
    assert vault.stats("preferences.favourites")["records"] == 2
    for path in vault_dir.iterdir():
        data = path.read_bytes()
        assert SECRET_VALUE.encode() not in data, path.name
        assert b"favourites" not in data or path.name == "checkpoints.jsonl", path.name
    assert b"favourites" not in (vault_dir / "checkpoints.jsonl").read_bytes()


def test_a_flipped_byte_in_the_database_is_never_read_silently(
    vault: Vault, vault_dir: Path
) -> None:
    vault.import_path(write_prefs(vault_dir.parent))
    vault.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    vault.close()
    db = vault_dir / "vault.db"
    data = bytearray(db.read_bytes())
    for offset in (100, len(data) // 2, len(data) - 200):
        data[offset] ^= 0x01
    db.write_bytes(bytes(data))
    try:
        reopened = Vault.unlock(vault_dir, PASSPHRASE)
    except Exception:  # noqa: BLE001 - refusing to open is one acceptable outcome
        return
    with reopened, pytest.raises(Exception):  # noqa: B017, PT011 - any failure is right here
        reopened.conn.execute("SELECT count(*), sum(length(extra)) FROM records").fetchall()
        report = reopened.verify()
        assert report["ok"]


def test_secrets_never_reach_debug_output(tessera, vault_dir: Path) -> None:
    result = tessera("--debug", "init", "--json")
    assert result.code == 0
    data_key_file = json.loads((vault_dir / "vault.key.json").read_text())
    failed = tessera("--debug", "datasets", env={"TESSERA_PASSPHRASE": "wrong one"})
    assert failed.code == 3
    combined = failed.out + failed.err
    assert PASSPHRASE not in combined and "wrong one" not in combined
    assert data_key_file["passphrase"]["wrapped"] not in combined


def test_statistics_merge_across_imports_like_a_full_recount(vault: Vault, tmp_path: Path) -> None:
    from vault.datasets import dataset_id, refresh_stats

    first = tmp_path / "scores.csv"
    first.write_text("date,score\n2024-01-01,3\n2024-01-02,9\n", encoding="utf-8")
    second = tmp_path / "scores2.csv"
    second.write_text("date,score\n2023-12-31,-4\n2024-02-01,5.5\n", encoding="utf-8")
    vault.import_path(first, dataset="scores")
    vault.import_path(second, dataset="scores")
    merged = vault.stats("preferences.scores")
    with vault.transaction():
        refresh_stats(vault.conn, dataset_id(vault.conn, "preferences.scores"))
    assert vault.stats("preferences.scores") == merged
    assert merged["records"] == 4 and merged["min"] == -4 and merged["max"] == 9
    assert merged["first"] == "2023-12-31T00:00:00Z"
