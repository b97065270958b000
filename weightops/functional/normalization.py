"""Normalization: weight norm, spectral norm by power iteration, weight
standardization, batch norm and layer norm.

State is explicit: :func:`power_iteration`, :func:`spectral_norm` and
:func:`batch_norm` take their state (singular-vector estimates, running
statistics) as arguments and return the new state beside the result, so that
the ops stay pure and their references can be called with the same state.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from weightops._checks import check_dim, check_real, check_weight, fail
from weightops.functional._reduce import accumulation_dtype, unit_norm, unit_var_mean

__all__ = [
    "BatchNormResult",
    "PowerIterationResult",
    "SpectralNormResult",
    "batch_norm",
    "layer_norm",
    "matrix_view",
    "power_iteration",
    "spectral_norm",
    "standardize",
    "weight_norm",
]

#: Smallest norm divided by in :func:`weight_norm`: a zero unit stays zero.
WEIGHT_NORM_EPS = 1e-12
#: As torch.nn.utils.parametrizations.spectral_norm.
SPECTRAL_NORM_EPS = 1e-12
#: Upper bound on power iterations when iterating to a tolerance.
MAX_POWER_ITERATIONS = 100


def _scaled(weight: Tensor, scale: Tensor) -> Tensor:
    # A half-precision weight is multiplied by its float32 scale and rounded
    # once; for float32/float64 the product already has the weight's dtype.
    return (weight * scale).to(weight.dtype)


def weight_norm(
    v: Tensor, g: Tensor, *, dim: int | None = 0, eps: float = WEIGHT_NORM_EPS
) -> Tensor:
    """Weight normalization: ``w = g · v / ‖v‖``, one norm per unit.

    .. math:: w_i = g_i \\, \\frac{v_i}{\\max(\\lVert v_i \\rVert_2, \\epsilon)}

    A unit is a slice along ``dim`` (0: each output unit of PyTorch's
    ``(out, in, ...)`` weights); ``dim=None`` normalizes the whole tensor.
    Matches ``torch._weight_norm`` (what
    ``torch.nn.utils.parametrizations.weight_norm`` computes) wherever
    ``‖v_i‖ >= eps``; below, torch divides by zero and returns NaN, this
    divides by ``eps`` so that a zero unit stays zero, with a finite gradient.

    Args:
        v: the direction, any shape with at least ``dim + 1`` dimensions;
            float16, bfloat16, float32 or float64.
        g: the magnitudes, broadcastable against the unit norms: ``v``'s
            size along ``dim`` and 1 elsewhere (as
            ``torch.norm_except_dim(v, 2, dim)``), or 0-D for ``dim=None``.
        dim: the dimension indexing units, or None.
        eps: the smallest norm divided by, >= 0.

    Returns:
        A new tensor like ``v``.

    Raises:
        TypeError: ``v`` or ``g`` is not a floating-point tensor.
        ValueError: ``dim`` out of range, ``eps < 0``, or ``g`` does not
            broadcast against the unit norms.

    >>> v = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    >>> weight_norm(v, torch.tensor([[10.0], [2.0]]))
    tensor([[6., 8.],
            [0., 0.]])
    """
    check_weight("weight_norm", v, "v")
    check_weight("weight_norm", g, "g")
    check_real("weight_norm", "eps", eps, low=0.0)
    d = check_dim("weight_norm", dim, v.ndim, optional=True)
    norm = unit_norm(v, d)
    fits = g.ndim <= norm.ndim and all(
        a in (1, b) for a, b in zip(reversed(g.shape), reversed(norm.shape), strict=False)
    )
    if not fits:
        fail(
            "weight_norm",
            "g",
            f"broadcastable to the unit norms' shape {tuple(norm.shape)}",
            tuple(g.shape),
        )
    return _scaled(v, g / norm.clamp_min(eps))


def standardize(weight: Tensor, *, dim: int | None = 0, eps: float = 1e-5) -> Tensor:
    """Weight standardization: each unit to zero mean and unit variance.

    .. math:: \\hat w_i = \\frac{w_i - \\mu_i}{\\sqrt{\\sigma_i^2 + \\epsilon}}

    with the biased variance of the unit: layer norm applied to the weight, as
    Qiao et al. (2019) use it on convolution weights (``dim=0``: each output
    channel's fan-in). A constant unit becomes zeros, not NaN.
    ``eps`` defaults to layer norm's 1e-5 (timm's ``StdConv2d`` uses 1e-6).

    Args:
        weight: any shape with at least ``dim + 1`` dimensions; float16,
            bfloat16 (statistics in float32), float32 or float64.
        dim: the dimension indexing units, or None for the whole tensor.
        eps: added to the variance, >= 0.

    Returns:
        A new tensor like ``weight``.

    >>> standardize(torch.tensor([[1.0, 3.0], [5.0, 5.0]]), eps=0.0)
    tensor([[-1.,  1.],
            [ 0.,  0.]])
    """
    check_weight("standardize", weight)
    check_real("standardize", "eps", eps, low=0.0)
    d = check_dim("standardize", dim, weight.ndim, optional=True)
    var, mean = unit_var_mean(weight, d)
    denom = var + eps
    # With eps = 0 a constant unit has denom 0: scale it by 0, through a
    # clamped rsqrt so that neither the value nor its gradient is inf or NaN.
    scale = torch.where(denom > 0, denom.clamp_min(torch.finfo(denom.dtype).tiny).rsqrt(), 0.0)
    return ((weight - mean) * scale).to(weight.dtype)


class PowerIterationResult(NamedTuple):
    """What :func:`power_iteration` returns."""

    u: Tensor  #: left singular vector estimate, shape (rows,)
    v: Tensor  #: right singular vector estimate, shape (cols,)
    sigma: Tensor  #: σ̂ = uᵀ W v, 0-D
    iterations: int  #: iterations run


def _check_vectors(op: str, matrix: Tensor, u: Tensor, v: Tensor) -> None:
    check_weight(op, u, "u")
    check_weight(op, v, "v")
    rows, cols = matrix.shape
    if tuple(u.shape) != (rows,):
        fail(op, "u", f"a vector of {rows} elements (the weight matrix's rows)", tuple(u.shape))
    if tuple(v.shape) != (cols,):
        fail(op, "v", f"a vector of {cols} elements (the weight matrix's columns)", tuple(v.shape))


def normalize(x: Tensor, eps: float) -> Tensor:
    """``x / max(‖x‖, eps)``: ``F.normalize`` with the norm in float32 for half
    precision, where torch's eps (1e-12) rounds to 0 and a zero vector gives NaN."""
    return (x / unit_norm(x, None).clamp_min(eps)).to(x.dtype)


