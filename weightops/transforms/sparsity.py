"""Sparsification transforms: :class:`Sparsify` (value threshold) and :class:`Prune` (masks)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from weightops import functional as F
from weightops import reference as R
from weightops._checks import check_real, fail
from weightops._select import TRANSPOSED_LAYERS
from weightops.functional.sparsity import _check_nm, _check_sparsity, global_magnitude_masks
from weightops.transforms.base import Transform

__all__ = ["Prune", "Scope", "Sparsify"]

Scope = Literal["layer", "global"]


class Sparsify(Transform):
    """Zero weights of magnitude below ``threshold``: :func:`weightops.functional.sparsify`.

    .. math:: w_i \\leftarrow w_i \\cdot [\\lvert w_i \\rvert \\ge \\tau]

    Stateless: the kept set follows the weight (a weight that grows past the
    threshold comes back). For a fixed mask or an exact fraction, use :class:`Prune`.

    Args:
        threshold: finite, >= 0.

    >>> Sparsify(0.2)(torch.tensor([-0.5, 0.1, 0.2, -0.3]))
    tensor([-0.5000,  0.0000,  0.2000, -0.3000])
    """

    hyperparameters = ("threshold",)

    def __init__(self, threshold: float) -> None:
        super().__init__()
        tau = check_real("Sparsify", "threshold", threshold, low=0.0, high=sys.float_info.max)
        self.threshold = float(tau)  # type: ignore[arg-type]

    def forward(self, weight: Tensor) -> Tensor:
        return F.sparsify(weight, self.threshold)

    def project_(self, weight: Tensor) -> Tensor:
        return F.sparsify_(weight, self.threshold)

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return R.sparsify(weight, self.threshold)


def input_dim(weight: Tensor, module: nn.Module | None) -> int:
    """The dimension indexing a layer's inputs: 1 for ``(out, in, ...)`` weights,
    0 for ConvTranspose's ``(in, out, ...)`` and for 1-D weights."""
    transposed = isinstance(module, TRANSPOSED_LAYERS)
    return 0 if weight.ndim < 2 or transposed else 1


class Prune(Transform):
    """Zero a fixed set of weights: the smallest-magnitude fraction, or N:M.

    ``forward(w) = where(mask, w, 0)``: the gradient reaches the kept weights
    only. The ``mask`` (a ``torch.bool`` buffer, in the ``state_dict``) is
    computed from the weight by ``setup`` (every model-level call runs it) and
    then stays fixed; :func:`weightops.reprune_`, :func:`weightops.prune_gradually`
    and :class:`weightops.IterativePruning` raise the sparsity later. A
    ``Prune`` that was never set up computes the mask of each weight it is
    given.

    * ``scope="layer"``: each tensor prunes exactly ``round(sparsity · n)`` of
      its ``n`` weights (:func:`~weightops.functional.magnitude_mask`: round
      half to even, ties pruned in index order, NaN last).
    * ``scope="global"``: one threshold over all tensors a model-level call
      selects: exactly ``round(sparsity · N)`` of their ``N`` weights in all,
      ties in selection order then index order; a tied tensor counts once.
    * ``pattern=(n, m)``: keep the ``n`` largest of every ``m`` consecutive
      weights along the layer's input dimension (dim 1, or 0 for
      ConvTranspose and 1-D weights): :func:`~weightops.functional.nm_mask`.
      ``sparsity`` is then ``1 - n/m`` (may be omitted).

    Args:
        sparsity: the fraction to prune, in ``[0, 1]``.
        scope: ``"layer"`` or ``"global"``.
        pattern: ``(n, m)`` for N:M sparsity, or ``None``.

    Raises:
        TypeError/ValueError: a bad argument, a ``sparsity`` that disagrees
            with ``pattern``, or a global scope with a pattern.

    >>> p = Prune(0.5)
    >>> p.setup(torch.tensor([0.3, -0.1, 0.2, 0.4]))
    >>> p.mask
    tensor([ True, False, False,  True])
    >>> p(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    tensor([1., 0., 0., 4.])
    """

    hyperparameters = ("sparsity", "scope", "pattern")
    mask: Tensor | None

    def __init__(
        self,
        sparsity: float | None = None,
        scope: Scope = "layer",
        pattern: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        op = "Prune"
        if scope not in ("layer", "global"):
            fail(op, "scope", "'layer' or 'global'", scope)
        self.scope: Scope = scope
        self.pattern: tuple[int, int] | None = None
        if pattern is not None:
            if not isinstance(pattern, Sequence) or len(pattern) != 2:
                fail(op, "pattern", "None or a pair (n, m)", pattern, TypeError)
            self.pattern = _check_nm(op, *pattern)
            if scope == "global":
                fail(op, "scope", "'layer' with a pattern (N:M groups are local)", scope)
            implied = 1.0 - self.pattern[0] / self.pattern[1]
            if sparsity is not None and _check_sparsity(op, sparsity) != implied:
                fail(
                    op, "sparsity", f"None or 1 - n/m = {implied} with pattern={pattern}", sparsity
                )
            sparsity = implied
        if sparsity is None:
            fail(op, "sparsity", "a real number in [0, 1] (or a pattern)", None, TypeError)
        self.sparsity = _check_sparsity(op, sparsity)
        #: The dimension N:M groups run along; set by ``setup`` from the layer.
        self.dim: int | None = None
        self.register_buffer("mask", None)

    def compute_mask(self, weight: Tensor, module: nn.Module | None = None) -> Tensor:
        """The mask this transform computes for ``weight`` alone (layer scope); ``module``
        is the layer holding it, which decides N:M's input dimension."""
        with torch.no_grad():
            if self.pattern is None:
                return F.magnitude_mask(weight, self.sparsity)
            dim = input_dim(weight, module) if self.dim is None else self.dim
            return F.nm_mask(weight, *self.pattern, dim=dim)

    def setup(self, weight: Tensor, module: nn.Module | None = None) -> None:
        if self.pattern is not None:
            self.dim = input_dim(weight, module)
        self.mask = self.compute_mask(weight, module)

    def setup_joint(self, copies: Sequence[Transform], weights: Sequence[Tensor]) -> None:
        if self.scope == "global":
            set_masks(copies, global_magnitude_masks(weights, self.sparsity))

    def _mask(self, weight: Tensor) -> Tensor:
        if self.mask is None:
            return self.compute_mask(weight)
        if self.mask.shape != weight.shape:
            raise ValueError(
                f"Prune: weight must have the mask's shape {tuple(self.mask.shape)}, got "
                f"{tuple(weight.shape)}"
            )
        return self.mask

    def forward(self, weight: Tensor) -> Tensor:
        return torch.where(self._mask(weight), weight, 0)

    def project_(self, weight: Tensor) -> Tensor:
        # where(..., out=weight): one pass, no inverted mask the weight's size.
        with torch.no_grad():
            return torch.where(self._mask(weight), weight, weight.new_zeros(()), out=weight)

    def reference(self, weight: np.ndarray) -> np.ndarray:
        if self.mask is not None:
            mask = self.mask.cpu().numpy()
        elif self.pattern is None:
            mask = R.magnitude_mask(weight, self.sparsity)
        else:
            dim = (0 if weight.ndim < 2 else 1) if self.dim is None else self.dim
            mask = R.nm_mask(weight, *self.pattern, dim=dim)
        return np.where(mask, weight, np.zeros((), weight.dtype))


def set_masks(prunes: Sequence[Transform], masks: Sequence[Tensor]) -> None:
    for p, m in zip(prunes, masks, strict=True):
        assert isinstance(p, Prune)
        p.mask = m
