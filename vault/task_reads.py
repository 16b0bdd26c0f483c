"""The one read behind every task: a dataset's records, read and logged in the same breath.

Rows reach training code only through :func:`read_logged`: the consent-scoped reader
(``vault.consent.ConsentScopedReader``, actor = the organization's DID) and the owner trying a
package on their own data (``agents.owner_run``, actor = the vault's own DID) both call it. It
reads a dataset's records in a time range with only the asked-for columns filled, and appends a
``read`` entry to that dataset's access log: actor, purpose, consent and task ids, the row
count and the SHA-256 over exactly the rows read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from identity.keys import canonical_json
from vault.datasets import RECORD_SELECT
from vault.recipes import Record

if TYPE_CHECKING:
    from vault.core import Vault

RECORD_COLUMNS = (
    "start",
    "end",
    "offset",
    "value",
    "text",
    "unit",
    "lat",
    "lon",
    "source",
    "extra",
)


def rows_digest(records: Sequence[Record]) -> str:
    """SHA-256 hex over the canonical JSON of each record read, in order."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(canonical_json(list(record)))
        digest.update(b"\n")
    return digest.hexdigest()


def read_logged(
    vault: Vault,
    dataset: str,
    columns: Sequence[str] | None,
    *,
    actor: str,
    purpose: str,
    time_from: float | None = None,
    time_to: float | None = None,
    consent: str | None = None,
    task: str | None = None,
) -> list[Record]:
    """Records of ``dataset`` starting in [time_from, time_to] (None: unbounded), oldest first,
    with only ``columns`` filled (all when None); the read is logged.

    Call inside the caller's write transaction, so the log entry and whatever the caller
    checked before reading commit together. A dataset that does not exist reads as empty
    (and the read is still logged).
    """
    keep = [c in (columns or RECORD_COLUMNS) for c in RECORD_COLUMNS]
    keep[0] = True  # a record always has its time
    ident = vault.conn.execute("SELECT id FROM datasets WHERE name = ?", (dataset,)).fetchone()
    records: list[Record] = []
    if ident is not None:
        where, params = "r.dataset_id = ?", [ident[0]]
        if time_from is not None:
            where, params = f"{where} AND r.start >= ?", [*params, time_from]
        if time_to is not None:
            where, params = f"{where} AND r.start <= ?", [*params, time_to]
        cursor = vault.conn.execute(
            f"{RECORD_SELECT} WHERE {where} ORDER BY r.start, r.id",
            params,
        )
        for row in cursor:
            values = [v if k else None for v, k in zip(row, keep, strict=True)]
            if values[9] is not None:
                values[9] = json.loads(values[9])
            records.append(Record(*values))
    vault.log.append(
        dataset,
        "read",
        actor,
        purpose,
        rows=len(records),
        digest=rows_digest(records),
        consent=consent,
        task=task,
    )
    return records
