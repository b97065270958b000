"""Quantization transform: :class:`FakeQuantize`."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from weightops import functional as F
from weightops import reference as R
from weightops.functional.quantization import QuantParams, check_options, check_quantization
from weightops.storage import QuantizedTensor
from weightops.transforms.base import Transform

__all__ = ["FakeQuantize"]


class FakeQuantize(Transform):
    """Min-max quantization then dequantization: :func:`weightops.functional.fake_quantize`.

    The weight takes only the values of ``bits``-bit codes; the scale and zero
    point are recomputed from the weight on every call (min-max statistics, no
    learned or running state). The gradient is straight-through inside the
    representable range, so ``wo.parametrize(model, FakeQuantize(4))`` is
    quantization-aware training, and ``wo.apply_(model, FakeQuantize(8))``
    rounds a trained model once. :meth:`compress` gives the compact form
    (:class:`weightops.QuantizedTensor`) of a weight.

    Args:
        bits: code width, 2 to 16.
        symmetric: codes symmetric around 0 (zero point 0).
        axis: per-channel along this dimension (0: a layer's output units),
            or ``None`` for one scale per tensor.
        group_size: one scale per ``group_size`` consecutive weights along the
            last dimension (exclusive with ``axis``).
        preserve_zero: extend the range to include 0, with an integer zero
            point, so that zero weights (pruned ones) stay exactly zero;
            ``False`` is the plain min-max formula (``w_min``, ``w_max`` map to
            codes 0 and 2^b - 1).

    >>> import torch
    >>> FakeQuantize(2)(torch.tensor([-1.0, 0.1, 0.6, 2.0]))
    tensor([-1.,  0.,  1.,  2.])
    """

    hyperparameters = ("bits", "symmetric", "axis", "group_size", "preserve_zero")

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = False,
        axis: int | None = None,
        group_size: int | None = None,
        preserve_zero: bool = True,
    ) -> None:
        super().__init__()
        check_options("FakeQuantize", bits, symmetric, axis, group_size, preserve_zero)
        self.bits = bits
        self.symmetric = symmetric
        self.axis = axis
        self.group_size = group_size
        self.preserve_zero = preserve_zero

    @property
    def min_ndim(self) -> int:
        if self.axis is not None:
            return self.axis + 1 if self.axis >= 0 else -self.axis
        return 0 if self.group_size is None else 1

    def options(self) -> dict[str, Any]:
        """The keyword arguments of the functional ops, with this transform's values."""
        return {
            "symmetric": self.symmetric,
            "axis": self.axis,
            "group_size": self.group_size,
            "preserve_zero": self.preserve_zero,
        }

    def check(self, weight: Tensor) -> None:
        super().check(weight)
        check_quantization("FakeQuantize", weight, self.bits, **self.options())

    def qparams(self, weight: Tensor) -> QuantParams:
        """The scale and zero point this transform uses for ``weight``."""
        return F.quantize_params(weight, self.bits, **self.options())

    def forward(self, weight: Tensor) -> Tensor:
        return F.fake_quantize(weight, self.bits, **self.options())

    def project_(self, weight: Tensor) -> Tensor:
        return F.fake_quantize_(weight, self.bits, **self.options())

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return R.fake_quantize(weight, self.bits, **self.options())

    def compress(self, weight: Tensor) -> QuantizedTensor:
        """The compact form of ``weight`` quantized with these settings: a
        :class:`weightops.QuantizedTensor` whose ``dequantize()`` equals ``self(weight)``."""
        return QuantizedTensor.from_float(weight.detach(), self.bits, **self.options())
