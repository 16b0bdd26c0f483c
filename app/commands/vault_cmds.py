"""Vault life-cycle commands: init, passwd, recover, keyring."""

from __future__ import annotations

import click

from app.commands.unlock import open_vault, read_secret
from app.output import emit, print_fields, print_json
from vault.core import Vault, require_vault
from vault.keyring_unlock import backend_status, delete_key, store_key

MIN_PASSPHRASE = 8


def _new_passphrase(env: str) -> str:
    passphrase = read_secret(env, "New passphrase", confirm=True)
    if len(passphrase) < MIN_PASSPHRASE:
        raise click.BadParameter(f"use at least {MIN_PASSPHRASE} characters", param_hint=env)
    return passphrase


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def init(ctx: click.Context, as_json: bool) -> None:
    """Create a new encrypted vault and its did:key identity."""
    folder = ctx.obj.vault_dir
    passphrase = read_secret("TESSERA_PASSPHRASE", "Choose a passphrase", confirm=True)
    if len(passphrase) < MIN_PASSPHRASE:
        raise click.BadParameter(
            f"use at least {MIN_PASSPHRASE} characters", param_hint="passphrase"
        )
    vault, recovery = Vault.create(folder, passphrase)
    ctx.call_on_close(vault.close)
    data = {"vault": str(folder), "did": vault.did, "recovery_code": recovery}

    def human() -> None:
        click.echo(f"Created vault in {folder}")
        click.echo(f"Identity: {vault.did}")
        click.echo("")
        click.echo("Recovery code (shown only now; write it down and keep it offline):")
        click.secho(f"    {recovery}", bold=True)
        click.echo("With it you can set a new passphrase: `tessera recover`.")

    emit(data, as_json, human)


@click.command()
@click.pass_context
def passwd(ctx: click.Context) -> None:
    """Change the passphrase (re-wraps the key; the data is not rewritten)."""
    vault = open_vault(ctx)
    vault.change_passphrase(_new_passphrase("TESSERA_NEW_PASSPHRASE"))
    click.echo("Passphrase changed.")


@click.command()
@click.pass_context
def recover(ctx: click.Context) -> None:
    """Set a new passphrase using the recovery code."""
    require_vault(ctx.obj.vault_dir)
    code = read_secret("TESSERA_RECOVERY_CODE", "Recovery code")
    new = _new_passphrase("TESSERA_NEW_PASSPHRASE")
    vault = Vault.recover(ctx.obj.vault_dir, code, new)
    vault.close()
    click.echo("Passphrase reset with the recovery code.")


@click.group("keyring")
def keyring_group() -> None:
    """Passwordless unlock through the OS keyring (secure backends only)."""


@keyring_group.command("enable")
@click.pass_context
def keyring_enable(ctx: click.Context) -> None:
    """Keep the vault key in the OS keyring for passwordless unlock."""
    vault = open_vault(ctx)
    backend = store_key(vault.keyfile.vault_id, vault.data_key)
    vault.keyfile.data["keyring"] = True
    vault.keyfile.save(vault.folder)
    click.echo(f"Keyring unlock enabled ({backend}).")


@keyring_group.command("disable")
@click.pass_context
def keyring_disable(ctx: click.Context) -> None:
    """Remove the vault key from the OS keyring."""
    from vault.keyfile import KeyFile

    require_vault(ctx.obj.vault_dir)
    keyfile = KeyFile.load(ctx.obj.vault_dir)
    delete_key(keyfile.vault_id)
    keyfile.data.pop("keyring", None)
    keyfile.save(ctx.obj.vault_dir)
    click.echo("Keyring unlock disabled.")


@keyring_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def keyring_status(ctx: click.Context, as_json: bool) -> None:
    """Say whether keyring unlock is on and which backend would be used."""
    from vault.keyfile import KeyFile

    require_vault(ctx.obj.vault_dir)
    keyfile = KeyFile.load(ctx.obj.vault_dir)
    data = {"enabled": bool(keyfile.data.get("keyring")), **backend_status()}
    if as_json:
        print_json(data)
    else:
        print_fields(data)
