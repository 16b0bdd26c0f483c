"""Import throughput: Tessera vs healthkit-to-sqlite on the same Apple Health export.

Generates an export.xml of ``--mb`` megabytes (default 200), imports it with `tessera import`
(encrypted, with natural-key dedup and the access log) and with `healthkit-to-sqlite --xml`
(plain SQLite, the tool people use today) in the same run, each in its own process, and prints
one JSON object: records/s for both, the ratio, and each side's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.apple_health import generate_large_export  # noqa: E402


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in MiB, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{cmd[0]} failed: {err[-2000:]}")
    return seconds, usage.ru_maxrss // 1024, out.decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=200.0, help="export size in MB")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--skip-peer", action="store_true", help="only Tessera (e.g. for the 1 GB memory check)"
    )
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    try:
        export = work / "export.xml"
        records = generate_large_export(export, args.mb)
        env = {
            **os.environ,
            "TESSERA_VAULT": str(work / "vault"),
            "TESSERA_PASSPHRASE": "benchmark passphrase",
        }
        subprocess.run(
            [bindir / "tessera", "init", "--json"], env=env, check=True, capture_output=True
        )
        t_seconds, t_rss, out = run_measured(
            [str(bindir / "tessera"), "import", str(export), "--json"], env
        )
        summary = json.loads(out)
        result = {
            "benchmark": "import_apple_health",
            "input_mb": round(export.stat().st_size / 1e6, 1),
            "input_elements": records,
            "tessera": {
                "seconds": round(t_seconds, 2),
                "records_per_s": round(records / t_seconds),
                "added": summary["added"],
                "peak_rss_mb": t_rss,
            },
        }
        if not args.skip_peer:
            peer = [str(bindir / "healthkit-to-sqlite"), "--xml", "-s", str(export)]
            h_seconds, h_rss, _ = run_measured([*peer, str(work / "healthkit.db")], env)
            result["healthkit_to_sqlite"] = {
                "seconds": round(h_seconds, 2),
                "records_per_s": round(records / h_seconds),
                "peak_rss_mb": h_rss,
            }
            result["ratio"] = round(h_seconds / t_seconds, 2)
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
