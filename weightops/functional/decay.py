"""Weight decay: the L2 penalty's gradient (coupled), decoupled decay, and the
L1 penalty's proximal step (soft-thresholding).

Each op works in place on its first argument and returns it: the gradient
for :func:`l2_grad_`, the weight for :func:`weight_decay_` and
:func:`l1_prox_`. The private kernels below take lists of tensors and a
learning rate that may be a tensor (as optimizers allow); the model-level
step hooks (:mod:`weightops.decay`) call them after checking their arguments
once, at registration.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from weightops._checks import check_real, check_weight, fail

__all__ = ["l1_prox_", "l2_grad_", "weight_decay_"]


def check_rate(op: str, value: float, name: str) -> float:
    """A finite real ``>= 0`` (a decay coefficient or learning rate), as a float."""
    number = check_real(op, name, value, low=0.0, high=sys.float_info.max)
    assert number is not None
    return number


def add_scaled_(grads: list[Tensor], weights: list[Tensor], alpha: float) -> None:
    """``grad += alpha · weight`` for each pair, as torch's SGD/Adam coupled decay."""
    if grads:
        torch._foreach_add_(grads, weights, alpha=alpha)


def scale_(weights: list[Tensor], factor: float | Tensor) -> None:
    """``weight *= factor`` for each weight, as AdamW's decoupled decay."""
    if weights:
        torch._foreach_mul_(weights, factor)


def soft_threshold_(weight: Tensor, threshold: float | Tensor) -> Tensor:
    """``weight ← weight − clamp(weight, −t, t)``: ``sign(w)·max(|w| − t, 0)``.

    Elements within ``[−t, t]`` become exactly ``+0``. Half-precision weights
    are thresholded in float32 and rounded once: their own clamp would round
    ``t`` to the weight's dtype first.
    """
    if isinstance(threshold, Tensor):
        threshold = threshold.to(weight.device)
    work = weight.float() if weight.dtype in (torch.float16, torch.bfloat16) else weight
    return weight.sub_(work.clamp(-threshold, threshold))  # type: ignore[arg-type]


def l2_grad_(grad: Tensor, weight: Tensor, weight_decay: float) -> Tensor:
    """Add the gradient of the L2 penalty ``(λ/2)‖w‖²`` to ``grad``, in place.

    .. math:: g \\leftarrow g + \\lambda w

    The *coupled* weight decay of ``torch.optim.SGD``/``Adam``'s
    ``weight_decay=λ`` (``grad.add(param, alpha=weight_decay)``): the decay
    becomes part of the gradient, so an adaptive optimizer (Adam) rescales it
    with the rest. Same arithmetic as torch, so an SGD step on the result is
    bitwise the step of ``SGD(weight_decay=λ)``; on the CPU that includes
    rounding ``λ·w`` to a float16/bfloat16 gradient's dtype before the sum.

    Args:
        grad: the gradient, any shape; float16, bfloat16, float32 or float64.
        weight: the parameter, same shape, dtype and device as ``grad``.
        weight_decay: λ, finite and >= 0.

    Returns:
        ``grad``, changed in place.

    Raises:
        TypeError: ``grad`` or ``weight`` is not a floating-point tensor, their
            dtypes differ, or ``weight_decay`` is not a real number.
        ValueError: the shapes or devices differ, or ``weight_decay`` is
            negative, infinite or NaN.

    >>> g = torch.tensor([0.5, -1.0])
    >>> l2_grad_(g, torch.tensor([2.0, 4.0]), 0.25)
    tensor([1., 0.])
    """
    op = "l2_grad_"
    check_weight(op, grad, "grad")
    check_weight(op, weight)
    if weight.dtype != grad.dtype:
        fail(op, "weight", f"of grad's dtype ({grad.dtype})", weight.dtype, TypeError)
    if weight.shape != grad.shape:
        fail(op, "weight", f"of grad's shape {tuple(grad.shape)}", tuple(weight.shape))
    if weight.device != grad.device:
        fail(op, "weight", f"on grad's device ({grad.device})", weight.device)
    add_scaled_([grad], [weight], check_rate(op, weight_decay, "weight_decay"))
    return grad


def weight_decay_(weight: Tensor, weight_decay: float, *, lr: float) -> Tensor:
    """Decoupled weight decay: shrink ``weight`` toward 0 by ``lr · λ``, in place.

    .. math:: w \\leftarrow w \\, (1 - \\eta \\lambda)

    AdamW's decay (Loshchilov & Hutter): applied to the weight itself, apart
    from the gradient, so an adaptive optimizer does not rescale it. Same
    arithmetic as ``torch.optim.AdamW`` (``param.mul_(1 - lr * weight_decay)``,
    before the Adam update), hence bitwise the same.

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        weight_decay: λ, finite and >= 0.
        lr: the learning rate η, finite and >= 0.

    Returns:
        ``weight``, changed in place.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or a rate is not
            a real number.
        ValueError: ``weight_decay`` or ``lr`` is negative, infinite or NaN.

    >>> w = torch.tensor([1.0, -2.0])
    >>> weight_decay_(w, 0.5, lr=0.1)
    tensor([ 0.9500, -1.9000])
    """
    op = "weight_decay_"
    check_weight(op, weight)
    rate = check_rate(op, weight_decay, "weight_decay")
    scale_([weight], 1 - check_rate(op, lr, "lr") * rate)
    return weight


def l1_prox_(weight: Tensor, weight_decay: float, *, lr: float) -> Tensor:
    """The proximal step of the L1 penalty ``λ‖w‖₁``: soft-thresholding, in place.

    .. math:: w \\leftarrow \\operatorname{sign}(w) \\max(|w| - \\eta \\lambda, 0)

    The exact minimiser of ``λ‖v‖₁ + ‖v − w‖² / (2η)``: after a gradient step
    on the loss, it gives proximal gradient descent (ISTA) for an L1-penalised
    loss. Unlike L2 decay, which only scales weights, it sets every weight
    with ``|w| <= ηλ`` to exactly 0, so it makes weights sparse. It is
    ``torch.nn.functional.softshrink(weight, lr * weight_decay)`` in place;
    the zeros are ``+0``.

    Non-finite weights: NaN stays NaN, ``±inf`` stays ``±inf``.

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        weight_decay: λ, finite and >= 0.
        lr: the step size η, finite and >= 0.

    Returns:
        ``weight``, changed in place.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or a rate is not
            a real number.
        ValueError: ``weight_decay`` or ``lr`` is negative, infinite or NaN.

    >>> w = torch.tensor([0.5, -0.05, -2.0, 0.1])
    >>> l1_prox_(w, 1.0, lr=0.1)
    tensor([ 0.4000,  0.0000, -1.9000,  0.0000])
    """
    op = "l1_prox_"
    check_weight(op, weight)
    rate = check_rate(op, weight_decay, "weight_decay")
    return soft_threshold_(weight, check_rate(op, lr, "lr") * rate)
