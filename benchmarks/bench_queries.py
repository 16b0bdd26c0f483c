"""Reading speed on a big vault: `datasets` and `stats` on 5 million records, `verify` of a
1-million-entry access log.

Builds the vault through the product's own bulk writer and access-log API (log entries are
appended 1,000 per transaction, as a busy vault would over time), then times each command's
work in process (unlock excluded: it is the deliberate ~0.5-1 s Argon2id cost). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vault.core import Vault  # noqa: E402
from vault.datasets import refresh_stats  # noqa: E402
from vault.importers.base import Row  # noqa: E402
from vault.writer import BulkWriter  # noqa: E402


def synthetic_rows(n: int):  # type: ignore[no-untyped-def]
    """Heart-rate-like samples, one a minute."""
    start = 1_600_000_000.0
    for i in range(n):
        t = start + 60.0 * i
        yield Row(
            "health.heart_rate",
            t,
            t,
            60,
            55.0 + (i * 7919) % 90,
            None,
            "count/min",
            source="Apple Watch",
            key=str(i),
        )


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn()
    return result, round((time.perf_counter() - started) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--log-entries", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ.setdefault("TESSERA_KDF_TIME_COST", "1")
    work = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    try:
        vault, _ = Vault.create(work / "vault", "benchmark passphrase")
        _, build_records_ms = timed(lambda: _fill_records(vault, args.records))
        _, build_log_ms = timed(lambda: _fill_log(vault, args.log_entries))
        vault.close()
        vault = Vault.unlock(work / "vault", "benchmark passphrase")
        datasets, datasets_ms = timed(vault.datasets)
        _, stats_ms = timed(lambda: vault.stats("health.heart_rate"))
        report, verify_ms = timed(vault.verify)
        assert report["ok"], report["problems"]
        print(
            json.dumps(
                {
                    "benchmark": "queries",
                    "records": args.records,
                    "log_entries": args.log_entries,
                    "build_records_s": round(build_records_ms / 1000, 1),
                    "build_log_s": round(build_log_ms / 1000, 1),
                    "datasets_ms": datasets_ms,
                    "stats_ms": stats_ms,
                    "verify_ms": verify_ms,
                    "targets_ms": {"datasets": 1000, "stats": 1000, "verify": 5000},
                }
            )
        )
        vault.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fill_records(vault: Vault, n: int) -> None:
    with vault.transaction():
        import_id = vault.conn.execute(
            "INSERT INTO imports (file, format, started) VALUES ('bench', 'bench', 0)"
        ).lastrowid
        writer = BulkWriter(vault.conn, import_id)
        writer.write(synthetic_rows(n))
        refresh_stats(vault.conn, writer.dataset_id("health.heart_rate"))


def _fill_log(vault: Vault, n: int) -> None:
    per_transaction = 1000
    for first in range(0, n, per_transaction):
        with vault.transaction():
            for seq in range(first, min(n, first + per_transaction)):
                vault.log.append(
                    "health.heart_rate",
                    "read",
                    "did:key:z6MkBenchOrg",
                    "benchmark round",
                    rows=seq % 500,
                    task="req-bench",
                )


if __name__ == "__main__":
    main()
