"""Work out what to import from a path: which importer reads which file or archive member."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from vault.errors import ImportRefused
from vault.importers.archive import DEFAULT_MAX_INFLATE, member_name, zip_sources
from vault.importers.base import REGISTRY, Importer, Source

# Sniffing order: specific formats first, the generic preferences formats last.
FORMAT_MODULES = [
    "apple_health",
    "fhir",
    "google_records",
    "google_semantic",
    "google_timeline",
    "google_ios",
    "gpx",
    "preferences",
]


def load_formats() -> dict[str, type[Importer]]:
    """Import every format module (each registers itself) and return the registry."""
    for module in FORMAT_MODULES:
        importlib.import_module(f"vault.importers.{module}")
    return REGISTRY


@dataclass(slots=True)
class PlannedImport:
    """One importer reading one source."""

    importer: Importer
    source: Source


def _sniff(source: Source, formats: dict[str, type[Importer]]) -> type[Importer] | None:
    head = source.head()
    for cls in formats.values():
        if cls.sniff(source, head):
            return cls
    return None


def plan_import(
    path: Path,
    fmt: str | None = None,
    dataset: str | None = None,
    max_inflate: int = DEFAULT_MAX_INFLATE,
) -> list[PlannedImport]:
    """Return the imports to run for ``path``; raise ImportRefused when nothing fits."""
    formats = load_formats()
    if fmt is not None and fmt not in formats:
        raise ImportRefused(str(path), f"unknown format {fmt!r} (known: {', '.join(formats)})")
    if not path.exists():
        raise ImportRefused(str(path), "no such file")
    if path.is_dir():
        raise ImportRefused(str(path), "is a directory, not a file")
    if path.stat().st_size == 0:
        raise ImportRefused(str(path), "file is empty")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        return _plan_zip(path, fmt, dataset, formats, max_inflate)
    source = Source.from_path(path)
    cls = formats[fmt] if fmt else _sniff(source, formats)
    if cls is None:
        raise source.refuse("unrecognised format (use --format to name it)")
    return [PlannedImport(cls(dataset), source)]


def _plan_zip(
    path: Path,
    fmt: str | None,
    dataset: str | None,
    formats: dict[str, type[Importer]],
    max_inflate: int,
) -> list[PlannedImport]:
    sources = zip_sources(path, max_inflate)
    names = [member_name(s) for s in sources]
    planned: list[PlannedImport] = []
    claimed: set[str] = set()
    for source, name in zip(sources, names, strict=True):
        if name in claimed or source.size == 0:
            continue
        cls = formats[fmt] if fmt else _sniff(source, formats)
        if cls is None:
            continue  # Takeout and Health zips hold many files we do not import
        importer = cls(dataset)
        importer.attach_archive(source, dict(zip(names, sources, strict=True)))
        claimed.update(cls.companions(name, names))
        planned.append(PlannedImport(importer, source))
    planned = [p for p in planned if member_name(p.source) not in claimed]
    if not planned:
        raise ImportRefused(str(path), "no supported data found in this archive")
    return planned
