"""The feature-recipe catalogue: fixed, versioned code that turns consented rows into arrays.

Organizations never run code over raw rows. A training request names a recipe from this
catalogue and a label that the recipe offers; the vault reads the consented rows (through the
consent-scoped reader, which logs every read) and the recipe turns them into ``features``
(numpy float32, ``[N, *shape]``) and ``labels`` (int64 for classes, float32 for values).

Each recipe is a small class in its own module (``daily_activity``, ``heart_rate_windows``,
``mobility_daily``, ``preferences_vector``) that declares the datasets and record columns it
reads, its feature fields and its labels; the math lives in pure functions beside it.

A request's ``fields`` names the feature fields it wants (an empty list means all of them).
For the fixed-shape recipes a field that is not asked for is still a column, but always 0, so
the shape never depends on the request; ``preferences_vector`` builds its vector from the
fields (``column`` for a number, ``column=value`` for a one-hot flag). A label may hide
fields (always 0) where they would give the answer away.

Recipe names are ``name`` (the newest version) or ``name@version``. A released version never
changes its output: change the math in a new version.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from vault.errors import TesseraError

SECONDS_PER_DAY = 86_400


class RecipeRefused(TesseraError):
    """A request names a recipe, label, dataset or field that the catalogue does not offer."""


class Record(NamedTuple):
    """One stored record as a recipe sees it (times in UTC epoch seconds)."""

    start: float
    end: float | None = None
    offset: int | None = None
    value: float | None = None
    text: str | None = None
    unit: str | None = None
    lat: float | None = None
    lon: float | None = None
    source: str | None = None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class Label:
    """A label a recipe can produce: int64 with ``classes`` >= 2, or float32 (``classes`` None)."""

    name: str
    dtype: str
    classes: int | None
    description: str
    hides: tuple[str, ...] = ()


@dataclass
class Features:
    """A recipe's output: features, labels, and one key per example (a day, a window start)."""

    x: np.ndarray
    y: np.ndarray
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])


Rows = Mapping[str, Sequence[Record]]


class Recipe:
    """Base class: a fixed-shape recipe over named datasets. Subclasses implement ``compute``."""

    name: ClassVar[str]
    version: ClassVar[int]
    summary: ClassVar[str]
    # dataset (or a glob such as "preferences.*") -> record columns read
    reads: ClassVar[dict[str, tuple[str, ...]]]
    fields: ClassVar[tuple[str, ...]]
    labels: ClassVar[dict[str, Label]]

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def check(self, datasets: Sequence[str], fields: Sequence[str], label: str) -> None:
        """Raise RecipeRefused unless datasets, fields and label are what this recipe offers."""
        if not datasets:
            raise RecipeRefused("the request names no datasets")
        for name in datasets:
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.reads):
                raise RecipeRefused(f"recipe {self.name} does not read dataset {name!r}")
        self.check_fields(fields, label)

    def check_fields(self, fields: Sequence[str], label: str) -> None:
        """Raise RecipeRefused unless every field and the label are this recipe's."""
        unknown = [f for f in fields if f not in self.fields]
        if unknown:
            raise RecipeRefused(f"recipe {self.name} has no field(s) {', '.join(unknown)}")
        self.label(label, fields)

    def label(self, name: str, fields: Sequence[str] = ()) -> Label:
        """The label called ``name``; RecipeRefused if this recipe has none by that name."""
        found = self.labels.get(name)
        if found is None:
            offered = ", ".join(sorted(self.labels))
            raise RecipeRefused(f"recipe {self.name} has no label {name!r} (it offers {offered})")
        return found

    def shape(self, fields: Sequence[str] = ()) -> list[int]:
        """The shape of one example's features."""
        return [len(self.fields)]

    def active_fields(self, fields: Sequence[str], label: str) -> list[bool]:
        """Per field in ``self.fields``: True when it carries data (asked for, not hidden)."""
        wanted = set(fields) or set(self.fields)
        hidden = set(self.label(label, fields).hides)
        return [f in wanted and f not in hidden for f in self.fields]

    def build(self, rows: Rows, fields: Sequence[str], label: str) -> Features:
        """Features and labels from ``rows`` (dataset -> records); unrequested fields are 0."""
        self.check_fields(fields, label)
        features = self.compute(rows, label, fields)
        mask = np.asarray(self.active_fields(fields, label), dtype=np.float32)
        if features.x.size:
            # the field axis is the last one for every fixed-shape recipe
            features.x = (features.x * mask).astype(np.float32)
        return finish(features, self.label(label, fields), self.shape(fields))

    def compute(self, rows: Rows, label: str, fields: Sequence[str]) -> Features:
        """Every field and the label for every example (subclasses implement)."""
        raise NotImplementedError


