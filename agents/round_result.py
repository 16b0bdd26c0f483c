"""The result of one local training round: what leaves the vault, as signed canonical JSON.

A result holds the parameter delta (new minus old parameters, after DP-SGD), how many examples
and steps went into it, the privacy spent (this round and in total, at the task's delta), the
DP parameters used, a SHA-256 commitment to the exact feature rows used, and the address of the
task package. Arrays are ``{"dtype": "float32", "shape": [...], "data": base64(little-endian
bytes)}``. :meth:`RoundResult.check` (finite, float32, exactly the task's parameter names and
shapes) runs before a result is returned by the runner and again before it is signed, and
:func:`verify_result` runs it on what it decodes; a NaN or a wrong shape never goes out.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from identity.keys import jws_sign, jws_verify
from vault.errors import TesseraError

FORMAT = "tessera-round/1"
DP_KEYS = (
    "accountant",
    "clip_norm",
    "delta",
    "expected_batch_size",
    "learning_rate",
    "local_steps",
    "noise_multiplier",
    "optimizer",
    "sampling_rate",
)


class ResultInvalid(TesseraError):
    """A round result is not finite, not float32, or not shaped like the task's parameters."""


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A float32 array as a JSON object with dtype, shape and base64 little-endian bytes."""
    data = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return {
        "dtype": "float32",
        "shape": list(array.shape),
        "data": base64.b64encode(data).decode("ascii"),
    }


def decode_array(obj: Any) -> np.ndarray:
    """The array that :func:`encode_array` wrote; ResultInvalid if it does not add up."""
    try:
        shape = [int(d) for d in obj["shape"]]
        raw = base64.b64decode(obj["data"], validate=True)
        dtype = obj["dtype"]
    except (KeyError, TypeError, ValueError):
        raise ResultInvalid("malformed array in round result") from None
    if dtype != "float32" or any(d < 0 for d in shape) or len(raw) != 4 * math.prod(shape):
        raise ResultInvalid("array in round result has a wrong dtype or size")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)


def _finite_number(name: str, value: Any, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ResultInvalid(f"round result: {name} is not a number")
    if not math.isfinite(value) or value < minimum:
        raise ResultInvalid(f"round result: {name} = {value} is not finite and >= {minimum}")


@dataclass(frozen=True)
class RoundResult:
    """One round's update and its privacy bookkeeping."""

    package: str
    task: str
    round: int
    delta: dict[str, np.ndarray]
    examples_used: int
    samples: int
    steps: int
    epsilon_round: float
    epsilon_total: float
    epsilon_budget: float
    dp: dict[str, Any]
    data_commitment: str
    created_at: str
    format: str = field(default=FORMAT)

    def check(self, shapes: Mapping[str, Sequence[int]]) -> None:
        """Raise ResultInvalid unless every field is sane and ``delta`` matches ``shapes``."""
        if self.format != FORMAT:
            raise ResultInvalid(f"round result format {self.format!r} is not {FORMAT!r}")
        if set(self.delta) != set(shapes):
            raise ResultInvalid(
                f"update has parameters {sorted(self.delta)}, the task has {sorted(shapes)}"
            )
        for name, array in self.delta.items():
            if not isinstance(array, np.ndarray) or array.dtype != np.float32:
                raise ResultInvalid(f"update for {name!r} is not a float32 array")
            if list(array.shape) != list(shapes[name]):
                raise ResultInvalid(
                    f"update for {name!r} has shape {list(array.shape)}, "
                    f"expected {list(shapes[name])}"
                )
            if not np.all(np.isfinite(array)):
                raise ResultInvalid(f"update for {name!r} holds NaN or Inf")
        for name in ("examples_used", "samples", "steps", "round"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ResultInvalid(f"round result: {name} must be a non-negative integer")
        for name in ("epsilon_round", "epsilon_total", "epsilon_budget"):
            _finite_number(name, getattr(self, name))
        if self.epsilon_total > self.epsilon_budget * (1 + 1e-12):
            raise ResultInvalid("round result: epsilon spent is over the budget")
        if set(self.dp) != set(DP_KEYS):
            raise ResultInvalid(f"round result: dp must have exactly {list(DP_KEYS)}")
        for key in DP_KEYS:
            if key not in ("accountant", "optimizer"):
                _finite_number(f"dp.{key}", self.dp[key])
        if not self.data_commitment.startswith("sha256:") or len(self.data_commitment) != 71:
            raise ResultInvalid("round result: data_commitment must be sha256:<64 hex>")

    def to_payload(self) -> dict[str, Any]:
        """The canonical-JSON-ready object that gets signed."""
        return {
            "format": self.format,
            "package": self.package,
            "task": self.task,
            "round": self.round,
            "delta": {name: encode_array(array) for name, array in self.delta.items()},
            "examples_used": self.examples_used,
            "samples": self.samples,
            "steps": self.steps,
            "privacy": {
                "epsilon_round": self.epsilon_round,
                "epsilon_total": self.epsilon_total,
                "epsilon_budget": self.epsilon_budget,
            },
            "dp": dict(self.dp),
            "data_commitment": self.data_commitment,
            "created_at": self.created_at,
        }

    @classmethod
    def from_payload(cls, payload: Any) -> RoundResult:
        """Rebuild a result from :meth:`to_payload` output; ResultInvalid if malformed."""
        try:
            privacy = payload["privacy"]
            return cls(
                package=str(payload["package"]),
                task=str(payload["task"]),
                round=payload["round"],
                delta={str(k): decode_array(v) for k, v in payload["delta"].items()},
                examples_used=payload["examples_used"],
                samples=payload["samples"],
                steps=payload["steps"],
                epsilon_round=privacy["epsilon_round"],
                epsilon_total=privacy["epsilon_total"],
                epsilon_budget=privacy["epsilon_budget"],
                dp=dict(payload["dp"]),
                data_commitment=str(payload["data_commitment"]),
                created_at=str(payload["created_at"]),
                format=str(payload["format"]),
            )
        except (KeyError, TypeError, AttributeError):
            raise ResultInvalid("malformed round result") from None

    def shapes(self) -> dict[str, list[int]]:
        """Parameter name -> shape of the delta."""
        return {name: list(array.shape) for name, array in self.delta.items()}


def sign_result(
    result: RoundResult, jwk: str, shapes: Mapping[str, Sequence[int]] | None = None
) -> str:
    """Check ``result`` (against the task's ``shapes`` when given), then sign it as a JWS."""
    result.check(result.shapes() if shapes is None else shapes)
    return jws_sign(jwk, result.to_payload())


def verify_result(
    token: str, shapes: Mapping[str, Sequence[int]], expected_did: str | None = None
) -> tuple[str, RoundResult]:
    """Verify a signed result and check it against ``shapes``; return (signer DID, result)."""
    did, payload = jws_verify(token, expected_did)
    result = RoundResult.from_payload(payload)
    result.check(shapes)
    return did, result
