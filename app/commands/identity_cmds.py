"""`tessera identity`: the vault's DID and DID document, and a password-protected key backup."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from app.commands.unlock import open_vault, read_secret
from app.output import emit, json_option, print_fields, print_json
from identity.backup import write_backup
from identity.keys import public_key_of


def did_document(did: str) -> dict[str, Any]:
    """The DID document of a did:key, resolved by didkit (built from the key if that fails)."""
    try:
        import didkit

        return json.loads(asyncio.run(didkit.resolve_did(did, "{}")))
    except Exception:  # noqa: BLE001 - didkit missing or failing: the key says it all
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from identity.keys import b64url

        raw = public_key_of(did).public_bytes(Encoding.Raw, PublicFormat.Raw)
        method = f"{did}#{did.removeprefix('did:key:')}"
        return {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did,
            "verificationMethod": [
                {
                    "id": method,
                    "type": "Ed25519VerificationKey2018",
                    "controller": did,
                    "publicKeyJwk": {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)},
                }
            ],
            "authentication": [method],
            "assertionMethod": [method],
        }


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
