"""Fused layer kernels: a Linear layer with a normalized weight, without the weight.

``weight_norm_linear`` and ``spectral_norm_linear`` compute
``F.linear(x, weight_norm(v, g))`` and ``F.linear(x, W / σ̂)`` as
``(x Vᵀ) · s + b``, with a backward that adds the scale's gradient into the
weight's gradient in place (weight norm: ``V`` times a per-row factor,
``addcmul_``; spectral norm: a rank-1 term, ``addr_``). The autograd path
through ``s · V`` allocates and adds a weight-sized temporary for each
(several, through ``vector_norm``'s backward); on the CPU a fresh 64 MiB
allocation costs several passes over memory. Tests check values and
gradients against the materialising path (``gradcheck`` in float64).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from weightops.functional._reduce import accumulation_dtype

__all__ = ["spectral_norm_linear", "weight_norm_linear"]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


class _WeightNormLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, input: Tensor, g: Tensor, v: Tensor, bias: Tensor | None, eps: float
    ) -> Tensor:
        acc = accumulation_dtype(v.dtype)
        norm = torch.linalg.vector_norm(v, dim=1, dtype=acc)
        clamped = norm.clamp_min(eps)
        scale = g.reshape(-1).to(acc) / clamped
        z = F.linear(input, v)
        ctx.save_for_backward(input, g, v, norm, clamped, scale, z)
        ctx.has_bias, ctx.eps = bias is not None, eps
        y: Tensor = z * scale.to(z.dtype)
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        input, g, v, norm, clamped, scale, z = ctx.saved_tensors
        grad_z = grad * scale.to(grad.dtype)
        grad_input = grad_z @ v if ctx.needs_input_grad[0] else None
        grad_scale = _flat(grad * z).sum(0, dtype=scale.dtype)
        grad_g = (grad_scale / clamped).reshape(g.shape).to(g.dtype)
        grad_v = None
        if ctx.needs_input_grad[2]:
            grad_v = _flat(grad_z).T @ _flat(input)
            # s_i = g_i / max(‖v_i‖, eps): d s_i / d v_i = -s_i v_i / ‖v_i‖²
            # where ‖v_i‖ >= eps (and > 0), else 0 (clamp_min's subgradient).
            live = (norm >= ctx.eps) & (norm > 0)
            coef = torch.where(live, -grad_scale * scale / (clamped * clamped), 0.0)
            grad_v.addcmul_(v, coef.to(v.dtype).unsqueeze(1))
        grad_bias = _flat(grad).sum(0) if ctx.has_bias else None
        return grad_input, grad_g, grad_v, grad_bias, None


class _SpectralNormLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        input: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        u: Tensor,
        v: Tensor,
        sigma: Tensor | None,
        eps: float,
    ) -> Tensor:
        acc = accumulation_dtype(weight.dtype)
        if sigma is None:
            sigma = torch.vdot(u, torch.mv(weight, v))
        sigma = sigma.to(acc)
        clamped = sigma.clamp_min(eps)
        z = F.linear(input, weight)
        ctx.save_for_backward(input, weight, u, v, sigma, clamped, z)
        ctx.has_bias, ctx.eps = bias is not None, eps
        y = z / clamped.to(z.dtype)
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        input, weight, u, v, sigma, clamped, z = ctx.saved_tensors
        grad_z = grad / clamped.to(grad.dtype)
        grad_input = grad_z @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = _flat(grad_z).T @ _flat(input)
            # y = z / σ with σ = uᵀ W v: dL/dσ = -Σ grad·z / σ², dσ/dW = u vᵀ.
            grad_sigma = torch.where(
                sigma >= ctx.eps,
                -(_flat(grad) * _flat(z)).sum(dtype=clamped.dtype) / (clamped * clamped),
                0.0,
            )
            grad_weight.addr_(u * grad_sigma.to(u.dtype), v)
        grad_bias = _flat(grad).sum(0) if ctx.has_bias else None
        return grad_input, grad_weight, grad_bias, None, None, None, None


def weight_norm_linear(
    input: Tensor, g: Tensor, v: Tensor, bias: Tensor | None = None, *, eps: float = 1e-12
) -> Tensor:
    """``F.linear(input, weight_norm(v, g, dim=0), bias)`` without building the weight.

    Args:
        input: (..., in).
        g: (out, 1) or (out,) magnitudes; v: (out, in) directions.
        bias: (out,) or None.
        eps: the smallest norm divided by (as :func:`weight_norm`).
    """
    out: Tensor = _WeightNormLinear.apply(input, g, v, bias, eps)  # type: ignore[no-untyped-call]
    return out


def spectral_norm_linear(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    u: Tensor,
    v: Tensor,
    *,
    sigma: Tensor | None = None,
    eps: float = 1e-12,
) -> Tensor:
    """``F.linear(input, weight / σ̂, bias)`` with σ̂ = uᵀ W v, without building ``W / σ̂``.

    ``u`` and ``v`` are the power-iteration vectors (constants here: update
    them first, with :func:`power_iteration`, whose σ̂ can be passed as
    ``sigma`` to save a pass over the weight).
    """
    out: Tensor = _SpectralNormLinear.apply(  # type: ignore[no-untyped-call]
        input, weight, bias, u, v, sigma, eps
    )
    return out
