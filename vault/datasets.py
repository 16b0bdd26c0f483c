"""Reading and owning datasets: listing, statistics, export, deletion.

Statistics are kept in `dataset_stats`, refreshed inside the transaction that changes a
dataset, so `tessera datasets` and `tessera stats` answer at once on millions of records.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vault.db import Connection
from vault.errors import DatasetNotFound
from vault.fsutil import atomic_stream
from vault.timeparse import iso_utc

EXPORT_COLUMNS = (
    "start",
    "end",
    "utc_offset",
    "value",
    "text",
    "unit",
    "lat",
    "lon",
    "source",
    "extra",
)


# One stored record in export/recipe column order, with its source's name.
RECORD_SELECT = (
    "SELECT r.start, r.end, r.utc_offset, r.value, r.text, r.unit, r.lat, r.lon, s.name,"
    " r.extra FROM records r LEFT JOIN sources s ON s.id = r.source_id"
)

_AGGREGATES = """count(*), min(start), max(coalesce(end, start)), sum(value), min(value),
    max(value), count(value), min(lat), min(lon), max(lat), max(lon)"""


def refresh_stats(conn: Connection, dataset_id: int, after_id: int = 0) -> None:
    """Bring the cached statistics of one dataset up to date (in the caller's transaction).

    With ``after_id`` only records whose id is greater are read and merged into the cached
    figures: new rows always get higher ids, so an import into a dataset of millions scans just
    what it added. Without it the whole dataset is recomputed.
    """
    new = conn.execute(
        # "+dataset_id" keeps SQLite on the rowid range instead of the whole dataset's index.
        f"SELECT {_AGGREGATES} FROM records WHERE +dataset_id = ? AND id > ?",
        (dataset_id, after_id),
    ).fetchone()
    old = conn.execute(
        "SELECT records, first, last, sum, min, max, count_value, min_lat, min_lon, max_lat,"
        " max_lon, unit FROM dataset_stats WHERE dataset_id = ?",
        (dataset_id,),
    ).fetchone()
    if after_id == 0 or old is None:
        old = (0, *(None,) * 5, 0, *(None,) * 5)
    count, first, last, total, low, high, counted, *bbox = new
    merged = (
        old[0] + count,
        _pick(min, old[1], first),
        _pick(max, old[2], last),
        _pick(lambda a, b: a + b, old[3], total),
        _pick(min, old[4], low),
        _pick(max, old[5], high),
        old[6] + counted,
        _pick(min, old[7], bbox[0]),
        _pick(min, old[8], bbox[1]),
        _pick(max, old[9], bbox[2]),
        _pick(max, old[10], bbox[3]),
        old[11] or _common_unit(conn, dataset_id, after_id),
    )
    conn.execute(
        "INSERT OR REPLACE INTO dataset_stats VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (dataset_id, *merged),
    )


def _pick(combine, a, b):  # type: ignore[no-untyped-def]
    """Combine two optional figures; None means 'no value' on either side."""
    if a is None:
        return b
    return a if b is None else combine(a, b)


def _common_unit(conn: Connection, dataset_id: int, after_id: int) -> str | None:
    row = conn.execute(
        "SELECT unit FROM records WHERE +dataset_id = ? AND id > ? AND unit IS NOT NULL"
        " GROUP BY unit ORDER BY count(*) DESC LIMIT 1",
        (dataset_id, after_id),
    ).fetchone()
    return row[0] if row else None


def dataset_id(conn: Connection, name: str) -> int:
    """The id of dataset ``name``; DatasetNotFound if there is none."""
    row = conn.execute("SELECT id FROM datasets WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise DatasetNotFound(f"no dataset named {name!r} (see `tessera datasets`)")
    return row[0]


def list_datasets(conn: Connection) -> list[dict[str, Any]]:
    """[{"name", "kind", "records", "first", "last"}] for every dataset, by name."""
    rows = conn.execute(
        """SELECT d.name, d.kind, coalesce(s.records, 0), s.first, s.last
           FROM datasets d LEFT JOIN dataset_stats s ON s.dataset_id = d.id ORDER BY d.name"""
    ).fetchall()
    return [
        {"name": n, "kind": k, "records": c, "first": iso_utc(f), "last": iso_utc(last)}
        for n, k, c, f, last in rows
    ]


def dataset_stats(conn: Connection, name: str) -> dict[str, Any]:
    """Records, time span and value statistics of one dataset (bbox for location data)."""
    ident = dataset_id(conn, name)
    row = conn.execute(
        """SELECT d.kind, s.records, s.first, s.last, s.sum, s.min, s.max, s.count_value,
                  s.min_lat, s.min_lon, s.max_lat, s.max_lon, s.unit
           FROM datasets d JOIN dataset_stats s ON s.dataset_id = d.id WHERE d.id = ?""",
        (ident,),
    ).fetchone()
    kind, records, first, last, total, low, high, counted, *bbox, unit = row
    result: dict[str, Any] = {
        "name": name,
        "records": records,
        "first": iso_utc(first),
        "last": iso_utc(last),
        "sum": total if counted else None,
        "min": low if counted else None,
        "max": high if counted else None,
        "mean": total / counted if counted else None,
        "unit": unit,
    }
    if kind == "location":
        result["bbox"] = bbox if bbox[0] is not None else None
    return result


def iter_records(conn: Connection, ident: int) -> Iterator[dict[str, Any]]:
    """Every record of a dataset in time order, as export dictionaries (streamed)."""
    cursor = conn.execute(
        f"{RECORD_SELECT} WHERE r.dataset_id = ? ORDER BY r.start, r.id",
        (ident,),
    )
    for start, end, offset, value, text, unit, lat, lon, source, extra in cursor:
        yield {
            "start": iso_utc(start),
            "end": iso_utc(end),
            "utc_offset": offset,
            "value": value,
            "text": text,
            "unit": unit,
            "lat": lat,
            "lon": lon,
            "source": source,
            "extra": json.loads(extra) if extra else None,
        }


class _HashingWriter(io.TextIOBase):
    """A text sink that encodes to UTF-8, hashes, and writes to a binary file."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self.sha256.update(data)
        self._raw.write(data)
        return len(text)


def _write_records(sink: _HashingWriter, records: Iterator[dict[str, Any]], fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(sink, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            if record["extra"] is not None:
                record["extra"] = json.dumps(record["extra"], ensure_ascii=False)
            writer.writerow(record)
            count += 1
    elif fmt == "json":
        sink.write("[\n")
        for record in records:
            sink.write(("," if count else "") + json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        sink.write("]\n")
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return count


def export_records(out: Path, records: Iterator[dict[str, Any]], fmt: str) -> tuple[int, str]:
    """Stream records into ``out`` (CSV or JSON) atomically, mode 0600 since it is plaintext.

    Returns (records written, SHA-256 hex of the file).
    """
    with atomic_stream(out) as raw:
        sink = _HashingWriter(raw)
        count = _write_records(sink, records, fmt)
    return count, sink.sha256.hexdigest()


def delete_dataset(conn: Connection, name: str) -> int:
    """Delete a dataset's records and its row; its access log stays. Return rows deleted."""
    ident = dataset_id(conn, name)
    deleted = conn.execute("DELETE FROM records WHERE dataset_id = ?", (ident,)).rowcount
    conn.execute("DELETE FROM dataset_stats WHERE dataset_id = ?", (ident,))
    conn.execute("DELETE FROM datasets WHERE id = ?", (ident,))
    return deleted
