"""Model level: clip the gradients of an optimizer's parameters before every step."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor

from weightops._checks import check_real, fail
from weightops.apply import Constraint, _optimizer_params
from weightops.functional.gradients import (
    AGC_EPS,
    Nonfinite,
    agc_,
    check_nonfinite,
    check_norm_type,
    clamp_,
    named_gradients,
    norm_coefficient,
    raise_nonfinite,
    scale_,
    total_norm,
    zero_nonfinite_,
)

__all__ = ["GradClipping", "clip_grads"]


class GradClipping(Constraint):
    """The handle :func:`clip_grads` returns: ``remove()`` it, or use it as a
    context manager; ``last_norm`` is the total gradient norm of the last step.

    The checked settings are attributes: ``max_norm``, ``max_value``, ``agc``,
    ``eps``, ``norm_type``, ``nonfinite``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_norm: float | None,
        max_value: float | None,
        agc: float | None,
        *,
        norm_type: float,
        eps: float,
        nonfinite: str,
    ) -> None:
        self.max_norm = max_norm
        self.max_value = max_value
        self.agc = agc
        self.norm_type = norm_type
        self.eps = eps
        self.nonfinite = nonfinite
        #: The total ``norm_type``-norm of the gradients before clipping, at
        #: the last step: a 0-D tensor on the first gradient's device (reading
        #: its value synchronizes), or None before the first step.
        self.last_norm: Tensor | None = None
        super().__init__(optimizer.register_step_pre_hook(self._clip), {})

    def __enter__(self) -> GradClipping:
        return self

    def _clip(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        op = "clip_grads"
        gs = named_gradients(op, _optimizer_params(optimizer))
        with torch.no_grad():
            if self.nonfinite == "zero":
                zero_nonfinite_(gs.grads)
            total = total_norm(gs.grads, self.norm_type, None)
            if self.nonfinite == "raise" and not bool(torch.isfinite(total)):  # the one sync
                raise_nonfinite(op, gs, total, self.norm_type)
            ok = None  # "skip" is refused at registration
            if gs.grads and self.max_norm is not None:
                coefficient = norm_coefficient(self.max_norm, total, skip=ok is not None)
                scale_(gs.grads, coefficient, None)
            if self.max_value is not None:
                clamp_(gs.grads, self.max_value, ok, None)
            if self.agc is not None:
                agc_(gs.params, gs.grads, self.agc, self.eps, ok)
        self.last_norm = total


def clip_grads(
    optimizer: torch.optim.Optimizer,
    max_norm: float | None = None,
    max_value: float | None = None,
    agc: float | None = None,
    *,
    norm_type: float = 2.0,
    eps: float = AGC_EPS,
    nonfinite: Nonfinite = "raise",
) -> GradClipping:
    """Clip the gradients of all the optimizer's parameters before every ``step()``.

    Registers an optimizer step pre-hook that, under ``no_grad``, on the
    parameters of every param group that have a gradient:

    1. applies the ``nonfinite`` policy (below) and computes the total
       ``norm_type``-norm of the gradients (kept as ``handle.last_norm``);
    2. with ``max_norm``, scales them as
       :func:`~weightops.functional.clip_grad_norm_`;
    3. with ``max_value``, clamps them as
       :func:`~weightops.functional.clip_grad_value_`;
    4. with ``agc``, clips each unit as
       :func:`~weightops.functional.adaptive_clip_grad_` with
       ``clipping=agc``.

    Value clipping and AGC only shrink gradients, so after all three the total
    norm is still at most ``max_norm``. Parameters added to the optimizer
    later (``add_param_group``) are clipped too.

    Non-finite gradients are judged by the total norm: ``"raise"`` raises
    ``ValueError`` from ``step()`` naming the first parameter
    (``param_groups[g].params[i]``) whose gradient is not finite, before this
    hook changes any gradient (hooks registered earlier, such as a
    ``wo.decay``, have already run: register ``clip_grads`` first), which reads
    one value on the host per step (a device synchronization); ``"zero"`` sets
    non-finite elements to zero first (a plain SGD step then leaves those
    weights alone; optimizers with momentum still move them). ``"skip"`` is
    refused here: a step pre-hook cannot cancel the step, and stepping with the
    unchanged non-finite gradients is exactly what the policy is there to
    prevent; call :func:`~weightops.functional.clip_grad_norm_` with
    ``nonfinite="skip"`` and skip the step yourself when its norm is not
    finite.

    Args:
        optimizer: the optimizer whose parameters' gradients to clip.
        max_norm: the largest total gradient norm, finite and > 0, or None.
        max_value: the largest |g|, > 0, or None.
        agc: AGC's λ, finite and > 0, or None.
        norm_type: the order of the total norm, > 0 or ``math.inf``.
        eps: AGC's floor on a unit's weight norm, >= 0.
        nonfinite: ``"raise"`` or ``"zero"``.

    Returns:
        A :class:`GradClipping` handle: ``remove()`` it (or leave its ``with``
        block) to stop; ``last_norm`` holds the last step's total norm.

    Raises:
        TypeError/ValueError: a bad argument, or none of ``max_norm``,
            ``max_value`` and ``agc`` given; nothing is registered.

    >>> from torch import nn
    >>> net = nn.Linear(3, 2)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> with clip_grads(opt, max_norm=1.0) as handle:
    ...     net(torch.ones(8, 3)).square().sum().mul(100).backward()
    ...     opt.step()
    >>> bool(handle.last_norm > 1.0)
    True
    >>> total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    >>> bool(total <= 1.0)
    True
    """
    op = "clip_grads"
    if not isinstance(optimizer, torch.optim.Optimizer):
        fail(op, "optimizer", "a torch.optim.Optimizer", type(optimizer).__name__, TypeError)
    top = sys.float_info.max
    c = check_real(op, "max_norm", max_norm, low=0.0, low_open=True, high=top, optional=True)
    v = check_real(op, "max_value", max_value, low=0.0, low_open=True, optional=True)
    lam = check_real(op, "agc", agc, low=0.0, low_open=True, high=top, optional=True)
    e = check_real(op, "eps", eps, low=0.0, high=top)
    assert e is not None
    if c is None and v is None and lam is None:
        fail(
            op,
            "max_norm, max_value, agc",
            "limits of which at least one is not None",
            (max_norm, max_value, agc),
        )
    p = check_norm_type(op, norm_type)
    check_nonfinite(op, nonfinite)
    if nonfinite == "skip":
        # A pre-hook cannot cancel the step: the optimizer would then apply the
        # non-finite gradients, the very NaN spreading the policy is there to stop.
        fail(
            op,
            "nonfinite",
            "'raise' or 'zero' (a hook cannot skip the step; to skip it, call "
            "WF.clip_grad_norm_(..., nonfinite='skip') and check its norm yourself)",
            nonfinite,
        )
    return GradClipping(optimizer, c, v, lam, norm_type=p, eps=e, nonfinite=nonfinite)
