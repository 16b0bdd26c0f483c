"""Factored per-example gradients of linear layers, traced with torch.func (ghost clipping).

For a model whose parameters all belong to ``nn.Linear`` layers, example i's weight gradient
is ``sum_t outer(sig[i, t], act[i, t])``: ``act`` is the layer's input and ``sig`` the gradient
of example i's loss with respect to the layer's output (Li et al., "Large Language Models Can
Be Strong Differentially Private Learners", ICLR 2022; Bu et al., "Differentially Private
Optimization on Large Model at Small Cost", ICML 2023). The graph returns those factors and
the vault forms norms and clipped sums from them (``agents.dpsgd.Outer``), so the [B, out, in]
per-example gradients never exist.

How they are traced: forward hooks capture each layer's input and add a zero probe tensor to
its output; ``grad`` of the masked loss *sum* with respect to the probes is, row by row, each
example's signal, because the forward treats examples independently (the export-time parity
check and the vault's probe both verify that). A bias's gradient is its signal summed over
positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap


@dataclass(frozen=True)
class LinearLayer:
    """One nn.Linear of a factored export: where it sits and what its inputs look like."""

    path: str  # module path ("" for the root module)
    layer: nn.Linear
    positions: int  # T: rows per example it is applied to (1 for [B, in] inputs)
    out_shape: tuple[int, ...]  # its output without the batch dim, e.g. (out,) or (T, out)

    def param(self, kind: str) -> str:
        """The parameter name of this layer's ``weight`` or ``bias``."""
        return f"{self.path}.{kind}" if self.path else kind


def factorable_linears(
    module: nn.Module, names: list[str], features_shape: list[int]
) -> list[LinearLayer] | None:
    """The model's linear layers if every parameter is one's weight or bias, each called once
    per forward on inputs whose first dim is the batch; else None (export dense gradients)."""
    layers = {path: m for path, m in module.named_modules() if isinstance(m, nn.Linear)}
    owned = [
        f"{path}.{kind}" if path else kind
        for path, m in layers.items()
        for kind in ("weight", "bias")
        if kind == "weight" or m.bias is not None
    ]
    if not layers or sorted(owned) != sorted(names):
        return None
    seen: dict[str, list[tuple[torch.Size, torch.Size]]] = {path: [] for path in layers}
    hooks = [
        m.register_forward_hook(
            lambda _m, inputs, output, path=path: seen[path].append((inputs[0].shape, output.shape))
        )
        for path, m in layers.items()
    ]
    try:
        with torch.no_grad():
            module(torch.zeros((2, *features_shape)))
    finally:
        for hook in hooks:
            hook.remove()
    found = []
    for path, calls in seen.items():
        if len(calls) != 1 or calls[0][0][0] != 2 or calls[0][1][0] != 2:
            return None  # shared, unused, or applied across examples: not per-example rows
        in_shape, out_shape = calls[0]
        positions = math.prod(in_shape[1:-1])
        found.append(LinearLayer(path, layers[path], positions, tuple(out_shape[1:])))
    return found


def factored_step(
    module: nn.Module,
    names: list[str],
    linears: list[LinearLayer],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """(params..., features, labels, mask) -> (losses, then per parameter act + sig for a
    weight or the per-example gradient for a bias), all per example; see the module notes."""
    per_row_loss = vmap(loss_fn)  # loss_fn: one example's output and label -> its loss
    by_param = {lin.param(kind): (lin, kind) for lin in linears for kind in ("weight", "bias")}

    def step(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = dict(zip(names, args[: len(names)], strict=True))
        features, labels, mask = args[len(names) :]
        keep = mask > 0
        zero = features.new_zeros(())

        def masked_total(probes: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
            acts: dict[str, torch.Tensor] = {}

            def hook(path: str) -> Callable[..., torch.Tensor]:
                def add_probe(_m: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
                    acts[path] = inputs[0]
                    return output + probes[path]

                return add_probe

            handles = [lin.layer.register_forward_hook(hook(lin.path)) for lin in linears]
            try:
                out = functional_call(module, params, (features,))
            finally:
                for handle in handles:
                    handle.remove()
            # where, not multiply: a NaN in a padded row must not survive as NaN * 0
            losses = torch.where(keep, per_row_loss(out, labels), zero)
            return losses.sum(), (losses, acts)

        probes = {lin.path: features.new_zeros((batch_size, *lin.out_shape)) for lin in linears}
        signals, (losses, acts) = grad(masked_total, has_aux=True)(probes)
        out = [losses]
        for name in names:
            lin, kind = by_param[name]
            width = lin.layer.out_features
            sig = signals[lin.path].reshape(batch_size, lin.positions, width)
            if kind == "bias":
                per_example = [sig.sum(dim=1)]
            else:
                act = acts[lin.path].reshape(batch_size, lin.positions, lin.layer.in_features)
                per_example = [act, sig] if lin.positions > 1 else [act[:, 0], sig[:, 0]]
            for g in per_example:
                row = keep.reshape((batch_size,) + (1,) * (g.dim() - 1))
                out.append(torch.where(row, g, zero))
        return tuple(out)

    return step