@torch.no_grad()
def power_iteration(
    matrix: Tensor,
    u: Tensor,
    v: Tensor,
    *,
    n_power_iterations: int = 1,
    eps: float = SPECTRAL_NORM_EPS,
    tol: float | None = None,
    max_iterations: int = MAX_POWER_ITERATIONS,
) -> PowerIterationResult:
    """Estimate the largest singular value of ``matrix`` by power iteration.

    Each iteration is ``u ← normalize(W v)``, ``v ← normalize(Wᴴ u)``, as in
    ``torch.nn.utils.parametrizations.spectral_norm`` (``x / max(‖x‖, eps)``,
    with the norm accumulated in float32 for half precision, where torch's
    ``F.normalize`` turns a zero vector into NaN); then σ̂ = uᵀ W v. σ̂ is a
    lower bound of the largest singular value that rises toward it. With
    ``tol``, iteration goes on after the first ``n_power_iterations`` until
    σ̂ changes by less than ``tol`` or ``max_iterations`` have run; that
    reads σ̂ on the host once per iteration, so leave ``tol=None`` in
    training loops (no host sync).

    Runs under ``no_grad``: the vectors are state, not part of the graph.

    Args:
        matrix: 2-D, (rows, cols), floating point.
        u: (rows,) left vector estimate; v: (cols,) right vector estimate.
        n_power_iterations: iterations to run, >= 0.
        eps: ``F.normalize``'s eps.
        tol: stop when σ̂ changes by less than this (absolute), or None.
        max_iterations: the bound with ``tol``.

    Returns:
        :class:`PowerIterationResult` ``(u, v, sigma, iterations)``; new tensors,
        the arguments are not modified.

    >>> w = torch.diag(torch.tensor([3.0, 1.0]))
    >>> r = power_iteration(w, torch.ones(2), torch.ones(2), tol=1e-6)
    >>> round(float(r.sigma), 4)
    3.0
    """
    op = "power_iteration"
    check_weight(op, matrix, "matrix")
    if matrix.ndim != 2:
        fail(op, "matrix", "2-D", tuple(matrix.shape))
    _check_vectors(op, matrix, u, v)
    for name, count, low in (
        ("n_power_iterations", n_power_iterations, 0),
        ("max_iterations", max_iterations, 1),
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < low:
            fail(
                op,
                name,
                f"an int >= {low}",
                count,
                TypeError if not isinstance(count, int) else ValueError,
            )
    check_real(op, "eps", eps, low=0.0)
    check_real(op, "tol", tol, low=0.0, low_open=True, optional=True)

    def step(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # After v ← Wᴴu / ‖Wᴴu‖, uᵀ W v = ‖Wᴴu‖: σ̂ without another pass over W.
        u = normalize(torch.mv(matrix, v), eps)
        back = torch.mv(matrix.H, u)
        norm = unit_norm(back, None).reshape(()).to(matrix.dtype)
        return u, normalize(back, eps), norm

    if n_power_iterations == 0:
        sigma = torch.vdot(u, torch.mv(matrix, v))
    for _ in range(n_power_iterations):
        u, v, sigma = step(u, v)
    iterations = n_power_iterations
    if tol is not None:
        while iterations < max(max_iterations, n_power_iterations):
            previous = sigma
            u, v, sigma = step(u, v)
            iterations += 1
            if abs(float(sigma - previous)) < tol:
                break
    return PowerIterationResult(u, v, sigma, iterations)


def matrix_view(weight: Tensor, dim: int) -> Tensor:
    """``weight`` as the matrix spectral norm works on: ``dim`` first, the rest flattened.

    As ``torch.nn.utils.parametrizations.spectral_norm``: (size(dim), numel / size(dim)).
    """
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return weight.flatten(1)


def spectral_sigma(
    weight: Tensor,
    u: Tensor,
    v: Tensor,
    *,
    dim: int,
    n_power_iterations: int,
    eps: float,
    tol: float | None,
    update: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """σ̂ of a weight with two or more dimensions, and the (updated) ``u``, ``v``.

    The part of :func:`spectral_norm` before the division, for layers that
    divide their output by σ̂ instead of their weight. ``dim`` must already
    be non-negative.
    """
    matrix = matrix_view(weight, dim)
    if update:
        u, v, _, _ = power_iteration(
            matrix.detach(), u, v, n_power_iterations=n_power_iterations, eps=eps, tol=tol
        )
    else:
        _check_vectors("spectral_norm", matrix, u, v)
        check_real("spectral_norm", "eps", eps, low=0.0)
    # u and v are cloned so that a graph built through them survives their
    # later in-place update (torch's reason: two forwards, one backward).
    return torch.vdot(u.clone(), torch.mv(matrix, v.clone())), u, v


class SpectralNormResult(NamedTuple):
    """What :func:`spectral_norm` returns."""

    weight: Tensor  #: the normalized weight, W / σ̂
    u: Tensor  #: updated left vector
    v: Tensor  #: updated right vector
    sigma: Tensor  #: σ̂ used to divide, 0-D (differentiable in the weight)


def spectral_norm(
    weight: Tensor,
    u: Tensor,
    v: Tensor,
    *,
    dim: int = 0,
    n_power_iterations: int = 1,
    eps: float = SPECTRAL_NORM_EPS,
    tol: float | None = None,
    update: bool = True,
) -> SpectralNormResult:
    """Spectral normalization: ``W / σ̂`` with σ̂ from power iteration.

    .. math:: W_{SN} = W / \\max(\\hat\\sigma, \\epsilon), \\quad
              \\hat\\sigma = u^\\top \\widetilde W v

    where W̃ is ``weight`` reshaped to a matrix (``dim`` first, see
    :func:`matrix_view`) and ``u``, ``v`` are updated by
    :func:`power_iteration` first when ``update`` is true (torch does so in
    training mode only). Matches ``torch.nn.utils.parametrizations.spectral_norm``
    given the same ``u`` and ``v`` wherever σ̂ >= eps; below, torch returns
    NaN for an all-zero weight, this returns zeros. Gradients flow through
    σ̂ = uᵀ W̃ v to the weight (a rank-1 term), not through ``u``, ``v``.

    A 1-D weight is divided by its norm (torch's exact path); ``u`` and ``v``
    are returned unchanged.

    Args:
        weight: at least 1-D, floating point.
        u, v: vectors of the matrix's rows and columns (any, for 1-D weights).
        dim: the dimension that becomes the matrix's rows (torch: 0, 1 for
            ConvTranspose weights).
        n_power_iterations, eps, tol: as :func:`power_iteration`.
        update: run power iteration before normalizing.

    Returns:
        :class:`SpectralNormResult` ``(weight, u, v, sigma)``.

    >>> w = torch.diag(torch.tensor([4.0, 2.0]))
    >>> out = spectral_norm(w, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
    >>> out.weight
    tensor([[1.0000, 0.0000],
            [0.0000, 0.5000]])
    """
    op = "spectral_norm"
    check_weight(op, weight)
    d = check_dim(op, dim, weight.ndim)
    assert d is not None
    if not isinstance(update, bool):
        fail(op, "update", "a bool", update, TypeError)
    if weight.ndim == 1:
        check_real(op, "eps", eps, low=0.0)
        sigma = unit_norm(weight, None).reshape(()).to(weight.dtype)
        return SpectralNormResult(normalize(weight, eps), u, v, sigma)
    sigma, u, v = spectral_sigma(
        weight, u, v, dim=d, n_power_iterations=n_power_iterations, eps=eps, tol=tol, update=update
    )
    # σ̂ is clamped in float32 or wider: eps = 1e-12 rounds to 0 in half precision.
    divisor = sigma.to(accumulation_dtype(weight.dtype)).clamp_min(eps)
    return SpectralNormResult((weight / divisor).to(weight.dtype), u, v, sigma)


class BatchNormResult(NamedTuple):
    """What :func:`batch_norm` returns."""

    output: Tensor
    running_mean: Tensor | None
    running_var: Tensor | None
    num_batches_tracked: Tensor | None


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Tensor | None = None,
) -> BatchNormResult:
    """Batch normalization over dim 1 of ``input`` (N, C, ...), state in and out.

    .. math:: y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\gamma + \\beta

    In training, μ and σ² are the batch's mean and *biased* variance per
    channel, and the running statistics move toward the batch's mean and
    *unbiased* variance: ``r ← (1 − m)·r + m·batch`` with ``m = momentum``,
    or, when ``momentum`` is None, the cumulative average ``m = 1 / n`` with
    ``n = num_batches_tracked + 1`` (which needs a host read of the count, as
    ``nn.BatchNorm``). Out of training the running statistics normalize (or
    the batch's, where there are none: ``track_running_stats=False``).
    These are ``torch.nn.BatchNorm*``'s semantics; this function returns new
    running statistics instead of updating its arguments, and normalizes
    float16/bfloat16 inputs in float32 (torch's CPU float16 kernel is off by
    ~1% on near-constant channels).

    Args:
        input: (N, C, ...) floating point.
        running_mean, running_var: (C,) or None.
        weight, bias: (C,) affine parameters, or None.
        training: use batch statistics and update the running ones.
        momentum: in [0, 1], or None for the cumulative average.
        eps: added to the variance, >= 0.
        num_batches_tracked: 0-D integer count of training batches so far
            (needed when ``momentum`` is None).

    Returns:
        :class:`BatchNormResult` ``(output, running_mean, running_var,
        num_batches_tracked)``: the new state, or the old one when not training.

    Raises:
        ValueError: a channel has a single value in training, shapes disagree,
            or ``momentum`` is None without ``num_batches_tracked``.
    """
    op = "batch_norm"
    check_weight(op, input, "input")
    if input.ndim < 2:
        fail(op, "input", "at least 2-D (N, C, ...)", tuple(input.shape))
    channels = input.shape[1]
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if t is not None:
            check_weight(op, t, name)
            if tuple(t.shape) != (channels,):
                fail(op, name, f"of shape ({channels},) or None", tuple(t.shape))
    if (running_mean is None) != (running_var is None):
        fail(op, "running_mean, running_var", "both tensors or both None", "one of each")
    check_real(op, "momentum", momentum, low=0.0, high=1.0, optional=True)
    check_real(op, "eps", eps, low=0.0)
    tracking = training and running_mean is not None
    if tracking and momentum is None and num_batches_tracked is None:
        fail(op, "num_batches_tracked", "a count when momentum is None", None)
    use_batch = training or running_mean is None
    if use_batch and input.numel() // max(channels, 1) <= 1:
        fail(
            op,
            "input",
            "more than one value per channel to normalize with batch statistics",
            tuple(input.shape),
        )

    if input.numel() == 0:
        # Nothing to normalize (torch.nn.functional.batch_norm fails on 0 channels).
        return BatchNormResult(
            torch.empty_like(input), running_mean, running_var, num_batches_tracked
        )
    count = num_batches_tracked
    factor = 0.0 if momentum is None else momentum
    if tracking and count is not None:
        count = count + 1
        if momentum is None:
            factor = 1.0 / float(count)
    # Half precision is normalized in float32 and rounded once: torch's CPU
    # float16 kernel is off by ~1% on a near-constant channel.
    acc = accumulation_dtype(input.dtype)
    # torch.nn.functional.batch_norm updates running statistics in place;
    # it updates these copies, so the arguments stay untouched.
    mean = None if running_mean is None else running_mean.to(acc, copy=True)
    var = None if running_var is None else running_var.to(acc, copy=True)
    gamma = None if weight is None else weight.to(acc)
    beta = None if bias is None else bias.to(acc)
    out = F.batch_norm(input.to(acc), mean, var, gamma, beta, use_batch, factor, eps).to(
        input.dtype
    )
    if not tracking or running_mean is None or running_var is None:
        return BatchNormResult(out, running_mean, running_var, num_batches_tracked)
    assert mean is not None and var is not None
    return BatchNormResult(out, mean.to(running_mean.dtype), var.to(running_var.dtype), count)


def layer_norm(
    input: Tensor,
    normalized_shape: tuple[int, ...] | list[int] | int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalization over the last ``len(normalized_shape)`` dimensions.

    .. math:: y = \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} \\gamma + \\beta

    with the biased variance, as ``torch.nn.functional.layer_norm`` (which it
    calls, with its arguments checked).

    >>> layer_norm(torch.tensor([[1.0, 3.0]]), (2,), eps=0.0)
    tensor([[-1.,  1.]])
    """
    op = "layer_norm"
    check_weight(op, input, "input")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if (
        not shape
        or any(isinstance(s, bool) or not isinstance(s, int) for s in shape)
        or tuple(input.shape[input.ndim - len(shape) :]) != shape
        or len(shape) > input.ndim
    ):
        fail(
            op,
            "normalized_shape",
            f"a non-empty trailing part of input's shape {tuple(input.shape)}",
            normalized_shape,
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_weight(op, t, name)
            if tuple(t.shape) != shape:
                fail(op, name, f"of shape {shape} or None", tuple(t.shape))
    check_real(op, "eps", eps, low=0.0)
    return F.layer_norm(input, shape, weight, bias, eps)
