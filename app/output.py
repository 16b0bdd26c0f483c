"""One renderer for every command: JSON for scripts (`--json`), aligned tables for people."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import click


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add `--json` to a command; the command receives it as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(
        functools.wraps(func)(func)
    )


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print ``rows`` as an aligned text table with ``columns`` as headers."""
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    header = "  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True))
    click.echo(header.rstrip())
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_fields(data: dict[str, Any]) -> None:
    """Print a mapping as 'key: value' lines."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON when asked, else call ``human`` to print it for people."""
    if as_json:
        print_json(data)
    else:
        human()
