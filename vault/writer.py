"""The bulk writer: stores importer rows in batches, idempotently, inside one transaction.

Parsing (the importer, in the calling thread) and inserting (SQLCipher's executemany, which
encrypts pages and releases the GIL while it steps) overlap: full batches go to one writer
thread through a short queue. Every use of the connection happens under one lock, so the
per-batch change counts (added vs. already present) stay exact.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson

from vault.db import Connection
from vault.importers.base import Row

BATCH = 5000
_INSERT = (
    "INSERT OR IGNORE INTO records (dataset_id, start, end, utc_offset, value, text, unit, lat,"
    " lon, source_id, import_id, extra, nkey) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_sha256 = hashlib.sha256


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
    return _sha256(material.encode("utf-8")).digest()[:16]


@dataclass
class DatasetTally:
    """Rows added and skipped (already present) for one dataset in one import."""

    added: int = 0
    skipped: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class _InsertThread(threading.Thread):
    """Runs executemany for queued batches; remembers the first error."""

    def __init__(self, conn: Connection, lock: threading.Lock) -> None:
        super().__init__(name="tessera-bulk-insert", daemon=True)
        self.batches: queue.Queue[tuple[DatasetTally, list[tuple]] | None] = queue.Queue(4)
        self.error: BaseException | None = None
        self._conn = conn
        self._lock = lock

    def run(self) -> None:
        while (item := self.batches.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure; the caller will see the error
            tally, batch = item
            try:
                with self._lock:
                    before = self._conn.total_changes
                    self._conn.executemany(_INSERT, batch)
                    added = self._conn.total_changes - before
                tally.added += added
                tally.skipped += len(batch) - added
                tally.digest.update(b"".join(r[-1] for r in batch))
            except BaseException as exc:  # noqa: BLE001 - handed to the importing thread
                self.error = exc


class BulkWriter:
    """Writes rows for one import; the caller owns the transaction."""

    def __init__(self, conn: Connection, import_id: int) -> None:
        self._conn = conn
        self._import_id = import_id
        self._lock = threading.Lock()
        self._dataset_ids: dict[str, int] = {}
        self._source_ids: dict[str | None, int | None] = {None: None}
        self._buffers: dict[str, list[tuple]] = {}
        self.tallies: dict[str, DatasetTally] = {}

    def dataset_id(self, name: str) -> int:
        """The id of dataset ``name``, created on first use."""
        found = self._dataset_ids.get(name)
        if found is None:
            with self._lock:
                self._conn.execute(
                    "INSERT OR IGNORE INTO datasets (name, kind, created)"
                    " VALUES (?, ?, julianday())",
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
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO sources (name) VALUES (?)", (name,))
            found = self._conn.execute("SELECT id FROM sources WHERE name = ?", (name,)).fetchone()[
                0
            ]
        self._source_ids[name] = found
        return found

    def write(self, rows: Iterable[Row], progress: Callable[[], None] | None = None) -> None:
        """Store ``rows``; call ``progress`` after each batch. Returns when all are inserted."""
        inserter = _InsertThread(self._conn, self._lock)
        inserter.start()
        try:
            self._write(rows, progress, inserter)
        finally:
            inserter.batches.put(None)
            inserter.join()
        if inserter.error is not None:
            raise inserter.error

    def _write(
        self, rows: Iterable[Row], progress: Callable[[], None] | None, inserter: _InsertThread
    ) -> None:
        dataset_ids = self._dataset_ids
        source_ids = self._source_ids
        buffers = self._buffers
        import_id = self._import_id
        dumps = orjson.dumps
        for count, row in enumerate(rows, 1):
            dataset_id = dataset_ids.get(row.dataset) or self.dataset_id(row.dataset)
            source = row.source
            source_id = source_ids[source] if source in source_ids else self._source_id(source)
            buffer = buffers[row.dataset]
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
                    source_id,
                    import_id,
                    dumps(row.extra).decode("utf-8") if row.extra else None,
                    natural_key(row),
                )
            )
            if len(buffer) >= BATCH:
                self._hand_over(row.dataset, inserter)
            if progress is not None and not count % 2048:
                progress()  # also where a cancel request is noticed
        for name in list(buffers):
            self._hand_over(name, inserter)
        if progress is not None:
            progress()

    def _hand_over(self, name: str, inserter: _InsertThread) -> None:
        if inserter.error is not None:
            raise inserter.error
        if self._buffers[name]:
            inserter.batches.put((self.tallies[name], self._buffers[name]))
            self._buffers[name] = []
