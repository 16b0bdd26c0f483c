"""Unlocking the vault for a command: OS keyring, TESSERA_PASSPHRASE, or a prompt."""

from __future__ import annotations

import os
import sys

import click

from vault.core import Vault, require_vault
from vault.errors import VaultLocked
from vault.keyring_unlock import load_key


def read_secret(env: str, prompt: str, confirm: bool = False) -> str:
    """A secret from environment variable ``env``, else a hidden prompt on a terminal."""
    value = os.environ.get(env)
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise VaultLocked(f"no {prompt.lower()} given: set {env} or run in a terminal")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def open_vault(ctx: click.Context) -> Vault:
    """Unlock the vault of this command; the caller closes it (ctx.call_on_close does)."""
    folder = ctx.obj.vault_dir
    require_vault(folder)
    vault = None
    if "TESSERA_PASSPHRASE" not in os.environ:
        from vault.keyfile import KeyFile

        keyfile = KeyFile.load(folder)
        if keyfile.data.get("keyring"):
            data_key = load_key(keyfile.vault_id)
            if data_key is not None:
                try:
                    vault = Vault.unlock_with_key(folder, data_key)
                except Exception:  # noqa: BLE001 - stale keyring entry: use the passphrase
                    vault = None
    if vault is None:
        vault = Vault.unlock(folder, read_secret("TESSERA_PASSPHRASE", "Passphrase"))
    ctx.call_on_close(vault.close)
    return vault