def finish(features: Features, label: Label, shape: Sequence[int]) -> Features:
    """Cast to the declared dtypes and shape, and drop examples with non-finite values."""
    x = np.asarray(features.x, dtype=np.float64).reshape((-1, *shape))
    y = np.asarray(features.y, dtype=np.float64).reshape(-1)
    keep = np.isfinite(y) & np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)
    keys = [k for k, ok in zip(features.keys, keep, strict=False) if ok]
    dtype = np.int64 if label.dtype == "int64" else np.float32
    return Features(x[keep].astype(np.float32), y[keep].astype(dtype), keys)


# ----------------------------------------------------------------------------- shared math


def local_day(epoch: float, offset_minutes: int | None) -> int:
    """Days since 1970-01-01 in the record's own time zone (UTC when it had none)."""
    return math.floor((epoch + (offset_minutes or 0) * 60) / SECONDS_PER_DAY)


def day_text(day: int) -> str:
    """A day number as 'YYYY-MM-DD'."""
    return str(np.datetime64(day, "D"))


def nan_to_zero(values: np.ndarray) -> np.ndarray:
    """Missing measurements (NaN) become 0, the value of a field that carries nothing."""
    return np.where(np.isfinite(values), values, 0.0)


# ---------------------------------------------------------------------------------- registry

_REGISTRY: dict[str, dict[int, Recipe]] = {}


def register(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: add a recipe (one instance) to the catalogue."""
    versions = _REGISTRY.setdefault(cls.name, {})
    if cls.version in versions:
        raise ValueError(f"recipe {cls.name}@{cls.version} registered twice")
    versions[cls.version] = cls()
    return cls


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` or ``name@version``; RecipeRefused if the catalogue lacks it."""
    _load_all()
    base, _, version = name.partition("@")
    versions = _REGISTRY.get(base)
    if not versions:
        raise RecipeRefused(f"unknown feature recipe {name!r} (known: {', '.join(recipe_names())})")
    if not version:
        return versions[max(versions)]
    if not version.isdigit() or int(version) not in versions:
        raise RecipeRefused(f"recipe {base} has no version {version!r}")
    return versions[int(version)]


def recipe_names() -> list[str]:
    """Every recipe name in the catalogue."""
    _load_all()
    return sorted(_REGISTRY)


def catalogue() -> list[dict[str, Any]]:
    """The catalogue as data: name, version, summary, datasets, fields, labels."""
    _load_all()
    return [
        {
            "name": recipe.name,
            "version": recipe.version,
            "summary": recipe.summary,
            "datasets": {k: list(v) for k, v in recipe.reads.items()},
            "fields": list(recipe.fields),
            "labels": {
                n: {"dtype": lb.dtype, "classes": lb.classes, "description": lb.description}
                for n, lb in recipe.labels.items()
            },
        }
        for versions in _REGISTRY.values()
        for recipe in versions.values()
    ]


def _load_all() -> None:
    # importing a recipe module registers it; done lazily to keep `import vault` light
    from vault.recipes import (  # noqa: F401
        daily_activity,
        heart_rate_windows,
        mobility_daily,
        preferences_vector,
    )
