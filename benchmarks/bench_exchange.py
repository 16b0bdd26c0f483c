"""The exchange under load: simulated vaults submitting 1M-parameter updates over loopback HTTP.

For each database (SQLite; PostgreSQL too when TESSERA_TEST_POSTGRES_URL is set, e.g. under
``tests/pg_server.sh``) and each update count N: start ``tessera exchange``'s app with uvicorn
in its own process, admit an organization, post a request for a model of ``--params`` float32
parameters with ``min_updates = N``, record N consents, then let ``--clients`` client processes
submit one signed update per simulated vault with :class:`agents.exchange.client.ExchangeClient`.
The N-th update makes the round due and the exchange aggregates it in the background; the time
it records in the round status is reported. Reported per run: accepted updates per second (wall
time of the submission phase, client signing included: clients and server share the same
cores), the server's own CPU seconds per update, the aggregation time, and a correctness check
of the published model against numpy. Output: one JSON object on stdout.

    .venv/bin/python benchmarks/bench_exchange.py [--updates 100,1000] [--params 1000000]
        [--strategy fedavg|trimmed_mean|median] [--clients 2]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.exchange.client import ExchangeClient  # noqa: E402
from agents.exchange.store import Store  # noqa: E402
from agents.package import write_package  # noqa: E402
from identity.keys import did_for, generate_key, jws_sign  # noqa: E402
from identity.vc_jwt import issue_credential  # noqa: E402
from tests.agents.exchange import PG_ENV, database_url  # noqa: E402

SECRET = bytes(range(32))
PATTERNS = 8  # distinct deltas; vault i sends pattern i % PATTERNS (the bytes differ little)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(db_url: str, port: int) -> None:
    import logging

    import uvicorn

    from agents.exchange.server import create_app

    logging.getLogger("tessera.exchange").setLevel(logging.WARNING)
    uvicorn.run(create_app(db_url, secret=SECRET), host="127.0.0.1", port=port, log_level="warning")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def _server(db_url: str) -> Iterator[tuple[str, int]]:
    port = _free_port()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(db_url, port))
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or not process.is_alive():
                raise RuntimeError("the exchange did not start") from None
            time.sleep(0.1)
    try:
        yield url, process.pid
    finally:
        process.terminate()
        process.join(30)


def _patterns(size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # norm about 0.3 each: well under the request's max_update_norm of 1
    return [
        (rng.standard_normal(size) * (0.3 / np.sqrt(size))).astype("<f4") for _ in range(PATTERNS)
    ]


def _submit_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Client process: sign and submit one update per (vault key, consent id)."""
    size, shape = job["size"], job["shape"]
    encoded = [base64.b64encode(p.tobytes()).decode() for p in _patterns(size)]
    sign_s = send_s = 0.0
    accepted = 0
    for index, jwk, consent_id in job["vaults"]:
        started = time.perf_counter()
        payload = {
            "format": "tessera-round/1",
            "package": job["package"],
            "delta": {"w": {"dtype": "float32", "shape": shape, "data": encoded[index % PATTERNS]}},
            "examples_used": 10 + index % 5,
            "privacy": {"epsilon_round": 0.1, "epsilon_total": 0.1, "epsilon_budget": 1.0},
            "request": job["request"],
            "round": 0,
            "consent": consent_id,
        }
        token = jws_sign(jwk, payload)
        signed = time.perf_counter()
        answer = ExchangeClient(job["url"], jwk, timeout=120).submit_update(job["request"], token)
        accepted += bool(answer["accepted"])
        sign_s += signed - started
        send_s += time.perf_counter() - signed
    return {"accepted": accepted, "sign_s": sign_s, "send_s": send_s}


