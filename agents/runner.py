"""Local DP-SGD rounds over an organization's ONNX graph, each round in a sandboxed child.

Trust split: the child (``agents/sandbox_worker.py``) only runs the hostile graph and writes
per-example losses and gradients (or, for linear weights declared ``grad: outer``, their
factors) into shared memory. This process samples the batches, copies those outputs out of the
child's reach, treats them as untrusted numbers, clips them per example, adds the noise, steps
the optimizer and does the privacy accounting, so a model cannot skip the noise or the clipping.

Per round: the model is validated (``agents.validator``) before any child sees it; the privacy
ledger must have room for all ``local_steps`` steps or the round is not started
(:class:`~agents.accounting.BudgetExceeded`); each step draws a Poisson sample (rate q =
expected batch / N) with the vault's CSPRNG and runs it through the graph in calls of the
graph's fixed batch size, the last one padded and masked; epsilon is recomputed after every
step. A child that exceeds the memory or time limit is killed and reported as
:class:`TaskFailed`; this process carries on. Vault settings can only tighten a request
(:func:`effective_dp`). Known gap: DP assumes each example's gradient depends on that example
only; one spot check per round (``DPStep.probe`` in ``agents/training_step.py``) catches graphs
that mix examples across the batch on real rows, but cannot prove they never do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from agents import dpsgd
from agents.accounting import PrivacyLedger
from agents.round_result import RoundResult
from agents.sandbox import Sandbox, SandboxLimits, TaskFailed, resolve_providers
from agents.task_schema import graph_io
from agents.training_step import DPStep
from vault.errors import TesseraError

# TaskFailed and SandboxLimits live with the process code; callers import them from here
__all__ = ["DPConfig", "RoundOutcome", "SandboxLimits", "TaskFailed", "effective_dp", "run_round"]


@dataclass(frozen=True)
class DPConfig:
    """What a request asks for (or the vault allows): clipping, noise, budget, optimizer."""

    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float = 10.0
    learning_rate: float = 0.1
    optimizer: str = "sgd"
    local_steps: int = 1
    expected_batch_size: int | None = None  # None: the graph's batch size

    def check(self) -> None:
        """Raise TesseraError if a value is out of range."""
        if not self.clip_norm > 0 or not self.noise_multiplier > 0:
            raise TesseraError("clip norm and noise multiplier must be positive")
        if not 0 < self.delta < 1 or not self.epsilon_budget > 0:
            raise TesseraError("delta must be in (0, 1) and the epsilon budget positive")
        if self.local_steps < 1 or not self.learning_rate > 0:
            raise TesseraError("local steps must be >= 1 and the learning rate positive")
        if self.optimizer not in ("sgd", "adam"):
            raise TesseraError(f"unknown optimizer {self.optimizer!r} (use sgd or adam)")
        if self.expected_batch_size is not None and self.expected_batch_size < 1:
            raise TesseraError("expected batch size must be >= 1")


def effective_dp(request_dp: DPConfig, vault_settings: Mapping[str, float] | None) -> DPConfig:
    """The request made no looser than the vault's settings: min C, max sigma, min budget."""
    settings = dict(vault_settings or {})
    unknown = set(settings) - {"clip_norm", "noise_multiplier", "epsilon_budget", "delta"}
    if unknown:
        raise TesseraError(f"unknown vault privacy settings: {sorted(unknown)}")
    tightened = {
        "clip_norm": min(request_dp.clip_norm, settings.get("clip_norm", np.inf)),
        "noise_multiplier": max(request_dp.noise_multiplier, settings.get("noise_multiplier", 0)),
        "epsilon_budget": min(request_dp.epsilon_budget, settings.get("epsilon_budget", np.inf)),
        "delta": min(request_dp.delta, settings.get("delta", 1.0)),
    }
    return dataclasses.replace(request_dp, **{k: float(v) for k, v in tightened.items()})


@dataclass
class RoundOutcome:
    """A round's result plus what stays in the vault (never signed or sent)."""

    result: RoundResult
    params: dict[str, np.ndarray]  # parameters after the round, for a local next round
    mean_losses: list[float]  # per step; data-dependent, so only shown locally
    commitment_nonce: bytes  # opens data_commitment in an audit
    sandbox: dict[str, Any]
    seconds: float


