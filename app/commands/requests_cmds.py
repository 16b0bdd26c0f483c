"""Training requests, consents, tasks and rewards: `tessera requests|consents|tasks|rewards`.

Offline request file (`tessera requests import FILE`), for requests passed on by mail or USB
instead of an exchange: the format of ``agents.vault_sync.read_request_file``. It is checked
exactly like a request from an exchange: signature, issuer, expiry, the package's hash against
the request, and the model.

The exchange URL comes from ``--exchange``, else $TESSERA_EXCHANGE, else the last one used;
the GUI reads and sets the same remembered address (``agents.vault_sync``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from app.commands.unlock import open_vault
from app.output import emit, json_option, print_fields, print_table
from identity.summary import plain_summary
from vault import consent as vc
from vault import ledger as vl
from vault import task_state as ts
from vault.timeparse import parse_iso8601


def _exchange(vault: Any, given: str | None) -> Any:
    """A client for the chosen exchange, remembered for the next command."""
    from agents import vault_sync

    url = given or vault_sync.exchange_url(vault)
    if not url:
        raise click.UsageError("no exchange given: use --exchange URL (or TESSERA_EXCHANGE)")
    vault_sync.set_exchange_url(vault, url)
    return vault_sync.client_for(vault, url)


exchange_option = click.option("--exchange", "exchange", help="Exchange URL (http://host:port).")


# ---------------------------------------------------------------------------- requests


@click.group("requests")
def requests_group() -> None:
    """Training requests: sync from an exchange, import, list, show, approve, deny."""


@requests_group.command("sync")
@exchange_option
@json_option
@click.pass_context
def requests_sync(ctx: click.Context, exchange: str | None, as_json: bool) -> None:
    """Fetch open requests and their packages; verify them into the inbox."""
    from agents.vault_sync import sync_requests

    vault = open_vault(ctx)
    found = sync_requests(vault, _exchange(vault, exchange))
    results = [
        {"id": item["id"], "result": kind, "reason": item.get("reason")}
        for kind in ("new", "known", "refused")
        for item in found[kind]
    ]
    results.extend(
        {"id": r["request"], "result": r["state"], "reason": r["detail"]}
        for r in found["delivered"]
    )
    emit(results, as_json, lambda: _print_sync(results))


def _print_sync(results: list[dict[str, Any]]) -> None:
    if results:
        print_table(results, ["id", "result", "reason"])
    new = sum(r["result"] == "new" for r in results)
    click.echo(f"{new} new request{'s' * (new != 1)}. See them with `tessera requests list`.")


@requests_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def requests_import(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Import an offline request file (JSON with the request credential and the base64 package)."""
    from agents.request_check import receive_request
    from agents.vault_sync import read_request_file

    token, package = read_request_file(file)
    vault = open_vault(ctx)
    request, new = receive_request(vault, token, package, f"file:{file.name}")
    data = {"id": request.id, "new": new, "organization": request.organization}
    emit(
        data,
        as_json,
        lambda: click.echo(
            f"{'Imported' if new else 'Already in the inbox:'} {request.id} from"
            f" {request.organization}. Read it with `tessera requests show {request.id}`."
        ),
    )


@requests_group.command("list")
@json_option
@click.pass_context
def requests_list(ctx: click.Context, as_json: bool) -> None:
    """Every request in the inbox with its status."""
    rows = vc.list_requests(open_vault(ctx))
    emit(
        rows,
        as_json,
        lambda: print_table(rows, ["id", "organization", "status", "recipe", "epsilon", "expires"]),
    )


