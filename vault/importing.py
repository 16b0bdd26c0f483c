"""Running an import: plan the files, stream rows into the bulk writer, log, summarise."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vault.datasets import refresh_stats
from vault.errors import ImportRefused, TesseraError
from vault.importers.archive import DEFAULT_MAX_INFLATE
from vault.importers.plan import plan_import
from vault.writer import BulkWriter

if TYPE_CHECKING:
    from vault.core import ProgressFn, Vault


class ImportCancelled(TesseraError):
    """The person cancelled an import; nothing of it was kept."""

    def __init__(self) -> None:
        super().__init__("import cancelled; nothing was imported")


@dataclass
class ImportSummary:
    """What an import added and skipped, per dataset."""

    format: str
    file: str
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The `--json` shape of the summary."""
        return {
            "format": self.format,
            "file": self.file,
            "datasets": self.datasets,
            "added": sum(d["added"] for d in self.datasets.values()),
            "skipped": sum(d["skipped"] for d in self.datasets.values()),
            "seconds": round(self.seconds, 3),
        }


def run_import(
    vault: Vault,
    path: Path,
    fmt: str | None,
    dataset: str | None,
    max_inflate: int | None,
    progress: ProgressFn | None,
    cancelled: Callable[[], bool] | None,
) -> ImportSummary:
    """Import ``path`` inside the caller's transaction (see Vault.import_path)."""
    started = time.perf_counter()
    planned = plan_import(path, fmt, dataset, max_inflate or DEFAULT_MAX_INFLATE)
    total = sum(p.source.size for p in planned)
    conn = vault.conn
    import_id = conn.execute(
        "INSERT INTO imports (file, format, started) VALUES (?, ?, ?)",
        (path.name, ",".join(sorted({p.importer.name for p in planned})), time.time()),
    ).lastrowid
    # New records get ids above this, so statistics can be merged from just the new rows.
    last_id = conn.execute("SELECT coalesce(max(id), 0) FROM records").fetchone()[0]
    writer = BulkWriter(conn, import_id)
    done = 0

    def tick() -> None:
        if cancelled is not None and cancelled():
            raise ImportCancelled()
        if progress is not None:
            progress(done + current.source.consumed, total)

    for current in planned:
        try:
            writer.write(current.importer.rows(current.source), tick)
        except TesseraError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError, UnicodeError) as exc:
            # An importer bug or an input corner it did not foresee: refuse, never crash.
            raise ImportRefused(current.source.name, f"unreadable data ({exc})") from None
        done += current.source.size
    tallies = writer.tallies
    for name, tally in tallies.items():
        refresh_stats(conn, writer.dataset_id(name), after_id=last_id)
        vault.log.append(
            name,
            "import",
            vault.did,
            f"import of {path.name}",
            tally.added,
            tally.digest.hexdigest(),
        )
    added = sum(t.added for t in tallies.values())
    skipped = sum(t.skipped for t in tallies.values())
    conn.execute(
        "UPDATE imports SET finished = ?, added = ?, skipped = ? WHERE id = ?",
        (time.time(), added, skipped, import_id),
    )
    formats = sorted({p.importer.name for p in planned})
    return ImportSummary(
        format=formats[0] if len(formats) == 1 else "+".join(formats),
        file=str(path),
        datasets={n: {"added": t.added, "skipped": t.skipped} for n, t in tallies.items()},
        seconds=time.perf_counter() - started,
    )
