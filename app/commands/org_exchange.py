"""Organization commands against an exchange: `tessera org init|post|status|model`.

These are plain click commands; ``app/commands/org.py`` attaches them to the ``org`` group.
"""

from __future__ import annotations

import os
import tomllib
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click

from app.output import emit, json_option, print_fields, print_table
from vault.errors import TesseraError

FILLED = ("id", "issuer", "issued", "package")


def _write_private(path: Path, text: str) -> None:
    # O_EXCL: never overwrite an existing identity; 0600 from the first byte
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def load_key(path: Path) -> str:
    """The organization's JWK from its key file."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TesseraError(f"{path}: cannot read the key ({exc.strerror})") from None
    from identity.keys import did_for

    try:
        did_for(text)
    except Exception:  # noqa: BLE001 - didkit raises its own error types
        raise TesseraError(f"{path}: not an Ed25519 JWK") from None
    return text


def _toml_value(value: Any) -> Any:
    """TOML dates and times become ISO-8601 UTC strings with Z; tables recurse."""
    from agents.exchange import format_time

    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return format_time(datetime(value.year, value.month, value.day, tzinfo=UTC))
    if isinstance(value, dict):
        return {k: _toml_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_toml_value(v) for v in value]
    return value


def request_from_toml(path: Path, jwk: str, package: bytes) -> dict[str, Any]:
    """A training request payload from REQUEST.toml, with id, issuer, issued and package filled."""
    from agents.exchange import check_training_request, format_time
    from agents.package import package_address
    from identity.keys import did_for

    try:
        fields = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TesseraError(f"{path}: not a readable TOML request ({exc})") from None
    given = sorted(set(fields) & set(FILLED))
    if given:
        raise TesseraError(f"{path}: leave {given} out; `org post` fills them")
    payload = {"type": "TrainingRequest", **_toml_value(fields)}
    payload.update(
        id=f"req-{uuid.uuid4().hex}",
        issuer=did_for(jwk),
        issued=format_time(datetime.now(UTC)),
        package=package_address(package),
    )
    check_training_request(payload)
    return payload


exchange_option = click.option(
    "--exchange", "url", required=True, metavar="URL", help="Exchange URL."
)
key_option = click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default="org.key.json",
    show_default=True,
    help="The organization's key file (from `tessera org init`).",
)


def _client(url: str, key_file: Path) -> Any:
    from agents.exchange.client import ExchangeClient

    return ExchangeClient(url, load_key(key_file))


@click.command("init")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="org.key.json",
    show_default=True,
    help="Where to write the new organization key (0600).",
)
@json_option
def org_init(out: Path, as_json: bool) -> None:
    """Create an organization identity (a did:key) and write its key file."""
    from identity.keys import did_for, generate_key

    if out.exists():
        raise TesseraError(f"{out} already exists; not overwriting an identity")
    jwk = generate_key()
    _write_private(out, jwk + "\n")
    data = {"did": did_for(jwk), "key_file": str(out)}

    def human() -> None:
        click.echo(f"Organization identity: {data['did']}")
        click.echo(
            f"Key written to {out} (keep it private; ask the exchange operator to admit this DID)."
        )

    emit(data, as_json, human)


@click.command("post")
@click.argument("request_toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--package",
    "package_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The task package (.tpkg).",
)
@exchange_option
@key_option
@json_option
def org_post(
    request_toml: Path, package_path: Path, url: str, key_file: Path, as_json: bool
) -> None:
    """Issue a training request credential from REQUEST.toml and post it with its package."""
    from agents.package import read_package
    from identity.vc_jwt import issue_credential

    jwk = load_key(key_file)
    package = package_path.read_bytes()
    read_package(package)  # refuse a broken package here, not at the exchange
    payload = request_from_toml(request_toml, jwk, package)
    request_id = _client(url, key_file).post_request(issue_credential(jwk, payload), package)
    data = {"id": request_id, "package": payload["package"], "expires": payload["expires"]}
    emit(data, as_json, lambda: print_fields(data))


@click.command("status")
@click.argument("request_id")
@exchange_option
@key_option
@json_option
def org_status(request_id: str, url: str, key_file: Path, as_json: bool) -> None:
    """Round status of a posted request: updates accepted, rejected (with reasons), who."""
    data = _client(url, key_file).status(request_id)

    def human() -> None:
        state = "closed" if data["closed"] else f"deadline {data.get('deadline')}"
        click.echo(
            f"{request_id}: round {data['round']} of {data.get('rounds')} ({state}), "
            f"strategy {data.get('strategy')}"
        )
        print_table(data["per_round"], ["round", "accepted", "rejected"])
        for entry in data["per_round"]:
            for rejection in entry.get("rejections", []):
                click.echo(f"  round {entry['round']}: {rejection['vault']}: {rejection['reason']}")

    emit(data, as_json, human)


@click.command("model")
@click.argument("request_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="params.npz",
    show_default=True,
    help="Where to write the parameters (.npz).",
)
@exchange_option
@key_option
@json_option
def org_model(request_id: str, out: Path, url: str, key_file: Path, as_json: bool) -> None:
    """Download the current aggregated model parameters as .npz."""
    import numpy as np

    params = _client(url, key_file).model(request_id)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **params)
    os.replace(tmp, out)  # never leave a half-written file at OUT
    data = {
        "out": str(out),
        "params": {name: list(array.shape) for name, array in params.items()},
    }
    emit(data, as_json, lambda: click.echo(f"Wrote {len(params)} parameters to {out}"))
