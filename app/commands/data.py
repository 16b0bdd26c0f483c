"""Data commands: import, datasets, stats, export, delete."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from app.commands.unlock import open_vault
from app.output import emit, json_option, print_fields, print_table
from vault.importers.archive import DEFAULT_MAX_INFLATE


def _format_names() -> list[str]:
    from vault.importers.plan import load_formats

    return sorted(load_formats())


@click.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", help="Input format (detected when left out).")
@click.option("--dataset", help="Dataset name (preferences files; default: the file name).")
@click.option(
    "--max-inflate",
    type=int,
    default=DEFAULT_MAX_INFLATE,
    show_default=True,
    help="Refuse archives whose members inflate past this many bytes.",
)
@json_option
@click.pass_context
def import_cmd(
    ctx: click.Context,
    path: Path,
    fmt: str | None,
    dataset: str | None,
    max_inflate: int,
    as_json: bool,
) -> None:
    """Import an export file or archive (Apple Health, Google, GPX, FHIR, preferences)."""
    if fmt is not None and fmt not in _format_names():
        raise click.BadParameter(f"choose from {', '.join(_format_names())}", param_hint="--format")
    vault = open_vault(ctx)
    show_bar = not as_json and sys.stderr.isatty()
    if show_bar:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            transient=True,
            console=_stderr_console(),
        ) as bar:
            task = bar.add_task(f"Importing {path.name}", total=None)
            summary = vault.import_path(
                path,
                fmt,
                dataset,
                max_inflate,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    else:
        summary = vault.import_path(path, fmt, dataset, max_inflate)
    data = summary.to_dict()

    def human() -> None:
        click.echo(
            f"Imported {path.name} ({data['format']}): {data['added']:,} added,"
            f" {data['skipped']:,} already present, {data['seconds']:.1f} s"
        )
        rows = [{"dataset": n, **counts} for n, counts in sorted(data["datasets"].items())]
        if rows:
            print_table(rows, ["dataset", "added", "skipped"])

    emit(data, as_json, human)


def _stderr_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True)


@click.command()
@json_option
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List datasets with record counts and time spans."""
    rows = open_vault(ctx).datasets()
    emit(rows, as_json, lambda: print_table(rows, ["name", "kind", "records", "first", "last"]))


@click.command()
@click.argument("dataset")
@json_option
@click.pass_context
def stats(ctx: click.Context, dataset: str, as_json: bool) -> None:
    """Statistics of one dataset (count, span, sum/min/max/mean, bounding box)."""
    data = open_vault(ctx).stats(dataset)
    emit(data, as_json, lambda: print_fields(data))


@click.command()
@click.argument("dataset")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv")
@json_option
@click.pass_context
def export(ctx: click.Context, dataset: str, out: Path, fmt: str, as_json: bool) -> None:
    """Export a dataset to a plaintext CSV or JSON file (logged)."""
    data = open_vault(ctx).export(dataset, out, fmt)
    emit(data, as_json, lambda: click.echo(f"Exported {data['records']:,} records to {out}"))


@click.command()
@click.argument("dataset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def delete(ctx: click.Context, dataset: str, yes: bool, as_json: bool) -> None:
    """Delete a dataset's records (its access history is kept)."""
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to delete without --yes")
        click.confirm(f"Delete every record of {dataset}?", abort=True)
    data = open_vault(ctx).delete(dataset)
    emit(data, as_json, lambda: click.echo(f"Deleted {data['deleted']:,} records of {dataset}"))
