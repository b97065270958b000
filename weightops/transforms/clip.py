"""Clipping transforms: :class:`Clip` and :class:`MaxNorm`."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from weightops import functional as F
from weightops import reference as R
from weightops.functional.clip import MAX_NORM_EPS, check_bounds, check_max_norm
from weightops.transforms.base import Transform, UnitTransform

__all__ = ["Clip", "MaxNorm"]


class Clip(Transform):
    """Clamp weights to ``[min, max]``: :func:`weightops.functional.clip`.

    The WGAN critic's weight clipping is ``Clip(-c, c)``, usually applied with
    :func:`weightops.constrain` after every optimizer step.

    Args:
        min: lower bound, or ``None`` for none.
        max: upper bound, or ``None`` for none.

    >>> import torch
    >>> Clip(-0.01, 0.01)(torch.tensor([-1.0, 0.005, 1.0]))
    tensor([-0.0100,  0.0050,  0.0100])
    """

    hyperparameters = ("min", "max")

    def __init__(self, min: float | None = None, max: float | None = None) -> None:
        super().__init__()
        check_bounds("Clip", min, max)
        self.min = None if min is None else float(min)
        self.max = None if max is None else float(max)

    def forward(self, weight: Tensor) -> Tensor:
        return F.clip(weight, self.min, self.max)

    def project_(self, weight: Tensor) -> Tensor:
        return F.clip_(weight, self.min, self.max)

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return R.clip(weight, self.min, self.max)


class MaxNorm(UnitTransform):
    """Rescale units whose L2 norm exceeds ``max_norm``: :func:`weightops.functional.max_norm`.

    Keras' ``MaxNorm`` constraint; see the functional op for the one deliberate
    difference (units inside the bound are left exactly unchanged).

    Args:
        max_norm: the largest norm a unit may have, > 0.
        dim: the dimension indexing units (0: output units of PyTorch's
            ``(out, in, ...)`` weights), or ``None`` for the whole tensor.
        eps: added to a norm before dividing (default 1e-7, Keras' epsilon).

    >>> import torch
    >>> MaxNorm(1.0)(torch.tensor([[3.0, 4.0]]))
    tensor([[0.6000, 0.8000]])
    """

    hyperparameters = ("max_norm", "dim", "eps")

    def __init__(self, max_norm: float, dim: int | None = 0, eps: float = MAX_NORM_EPS) -> None:
        self.max_norm = check_max_norm("MaxNorm", max_norm, eps)[0]
        super().__init__(dim, eps)

    def forward(self, weight: Tensor) -> Tensor:
        return F.max_norm(weight, self.max_norm, dim=self.dim, eps=self.eps)

    def project_(self, weight: Tensor) -> Tensor:
        return F.max_norm_(weight, self.max_norm, dim=self.dim, eps=self.eps)

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return R.max_norm(weight, self.max_norm, dim=self.dim, eps=self.eps)
