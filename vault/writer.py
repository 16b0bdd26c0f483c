"""The bulk writer: stores importer rows in batches, idempotently, inside one transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vault.db import Connection
from vault.importers.base import Row

BATCH = 5000
_INSERT = (
    "INSERT OR IGNORE INTO records (dataset_id, start, end, utc_offset, value, text, unit, lat,"
    " lon, source_id, import_id, extra, nkey) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def dataset_kind(name: str) -> str:
    """'health', 'location' or 'preferences' from a dataset name's prefix."""
    return name.split(".", 1)[0]


def natural_key(row: Row) -> bytes:
    """16 bytes naming a record within its dataset: from Row.key, else from its values."""
    if row.key is not None:
        material = row.key
    else:
        material = repr(
            (row.start, row.end, row.value, row.text, row.unit, row.lat, row.lon, row.source)
        )
    return hashlib.sha256(material.encode("utf-8")).digest()[:16]


@dataclass
class DatasetTally:
    """Rows added and skipped (already present) for one dataset in one import."""

    added: int = 0
    skipped: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class BulkWriter:
    """Writes rows for one import; the caller owns the transaction."""

    def __init__(self, conn: Connection, import_id: int) -> None:
        self._conn = conn
        self._import_id = import_id
        self._dataset_ids: dict[str, int] = {}
        self._source_ids: dict[str | None, int | None] = {None: None}
        self._buffers: dict[str, list[tuple]] = {}
        self.tallies: dict[str, DatasetTally] = {}

    def dataset_id(self, name: str) -> int:
        """The id of dataset ``name``, created on first use."""
        found = self._dataset_ids.get(name)
        if found is None:
            self._conn.execute(
                "INSERT OR IGNORE INTO datasets (name, kind, created) VALUES (?, ?, julianday())",
                (name, dataset_kind(name)),
            )
            found = self._conn.execute(
                "SELECT id FROM datasets WHERE name = ?", (name,)
            ).fetchone()[0]
            self._dataset_ids[name] = found
            self.tallies[name] = DatasetTally()
            self._buffers[name] = []
        return found

    def _source_id(self, name: str | None) -> int | None:
        if name in self._source_ids:
            return self._source_ids[name]
        self._conn.execute("INSERT OR IGNORE INTO sources (name) VALUES (?)", (name,))
        found = self._conn.execute("SELECT id FROM sources WHERE name = ?", (name,)).fetchone()[0]
        self._source_ids[name] = found
        return found

    def write(self, rows: Iterable[Row], progress: Callable[[], None] | None = None) -> None:
        """Store ``rows``; call ``progress`` after each batch."""
        for count, row in enumerate(rows, 1):
            dataset_id = self._dataset_ids.get(row.dataset) or self.dataset_id(row.dataset)
            buffer = self._buffers[row.dataset]
            buffer.append(
                (
                    dataset_id,
                    row.start,
                    row.end,
                    row.offset,
                    row.value,
                    row.text,
                    row.unit,
                    row.lat,
                    row.lon,
                    self._source_ids[row.source]
                    if row.source in self._source_ids
                    else self._source_id(row.source),
                    self._import_id,
                    json.dumps(row.extra, ensure_ascii=False, separators=(",", ":"))
                    if row.extra
                    else None,
                    natural_key(row),
                )
            )
            if len(buffer) >= BATCH:
                self._flush(row.dataset)
            if progress is not None and count % BATCH == 0:
                progress()
        for name in list(self._buffers):
            self._flush(name)
        if progress is not None:
            progress()

    def _flush(self, name: str) -> None:
        buffer = self._buffers[name]
        if not buffer:
            return
        before = self._conn.total_changes
        self._conn.executemany(_INSERT, buffer)
        added = self._conn.total_changes - before
        tally = self.tallies[name]
        tally.added += added
        tally.skipped += len(buffer) - added
        tally.digest.update(b"".join(r[-1] for r in buffer))
        buffer.clear()
