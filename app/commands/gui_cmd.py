"""`tessera gui`: the desktop app (also `python -m app`), or its screenshots."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("gui")
@click.option(
    "--screenshots",
    "screenshots",
    type=click.Path(file_okay=False, path_type=Path),
    help="Render every main screen at 1280x800 into DIR/NN-name.png and exit.",
)
@click.option("--demo", is_flag=True, help="Use a throwaway vault filled with sample data.")
@click.pass_context
def gui(ctx: click.Context, screenshots: Path | None, demo: bool) -> None:
    """Open the Tessera desktop app."""
    from app.gui.application import run

    sys.exit(run(ctx.obj.vault_dir, screenshots, demo))
