"""Reference models an organization can export as they are or copy: each a small factory.

Every model maps a batch of features ``[B, *features_shape]`` to logits or predictions
``[B, K]``; the loss is chosen at export time (cross_entropy wants K = classes, mse and bce want
K = 1). Plain layers only, no batch norm or dropout: per-example gradients with DP-SGD need each
example's gradient to depend on that example alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def logistic_regression(n_features: int, n_classes: int = 2) -> nn.Module:
    """Multinomial logistic regression (one linear layer); ``n_classes=1`` gives a logit for bce."""
    return nn.Linear(n_features, n_classes)


def _mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def mlp_classifier(
    n_features: int, hidden: Sequence[int] = (64, 64), n_classes: int = 2
) -> nn.Module:
    """A ReLU multilayer perceptron returning ``n_classes`` logits (for cross_entropy)."""
    return _mlp(n_features, hidden, n_classes)


def mlp_regressor(n_features: int, hidden: Sequence[int] = (64, 64)) -> nn.Module:
    """A ReLU multilayer perceptron returning one prediction per example (for mse)."""
    return _mlp(n_features, hidden, 1)


class Conv1dNet(nn.Module):
    """Conv1d + ReLU + global average pool over time + Linear, for windows shaped ``[T, C]``."""

    def __init__(self, channels: int, n_classes: int, filters: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, filters, kernel_size)
        self.head = nn.Linear(filters, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, n_classes]`` for windows ``[B, T, C]``."""
        # recipes emit time-major windows; Conv1d wants channels first
        hidden = torch.relu(self.conv(x.transpose(1, 2)))
        return self.head(hidden.mean(dim=2))


def conv1d_classifier(
    channels: int, n_classes: int = 2, filters: int = 16, kernel_size: int = 5
) -> nn.Module:
    """A small 1-D conv net over time windows ``[T, channels]`` (T >= kernel_size)."""
    return Conv1dNet(channels, n_classes, filters, kernel_size)
