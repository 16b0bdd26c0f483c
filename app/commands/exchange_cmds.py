"""`tessera exchange serve|admit`: run an exchange and admit organizations to it."""

from __future__ import annotations

import os
from pathlib import Path

import click

from app.output import emit, json_option, print_fields

DB_ENV = "TESSERA_EXCHANGE_DB"
SECRET_ENV = "TESSERA_EXCHANGE_SECRET_FILE"


def _data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("Tessera", appauthor=False)) / "exchange"


def default_db() -> str:
    """$TESSERA_EXCHANGE_DB, else a SQLite file in the user data folder."""
    return os.environ.get(DB_ENV) or f"sqlite:///{_data_dir() / 'exchange.db'}"


def default_secret_file(db_url: str) -> Path:
    """Where the exchange secret lives: $TESSERA_EXCHANGE_SECRET_FILE, else beside a SQLite
    database, else in the user data folder."""
    from agents.exchange.database import parse_url

    if os.environ.get(SECRET_ENV):
        return Path(os.environ[SECRET_ENV])
    dialect, target = parse_url(db_url)
    if dialect == "sqlite" and target != ":memory:":
        return Path(target).with_name("exchange.secret")
    return _data_dir() / "exchange.secret"


db_option = click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="sqlite:///FILE or postgresql://... (default: $TESSERA_EXCHANGE_DB or a SQLite file "
    "in the user data folder).",
)


@click.group("exchange")
def exchange_group() -> None:
    """Run an exchange between organizations and vaults."""


def app_from_env() -> object:
    """The exchange app from $TESSERA_EXCHANGE_DB and $TESSERA_EXCHANGE_SECRET_FILE.

    uvicorn imports this factory in each worker process when ``--workers`` is above 1.
    """
    from agents.exchange.keybox import load_secret
    from agents.exchange.server import create_app

    db_url = default_db()
    return create_app(db_url, secret=load_secret(default_secret_file(db_url)))


@exchange_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8700, show_default=True, type=int, help="TCP port.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes (they share the database; rounds are claimed in it).",
)
@db_option
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="32-byte file that wraps organization keys (created 0600 if missing).",
)
def serve(host: str, port: int, workers: int, db_url: str | None, secret_file: Path | None) -> None:
    """Serve the exchange API (OpenAPI schema at /openapi.json)."""
    import uvicorn

    from agents.exchange.keybox import load_secret
    from agents.exchange.store import Store

    db_url = db_url or default_db()
    secret_path = secret_file or default_secret_file(db_url)
    load_secret(secret_path)  # create it once here, not racing in several workers
    Store(db_url).close()  # and the schema
    os.environ[DB_ENV] = db_url
    os.environ[SECRET_ENV] = str(secret_path)
    click.echo(f"Exchange on http://{host}:{port} (database {db_url.split('?')[0]})", err=True)
    target = "app.commands.exchange_cmds:app_from_env"
    uvicorn.run(target, factory=True, host=host, port=port, workers=workers, log_level="info")


@exchange_group.command("admit")
@click.argument("did")
@db_option
@click.option("--name", default=None, help="The organization's name (default: the DID).")
@json_option
def admit(did: str, db_url: str | None, name: str | None, as_json: bool) -> None:
    """Admit an organization (by its did:key) so it may post training requests."""
    from agents.exchange.store import Store
    from identity.keys import public_key_of

    public_key_of(did)  # refuses anything that is not an Ed25519 did:key
    store = Store(db_url or default_db())
    try:
        store.admit(did, name or did)
    finally:
        store.close()
    data = {"admitted": did, "name": name or did}
    emit(data, as_json, lambda: print_fields(data))
