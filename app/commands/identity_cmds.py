"""`tessera identity`: the vault's DID and DID document, and a password-protected key backup."""

from __future__ import annotations

from pathlib import Path

import click

from app.commands.unlock import open_vault, read_secret
from app.output import emit, json_option, print_fields, print_json
from identity.backup import write_backup
from identity.keys import did_document


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def identity_group(ctx: click.Context, as_json: bool) -> None:
    """Show this vault's DID and DID document (subcommand: export)."""
    if ctx.invoked_subcommand is not None:
        return
    vault = open_vault(ctx)
    data = {"did": vault.did, "document": did_document(vault.did)}

    def human() -> None:
        print_fields({"DID": vault.did})
        click.echo("DID document:")
        print_json(data["document"])

    emit(data, as_json, human)


@identity_group.command("export")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backup file to write.",
)
@json_option
@click.pass_context
def identity_export(ctx: click.Context, out: Path, as_json: bool) -> None:
    """Write a password-protected backup of the identity key (env TESSERA_BACKUP_PASSWORD)."""
    vault = open_vault(ctx)
    password = read_secret("TESSERA_BACKUP_PASSWORD", "Backup password", confirm=True)
    data = write_backup(out, vault.signing_key(), password, vault.keyfile.kdf_params())
    emit(data, as_json, lambda: click.echo(f"Identity {data['did']} backed up to {out}."))
