"""Export a torch model as a task package: per-example losses and gradients as one ONNX graph.

The path, as it works with torch 2.13:

1. ``torch.func``: ``vmap(grad_and_value(per_example_loss))`` over ``functional_call`` gives
   per-example gradients for a fixed batch size B; padded rows are zeroed with ``where(mask)``.
   When every parameter belongs to an ``nn.Linear`` called once per forward on [B, ..., in]
   rows, the weights are exported factored instead (``grad: outer`` in task.json; see
   ``agents/sdk/factored.py``): ``act.<weight>`` and ``sig.<weight>`` rather than gradients.
2. ``make_fx`` traces that to an aten-level FX graph. ``aten.convolution_backward`` (which the
   ONNX exporter cannot translate) is decomposed on the way into forward convolutions.
3. ``torch.onnx.export(graph_module, ..., dynamo=True)`` translates the FX graph to ONNX
   (``torch.export`` non-strict, onnxscript's aten library, its optimizer).
4. Parity: ONNX Runtime runs the graph on random batches (full, partly masked with NaN in the
   padded rows, and at perturbed parameters) and every tensor is compared with eager torch
   autograd in float64, one example at a time, using torch's own loss functions. Factored
   weights are compared as the per-example gradients their factors define.
   ``||onnx - torch|| / max(||torch||, 1e-12)`` must stay below 1e-4 for every tensor.
5. The vault's validator (``agents/validator.py``) must accept the model, then the package is
   written by ``agents/package.py``.

Losses are written explicitly (``log_softmax`` + ``gather``, squared error, and the stable
``max(z, 0) - z*y + log(1 + exp(-|z|))`` for bce): ``F.cross_entropy`` exported wrong gradients
(64x too large with a dynamic batch) in an earlier attempt.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.fx.experimental.proxy_tensor import make_fx

from agents.package import write_package
from agents.sdk import factored
from agents.task_schema import LOSSES, check_task
from agents.validator import ModelReport, check_task_io, validate_model
from vault import __version__
from vault.errors import ModelRefused

PARITY_RTOL = 1e-4
aten = torch.ops.aten


# ------------------------------------------------------------------------------------- losses


def _cross_entropy(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(out, dim=-1).gather(0, label.unsqueeze(0)).squeeze(0)


def _mse(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return (out.reshape(()) - label) ** 2


def _bce(out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    z = out.reshape(())
    # log(1 + exp(-|z|)) never overflows; log1p exports as Log(1 + x), same stability here
    return torch.clamp(z, min=0) - z * label + torch.log1p(torch.exp(-torch.abs(z)))


_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": _cross_entropy,
    "mse": _mse,
    "bce": _bce,
}


def _reference_loss(loss: str, out: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Torch's own loss for one example: an independent check of the explicit forms above."""
    if loss == "cross_entropy":
        return F.cross_entropy(out.unsqueeze(0), label.reshape(1))
    if loss == "mse":
        return F.mse_loss(out.reshape(()), label)
    return F.binary_cross_entropy_with_logits(out.reshape(()), label)


# ------------------------------------------------------------------------ conv decomposition


def _convolution_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Any,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, ...]:
    """``aten.convolution_backward`` as forward convolutions, which ONNX can express."""
    if transposed:
        raise ModelRefused("transposed convolutions are not supported by the exporter")
    nd = x.dim() - 2
    kernel = list(weight.shape[2:])
    grad_x = grad_w = grad_b = None
    if output_mask[0]:
        extra = [
            x.shape[2 + i]
            + 2 * padding[i]
            - dilation[i] * (kernel[i] - 1)
            - 1
            - (grad_out.shape[2 + i] - 1) * stride[i]
            for i in range(nd)
        ]
        grad_x = aten.convolution.default(
            grad_out, weight, None, stride, padding, dilation, True, extra, groups
        )
    if output_mask[1]:
        # correlate inputs with output gradients: batch becomes channels, stride and dilation
        # swap roles; groups stay groups (vmap folds the batch into them)
        n, c_in, c_out = x.shape[0], x.shape[1], grad_out.shape[1]
        cig, cog = c_in // groups, c_out // groups
        spatial = tuple(range(3, 3 + nd))
        xs = x.reshape(n, groups, cig, *x.shape[2:]).permute(2, 1, 0, *spatial)
        xs = xs.reshape(cig, groups * n, *x.shape[2:])
        gs = grad_out.reshape(n, groups, cog, *grad_out.shape[2:]).permute(1, 2, 0, *spatial)
        gs = gs.reshape(groups * cog, n, *grad_out.shape[2:])
        corr = aten.convolution.default(
            xs, gs, None, dilation, padding, stride, False, [0] * nd, groups
        )
        corr = corr[(slice(None), slice(None), *(slice(0, k) for k in kernel))]
        grad_w = corr.transpose(0, 1).reshape(weight.shape)
    if output_mask[2]:
        grad_b = grad_out.sum(dim=[0, *range(2, 2 + nd)])
    return grad_x, grad_w, grad_b


