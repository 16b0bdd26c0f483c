"""The demo's exchange: a real one (FastAPI + uvicorn) on 127.0.0.1 with one organization and
two pending training requests, so a new user can walk the whole flow in minutes.

The organization's task packages hold a small linear model written with ``onnx.helper`` (per-
example squared error and its gradients spelled out in the graph), so the demo needs neither
torch nor the SDK. Both requests use the catalogue recipe ``daily_activity`` over the demo
vault's own synthetic health data, and pay in demo credits.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FEATURES = 6  # daily_activity gives six numbers per day
BATCH = 8
ORGANIZATION = "Northwind Sleep Lab"
REQUESTS = [
    {
        "label": "sleep_hours",
        "purpose": "Learn how daily activity and heart rate relate to how long people sleep.",
        "datasets": [
            "health.step_count",
            "health.active_energy_burned",
            "health.heart_rate",
            "health.resting_heart_rate",
            "health.sleep_analysis",
        ],
        "fields": ["steps", "active_energy_kcal", "resting_heart_rate", "mean_heart_rate"],
        "epsilon": 3.0,
        "reward": {"per_update": 1.0, "unit": "credits", "cap": 3.0},
    },
    {
        "label": "resting_heart_rate",
        "purpose": "Study how sleep and movement go with the resting heart rate the next morning.",
        "datasets": [
            "health.step_count",
            "health.distance_walking_running",
            "health.resting_heart_rate",
            "health.sleep_analysis",
        ],
        "fields": ["steps", "distance_km", "sleep_hours"],
        "epsilon": 6.0,
        "reward": {"per_update": 0.5, "unit": "credits", "cap": 1.5},
    },
]


def task_package(label: str, features: int = FEATURES, factored: bool = False) -> bytes:
    """A task package (``agents.package`` format) for the linear model predicting ``label``
    from ``features`` numbers (the demo's recipe gives six); ``factored``: w as [1, features],
    its gradient sent as factors (see agents.linear_task)."""
    import numpy as np

    from agents.linear_task import linear_mse_model
    from agents.package import write_package

    task = {
        "format": "tessera-task/1",
        "name": f"linear-{label}",
        "params": [
            {
                "name": "w",
                "shape": [1, features],
                "dtype": "float32",
                "grad": "outer",
                "positions": 1,
            }
            if factored
            else {"name": "w", "shape": [features], "dtype": "float32"},
            {"name": "b", "shape": [1], "dtype": "float32"},
        ],
        "batch_size": BATCH,
        "features": {"recipe": "daily_activity", "shape": [features], "dtype": "float32"},
        "label": {"field": label, "dtype": "float32", "classes": None},
        "loss": "mse",
        "files": {},
        "opset": 17,
        "flops_per_example": 4 * features,
        "created_by": "Tessera demo",
    }
    shape = (1, features) if factored else (features,)
    params = {"w": np.zeros(shape, np.float32), "b": np.zeros(1, np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.tpkg"
        write_package(path, task, linear_mse_model(features, BATCH, factored), params)
        return path.read_bytes()


def request_payload(org_jwk: str, address: str, spec: dict[str, Any], days: int) -> dict:
    """A signed-to-be TrainingRequest over the last ``days`` days."""
    from identity.keys import did_for

    now = datetime.now(UTC).replace(microsecond=0)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "type": "TrainingRequest",
        "id": f"req-{uuid.uuid4().hex}",
        "issuer": did_for(org_jwk),
        "organization": {"name": ORGANIZATION},
        "issued": (now - timedelta(minutes=1)).strftime(stamp),
        "expires": (now + timedelta(days=21)).strftime(stamp),
        "purpose": spec["purpose"],
        "datasets": spec["datasets"],
        "fields": spec["fields"],
        "time_range": {
            "from": (now - timedelta(days=days + 2)).strftime(stamp),
            "to": (now + timedelta(days=1)).strftime(stamp),
        },
        "recipe": "daily_activity",
        "label": spec["label"],
        "package": address,
        "rounds": 3,
        "local_steps": 5,
        "batch_size": BATCH,
        "learning_rate": 0.05,
        "optimizer": "sgd",
        "privacy": {
            "epsilon": spec["epsilon"],
            "delta": 1e-5,
            "clip_norm": 1.0,
            "noise_multiplier": 1.1,
        },
        "reward": spec["reward"],
        "aggregation": {
            "strategy": "fedavg",
            "min_updates": 1,
            "round_seconds": 60,
            "max_update_norm": 10.0,
        },
    }


class DemoExchange:
    """An exchange on a free loopback port, for as long as the demo runs."""

    def __init__(self, folder: Path) -> None:
        import secrets

        from agents.exchange.loopback import LoopbackServer
        from agents.exchange.server import create_app

        self.app = create_app(f"sqlite:///{folder / 'exchange.db'}", secret=secrets.token_bytes(32))
        self._server = LoopbackServer(self.app)
        self.url = self._server.url

    def post_demo_requests(self, days: int) -> list[str]:
        """Admit the demo organization and post its two requests; return their ids."""
        from agents.exchange.client import ExchangeClient
        from agents.package import package_address
        from identity.keys import did_for, generate_key
        from identity.vc_jwt import issue_credential

        org = generate_key()
        self.app.state.store.admit(did_for(org), ORGANIZATION)
        client = ExchangeClient(self.url, org)
        ids = []
        for spec in REQUESTS:
            package = task_package(spec["label"])
            payload = request_payload(org, package_address(package), spec, days)
            ids.append(client.post_request(issue_credential(org, payload), package))
        return ids

    def stop(self) -> None:
        """Stop serving and close the exchange's database."""
        self._server.stop()
        self.app.state.store.close()