def task_io(task: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph's (inputs, outputs) per task.json, as name/shape/dtype dicts (see graph_io)."""
    return graph_io(dict(task))


def _validate_model(model_bytes: bytes, task: Mapping[str, Any]) -> None:
    from agents.validator import check_task_io, validate_model

    check_task_io(validate_model(model_bytes), dict(task))


def _check_data(
    task: Mapping[str, Any], features: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    shape = [int(d) for d in task["features"]["shape"]]
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim < 1 or list(features.shape[1:]) != shape or features.dtype.kind not in "fiu":
        raise TesseraError(f"features must be numbers shaped [N, {', '.join(map(str, shape))}]")
    if labels.shape != features.shape[:1] or labels.dtype.kind not in "fiub":
        raise TesseraError(f"labels must be numbers shaped [{features.shape[0]}]")
    if features.shape[0] < 1:
        raise TesseraError("the training data is empty")
    features = np.ascontiguousarray(features, dtype=np.float32)
    if not np.all(np.isfinite(features)):
        raise TesseraError("features hold NaN or Inf")
    if task["label"]["dtype"] == "int64":
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise TesseraError("labels must be whole numbers for this task")
        labels = labels.astype(np.int64)
        classes = task["label"].get("classes")
        if classes is not None and (labels.min() < 0 or labels.max() >= classes):
            raise TesseraError(f"labels must lie in 0..{classes - 1}")
    else:
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if not np.all(np.isfinite(labels)):
            raise TesseraError("labels hold NaN or Inf")
    return features, labels


def run_round(
    task: Mapping[str, Any],
    model_bytes: bytes,
    params: Mapping[str, np.ndarray],
    address: str,
    features: np.ndarray,
    labels: np.ndarray,
    dp: DPConfig,
    ledger: PrivacyLedger,
    *,
    limits: SandboxLimits | None = None,
    device: str = "cpu",
    validate: bool = True,
    probe: bool = True,
    round_index: int = 0,
) -> RoundOutcome:
    """Run one DP-SGD round in a sandboxed child; return the checked result and local state."""
    started = time.monotonic()
    limits = limits or SandboxLimits()
    dp.check()
    if ledger.delta != dp.delta:
        raise TesseraError(f"the ledger accounts at delta {ledger.delta}, the round at {dp.delta}")
    features, labels = _check_data(task, features, labels)
    count = features.shape[0]
    batch = int(task["batch_size"])
    expected = float(dp.expected_batch_size or batch)
    q = expected / count
    if q > 1:
        raise TesseraError(f"expected batch size {expected:g} exceeds the {count} examples")
    names = [p["name"] for p in task["params"]]
    shapes = {p["name"]: list(p["shape"]) for p in task["params"]}
    start = {}
    for name in names:
        value = np.asarray(params[name], dtype=np.float32)
        if list(value.shape) != shapes[name] or not np.all(np.isfinite(value)):
            raise TesseraError(f"parameter {name!r} is not finite float32 {shapes[name]}")
        start[name] = value
    epsilon_before = ledger.spent()
    budget = min(ledger.budget, dp.epsilon_budget)
    ledger.check_round(q, dp.noise_multiplier, dp.local_steps, budget)  # before anything runs
    if validate:
        _validate_model(model_bytes, task)
    providers = resolve_providers(device)
    inputs, outputs = task_io(task)
    current = [start[name].copy() for name in names]
    optimizer = dpsgd.make_optimizer(dp.optimizer, dp.learning_rate)
    nonce = os.urandom(32)
    rows_hash = hashlib.sha256(b"tessera-rows/1")
    mean_losses: list[float] = []
    used = np.zeros(count, dtype=bool)
    samples = 0
    # the noise helper starts first: it imports while the sandbox child does
    # on the GPU the graph's host thread mostly waits: the cores are the helpers'
    graph_threads = 1 if "CUDAExecutionProvider" in providers else limits.threads
    noise = DPStep.noise_source(
        task, dp.clip_norm, dp.noise_multiplier, expected, optimizer, graph_threads
    )
    with (
        noise,
        # numpy's BLAS on one thread: its idle threads spin, on the cores the noise helpers and
        # the graph need (measured on 2 vCPUs: 484 steps/s with BLAS's default, 837 with one)
        threadpool_limits(limits=1, user_api="blas"),
        Sandbox(model_bytes, inputs, outputs, limits, providers) as box,
        DPStep(
            box,
            task,
            features,
            labels,
            dp.clip_norm,
            dp.noise_multiplier,
            expected,
            optimizer,
            rows_hash,
            noise,
        ) as stepper,
    ):
        current = stepper.hold_params(current)
        for step in range(dp.local_steps):
            rng = dpsgd.SecureRandom()  # a fresh key every step
            chosen = np.flatnonzero(rng.bernoulli(count, q))
            used[chosen] = True
            samples += len(chosen)
            loss = stepper.step(current, chosen, rng, step, probe and step == 0)
            # counted as it runs, even if the round later fails: never under-counted
            ledger.record_step(q, dp.noise_multiplier)
            mean_losses.append(loss / len(chosen) if len(chosen) else float("nan"))
        current = [value.copy() for value in current]  # out of the helpers' memory
        sandbox_info = dict(box.info)
        sandbox_info["noise"] = noise.mode  # where the Gaussian noise was drawn
        # whether SGD could update a factored weight inside its gradient matmul
        sandbox_info["fused_update"] = stepper.fused is not None
    commitment = hashlib.sha256(nonce + rows_hash.digest()).hexdigest()
    spent = ledger.spent()
    result = RoundResult(
        package=address,
        task=str(task["name"]),
        round=round_index,
        delta={name: (new - start[name]) for name, new in zip(names, current, strict=True)},
        examples_used=int(used.sum()),
        samples=samples,
        steps=dp.local_steps,
        epsilon_round=max(0.0, spent - epsilon_before),
        epsilon_total=spent,
        epsilon_budget=budget,
        dp={
            "accountant": "rdp",
            "clip_norm": dp.clip_norm,
            "delta": dp.delta,
            "expected_batch_size": expected,
            "learning_rate": dp.learning_rate,
            "local_steps": dp.local_steps,
            "noise_multiplier": dp.noise_multiplier,
            "optimizer": dp.optimizer,
            "sampling_rate": q,
        },
        data_commitment=f"sha256:{commitment}",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    result.check(shapes)  # raises ResultInvalid: a NaN or a wrong shape never leaves here
    return RoundOutcome(
        result=result,
        params=dict(zip(names, current, strict=True)),
        mean_losses=mean_losses,
        commitment_nonce=nonce,
        sandbox=sandbox_info,
        seconds=time.monotonic() - started,
    )
