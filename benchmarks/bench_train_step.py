"""One DP-SGD step: our ONNX path against torch eager with torch.func per-example gradients.

Ours is ``agents.training_step.DPStep`` over ``agents.sandbox_worker.LocalGraph``: the exact
code a round runs in the sandbox child (same session options, same shared-memory layout and
I/O binding), minus the process boundary; ``ours_factored_sandboxed`` is the runner's own path,
the graph in the sandboxed child process (seccomp, namespaces, limits) with its pipe round trip
per call. Its graph is written with onnx.helper: forward, then
the per-example backward as batched ops (outer products ``x_b d_b^T`` by broadcast Mul, or by
a batched K=1 MatMul for narrow layers; the backprop through ``d @ W^T``). That is a legitimate
package an organization could ship; with ``--sdk`` the graph exported by ``agents.sdk`` (make_fx
+ dynamo; factored, since every parameter of that MLP belongs to an ``nn.Linear``) is timed as
well, its ratio taken against the torch rate measured earlier in the same run.

Each MLP is timed (at least) twice through our path: ``ours`` with materialized per-example weight
gradients ``grad.W`` [B, in, out] (the graph does the outer products, the vault reads them to
clip), and ``ours_factored`` with ``grad: outer`` weights (torch layout [out, in]): the graph
outputs only ``act.W`` [B, in] and ``sig.W`` [B, out], and the vault computes norms from the
factors and the clipped sum as one matmul per weight. Sections of our step (wall time on the
step's critical path): ``inputs`` (parameters and rows into the graph's buffers), ``onnx``,
``clip`` (private copies, norms, clip factors, dense weighted sums, loss sum),
``weight_grads`` (the vault's (c * S)^T A matmuls: backprop's weight-gradient matmul, which
the materialized graph does inside ``onnx`` and any training step does; in steps where the
noise helpers are done by then, SGD's update of the largest weight runs inside its matmul, BLAS
beta = 1, and has no pass of its own), ``noise`` (waking the helpers and collecting their draws,
which with SGD they have subtracted from the parameters themselves), ``optimizer``.

``dp_overhead_fraction`` is the issue's target, the non-ONNX overhead (clip + noise +
optimizer) as a share of the step; ``outside_onnx_fraction`` adds the inputs and the
weight-gradient matmuls. The noise is drawn by the vault's noise helper processes
(``agents/noise.py``, one per spare core up to four) while the graph runs, so the step has
other cores busy part of the time: ``noise_helper_ms_per_step`` is their drawing time, added
up. For a like-for-like count of cores, torch is also timed with one more thread than ours
(``torch_one_more_thread``).

Torch: ``vmap(grad(loss))`` over ``functional_call`` per example, joint clipping to C, one
``einsum`` per parameter for the clipped sum, ``torch.normal`` noise, SGD in place. Both use
the same thread count (``torch.set_num_threads`` = ORT ``intra_op_num_threads``) in the same
process, timed in alternating blocks; the median block is reported.

FLOPs per step use the usual 6 x parameters x batch (forward 2, backward 4); the peak is
cores x GHz x FP32 FLOP per cycle from the CPU's vector flags (an estimate, printed with its
inputs). Output: one JSON object on stdout.

With ``--device gpu`` our graph runs on ONNX Runtime's CUDA provider (onnxruntime-gpu) and
torch on CUDA; clipping, noise and the optimizer stay on the CPU, as in a round.

    .venv/bin/python benchmarks/bench_train_step.py [--threads 1] [--seconds 2] [--sdk]
        [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _early_threads() -> str:
    # numpy's OpenBLAS reads its thread count when numpy is imported: set it to --threads
    # first, so clipping gets the same number of threads as ONNX Runtime and torch
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = _early_threads()

import numpy as np  # noqa: E402

# set by --device: where our graph and torch's step run
PROVIDERS = ["CPUExecutionProvider"]
TORCH_DEVICE = "cpu"
from onnx import TensorProto  # noqa: E402
from onnx import helper as oh  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import dpsgd  # noqa: E402
from agents.runner import task_io  # noqa: E402
from agents.sandbox import Sandbox, SandboxLimits  # noqa: E402
from agents.sandbox_worker import LocalGraph  # noqa: E402
from agents.training_step import DPStep  # noqa: E402

MODELS = {
    "mlp_784_256_256_10": ([784, 256, 256, 10], "cross_entropy"),
    "logistic_784_10": ([784, 10], "cross_entropy"),
    "mlp_regressor_32_64_64_1": ([32, 64, 64, 1], "mse"),
}
CONV = "conv1d_60x2_32f_k5"  # exported by agents.sdk (torch), not written with onnx.helper
BATCH = 64
CLIP, SIGMA, LR = 1.0, 1.0, 0.05


def task_for(sizes: list[int], loss: str, batch: int, factored: bool = False) -> dict[str, Any]:
    """A task.json for a ReLU MLP with layer ``sizes`` (W{i}: [in, out], b{i}: [out]).

    ``factored``: W{i} is [out, in] (torch's layout) with ``grad: outer``, one position.
    """
    params: list[dict[str, Any]] = []
    for i in range(len(sizes) - 1):
        if factored:
            shape = [sizes[i + 1], sizes[i]]
            params.append({"name": f"W{i}", "shape": shape, "dtype": "float32",
                           "grad": "outer", "positions": 1})  # fmt: skip
        else:
            params.append({"name": f"W{i}", "shape": [sizes[i], sizes[i + 1]], "dtype": "float32"})
        params.append({"name": f"b{i}", "shape": [sizes[i + 1]], "dtype": "float32"})
    ce = loss == "cross_entropy"
    return {
        "format": "tessera-task/1",
        "name": "bench",
        "params": params,
        "batch_size": batch,
        "features": {"recipe": "bench", "shape": [sizes[0]], "dtype": "float32"},
        "label": {"field": "y", "dtype": "int64" if ce else "float32", "classes": sizes[-1]},
        "loss": loss,
    }


def mlp_graph(sizes: list[int], loss: str, batch: int, factored: bool = False) -> bytes:
    """Forward + explicit per-example backward of a ReLU MLP, as an ONNX model.

    ``factored``: weights [out, in]; outputs the factors act.W{i} / sig.W{i}, not grad.W{i}.
    """
    node, layers = oh.make_node, len(sizes) - 1
    inits = [
        oh.make_tensor("ax1", TensorProto.INT64, [1], [1]),
        oh.make_tensor("ax2", TensorProto.INT64, [1], [2]),
    ]
    nodes, acts, a = [], ["features"], "features"
    for i in range(layers):
        if factored:
            nodes.append(node("Gemm", [a, f"W{i}", f"b{i}"], [f"z{i}"], transB=1))
        else:
            nodes += [
                node("MatMul", [a, f"W{i}"], [f"mm{i}"]),
                node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]),
            ]
        if i < layers - 1:
            nodes.append(node("Relu", [f"z{i}"], [f"a{i}"]))
            a = f"a{i}"
            acts.append(a)
    out, top = f"z{layers - 1}", f"d{layers - 1}"
    nodes.append(node("Unsqueeze", ["mask", "ax1"], ["mask2"]))
    if loss == "cross_entropy":
        inits += [
            oh.make_tensor("depth", TensorProto.INT64, [], [sizes[-1]]),
            oh.make_tensor("onoff", TensorProto.FLOAT, [2], [0.0, 1.0]),
        ]
        nodes += [
            node("LogSoftmax", [out], ["logp"], axis=1),
            node("OneHot", ["labels", "depth", "onoff"], ["onehot"], axis=-1),
            node("Mul", ["onehot", "logp"], ["picked"]),
            node("ReduceSum", ["picked", "ax1"], ["ll"], keepdims=0),
            node("Neg", ["ll"], ["nll"]),
            node("Mul", ["nll", "mask"], ["losses"]),
            node("Exp", ["logp"], ["prob"]),
            node("Sub", ["prob", "onehot"], ["dl"]),
        ]
    else:
        inits.append(oh.make_tensor("two", TensorProto.FLOAT, [], [2.0]))
        nodes += [
            node("Unsqueeze", ["labels", "ax1"], ["y2"]),
            node("Sub", [out, "y2"], ["err"]),
            node("Mul", ["err", "err"], ["sq"]),
            node("ReduceSum", ["sq", "ax1"], ["l"], keepdims=0),
            node("Mul", ["l", "mask"], ["losses"]),
            node("Mul", ["err", "two"], ["dl"]),
        ]
    nodes.append(node("Mul", ["dl", "mask2"], [top]))
    for i in reversed(range(factored * layers)):
        d = f"d{i}"
        # the factors: the layer's input and its output's backprop signal, per example
        nodes += [
            node("Identity", [d], [f"grad.b{i}"]),
            node("Identity", [acts[i]], [f"act.W{i}"]),
            node("Identity", [d], [f"sig.W{i}"]),
        ]
        if i:
            nodes += [
                node("MatMul", [d, f"W{i}"], [f"dh{i}"]),  # W is [out, in]: no transpose
                node("Sign", [acts[i]], [f"relu_grad{i}"]),
                node("Mul", [f"dh{i}", f"relu_grad{i}"], [f"d{i - 1}"]),
            ]
    for i in reversed(range((not factored) * layers)):
        d = f"d{i}"
        nodes += [
            node("Identity", [d], [f"grad.b{i}"]),
            node("Unsqueeze", [acts[i], "ax2"], [f"xu{i}"]),
            node("Unsqueeze", [d, "ax1"], [f"du{i}"]),
            # per-example outer product x_b d_b^T: ONNX Runtime's broadcast Mul crawls when the
            # inner dim is narrow (6-9x slower than a K=1 batched MatMul at 10 or 64 wide) and
            # wins when it is wide (2.7x faster at 256)
            node(
                "MatMul" if 1 < sizes[i + 1] < 128 else "Mul", [f"xu{i}", f"du{i}"], [f"grad.W{i}"]
            ),
        ]
        if i:
            nodes += [
                node("Transpose", [f"W{i}"], [f"Wt{i}"], perm=[1, 0]),
                node("MatMul", [d, f"Wt{i}"], [f"dh{i}"]),
                node("Sign", [acts[i]], [f"relu_grad{i}"]),  # ReLU output >= 0: sign is 0 or 1
                node("Mul", [f"dh{i}", f"relu_grad{i}"], [f"d{i - 1}"]),
            ]
    task = task_for(sizes, loss, batch, factored)
    inputs, outputs = task_io(task)
    types = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}

    def value(v: dict[str, Any]) -> Any:
        return oh.make_tensor_value_info(v["name"], types[v["dtype"]], v["shape"])

    graph = oh.make_graph(
        nodes, "mlp", [value(v) for v in inputs], [value(v) for v in outputs], inits
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _init_params(task: dict[str, Any], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for p in task["params"]:
        outer = p.get("grad") == "outer"
        shape = p["shape"][::-1] if outer else p["shape"]  # draw [in, out] either way
        fan_in = shape[0] if len(shape) > 1 else 1
        value = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        out.append(np.ascontiguousarray(value.T) if outer else value)
    return out


def _data(task: dict[str, Any], count: int = 4096, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, *task["features"]["shape"])).astype(np.float32)
    if task["label"]["dtype"] == "int64":
        return x, rng.integers(0, task["label"]["classes"], count).astype(np.int64)
    return x, rng.standard_normal(count).astype(np.float32)


class Ours:
    """Our DP step on one graph, timed in blocks."""

    def __init__(self, model_bytes: bytes, task: dict[str, Any], params: list[np.ndarray],
                 threads: int, sandboxed: bool = False) -> None:  # fmt: skip
        self.task = task
        self.x, self.y = _data(task)
        inputs, outputs = task_io(task)
        self.graph: LocalGraph | Sandbox
        if sandboxed:  # the runner's own path: the graph in the sandboxed child process
            limits = SandboxLimits(memory_mib=4096, time_s=3600, threads=threads)
            box = Sandbox(model_bytes, inputs, outputs, limits, PROVIDERS)
            self.graph = box.__enter__()
        else:
            self.graph = LocalGraph(model_bytes, inputs, outputs, threads, PROVIDERS)
        optimizer = dpsgd.SGD(LR)
        # as the runner makes it: helpers on the cores the graph's threads leave free
        noise = DPStep.noise_source(task, CLIP, SIGMA, float(BATCH), optimizer, threads)
        self.stepper = DPStep(
            self.graph, task, self.x, self.y, CLIP, SIGMA, float(BATCH), optimizer, noise=noise
        )
        self.params = self.stepper.hold_params(params)
        self.steps = 0  # since the last reset()
        self.batch_index = 0
        self.rng = dpsgd.SecureRandom()  # only the probe would use it (the batches are fixed)
        self._helper_base = 0.0

    def close(self) -> None:
        """Stop the noise helper and, if sandboxed, the child."""
        self.stepper.close()
        if isinstance(self.graph, Sandbox):
            self.graph.close()

    def reset(self) -> None:
        """Start counting steps, section times and the helper's drawing time afresh."""
        self.steps = 0
        self.stepper.timings = {}
        self._helper_base = self.stepper.noise.helper_draw_seconds

    def helper_ms_per_step(self) -> float:
        """The noise helper's drawing time per step since the last reset()."""
        drawn = self.stepper.noise.helper_draw_seconds - self._helper_base
        return 1000 * drawn / max(self.steps, 1)

    def step(self) -> None:
        """One DP-SGD step on the next fixed batch of 64 rows."""
        first = self.batch_index * BATCH % (len(self.x) - BATCH)
        self.batch_index += 1
        self.steps += 1
        chosen = np.arange(first, first + BATCH)
        self.stepper.step(self.params, chosen, self.rng)

    def block(self, seconds: float) -> float:
        """Steps per second over about ``seconds``."""
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.step()
            count += 1
        return count / (time.perf_counter() - start)


def torch_mlp(sizes: list[int]) -> Any:
    """The ReLU MLP with layer ``sizes`` as a torch module."""
    import torch

    layers: list[torch.nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class Torch:
    """The same DP step in torch eager: vmap(grad) per-example gradients, clip, noise, SGD."""

    def __init__(self, model: Any, loss: str, x: np.ndarray, y: np.ndarray,
                 threads: int) -> None:  # fmt: skip
        import torch
        from torch.func import functional_call, grad, vmap

        torch.set_num_threads(threads)
        self.torch = torch
        model = model.to(TORCH_DEVICE)
        self.params = {k: v.detach().clone() for k, v in model.named_parameters()}

        def per_example(p: dict[str, Any], xb: Any, yb: Any) -> Any:
            out = functional_call(model, p, (xb.unsqueeze(0),))[0]
            if loss == "cross_entropy":
                return -torch.log_softmax(out, dim=-1).gather(0, yb.unsqueeze(0)).squeeze(0)
            return (out.reshape(()) - yb) ** 2

        self.per_example = vmap(grad(per_example), in_dims=(None, 0, 0))
        self.x, self.y = torch.from_numpy(x).to(TORCH_DEVICE), torch.from_numpy(y).to(TORCH_DEVICE)
        self.generator = torch.Generator(TORCH_DEVICE)
        self.generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
        # CUDA runs asynchronously: wait for each step, as ours does (its results reach the CPU)
        self.sync = torch.cuda.synchronize if TORCH_DEVICE == "cuda" else lambda: None
        self.batch_index = 0
        self.grad_seconds = 0.0
        self.total_seconds = 0.0

    def step(self) -> None:
        """One DP-SGD step on the next fixed batch of 64 rows."""
        torch = self.torch
        start = time.perf_counter()
        first = self.batch_index * BATCH % (len(self.x) - BATCH)
        self.batch_index += 1
        grads = self.per_example(
            self.params, self.x[first : first + BATCH], self.y[first : first + BATCH]
        )
        self.sync()
        middle = time.perf_counter()
        norms = torch.stack([g.reshape(BATCH, -1).norm(2, dim=1) for g in grads.values()])
        factors = (CLIP / (norms.norm(2, dim=0) + 1e-6)).clamp(max=1.0)
        for name, p in self.params.items():
            summed = torch.einsum("i,i...->...", factors, grads[name])
            noise = torch.normal(
                0.0, SIGMA * CLIP, summed.shape, generator=self.generator, device=TORCH_DEVICE
            )
            p.sub_(summed.add_(noise), alpha=LR / BATCH)
        self.sync()
        end = time.perf_counter()
        self.grad_seconds += middle - start
        self.total_seconds += end - start

    def block(self, seconds: float) -> float:
        """Steps per second over about ``seconds``."""
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.step()
            count += 1
        return count / (time.perf_counter() - start)


def parity(ours: Ours, sizes: list[int], loss: str) -> float:
    """Max relative error of our graph's per-example gradients against torch.func's.

    Factored weights are rebuilt from act/sig and compared in their [out, in] layout.
    """
    import torch
    from torch.func import grad, vmap

    layers = len(sizes) - 1

    factored = {p["name"] for p in ours.task["params"] if p.get("grad") == "outer"}

    def per_example(p: dict[str, Any], xb: Any, yb: Any) -> Any:
        h = xb
        for i in range(layers):
            w = p[f"W{i}"].T if f"W{i}" in factored else p[f"W{i}"]
            h = h @ w + p[f"b{i}"]
            h = torch.relu(h) if i < layers - 1 else h
        if loss == "cross_entropy":
            return -torch.log_softmax(h, -1).gather(0, yb.unsqueeze(0)).squeeze(0)
        return (h[0] - yb) ** 2

    names = [p["name"] for p in ours.task["params"]]
    ours.stepper._fill(np.arange(BATCH))
    for name, value in zip(names, ours.params, strict=True):
        np.copyto(ours.graph.arrays[name], value)
    ours.graph.run()
    params = {name: torch.from_numpy(v.copy()) for name, v in zip(names, ours.params, strict=True)}
    # the reference is computed on the CPU: a GPU's TF32 matmuls would blur it
    x, y = torch.from_numpy(ours.x[:BATCH]), torch.from_numpy(ours.y[:BATCH])
    reference = vmap(grad(per_example), in_dims=(None, 0, 0))(params, x, y)
    errors = []
    for name, got in zip(names, ours.stepper.per_example(), strict=True):
        want = reference[name].numpy()
        got = got.materialize(BATCH) if isinstance(got, dpsgd.Outer) else got
        errors.append(float(np.abs(got - want).max() / (np.abs(want).max() + 1e-12)))
    return max(errors)


def peak_estimate(threads: int) -> dict[str, Any]:
    """FP32 peak of ``threads`` cores from /proc/cpuinfo: cores x GHz x FLOP per cycle."""
    flags, vendor, mhz = set(), "", 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags":
                flags = set(value.split())
            elif key == "vendor_id":
                vendor = value.strip()
            elif key == "cpu MHz":
                mhz = max(mhz, float(value))
    except OSError:
        pass
    # two FMA pipes per core: 2 x lanes x 2 FLOP; Zen 4 runs AVX-512 on 256-bit pipes
    if "avx512f" in flags and vendor != "AuthenticAMD":
        per_cycle = 64
    elif "fma" in flags:
        per_cycle = 32
    else:
        per_cycle = 16
    ghz = mhz / 1000 if mhz else 2.5
    return {
        "gflops": round(threads * ghz * per_cycle, 1),
        "cores": threads,
        "ghz": round(ghz, 3),
        "flop_per_cycle": per_cycle,
        "vendor": vendor,
    }


def _summary(ours: Ours, rates: list[float]) -> dict[str, Any]:
    timings = ours.stepper.timings or {}
    total = sum(timings.values())
    share = {k: round(v / total, 4) for k, v in sorted(timings.items())} if total else {}
    steps_per_s = statistics.median(rates)
    return {
        "steps_per_s": round(steps_per_s, 2),
        "best_block_steps_per_s": round(max(rates), 2),
        "ms_per_step": round(1000 / steps_per_s, 3),
        "share_of_step": share,
        "dp_overhead_fraction": round(
            sum(share.get(k, 0) for k in ("clip", "noise", "optimizer")), 4
        ),
        "outside_onnx_fraction": round(1 - share.get("onnx", 0.0), 4),
        "noise_drawn_by": ours.stepper.noise.mode,
        "noise_helper_ms_per_step": round(ours.helper_ms_per_step(), 3),
    }


def bench_model(name: str, threads: int, seconds: float, blocks: int) -> dict[str, Any]:
    """Time ours and torch on model ``name``; return its numbers."""
    sizes, loss = MODELS[name]
    task = task_for(sizes, loss, BATCH)
    params = _init_params(task)
    variants = {"ours": Ours(mlp_graph(sizes, loss, BATCH), task, params, threads)}
    if len(sizes) >= 2:  # every model here is made of linear layers
        ftask = task_for(sizes, loss, BATCH, factored=True)
        fgraph = mlp_graph(sizes, loss, BATCH, factored=True)
        variants["ours_factored"] = Ours(fgraph, ftask, _init_params(ftask), threads)
        variants["ours_factored_sandboxed"] = Ours(
            fgraph, ftask, _init_params(ftask), threads, sandboxed=True
        )
    first = variants["ours"]
    theirs = Torch(torch_mlp(sizes), loss, first.x, first.y, threads)
    errors = {}
    for label, ours in variants.items():
        errors[label] = parity(ours, sizes, loss)
        if errors[label] > 1e-4:
            raise SystemExit(f"{name} {label}: disagrees with torch.func ({errors[label]})")
    count = sum(int(np.prod(p["shape"])) for p in task["params"])
    result: dict[str, Any] = {
        "params": count,
        "batch": BATCH,
        "parity_max_rel_error_vs_torch": errors,
    }
    result.update(_race(variants, theirs, 6 * count * BATCH, threads, seconds, blocks))
    return result


def _race(variants: dict[str, Ours], theirs: Torch, flops: int, threads: int, seconds: float,
          blocks: int) -> dict[str, Any]:  # fmt: skip
    """Time ``variants`` and torch in alternating blocks; their summaries and the ratios."""
    for _ in range(5):  # warm up: arenas, page faults, torch's vmap tracing
        for ours in variants.values():
            ours.step()
        theirs.step()
    for ours in variants.values():
        ours.reset()
    theirs.grad_seconds = theirs.total_seconds = 0.0
    rates: dict[str, list[float]] = {label: [] for label in variants}
    torch_rates = []
    for _ in range(blocks):  # alternating blocks: load changes hit every variant alike
        for label, ours in variants.items():
            rates[label].append(ours.block(seconds / blocks))
        torch_rates.append(theirs.block(seconds / blocks))
    # our noise helper keeps a second core busy part of the step: torch gets one more thread
    theirs.torch.set_num_threads(threads + 1)
    torch_more = [theirs.block(seconds / blocks) for _ in range(max(2, blocks // 2))]
    theirs.torch.set_num_threads(threads)
    result: dict[str, Any] = {"flops_per_step": flops}
    for label, ours in variants.items():
        result[label] = _summary(ours, rates[label])
        ours.close()
    torch_rate = statistics.median(torch_rates)
    result["torch"] = {
        "steps_per_s": round(torch_rate, 2),
        "best_block_steps_per_s": round(max(torch_rates), 2),
        "ms_per_step": round(1000 / torch_rate, 3),
        "outside_per_example_grads_fraction": round(
            1 - theirs.grad_seconds / theirs.total_seconds, 4
        ),
        "torch_one_more_thread_steps_per_s": round(statistics.median(torch_more), 2),
    }
    for label in variants:
        summary = result[label]
        summary["speedup_vs_torch"] = round(summary["steps_per_s"] / torch_rate, 2)
        summary["speedup_vs_torch_best_blocks"] = round(max(rates[label]) / max(torch_rates), 2)
        summary["speedup_vs_torch_one_more_thread"] = round(
            summary["steps_per_s"] / statistics.median(torch_more), 2
        )
        summary["gflops"] = round(flops * summary["steps_per_s"] / 1e9, 2)
    result["gflops_torch"] = round(flops * torch_rate / 1e9, 2)
    return result


def bench_conv(threads: int, seconds: float, blocks: int) -> dict[str, Any]:
    """The 1-D conv net over time windows, exported by agents.sdk, against torch."""
    from agents.sdk.export import build_task
    from agents.sdk.models import conv1d_classifier

    shape, classes = [60, 2], 3  # an hour of heart rate and steps a minute, 3 activity levels
    module = conv1d_classifier(shape[1], classes, filters=32, kernel_size=5)
    built = build_task(
        module, "cross_entropy", "bench", shape, "label", "int64", classes, BATCH
    )  # fmt: skip (parity with torch autograd is checked by the export itself)
    ours = Ours(built.model_bytes, built.task, list(built.params.values()), threads)
    theirs = Torch(module, "cross_entropy", ours.x, ours.y, threads)
    result: dict[str, Any] = {
        "params": sum(int(np.prod(p["shape"])) for p in built.task["params"]),
        "batch": BATCH,
        "features": shape,
        "filters": 32,
        "kernel_size": 5,
    }
    flops = int(built.task["flops_per_example"]) * BATCH  # the validator's estimate
    result.update(_race({"ours_sdk_graph": ours}, theirs, flops, threads, seconds, blocks))
    return result


def bench_sdk(threads: int, seconds: float) -> dict[str, Any]:
    """Our step on the MLP exported by agents.sdk (make_fx + dynamo) instead of onnx.helper."""
    from agents.sdk.export import build_task
    from agents.sdk.models import mlp_classifier

    built = build_task(
        mlp_classifier(784, (256, 256), 10), "cross_entropy", "bench", [784], "label", "int64",
        10, BATCH,
    )  # fmt: skip
    ours = Ours(built.model_bytes, built.task, list(built.params.values()), threads)
    for _ in range(5):
        ours.step()
    ours.reset()
    summary = _summary(ours, [ours.block(seconds / 3) for _ in range(3)])
    ours.close()
    return summary


def main() -> None:
    """Parse options, run every model, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="per model and framework")
    parser.add_argument("--blocks", type=int, default=5)
    names = [*MODELS, CONV]
    parser.add_argument("--models", nargs="*", default=names, choices=names)
    parser.add_argument("--sdk", action="store_true", help="also time the SDK-exported MLP")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()
    import onnxruntime
    import torch

    global PROVIDERS, TORCH_DEVICE
    if args.device == "gpu":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise SystemExit("--device gpu needs onnxruntime-gpu (and a CUDA GPU)")
        PROVIDERS, TORCH_DEVICE = ["CUDAExecutionProvider"], "cuda"

    report: dict[str, Any] = {
        "benchmark": "dp-sgd step, batch 64, clip 1.0, sigma 1.0, SGD",
        "threads": args.threads,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "gpu" else None,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },  # fmt: skip
        "peak_estimate": peak_estimate(args.threads),
        "load_average_before": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "targets": {"speedup_vs_torch": ">= 1.5", "dp_overhead_fraction": "< 0.20"},
        "sections": "clip = private copies + norms + clip factors + dense weighted sums; "
        "weight_grads = the vault's (c*S)^T A matmul for factored weights (backprop's "
        "weight-gradient matmul); noise = waiting for the helper's draw + adding it; "
        "dp_overhead_fraction = clip + noise + optimizer",
        "models": {},
    }
    for name in args.models:
        if name == CONV:
            result = bench_conv(args.threads, args.seconds, args.blocks)
        else:
            result = bench_model(name, args.threads, args.seconds, args.blocks)
        for label, summary in result.items():
            if label.startswith("ours"):
                share = summary["gflops"] / report["peak_estimate"]["gflops"]
                summary["share_of_peak"] = round(share, 4)
        report["models"][name] = result
    if args.sdk and "mlp_784_256_256_10" in report["models"]:
        mlp = report["models"]["mlp_784_256_256_10"]
        sdk = bench_sdk(args.threads, args.seconds)
        # torch was timed earlier in this run: same process, same threads, not interleaved
        sdk["speedup_vs_torch"] = round(sdk["steps_per_s"] / mlp["torch"]["steps_per_s"], 2)
        sdk["gflops"] = round(mlp["flops_per_step"] * sdk["steps_per_s"] / 1e9, 2)
        mlp["ours_sdk_graph"] = sdk
    report["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
