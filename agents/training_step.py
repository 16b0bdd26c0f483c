"""One DP-SGD step over a task graph: Poisson sample, graph calls, clip, noise, optimizer.

Shared by the runner (graph = the sandboxed child) and the benchmark (graph = the same executor
in process), so what is timed is what runs. A graph is anything with ``arrays`` (the bound
input/output tensors by name) and ``run()``. The batch of a step is split into calls of the
graph's fixed batch size; the last call is padded with zero rows and a zero mask, and padding
rows of the outputs are never read. The rows of every call are hashed, in order, into the
round's data commitment. Parameters declared ``grad: outer`` arrive as factors
(``act.<name>``, ``sig.<name>``; see :mod:`agents.task_schema`) and are clipped and summed
from those (:class:`agents.dpsgd.Outer`); the others arrive as ``grad.<name>``.

The clip weights carry the 1/E of the mean (E: the expected batch size) and the optimizer's
``gradient_scale`` (SGD's learning rate), so the weighted sums come out as the scaled clipped
mean. The noise, std sigma * C * scale / E, is drawn by helper processes while the graph runs
(:class:`agents.noise.NoiseAhead`): with SGD they also subtract it from the parameters there
(pass :meth:`DPStep.hold_params`'s arrays to :meth:`DPStep.step`); with Adam it is added to the
mean in one pass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from agents import dpsgd
from agents.noise import NoiseAhead
from agents.sandbox import TaskFailed
from agents.task_schema import grad_form, graph_io


class Graph(Protocol):
    """A bound task graph: the sandbox's child, or the same executor in process."""

    arrays: dict[str, np.ndarray]

    def run(self) -> None:
        """Run once on what is in ``arrays``."""


