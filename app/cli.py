"""The `tessera` command line: a thin click face over the core packages.

Commands live in `app/commands/<area>.py` and are loaded lazily, so `tessera --version` does not
import ONNX Runtime or Qt. Core errors become one line on stderr and the exit code from
DESIGN.md; tracebacks only with `--debug`.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from app.errors import EXIT_REFUSED, exit_code_for
from vault import __version__
from vault.errors import TesseraError

# command name -> "module:attribute"
COMMANDS = {
    "init": "app.commands.vault_cmds:init",
    "passwd": "app.commands.vault_cmds:passwd",
    "recover": "app.commands.vault_cmds:recover",
    "keyring": "app.commands.vault_cmds:keyring_group",
    "import": "app.commands.data:import_cmd",
    "datasets": "app.commands.data:datasets",
    "stats": "app.commands.data:stats",
    "export": "app.commands.data:export",
    "delete": "app.commands.data:delete",
    "log": "app.commands.history:log",
    "verify": "app.commands.history:verify",
    "task": "app.commands.task:task_group",
    "org": "app.commands.org:org_group",
    "identity": "app.commands.identity_cmds:identity_group",
    "requests": "app.commands.requests_cmds:requests_group",
    "consents": "app.commands.requests_cmds:consents_group",
    "tasks": "app.commands.requests_cmds:tasks_group",
    "rewards": "app.commands.requests_cmds:rewards_group",
    "exchange": "app.commands.exchange_cmds:exchange_group",
    "gui": "app.commands.gui_cmd:gui",
    "demo": "app.commands.demo_cmd:demo",
}


def _available(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if _available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _available(cmd_name):
            return None
        module, attr = COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(module), attr)


class AppContext:
    """What every command gets: the vault folder and the debug flag."""

    def __init__(self, vault_dir: Path, debug: bool) -> None:
        self.vault_dir = vault_dir
        self.debug = debug


def default_vault_dir() -> Path:
    """The vault folder: $TESSERA_VAULT, else the platform's user data dir for 'Tessera'."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("Tessera", appauthor=False))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--vault",
    "vault_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TESSERA_VAULT",
    help="Vault folder (default: the user data folder; env TESSERA_VAULT).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors (never secrets).")
@click.version_option(__version__, prog_name="tessera")
@click.pass_context
def cli(ctx: click.Context, vault_dir: Path | None, debug: bool) -> None:
    """Tessera: your personal data vault. Encrypted, consent-scoped, tamper-evident."""
    ctx.obj = AppContext(vault_dir or default_vault_dir(), debug)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the `tessera` console script."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return cli.main(args=argv, prog_name="tessera", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except TesseraError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing was half-written.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug or os.environ.get("TESSERA_DEBUG"):
            traceback.print_exc()
        click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_REFUSED)