def run(kind: str, n: int, size: int, strategy: str, clients: int) -> dict[str, Any]:
    """One benchmark run: N updates of ``size`` parameters on database ``kind``."""
    shape = [size]
    with (
        tempfile.TemporaryDirectory(prefix="bench-exchange-") as tmp,
        database_url(kind, Path(tmp)) as db_url,
    ):
        org_jwk = generate_key()
        store = Store(db_url)
        store.admit(did_for(org_jwk), "Bench Org")
        store.close()
        initial = np.zeros(size, dtype=np.float32)
        task = {
            "format": "tessera-task/1",
            "name": "bench",
            "batch_size": 8,
            "params": [{"name": "w", "shape": shape, "dtype": "float32"}],
            "features": {"recipe": "daily_activity", "shape": [8], "dtype": "float32"},
            "label": {"field": "steps", "dtype": "float32", "classes": None},
            "loss": "mse",
            "files": {},
            "opset": 17,
            "flops_per_example": 0,
            "created_by": "bench",
        }
        address = write_package(Path(tmp) / "task.tpkg", task, b"bench", {"w": initial})
        package = (Path(tmp) / "task.tpkg").read_bytes()
        now = time.time()
        request = {
            "type": "TrainingRequest",
            "id": f"req-{uuid.uuid4().hex}",
            "issuer": did_for(org_jwk),
            "organization": {"name": "Bench Org"},
            "issued": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 86400)),
            "purpose": "benchmark",
            "datasets": ["health.step_count"],
            "fields": ["value"],
            "time_range": {"from": "2024-01-01T00:00:00Z", "to": "2024-12-31T00:00:00Z"},
            "recipe": "daily_activity",
            "label": "steps",
            "package": address,
            "rounds": 1,
            "local_steps": 5,
            "batch_size": 8,
            "learning_rate": 0.1,
            "optimizer": "sgd",
            "privacy": {"epsilon": 1.0, "delta": 1e-5, "clip_norm": 1.0, "noise_multiplier": 1.0},
            "reward": {"per_update": 1.0, "unit": "points", "cap": 10.0},
            "aggregation": {
                "strategy": strategy,
                "min_updates": n,
                "round_seconds": 86400,
                "max_update_norm": 1.0,
            },
        }
        token = issue_credential(org_jwk, request)
        with _server(db_url) as (url, pid):
            org = ExchangeClient(url, org_jwk, timeout=120)
            org.post_request(token, package)
            vaults = []
            started = time.perf_counter()
            for index in range(n):
                jwk = generate_key()
                consent_id = f"consent-{uuid.uuid4()}"
                consent = {
                    "type": "ConsentReceipt",
                    "id": consent_id,
                    "request": request["id"],
                    "request_hash": hashlib.sha256(token.encode()).hexdigest(),
                    "subject": did_for(jwk),
                    "organization": request["issuer"],
                    "datasets": request["datasets"],
                    "epsilon_budget": 1.0,
                    "issued": request["issued"],
                    "expires": request["expires"],
                }
                ExchangeClient(url, jwk).send_consent(issue_credential(jwk, consent))
                vaults.append((index, jwk, consent_id))
            consents_s = time.perf_counter() - started
            jobs = [
                {
                    "url": url,
                    "request": request["id"],
                    "package": address,
                    "size": size,
                    "shape": shape,
                    "vaults": vaults[i::clients],
                }
                for i in range(clients)
            ]
            context = multiprocessing.get_context("spawn")
            with context.Pool(clients) as pool:
                pool.map(time.sleep, [0] * clients)  # start the workers before the clock
                cpu_before = _cpu_seconds(pid)
                started = time.perf_counter()
                results = pool.map(_submit_worker, jobs)
                submit_s = time.perf_counter() - started
                cpu_after = _cpu_seconds(pid)
            # the exchange aggregates in the background once the N-th update is in
            deadline = time.monotonic() + 900
            status = org.status(request["id"])
            while status["round"] == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
                status = org.status(request["id"])
            model = org.model(request["id"])["w"].ravel()
    aggregation_s = status["per_round"][0]["aggregation_seconds"]
    patterns = _patterns(size)
    weights = np.array([10 + i % 5 for i in range(n)], dtype=np.float64)
    rows = [patterns[i % PATTERNS] for i in range(n)]
    if strategy == "fedavg":
        expected = sum(
            (w / weights.sum()) * r.astype(np.float64) for w, r in zip(weights, rows, strict=True)
        )
    else:
        from agents.exchange import aggregate

        stack = np.stack(rows)
        expected = (
            aggregate.median(stack) if strategy == "median" else aggregate.trimmed_mean(stack)
        )
    accepted = sum(r["accepted"] for r in results)
    return {
        "database": kind,
        "updates": n,
        "params": size,
        "strategy": strategy,
        "accepted": accepted,
        "round_advanced": status["round"] == 1,
        "updates_per_s": round(accepted / submit_s, 2),
        "submit_phase_s": round(submit_s, 2),
        "aggregation_s": round(aggregation_s, 3) if aggregation_s is not None else None,
        "client_sign_s_per_update": round(sum(r["sign_s"] for r in results) / n, 4),
        "client_roundtrip_s_per_update": round(sum(r["send_s"] for r in results) / n, 4),
        "consents_s": round(consents_s, 2),
        # the exchange's own CPU per update (verify, decode, check, store), i.e. what one
        # server core can take regardless of the clients
        "server_cpu_s_per_update": (
            round((cpu_after - cpu_before) / n, 4)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        "max_abs_error_vs_numpy": float(np.max(np.abs(model - expected))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", default="100,1000", help="comma-separated update counts")
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument(
        "--strategy", default="fedavg", choices=["fedavg", "trimmed_mean", "median"]
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    args = parser.parse_args()
    kinds = ["sqlite"] + (["postgresql"] if os.environ.get(PG_ENV) else [])
    runs = [
        run(kind, int(n), args.params, args.strategy, args.clients)
        for kind in kinds
        for n in args.updates.split(",")
    ]
    target = [r for r in runs if r["updates"] >= 1000 and r["params"] >= 1_000_000]
    print(
        json.dumps(
            {
                "benchmark": "exchange",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "postgresql": bool(os.environ.get(PG_ENV)),
                "target": "1000 updates of 1M params aggregated in < 10 s",
                "target_met": (
                    all(r["aggregation_s"] is not None and r["aggregation_s"] < 10 for r in target)
                    if target
                    else None
                ),
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