class DPStep:
    """The fixed parts of a round's steps: graph, data, parameter layout, DP settings."""

    def __init__(
        self,
        graph: Graph,
        task: Mapping[str, Any],
        features: np.ndarray,
        labels: np.ndarray,
        clip_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        optimizer: dpsgd.SGD | dpsgd.Adam,
        rows_hash: Any = None,
        noise: NoiseAhead | None = None,
    ) -> None:
        """``noise``: a source made by :meth:`noise_source` (started early, so its helper
        process starts alongside the sandbox child); made here if not given."""
        self.graph = graph
        self.optimizer = optimizer
        self.names = [p["name"] for p in task["params"]]
        self.outer = {p["name"] for p in task["params"] if grad_form(p) == "outer"}
        # every per-example output: losses, grad.<dense>, act.<outer> and sig.<outer>
        self.output_names = [o["name"] for o in graph_io(dict(task))[1]]
        self.shapes = {p["name"]: tuple(p["shape"]) for p in task["params"]}
        self.batch = int(task["batch_size"])
        self.features, self.labels = features, labels
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.expected = expected_batch_size
        self.rows_hash = rows_hash
        self.timings: dict[str, float] | None = None  # section -> seconds, when measuring
        # the step's clipped means, then noisy ones: reused, no fresh pages every step
        self._means = [np.zeros(self.shapes[name], dtype=np.float32) for name in self.names]
        self._private: dict[str, np.ndarray] = {}  # per-example outputs' private copies
        # per batch size n: (private, shared) row views to copy, and the gradients over them
        self._copies: dict[int, tuple[list[tuple[np.ndarray, ...]], list[dpsgd.PerExample]]] = {}
        # every clipped gradient is scaled by this, so its sensitivity is C * scale
        self.scale = self._scale(optimizer, expected_batch_size)
        self.noise = noise or self.noise_source(
            task, clip_norm, noise_multiplier, expected_batch_size, optimizer
        )
        # SGD can update its largest factored weight inside that weight's gradient matmul
        # (dpsgd.subtract_weighted_sum) rather than by a pass of its own afterwards: in steps
        # where the noise helpers are done with the parameters by then (never waited for)
        fusing = self.noise.into_params and dpsgd.fused_update_available()
        fusable = [n for n in self.names if n in self.outer] if fusing else []
        self.fused = max(fusable, key=lambda n: np.prod(self.shapes[n]), default=None)
        self._fused_index = self.names.index(self.fused) if self.fused else -1

    @staticmethod
    def _scale(optimizer: dpsgd.SGD | dpsgd.Adam, expected_batch_size: float) -> float:
        return optimizer.gradient_scale / expected_batch_size

    @classmethod
    def noise_source(
        cls,
        task: Mapping[str, Any],
        clip_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        optimizer: dpsgd.SGD | dpsgd.Adam,
        graph_threads: int = 1,
    ) -> NoiseAhead:
        """The noise for a DPStep with these settings: std sigma * C * scale / E, drawn by
        helpers on the cores that the graph's ``graph_threads`` leave free."""
        size = sum(int(np.prod(p["shape"])) for p in task["params"])
        scale = cls._scale(optimizer, expected_batch_size)
        std = noise_multiplier * clip_norm * scale
        # SGD's p -= mean + noise lets the helpers subtract the noise themselves; Adam needs
        # the noisy mean (its moments are not linear in it)
        into_params = isinstance(optimizer, dpsgd.SGD)
        return NoiseAhead(size, std, graph_threads=graph_threads, into_params=into_params)

    def hold_params(self, values: list[np.ndarray]) -> list[np.ndarray]:
        """The parameters to pass to :meth:`step`, as copies of ``values``: for SGD where the
        noise helpers can subtract their draws (read them before :meth:`close`)."""
        if self.noise.into_params:
            return self.noise.hold_params(values)
        return [np.array(value, dtype=np.float32) for value in values]

    def close(self) -> None:
        """Stop the noise helper and wipe the noise (see :class:`agents.noise.NoiseAhead`)."""
        self.noise.close()

    def __enter__(self) -> DPStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tick(self, section: str, since: float) -> float:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[section] = self.timings.get(section, 0.0) + now - since
        return now

    def _fill(self, rows: np.ndarray) -> None:
        n = len(rows)
        arrays = self.graph.arrays
        np.take(self.features, rows, axis=0, out=arrays["features"][:n])
        np.take(self.labels, rows, axis=0, out=arrays["labels"][:n])
        arrays["features"][n:] = 0
        arrays["labels"][n:] = 0
        arrays["mask"][:n] = 1
        arrays["mask"][n:] = 0

    def probe(self, n: int, outside: int, slot: int) -> None:
        """Run the filled batch with row ``slot`` swapped for data row ``outside``, then as is.

        Every other row's loss and gradients must not change; else the graph mixes examples and
        per-example clipping would not bound one person's influence. Leaves the real outputs.
        """
        arrays = self.graph.arrays
        saved = (arrays["features"][slot].copy(), arrays["labels"][slot].copy())
        arrays["features"][slot] = self.features[outside]
        arrays["labels"][slot] = self.labels[outside]
        self.graph.run()
        names = self.output_names
        swapped = {name: arrays[name][:n].copy() for name in names}
        arrays["features"][slot], arrays["labels"][slot] = saved
        self.graph.run()
        others = np.arange(n) != slot
        for name in names:
            real, other = arrays[name][:n][others], swapped[name][others]
            scale = max(1.0, float(np.max(np.abs(real), initial=0.0)))
            if not np.allclose(real, other, rtol=1e-4, atol=1e-6 * scale, equal_nan=True):
                raise TaskFailed(
                    f"model refused: its {name} for one example changed when another example "
                    "changed; per-example gradients must depend on their own example only"
                )

    def per_example(self, n: int | None = None) -> list[dpsgd.PerExample]:
        """The graph's per-example gradients (or their factors), in parameter order.

        With ``n``, private copies of their first ``n`` rows: norms and sums then read the
        same numbers even if the child (compromised through a runtime bug) rewrote the shared
        memory in between, which would let it slip an unclipped gradient into the sum. The
        copies go to buffers kept for the round (fresh ones every step cost page faults): 69
        MB for the reference MLP's dense gradients, about 4 ms a step; factored weights copy
        only their factors.
        """
        arrays = self.graph.arrays
        if n is None:
            return self._gradients(arrays)
        cached = self._copies.get(n)
        if cached is None:  # the same few batch sizes come back every step
            if not self._private:
                self._private = {name: np.empty_like(arrays[name]) for name in self.output_names}
            names = [name for name in self.output_names if name != "losses"]
            pairs = [(self._private[name][:n], arrays[name][:n]) for name in names]
            grads = self._gradients({name: a[:n] for name, a in self._private.items()})
            cached = self._copies[n] = (pairs, grads)
        for private, shared in cached[0]:
            np.copyto(private, shared)
        return cached[1]

    def _gradients(self, arrays: Mapping[str, np.ndarray]) -> list[dpsgd.PerExample]:
        return [
            dpsgd.Outer(sig=arrays[f"sig.{name}"], act=arrays[f"act.{name}"])
            if name in self.outer
            else arrays[f"grad.{name}"]
            for name in self.names
        ]

    def step(
        self,
        params: list[np.ndarray],
        chosen: np.ndarray,
        rng: dpsgd.SecureRandom,
        index: int = 0,
        probe: bool = False,
    ) -> float:
        """Update ``params`` in place from the examples ``chosen``; return their summed loss."""
        t = time.perf_counter()
        arrays = self.graph.arrays
        for name, value in zip(self.names, params, strict=True):
            np.copyto(arrays[name], value)
        means = self._means
        fresh = True  # means hold nothing of this step yet
        noised = False  # the noise is in params (SGD) or means (Adam)
        fuse: bool | None = None  # whether this step fuses (decided at its first graph call)
        loss_total = 0.0
        t = self._tick("inputs", t)
        for call, first in enumerate(range(0, max(len(chosen), 1), self.batch)):
            rows = chosen[first : first + self.batch]
            n = len(rows)
            self._fill(rows)
            if self.rows_hash is not None:
                self.rows_hash.update(np.array([index, call, n], dtype="<u8").tobytes())
                self.rows_hash.update(arrays["features"][:n].astype("<f4", copy=False).tobytes())
                self.rows_hash.update(arrays["labels"][:n].tobytes())
            t = self._tick("inputs", t)
            if n == 0:
                continue  # an empty Poisson sample still takes a (pure noise) step
            self.noise.start()  # the helper draws while the graph runs (no-op if it has)
            t = self._tick("noise", t)
            if probe and call == 0 and n >= 2 and len(self.features) > n:
                members = set(rows.tolist())
                outside = int(rng.uniform(1)[0] * len(self.features))
                while outside in members:
                    outside = (outside + 1) % len(self.features)
                self.probe(n, outside, int(rng.uniform(1)[0] * n))
            else:
                self.graph.run()
            t = self._tick("onnx", t)
            grads = self.per_example(n)
            try:
                sq_norms = dpsgd.per_example_sq_norms(grads, n)
            except dpsgd.NonFiniteGradient as exc:
                raise TaskFailed(f"model failed: {exc}") from None
            factors = dpsgd.clip_factors(sq_norms, self.clip_norm, self.scale)
            t = self._tick("clip", t)
            # a factored weight's sum is the weight-gradient matmul the graph did not do
            for factored in (False, True) if self.outer else (False,):
                for name, total, grad in zip(self.names, means, grads, strict=True):
                    if isinstance(grad, dpsgd.Outer) is factored and name != self.fused:
                        if fresh:
                            dpsgd.weighted_sum(grad, n, factors, out=total)
                        else:
                            total += dpsgd.weighted_sum(grad, n, factors)
                t = self._tick("weight_grads" if factored else "clip", t)
            if self.fused is not None:  # last, to give the helpers the most time
                i = self._fused_index
                if fuse is None:
                    fuse = self.noise.ready()
                if fuse and not noised:  # the helpers are done with params: take their answers
                    self.noise.subtract_from(params)
                    noised = True
                    t = self._tick("noise", t)
                if fuse:
                    dpsgd.subtract_weighted_sum(grads[i], n, factors, params[i])
                elif fresh:
                    dpsgd.weighted_sum(grads[i], n, factors, out=means[i])
                else:
                    means[i] += dpsgd.weighted_sum(grads[i], n, factors)
                t = self._tick("weight_grads", t)
            fresh = False
            loss_total += float(np.sum(arrays["losses"][:n], dtype=np.float64))
            t = self._tick("inputs", t)  # bookkeeping: the loss the round reports
        if fresh:  # an empty Poisson sample: the step is pure noise
            for total in means:
                total.fill(0.0)
        if self.noise.into_params:  # SGD: params -= noise, by the helpers while the graph ran
            if not noised:
                self.noise.subtract_from(params)
        else:
            self.noise.add_to(means)
        t = self._tick("noise", t)
        if not fuse:
            self.optimizer.step(params, means)
        else:  # the fused weight is updated already
            rest = [i for i in range(len(self.names)) if i != self._fused_index]
            self.optimizer.step([params[i] for i in rest], [means[i] for i in rest])
        self._tick("optimizer", t)
        return loss_total