def _threshold_backward(grad_out: torch.Tensor, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """ReLU's backward as a multiply by the mask. torch's own decomposition is a Where with a
    broadcast scalar, which ONNX Runtime runs element by element: 42% of the conv net's step."""
    return grad_out * (x > threshold).to(grad_out.dtype)


_DECOMPOSITIONS = {
    aten.convolution_backward.default: _convolution_backward,
    aten.threshold_backward.default: _threshold_backward,
}


# -------------------------------------------------------------------------------- the graph


def _train_step(
    module: nn.Module, names: list[str], loss: str, batch_size: int
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """(params..., features, labels, mask) -> (losses, grad per parameter), all per example."""
    loss_fn = _LOSSES[loss]

    def per_example(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
        out = functional_call(module, params, (x.unsqueeze(0),))[0]
        return loss_fn(out, y)

    per_batch = vmap(grad_and_value(per_example), in_dims=(None, 0, 0))

    def step(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = dict(zip(names, args[: len(names)], strict=True))
        features, labels, mask = args[len(names) :]
        grads, losses = per_batch(params, features, labels)
        keep = mask > 0
        # where, not multiply: a NaN in a padded row must not survive as NaN * 0
        zero = losses.new_zeros(())  # a scalar: a full-size zeros tensor would be baked in
        out = [torch.where(keep, losses, zero)]
        for name in names:
            g = grads[name]
            row = keep.reshape((batch_size,) + (1,) * (g.dim() - 1))
            out.append(torch.where(row, g, zero))
        return tuple(out)

    return step


def _output_names(names: list[str], outer: dict[str, int]) -> list[str]:
    out = ["losses"]
    for name in names:
        out += [f"act.{name}", f"sig.{name}"] if name in outer else [f"grad.{name}"]
    return out


def _to_onnx(
    step: Callable[..., Any],
    example: tuple[torch.Tensor, ...],
    names: list[str],
    output_names: list[str],
) -> bytes:
    try:
        graph = make_fx(step, decomposition_table=_DECOMPOSITIONS)(*example)
    except ModelRefused:
        raise
    except Exception as exc:  # torch raises many types; the user needs the first line
        raise ModelRefused(f"tracing the training step failed: {_first_line(exc)}") from None
    graph.eval()
    quiet = io.StringIO()
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    try:
        # the exporter prints progress and warns about optional packages; keep the CLI clean
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            logger.setLevel(logging.ERROR)
            program = torch.onnx.export(
                graph,
                example,
                dynamo=True,
                input_names=[*names, "features", "labels", "mask"],
                output_names=output_names,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - exporter errors are many and deep
        raise ModelRefused(f"torch.onnx.export failed: {_first_line(exc)}") from None
    finally:
        logger.setLevel(level)
    return program.model_proto.SerializeToString()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------------------------- parity


def _random_batches(
    gen: torch.Generator,
    batch_size: int,
    features_shape: list[int],
    loss: str,
    classes: int | None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    batches = []
    for masked in (False, True, False, True):
        x = torch.randn((batch_size, *features_shape), generator=gen)
        if loss == "cross_entropy":
            y = torch.randint(0, classes or 2, (batch_size,), generator=gen)
        elif loss == "bce":
            y = torch.randint(0, 2, (batch_size,), generator=gen).float()
        else:
            y = torch.randn(batch_size, generator=gen)
        mask = torch.ones(batch_size)
        if masked:
            # keep example 0, drop about half of the rest; padded rows carry NaN features
            drop = torch.rand(batch_size, generator=gen) < 0.5
            drop[0] = False
            drop[-1] = batch_size > 1
            mask[drop] = 0.0
            x[drop] = float("nan")
        batches.append((x, y, mask))
    return batches


def _reference(
    module64: nn.Module,
    params: dict[str, torch.Tensor],
    loss: str,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> list[np.ndarray]:
    """Per-example losses and gradients from eager autograd in float64, one example at a time."""
    x, y, mask = batch
    names = list(params)
    losses = np.zeros(len(mask))
    grads = [np.zeros((len(mask), *p.shape)) for p in params.values()]
    for i in range(len(mask)):
        if mask[i] == 0:
            continue
        leaves = {n: p.detach().double().requires_grad_() for n, p in params.items()}
        out = functional_call(module64, leaves, (x[i : i + 1].double(),))[0]
        label = y[i] if loss == "cross_entropy" else y[i].double()
        value = _reference_loss(loss, out, label)
        for j, g in enumerate(torch.autograd.grad(value, [leaves[n] for n in names])):
            grads[j][i] = g.numpy()
        losses[i] = value.item()
    return [losses, *grads]


def _per_example_grad(outputs: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Parameter ``name``'s per-example gradients, rebuilt in float64 if exported factored."""
    if f"grad.{name}" in outputs:
        return outputs[f"grad.{name}"]
    act = outputs[f"act.{name}"].astype(np.float64)
    sig = outputs[f"sig.{name}"].astype(np.float64)
    if act.ndim == 2:
        return np.einsum("bp,bq->bpq", sig, act)
    return np.einsum("btp,btq->bpq", sig, act)


def check_parity(
    module: nn.Module,
    model_bytes: bytes,
    params: dict[str, torch.Tensor],
    loss: str,
    features_shape: list[int],
    classes: int | None,
    batch_size: int,
    seed: int = 0,
) -> dict[str, float]:
    """Worst relative error per output tensor; ModelRefused if any is >= PARITY_RTOL."""
    gen = torch.Generator().manual_seed(seed)
    module64 = copy.deepcopy(module).double()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    perturbed = {n: p + 0.1 * torch.randn(p.shape, generator=gen) for n, p in params.items()}
    compared = ["losses", *(f"grad.{n}" for n in params)]
    worst: dict[str, float] = dict.fromkeys(compared, 0.0)
    batches = _random_batches(gen, batch_size, features_shape, loss, classes)
    for k, batch in enumerate(batches):
        at = params if k < 2 else perturbed
        feeds = {n: p.detach().numpy().astype(np.float32) for n, p in at.items()}
        x, y, mask = batch
        feeds.update(features=x.numpy(), labels=y.numpy(), mask=mask.numpy())
        outputs = dict(zip(output_names, session.run(output_names, feeds), strict=True))
        got = [outputs["losses"], *(_per_example_grad(outputs, n) for n in params)]
        want = _reference(module64, at, loss, batch)
        for name, a, b in zip(compared, got, want, strict=True):
            diff = np.linalg.norm(a.astype(np.float64) - b)
            rel = float(diff / max(np.linalg.norm(b), 1e-12))
            worst[name] = max(worst[name], rel if math.isfinite(rel) else math.inf)
    name, error = max(worst.items(), key=lambda item: item[1])
    if not error < PARITY_RTOL:
        raise ModelRefused(
            f"parity check failed: {name} differs from torch autograd by relative error "
            f"{error:.3g} (limit {PARITY_RTOL:g})"
        )
    return worst


# --------------------------------------------------------------------------------- export


def _probe_output(module: nn.Module, features_shape: list[int], loss: str, classes: Any) -> None:
    with torch.no_grad():
        out = module(torch.zeros((1, *features_shape)))
    if not isinstance(out, torch.Tensor) or out.shape[0] != 1:
        raise ModelRefused("the module must return one tensor shaped [batch, outputs]")
    width = math.prod(out.shape[1:])
    if loss == "cross_entropy" and tuple(out.shape[1:]) != (classes,):
        raise ModelRefused(f"cross_entropy needs [batch, {classes}] logits, got {list(out.shape)}")
    if loss != "cross_entropy" and width != 1:
        raise ModelRefused(f"{loss} needs one output per example, got {list(out.shape)}")


@dataclass(frozen=True)
class ExportedTask:
    """A task ready to be written: its description, graph, parameters and the checks' results."""

    task: dict[str, Any]
    model_bytes: bytes
    params: dict[str, np.ndarray]
    parity: dict[str, float]
    report: ModelReport


def build_task(
    module: nn.Module,
    loss: str,
    recipe: str,
    features_shape: Sequence[int],
    label_field: str,
    label_dtype: str,
    classes: int | None,
    batch_size: int,
    name: str | None = None,
) -> ExportedTask:
    """Trace, export, validate and parity-check ``module``; ModelRefused if any step fails."""
    if loss not in LOSSES:
        raise ModelRefused(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    features_shape = [int(d) for d in features_shape]
    module = copy.deepcopy(module).float().eval()  # no dropout in the graph; caller untouched
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    names = list(params)
    _probe_output(module, features_shape, loss, classes)
    linears = factored.factorable_linears(module, names, features_shape)
    # weight name -> positions T, for the weights exported as factors
    outer = {lin.param("weight"): lin.positions for lin in linears or []}
    specs: list[dict[str, Any]] = []
    for n, p in params.items():
        spec: dict[str, Any] = {"name": n, "shape": list(p.shape), "dtype": "float32"}
        if n in outer:
            spec.update(grad="outer", positions=outer[n])
        specs.append(spec)
    task: dict[str, Any] = {
        "format": "tessera-task/1",
        "name": name or type(module).__name__,
        "params": specs,
        "batch_size": int(batch_size),
        "features": {"recipe": recipe, "shape": features_shape, "dtype": "float32"},
        "label": {"field": label_field, "dtype": label_dtype, "classes": classes},
        "loss": loss,
        "files": {"model.onnx": "0" * 64, "params.npz": "0" * 64},
        "opset": 1,
        "flops_per_example": 0,
        "created_by": f"tessera-sdk {__version__}",
    }
    check_task(task)  # refuse a bad description before spending time on tracing
    label_type = torch.int64 if label_dtype == "int64" else torch.float32
    example = (
        *params.values(),
        torch.zeros((batch_size, *features_shape)),
        torch.zeros(batch_size, dtype=label_type),
        torch.ones(batch_size),
    )
    if linears is None:
        step = _train_step(module, names, loss, batch_size)
    else:
        step = factored.factored_step(module, names, linears, _LOSSES[loss], batch_size)
    model_bytes = _to_onnx(step, example, names, _output_names(names, outer))
    # the organization gets the vault's verdict now rather than a refusal later
    report = validate_model(model_bytes)
    task["opset"] = report.opset
    task["flops_per_example"] = report.flops_per_example
    check_task_io(report, task)
    parity = check_parity(module, model_bytes, params, loss, features_shape, classes, batch_size)
    arrays = {n: p.numpy().astype(np.float32) for n, p in params.items()}
    return ExportedTask(task, model_bytes, arrays, parity, report)


def export_task(
    module: nn.Module,
    loss: str,
    recipe: str,
    features_shape: Sequence[int],
    label_field: str,
    label_dtype: str,
    classes: int | None,
    batch_size: int,
    out: str | os.PathLike[str],
    name: str | None = None,
) -> str:
    """Export ``module`` with ``loss`` as a task package at ``out``; return its address."""
    built = build_task(
        module, loss, recipe, features_shape, label_field, label_dtype, classes, batch_size, name
    )
    return write_package(out, built.task, built.model_bytes, built.params)
