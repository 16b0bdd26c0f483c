"""``preferences_vector@1``: one example per record of one ``preferences.<name>`` dataset.

The request's ``fields`` define the vector, in order: ``column`` is that column's number (0
when the cell is empty or not a number), ``column=value`` is 1 when the cell equals ``value``
and 0 otherwise (a one-hot flag). Numbers are taken as stored: every vault scales them the same
way, which per-vault standardising would not.

The label is written the same way: ``column`` gives a float32 label, ``column=value`` an int64
label with 2 classes. A record without a label value is left out. The label's column may not
appear among the fields, since a flag of the same column would give the answer away.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vault.recipes import Features, Label, Recipe, RecipeRefused, Record, Rows, finish, register
from vault.timeparse import iso_utc

PATTERN = "preferences.*"
MAX_FIELDS = 512


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'genre=comedy' -> ('genre', 'comedy'); 'rating' -> ('rating', None)."""
    column, eq, value = spec.partition("=")
    if not column.strip():
        raise RecipeRefused(f"preferences_vector: field {spec!r} names no column")
    return column, (value if eq else None)


def as_number(cell: Any) -> float:
    """A cell as a float: numbers, numeric text and booleans; NaN for anything else."""
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, int | float):
        return float(cell) if math.isfinite(cell) else math.nan
    if isinstance(cell, str):
        try:
            number = float(cell.strip())
        except ValueError:
            return math.nan
        return number if math.isfinite(number) else math.nan
    return math.nan


def cell_text(cell: Any) -> str | None:
    """A cell compared as text: 1 and 1.0 and '1' all read '1'; None stays None."""
    if cell is None:
        return None
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell).strip()


def encode(cells: dict[str, Any], spec: str) -> float:
    """One field of one record: a number (NaN when missing) or a one-hot flag."""
    column, value = parse_spec(spec)
    cell = cells.get(column)
    if value is None:
        return as_number(cell)
    if cell is None:
        return math.nan
    return 1.0 if cell_text(cell) == value else 0.0


@register
class PreferencesVector(Recipe):
    """Numeric and one-hot columns of one preferences dataset."""

    name = "preferences_vector"
    version = 1
    summary = "one row per entry of a preferences list: chosen numbers and categories"
    reads = {PATTERN: ("extra",)}
    fields = ()
    labels = {}

    def check(self, datasets: Sequence[str], fields: Sequence[str], label: str) -> None:
        """One preferences dataset, 1..512 distinct fields, a label whose column is not a field."""
        if len(datasets) != 1 or not fnmatch.fnmatchcase(datasets[0], PATTERN):
            raise RecipeRefused("preferences_vector reads exactly one preferences.<name> dataset")
        self.check_fields(fields, label)

    def check_fields(self, fields: Sequence[str], label: str) -> None:
        """Raise RecipeRefused unless fields and label are valid column specs."""
        if not fields or len(fields) > MAX_FIELDS:
            raise RecipeRefused(f"preferences_vector needs 1 to {MAX_FIELDS} fields")
        if len(set(fields)) != len(fields):
            raise RecipeRefused("preferences_vector: a field is named twice")
        columns = {parse_spec(f)[0] for f in fields}
        if parse_spec(label)[0] in columns:
            raise RecipeRefused(
                f"preferences_vector: the label's column {parse_spec(label)[0]!r} is also a field"
            )

    def label(self, name: str, fields: Sequence[str] = ()) -> Label:
        """``column`` -> float32 label, ``column=value`` -> int64 label with 2 classes."""
        column, value = parse_spec(name)
        if value is None:
            return Label(name, "float32", None, f"the number in column {column!r}")
        return Label(name, "int64", 2, f"whether column {column!r} is {value!r}")

    def shape(self, fields: Sequence[str] = ()) -> list[int]:
        """One value per field."""
        return [len(fields)]

    def build(self, rows: Rows, fields: Sequence[str], label: str) -> Features:
        """The fields of every record that has a label value."""
        self.check_fields(fields, label)
        records: list[Record] = [r for name in sorted(rows) for r in rows[name]]
        x = np.array(
            [[encode(r.extra or {}, f) for f in fields] for r in records], dtype=np.float64
        ).reshape(-1, len(fields))
        x = np.where(np.isfinite(x), x, 0.0)
        y = np.array([encode(r.extra or {}, label) for r in records], dtype=np.float64)
        keys = [iso_utc(r.start) or "" for r in records]
        return finish(Features(x, y, keys), self.label(label), self.shape(fields))
