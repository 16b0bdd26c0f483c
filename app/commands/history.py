"""Access-history commands: log, inclusion proofs, verify."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from app.commands.unlock import open_vault
from app.output import emit, json_option, print_json, print_table
from vault.accesslog import check_proof
from vault.errors import VerificationFailed


class _LogGroup(click.Group):
    """`tessera log DATASET` shows a log; `tessera log check-proof FILE` checks a proof."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_LogGroup)
def log() -> None:
    """A dataset's access history (`tessera log DATASET`), proofs and proof checks."""


@log.command("show")
@click.argument("dataset")
@click.option("--proof", "proof_seq", type=int, help="Print an inclusion proof for entry SEQ.")
@json_option
@click.pass_context
def log_show(ctx: click.Context, dataset: str, proof_seq: int | None, as_json: bool) -> None:
    """Show every access to DATASET, oldest first."""
    vault = open_vault(ctx)
    if proof_seq is not None:
        print_json(vault.log.proof(dataset, proof_seq))
        return
    entries = vault.log.entries(dataset)
    emit(
        entries,
        as_json,
        lambda: print_table(entries, ["seq", "time", "action", "rows", "purpose", "actor"]),
    )


@log.command("check-proof")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def log_check_proof(file: Path, as_json: bool) -> None:
    """Check an inclusion proof file on its own (no vault needed)."""
    try:
        proof = json.loads(file.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise VerificationFailed(f"{file}: not a proof file ({exc})") from None
    try:
        data = check_proof(proof)
    except VerificationFailed as exc:
        raise VerificationFailed(f"{file}: {exc}") from None
    emit(
        data,
        as_json,
        lambda: click.echo(
            f"OK: entry {data['seq']} of {data['dataset']} is in the log of {data['vault']}"
            f" (size {data['size']})"
        ),
    )


@click.command()
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every access log and signed checkpoint; exit 1 on any problem."""
    report = open_vault(ctx).verify()

    def human() -> None:
        rows = [
            {"dataset": n, **r, "root": r["root"][:16] + "…"} for n, r in report["datasets"].items()
        ]
        if rows:
            print_table(rows, ["dataset", "entries", "ok", "root"])
        for problem in report["problems"]:
            click.echo(f"problem: {problem}", err=True)
        click.echo("Verified: all logs intact." if report["ok"] else "VERIFICATION FAILED")

    emit(report, as_json, human)
    if not report["ok"]:
        sys.exit(1)
