"""Small transforms that exercise the protocol in the tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from weightops import Transform


class Scale(Transform):
    """w' = factor · w: not idempotent, so applying it twice shows."""

    hyperparameters = ("factor",)

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.factor

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return np.asarray(weight, dtype=np.float64) * self.factor


class GainMask(Transform):
    """w' = gain · mask · w with all three kinds of state.

    ``mask`` (a fixed bool buffer: |w| ≥ threshold at setup), ``gain`` (a
    trainable parameter per output unit, like a codebook) and ``steps`` (a
    buffer counting training-mode forwards, like power iteration's u).
    """

    hyperparameters = ("threshold",)

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    @property
    def min_ndim(self) -> int:
        return 1

    def setup(self, weight: Tensor, module: nn.Module | None = None) -> None:
        self.register_buffer("mask", weight.abs() >= self.threshold)
        unit = (weight.shape[0],) + (1,) * (weight.ndim - 1)
        self.gain = nn.Parameter(torch.ones(unit, dtype=weight.dtype, device=weight.device))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long, device=weight.device))

    def forward(self, weight: Tensor) -> Tensor:
        if self.training:
            self.steps += 1
        return weight * self.mask * self.gain

    def reference(self, weight: np.ndarray) -> np.ndarray:
        mask = self.mask.cpu().numpy()
        gain = self.gain.detach().double().cpu().numpy()
        return np.asarray(weight, dtype=np.float64) * mask * gain


class Direction(Transform):
    """w = g · v / ‖v‖ per output unit, stored as two tensors (g, v) by right_inverse."""

    def forward(self, g: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
        return g * v / v.flatten(1).norm(dim=1).view_as(g)

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        g = weight.flatten(1).norm(dim=1).view(-1, *(1,) * (weight.ndim - 1))
        return g, weight

    def reference(self, g: np.ndarray, v: np.ndarray) -> np.ndarray:  # type: ignore[override]
        norm = np.linalg.norm(v.reshape(len(v), -1), axis=1).reshape(g.shape)
        return g * v / norm


def fit(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: int,
    *,
    lr: float = 1e-2,
    after_step: Callable[[], None] | None = None,
) -> list[float]:
    """Train ``net`` on ``(x, y)`` with Adam and the mean squared error; the losses."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step()
    return losses
