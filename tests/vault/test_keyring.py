"""Keyring unlock: only encrypting backends, never a blocker for the passphrase.

The Secret Service tests talk to a real gnome-keyring daemon; `make test` starts one in a
private D-Bus session (tests/with_secret_service.sh) and sets TESSERA_SECRET_SERVICE.
"""

from __future__ import annotations

import os
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail, null
from keyrings.alt.file import PlaintextKeyring

from tests.conftest import PASSPHRASE
from vault.core import Vault
from vault.errors import KeyringRefused
from vault.keyring_unlock import load_key, secure_backend, store_key

needs_secret_service = pytest.mark.skipif(
    not os.environ.get("TESSERA_SECRET_SERVICE"),
    reason="needs a Secret Service session (run through `make test`)",
)


@pytest.fixture
def restore_keyring():
    original = keyring.get_keyring()
    yield keyring.set_keyring
    keyring.set_keyring(original)


@pytest.mark.parametrize("backend", [PlaintextKeyring, null.Keyring, fail.Keyring])
def test_insecure_or_missing_backends_are_refused(restore_keyring, backend, tmp_path) -> None:
    instance = backend()
    if hasattr(instance, "file_path"):
        instance.file_path = str(tmp_path / "keyring.cfg")
    restore_keyring(instance)
    with pytest.raises(KeyringRefused, match="does not encrypt|refus"):
        store_key("vault-id", b"\x01" * 32)
    assert not (tmp_path / "keyring.cfg").exists()


def test_a_broken_keyring_never_blocks_the_passphrase(
    restore_keyring, tessera, vault_dir: Path
) -> None:
    assert tessera("init").code == 0
    keyfile = vault_dir / "vault.key.json"
    keyfile.write_text(keyfile.read_text().replace('"format"', '"keyring": true, "format"', 1))
    restore_keyring(fail.Keyring())
    assert load_key("anything") is None
    result = tessera("datasets")
    assert result.code == 0, result.err


@needs_secret_service
def test_secret_service_round_trip_unlocks_without_passphrase(tessera, vault_dir: Path) -> None:
    assert "SecretService" in type(secure_backend()).__name__ or secure_backend()
    assert tessera("init").code == 0
    enabled = tessera("keyring", "enable")
    assert enabled.code == 0, enabled.err
    status = tessera("keyring", "status", "--json")
    assert '"enabled": true' in status.out and '"secure": true' in status.out
    without_passphrase = tessera("datasets", env={"TESSERA_PASSPHRASE": None})
    assert without_passphrase.code == 0, without_passphrase.err
    assert tessera("keyring", "disable").code == 0
    locked = tessera("datasets", env={"TESSERA_PASSPHRASE": None})
    assert locked.code == 3


@needs_secret_service
def test_a_stale_keyring_entry_falls_back_to_the_passphrase(tessera, vault_dir: Path) -> None:
    assert tessera("init").code == 0
    assert tessera("keyring", "enable").code == 0
    from vault.keyfile import KeyFile

    keyring.set_password("Tessera vault", KeyFile.load(vault_dir).vault_id, "00" * 32)
    assert tessera("datasets").code == 0
    with Vault.unlock(vault_dir, PASSPHRASE):
        pass
