"""`tessera init`, `passwd` and `recover` from the command line."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.conftest import PASSPHRASE


def test_init_passwd_and_recover(tessera, vault_dir: Path) -> None:
    created = tessera("init", "--json")
    assert created.code == 0, created.err
    data = json.loads(created.out)
    assert data["did"].startswith("did:key:") and len(data["recovery_code"]) == 29
    assert stat.S_IMODE(vault_dir.stat().st_mode) == 0o700

    short = tessera("passwd", env={"TESSERA_NEW_PASSPHRASE": "short"})
    assert short.code == 2
    changed = tessera("passwd", env={"TESSERA_NEW_PASSPHRASE": "a new long passphrase"})
    assert changed.code == 0, changed.err
    assert tessera("datasets").code == 3  # the old passphrase no longer opens it
    assert tessera("datasets", env={"TESSERA_PASSPHRASE": "a new long passphrase"}).code == 0

    wrong = tessera(
        "recover",
        env={
            "TESSERA_RECOVERY_CODE": "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA",
            "TESSERA_NEW_PASSPHRASE": PASSPHRASE,
        },
    )
    assert wrong.code == 3 and "wrong recovery code" in wrong.err
    recovered = tessera(
        "recover",
        env={"TESSERA_RECOVERY_CODE": data["recovery_code"], "TESSERA_NEW_PASSPHRASE": PASSPHRASE},
    )
    assert recovered.code == 0, recovered.err
    assert tessera("datasets").code == 0


def test_init_refuses_an_existing_vault_and_a_missing_vault_is_named(tessera, vault_dir) -> None:
    assert tessera("init").code == 0
    again = tessera("init")
    assert again.code == 1 and "already exists" in again.err
    missing = tessera("--vault", str(vault_dir.parent / "elsewhere"), "datasets")
    assert missing.code == 1 and "no vault" in missing.err
    locked = tessera("datasets", env={"TESSERA_PASSPHRASE": None})
    assert locked.code == 3