@requests_group.command("show")
@click.argument("request_id")
@json_option
@click.pass_context
def requests_show(ctx: click.Context, request_id: str, as_json: bool) -> None:
    """A request in plain words: who, why, which data, the privacy guarantee, the reward."""
    vault = open_vault(ctx)
    stored = vc.get_request(vault, request_id)
    summary = plain_summary(stored.request)
    consent = vc.consent_for_request(vault, request_id)
    data = {
        **summary,
        "status": stored.status,
        "consent": vc.consent_summary(consent) if consent else None,
    }

    def human() -> None:
        click.echo(summary["title"])
        click.echo()
        for label, key in (("Who", "who"), ("Why", "why"), ("Data", "data_text")):
            click.echo(f"{label}: {summary[key]}")
        for key in ("time_range", "what_leaves", "privacy", "reward", "expires"):
            click.echo(summary[key])
        for warning in summary["warnings"]:
            click.echo(f"WARNING: {warning}")
        click.echo(f"Status: {stored.status}" + (f" (consent {consent.id})" if consent else ""))

    emit(data, as_json, human)


def _when(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_iso8601(text if "T" in text else f"{text}T00:00:00Z")[0]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=what) from None


@requests_group.command("approve")
@click.argument("request_id")
@click.option("--datasets", help="Comma-separated datasets to allow (default: all asked for).")
@click.option("--budget", type=float, help="Privacy budget ε (default: what the request asks).")
@click.option("--expires", help="Consent expiry date, YYYY-MM-DD (default: the request's).")
@json_option
@click.pass_context
def requests_approve(
    ctx: click.Context,
    request_id: str,
    datasets: str | None,
    budget: float | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Approve a request: issue a consent receipt signed by this vault's DID."""
    vault = open_vault(ctx)
    chosen = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
    consent = vc.approve(vault, request_id, chosen, budget, _when(expires, "--expires"))
    data = vc.consent_summary(consent)
    emit(
        data,
        as_json,
        lambda: click.echo(
            f"Approved. Consent {consent.id} covers {', '.join(consent.datasets)} with ε ≤"
            f" {consent.epsilon_budget:g} until {data['expires']}. Revoke it any time with"
            f" `tessera consents revoke {consent.id}`."
        ),
    )


@requests_group.command("deny")
@click.argument("request_id")
@json_option
@click.pass_context
def requests_deny(ctx: click.Context, request_id: str, as_json: bool) -> None:
    """Deny a request; none of your data is read."""
    stored = vc.deny(open_vault(ctx), request_id)
    data = {"id": request_id, "status": stored.status}
    emit(data, as_json, lambda: click.echo(f"Denied {request_id}. None of your data is read."))


# ---------------------------------------------------------------------------- consents


@click.group("consents")
def consents_group() -> None:
    """Consents you gave: list, revoke."""


@consents_group.command("list")
@json_option
@click.pass_context
def consents_list(ctx: click.Context, as_json: bool) -> None:
    """Every consent with its state and the privacy spent under it."""
    from agents.rounds import privacy_spent

    vault = open_vault(ctx)
    rows = []
    for consent in vc.consents(vault):
        row = vc.consent_summary(consent)
        row["epsilon_spent"] = privacy_spent(vault, consent.id)["epsilon"]
        rows.append(row)
    columns = ["id", "request", "state", "epsilon_spent", "epsilon_budget", "expires"]
    emit(rows, as_json, lambda: print_table(rows, columns))


@consents_group.command("revoke")
@click.argument("consent_id")
@json_option
@click.pass_context
def consents_revoke(ctx: click.Context, consent_id: str, as_json: bool) -> None:
    """Revoke a consent: no further round runs; the exchange is told on the next sync."""
    consent = vc.revoke(open_vault(ctx), consent_id)
    data = vc.consent_summary(consent)
    emit(data, as_json, lambda: click.echo(f"Revoked {consent_id}. No further round will run."))


# ---------------------------------------------------------------------------- tasks


@click.group("tasks")
def tasks_group() -> None:
    """Approved tasks: run due rounds, list rounds, privacy settings."""


@tasks_group.command("run")
@click.option("--once/--watch", default=True, help="One pass (default), or keep running.")
@click.option("--device", type=click.Choice(["cpu", "gpu", "auto"]), default="auto")
@click.option("--interval", type=float, default=30.0, help="Seconds between passes (--watch).")
@exchange_option
@json_option
@click.pass_context
def tasks_run(
    ctx: click.Context,
    once: bool,
    device: str,
    interval: float,
    exchange: str | None,
    as_json: bool,
) -> None:
    """Run every due round of approved tasks, submit updates, keep the receipts."""
    from agents.rounds import run_due_rounds

    vault = open_vault(ctx)
    client = _exchange(vault, exchange)
    try:
        reports = run_due_rounds(vault, client, device=device, once=once, interval=interval)
    except KeyboardInterrupt:
        reports = []
        click.echo("Stopped; queued updates stay in the outbox.", err=True)
    columns = ["request", "round", "state", "epsilon", "detail"]
    emit(
        reports,
        as_json,
        lambda: print_table(reports, columns) if reports else click.echo("Nothing to do."),
    )


@tasks_group.command("list")
@json_option
@click.pass_context
def tasks_list(ctx: click.Context, as_json: bool) -> None:
    """Every round this vault worked on, with its state."""
    rows = ts.task_rounds(open_vault(ctx))
    columns = ["request", "round", "state", "attempts", "examples", "epsilon", "detail"]
    emit(rows, as_json, lambda: print_table(rows, columns))


@tasks_group.command("settings")
@click.option("--max-clip-norm", type=float, help="Clip norm C at most this.")
@click.option("--min-noise-multiplier", type=float, help="Noise multiplier σ at least this.")
@click.option("--max-epsilon", type=float, help="Privacy budget ε at most this per task.")
@click.option("--max-delta", type=float, help="δ at most this.")
@click.option("--clear", is_flag=True, help="Remove every setting.")
@json_option
@click.pass_context
def tasks_settings(ctx: click.Context, clear: bool, as_json: bool, **given: float | None) -> None:
    """Vault-wide privacy settings; they can only make a request stricter."""
    vault = open_vault(ctx)
    names = {
        "max_clip_norm": "clip_norm",
        "min_noise_multiplier": "noise_multiplier",
        "max_epsilon": "epsilon_budget",
        "max_delta": "delta",
    }
    if clear:
        values: dict[str, float | None] = dict.fromkeys(names.values())
    else:
        values = {names[k]: v for k, v in given.items() if v is not None}
    settings = ts.set_privacy_settings(vault, **values) if values else ts.privacy_settings(vault)
    emit(settings, as_json, lambda: print_fields(settings) if settings else click.echo("None set."))


# ---------------------------------------------------------------------------- rewards


@click.group("rewards", invoke_without_command=True)
@json_option
@click.pass_context
def rewards_group(ctx: click.Context, as_json: bool) -> None:
    """The rewards ledger with totals per organization and task (subcommand: verify)."""
    if ctx.invoked_subcommand is not None:
        return
    book = vl.ledger(open_vault(ctx))

    def human() -> None:
        if not book["receipts"]:
            click.echo("No rewards yet.")
            return
        click.echo("Per organization:")
        print_table(book["by_organization"], ["name", "organization", "total", "unit", "receipts"])
        click.echo("\nPer task:")
        print_table(book["by_task"], ["request", "name", "total", "unit", "receipts"])

    emit(book, as_json, human)


@rewards_group.command("verify")
@json_option
@click.pass_context
def rewards_verify(ctx: click.Context, as_json: bool) -> None:
    """Check every receipt's signature, every chain and the terms; exit 1 on any problem."""
    report = vl.verify_ledger(open_vault(ctx))

    def human() -> None:
        for problem in report["problems"]:
            click.echo(f"problem: {problem}", err=True)
        click.echo(
            f"Verified: {report['receipts']} receipts, all chains intact."
            if report["ok"]
            else "VERIFICATION FAILED"
        )

    emit(report, as_json, human)
    if not report["ok"]:
        sys.exit(1)
