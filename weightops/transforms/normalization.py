"""Normalization transforms: :class:`WeightNorm`, :class:`SpectralNorm`, :class:`Standardize`."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from weightops import functional as F
from weightops import reference as R
from weightops._checks import check_real, fail
from weightops._select import TRANSPOSED_LAYERS
from weightops.functional import fused
from weightops.functional._reduce import accumulation_dtype, unit_norm
from weightops.functional.normalization import (
    SPECTRAL_NORM_EPS,
    WEIGHT_NORM_EPS,
    matrix_view,
    normalize,
    spectral_sigma,
)
from weightops.transforms.base import UnitTransform

__all__ = ["SpectralNorm", "Standardize", "WeightNorm"]

#: Power iterations at setup, as torch.nn.utils.parametrizations.spectral_norm.
WARM_UP_ITERATIONS = 15


class WeightNorm(UnitTransform):
    """Weight normalization: ``w = g · v / ‖v‖`` (Salimans & Kingma, 2016).

    Stores two tensors for each weight (``right_inverse``): the magnitudes
    ``g`` (``original0``) initialised to the unit norms, so that registering
    changes nothing, and the direction ``v`` (``original1``) initialised to
    the weight, as ``torch.nn.utils.parametrizations.weight_norm`` does, with
    the same state_dict layout. ``dim=None`` normalizes the whole tensor; unlike
    torch, where ``dim=-1`` also means the whole tensor, a negative ``dim``
    here counts from the end. A zero unit stays zero (``eps``, see
    :func:`weightops.functional.weight_norm`).

    On Linear and (non-transposed) Conv layers, :func:`weightops.parametrize`
    computes ``layer(x, v) · g/‖v‖`` instead of materialising ``w``
    (:meth:`factorize`).

    Args:
        dim: the dimension indexing units (0: output units), or None.
        eps: the smallest norm divided by.

    >>> import torch
    >>> t = WeightNorm()
    >>> g, v = t.right_inverse(torch.tensor([[3.0, 4.0]]))
    >>> g
    tensor([[5.]])
    >>> t(2 * g, v)
    tensor([[6., 8.]])
    """

    hyperparameters = ("dim", "eps")

    def __init__(self, dim: int | None = 0, eps: float = WEIGHT_NORM_EPS) -> None:
        super().__init__(dim, eps)

    def _dim(self, ndim: int) -> int | None:
        return None if self.dim is None else self.dim % ndim

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        g = unit_norm(weight, self._dim(weight.ndim)).to(weight.dtype)
        return (g.reshape(()) if self.dim is None else g), weight

    def forward(self, g: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
        return F.weight_norm(v, g, dim=self.dim, eps=self.eps)

    @property
    def factor_dim(self) -> int | None:
        """The dim along which :meth:`factorize`'s scale varies (None: a scalar)."""
        return self.dim

    def factorize(self, g: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(v, g / ‖v‖)``: their product is :meth:`forward`'s output."""
        return v, g / unit_norm(v, self._dim(v.ndim)).clamp_min(self.eps)

    def linear(self, input: Tensor, bias: Tensor | None, g: Tensor, v: Tensor) -> Tensor | None:
        """``F.linear(input, forward(g, v), bias)`` fused, or None where it does not apply."""
        if v.ndim != 2 or self.dim is None or self.dim % 2 != 0:
            return None
        return fused.weight_norm_linear(input, g, v, bias, eps=self.eps)

    def reference(self, g: np.ndarray, v: np.ndarray) -> np.ndarray:  # type: ignore[override]
        return R.weight_norm(v, g, dim=self.dim, eps=self.eps)


class SpectralNorm(UnitTransform):
    """Spectral normalization: ``W / σ̂``, σ̂ by power iteration (Miyato et al., 2018).

    ``torch.nn.utils.parametrizations.spectral_norm`` semantics: the weight is
    read as a matrix with ``dim`` first (``dim=None``: 0, or 1 for a
    ConvTranspose layer's weight); at setup ``u`` and ``v`` are drawn from the
    global RNG as torch draws them and refined by 15 power iterations; in
    training mode each forward runs ``n_power_iterations`` more and updates
    the ``_u``/``_v`` buffers in place, in eval mode it uses them as they are
    (so an eval forward before any training one is still normalized). Given
    the same ``_u`` and ``_v``, the output equals torch's.

    Beyond torch: :attr:`sigma` holds the last σ̂ used; ``tol`` keeps
    iterating until σ̂ changes by less than ``tol`` (at most 100 iterations;
    a host sync per iteration); an all-zero weight gives zeros, not NaN.

    On Linear and (non-transposed) Conv layers, :func:`weightops.parametrize`
    computes ``layer(x, W) / σ̂`` instead of materialising ``W / σ̂``
    (:meth:`factorize`).

    Args:
        n_power_iterations: power iterations per training forward, >= 1.
        dim: the dimension that becomes the matrix's rows, or None (0; 1 for
            ConvTranspose layers).
        eps: the smallest norm divided by, and the smallest σ̂.
        tol: iterate until σ̂ changes by less than this, or None.
    """

    hyperparameters = ("n_power_iterations", "dim", "eps", "tol")

    def __init__(
        self,
        n_power_iterations: int = 1,
        dim: int | None = None,
        eps: float = SPECTRAL_NORM_EPS,
        tol: float | None = None,
    ) -> None:
        op = "SpectralNorm"
        if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int):
            fail(op, "n_power_iterations", "an int >= 1", n_power_iterations, TypeError)
        if n_power_iterations < 1:
            fail(op, "n_power_iterations", "an int >= 1", n_power_iterations)
        tol = check_real(op, "tol", tol, low=0.0, low_open=True, optional=True)
        super().__init__(dim, eps)
        self.n_power_iterations = n_power_iterations
        self.tol = tol
        self._matrix_dim = 0 if dim is None else dim
        self.register_buffer("_sigma", torch.ones(()), persistent=False)

    @property
    def min_ndim(self) -> int:
        return max(1, super().min_ndim)

    @property
    def sigma(self) -> Tensor:
        """σ̂ of the last forward (0-D; 1 before any)."""
        sigma: Tensor = self._sigma
        return sigma

    def setup(self, weight: Tensor, module: nn.Module | None = None) -> None:
        self.check(weight)
        dim = self.dim if self.dim is not None else int(isinstance(module, TRANSPOSED_LAYERS))
        self._matrix_dim = dim % weight.ndim
        self._sigma = torch.ones((), dtype=weight.dtype, device=weight.device)
        if weight.ndim == 1:
            return
        with torch.no_grad():
            matrix = matrix_view(weight, self._matrix_dim)
            rows, cols = matrix.shape
            # Drawn as torch draws them, so that a seeded registration matches torch's.
            u = normalize(matrix.new_empty(rows).normal_(0, 1), self.eps)
            v = normalize(matrix.new_empty(cols).normal_(0, 1), self.eps)
            u, v, sigma, _ = F.power_iteration(
                matrix, u, v, n_power_iterations=WARM_UP_ITERATIONS, eps=self.eps
            )
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        self._sigma = sigma

    def _state(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        if weight.ndim > 1 and not hasattr(self, "_u"):
            self.setup(weight)
        if not hasattr(self, "_u"):
            empty = self.sigma.new_empty(0)
            return empty, empty
        return cast(Tensor, self._u), cast(Tensor, self._v)

    def _keep(self, weight: Tensor, u: Tensor, v: Tensor, sigma: Tensor) -> None:
        with torch.no_grad():
            if self.training and weight.ndim > 1:
                # In place, so that replicas sharing the buffers see the update.
                self._state(weight)[0].copy_(u)
                self._state(weight)[1].copy_(v)
            self.sigma.copy_(sigma)

    def _options(self) -> dict[str, Any]:
        """The functional ops' options: this transform's settings and mode."""
        return {
            "dim": self._matrix_dim,
            "n_power_iterations": self.n_power_iterations,
            "eps": self.eps,
            "tol": self.tol,
            "update": self.training,
        }

    def forward(self, weight: Tensor) -> Tensor:
        u, v = self._state(weight)
        result = F.spectral_norm(weight, u, v, **self._options())
        self._keep(weight, result.u, result.v, result.sigma)
        return result.weight

    #: :meth:`factorize`'s scale is one number for the whole weight.
    factor_dim = None

    def factorize(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(weight, 1 / σ̂)``: their product is :meth:`forward`'s output, with
        the same power-iteration update, for layers that scale their output."""
        u, v = self._state(weight)
        sigma, u, v = spectral_sigma(weight, u, v, **self._options())
        self._keep(weight, u, v, sigma)
        return weight, 1.0 / sigma.to(accumulation_dtype(weight.dtype)).clamp_min(self.eps)

    def linear(self, input: Tensor, bias: Tensor | None, weight: Tensor) -> Tensor | None:
        """``F.linear(input, forward(weight), bias)`` fused, or None where it does not apply."""
        if weight.ndim != 2 or self._matrix_dim != 0:
            return None
        u, v = self._state(weight)
        with torch.no_grad():
            if self.training:
                u, v, sigma, _ = F.power_iteration(
                    weight,
                    u,
                    v,
                    n_power_iterations=self.n_power_iterations,
                    eps=self.eps,
                    tol=self.tol,
                )
            else:
                sigma = torch.vdot(u, torch.mv(weight, v))
        self._keep(weight, u, v, sigma)
        return fused.spectral_norm_linear(
            input, weight, bias, u.clone(), v.clone(), sigma=sigma, eps=self.eps
        )

    def reference(self, weight: np.ndarray) -> np.ndarray:
        if np.ndim(weight) > 1 and not hasattr(self, "_u"):
            raise RuntimeError(
                "SpectralNorm.reference: call setup(weight) first; u and v are state"
            )
        u, v = self._state(torch.empty(0))
        return R.spectral_norm(
            weight, u.double().cpu().numpy(), v.double().cpu().numpy(), **self._options()
        ).weight


class Standardize(UnitTransform):
    """Weight standardization: each unit to zero mean, unit variance (Qiao et al., 2019).

    :func:`weightops.functional.standardize` (layer norm applied to the
    weight); gradients flow through the statistics.

    Args:
        dim: the dimension indexing units (0: each output unit's fan-in), or None.
        eps: added to the variance (default 1e-5, layer norm's).

    >>> import torch
    >>> Standardize(eps=0.0)(torch.tensor([[1.0, 3.0]]))
    tensor([[-1.,  1.]])
    """

    hyperparameters = ("dim", "eps")

    def __init__(self, dim: int | None = 0, eps: float = 1e-5) -> None:
        super().__init__(dim, eps)

    def forward(self, weight: Tensor) -> Tensor:
        return F.standardize(weight, dim=self.dim, eps=self.eps)

    def reference(self, weight: np.ndarray) -> np.ndarray:
        return R.standardize(weight, dim=self.dim, eps=self.eps)
