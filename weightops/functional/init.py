"""Initialization: fans, gains, the standard initializers, bias priors.

Every initializer exists as an in-place form (``xavier_uniform_(weight, ...)``)
that draws from a ``torch.Generator`` on the weight's device, and as a form
that returns a new tensor (``xavier_uniform(shape, ..., dtype, device)``).
Fans follow the weight's layout, groups and recurrent gates (:func:`fans`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from weightops._checks import check_real, check_weight, fail

__all__ = [
    "GAINS",
    "bias_prior",
    "fans",
    "gain",
    "he_normal",
    "he_normal_",
    "he_uniform",
    "he_uniform_",
    "lecun_normal",
    "lecun_normal_",
    "orthogonal",
    "orthogonal_",
    "trunc_normal",
    "trunc_normal_",
    "xavier_normal",
    "xavier_normal_",
    "xavier_uniform",
    "xavier_uniform_",
]

Layout = Literal["oi", "io"]
Mode = Literal["fan_in", "fan_out"]

#: Gains without a parameter: ``torch.nn.init.calculate_gain``'s, plus gelu and
#: silu, which torch lacks. Those two are 1/sqrt(E[f(z)²]) for z ~ N(0, 1), the
#: criterion that gives relu its √2 (He et al., 2015: keep the second moment of
#: activations constant), by numerical integration (scipy.integrate.quad,
#: E[gelu(z)²] = 0.42522148, E[silu(z)²] = 0.35577552; tests/test_init.py
#: recomputes them). torch's tanh gain 5/3 is empirical (the same criterion
#: gives 1.593).
GAINS: dict[str, float] = {
    "linear": 1.0,
    "identity": 1.0,
    "conv1d": 1.0,
    "conv2d": 1.0,
    "conv3d": 1.0,
    "conv_transpose1d": 1.0,
    "conv_transpose2d": 1.0,
    "conv_transpose3d": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3,
    "relu": math.sqrt(2.0),
    "selu": 3.0 / 4,
    "gelu": 1.5335304411955353,
    "silu": 1.6765324703310913,
}


def gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for a nonlinearity: ``torch.nn.init.calculate_gain`` + gelu, silu.

    ``leaky_relu`` takes its negative slope as ``param`` (default 0.01):
    sqrt(2 / (1 + slope²)). gelu: 1.5335, silu: 1.6765 (see :data:`GAINS`).

    >>> round(gain("relu"), 4), gain("leaky_relu", 0.2) == (2 / 1.04) ** 0.5
    (1.4142, True)
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else _real("gain", "param", param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity not in GAINS:
        fail("gain", "nonlinearity", f"one of {sorted([*GAINS, 'leaky_relu'])}", nonlinearity)
    return GAINS[nonlinearity]


def _real(op: str, name: str, value: Any, **bounds: Any) -> float:
    checked = check_real(op, name, value, **bounds)
    assert checked is not None  # not optional
    return checked


def _shape(op: str, weight: Tensor | Sequence[int]) -> tuple[int, ...]:
    shape = tuple(weight.shape) if isinstance(weight, Tensor) else tuple(weight)
    if len(shape) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape):
        fail(op, "weight", "a tensor or shape with at least 2 dimensions", shape)
    return shape


def fans(
    weight: Tensor | Sequence[int], *, layout: Layout = "oi", groups: int = 1, gates: int = 1
) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight or shape.

    With ``layout="oi"`` (Linear, Conv: ``(out, in/groups, *kernel)``) and no
    groups or gates this is ``torch.nn.init._calculate_fan_in_and_fan_out``:
    fan_in = size(1)·k, fan_out = size(0)·k with k = prod(size[2:]).
    ``layout="io"`` (ConvTranspose: ``(in, out/groups, *kernel)``) swaps them,
    which torch does not (it reads a ConvTranspose weight as if it were
    ``oi``). Beyond torch: ``groups`` divides the side stored whole (a grouped
    conv's unit sees in/groups inputs and feeds out/groups outputs), and
    ``gates`` splits a recurrent weight's rows into its gates (LSTM 4, GRU 3),
    each gate one ``(hidden, in)`` block.

    >>> fans((64, 16, 3, 3)), fans((16, 32, 3, 3), layout="io", groups=2)
    ((144, 576), (72, 288))
    >>> fans((4 * 20, 10), gates=4)
    (10, 20)
    """
    op = "fans"
    shape = _shape(op, weight)
    if layout not in ("oi", "io"):
        fail(op, "layout", "'oi' or 'io'", layout)
    for name, count in (("groups", groups), ("gates", gates)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            fail(op, name, "an int >= 1", count)
    # Both layouts store the whole side (out for oi, in for io) along dim 0.
    if groups > 1 and shape[0] % groups:
        fail(op, "groups", f"a divisor of the weight's size {shape[0]} along dim 0", groups)
    if gates > 1 and shape[0] % gates:
        fail(op, "gates", f"a divisor of the weight's {shape[0]} rows", gates)
    k = math.prod(shape[2:])
    rows, cols = shape[0] // gates, shape[1]
    if layout == "oi":
        return cols * k, rows // groups * k
    return rows // groups * k, cols * k


def _fan(op: str, weight: Tensor, mode: Mode, layout: Layout, groups: int, gates: int) -> int:
    if mode not in ("fan_in", "fan_out"):
        fail(op, "mode", "'fan_in' or 'fan_out'", mode)
    fan_in, fan_out = fans(weight, layout=layout, groups=groups, gates=gates)
    return fan_in if mode == "fan_in" else fan_out


def _check_generator(op: str, weight: Tensor, generator: torch.Generator | None) -> None:
    check_weight(op, weight)
    if generator is not None and not isinstance(generator, torch.Generator):
        fail(op, "generator", "a torch.Generator or None", type(generator).__name__, TypeError)


@torch.no_grad()
def xavier_uniform_(
    weight: Tensor,
    *,
    gain: float = 1.0,
    layout: Layout = "oi",
    groups: int = 1,
    gates: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Glorot & Bengio (2010): U(−a, a), a = gain·sqrt(6 / (fan_in + fan_out)).

    ``torch.nn.init.xavier_uniform_`` with layout-, group- and gate-aware fans.
    """
    _check_generator("xavier_uniform_", weight, generator)
    fan_in, fan_out = fans(weight, layout=layout, groups=groups, gates=gates)
    bound = _real("xavier_uniform_", "gain", gain, low=0.0) * math.sqrt(
        6.0 / max(fan_in + fan_out, 1)
    )
    return weight.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def xavier_normal_(
    weight: Tensor,
    *,
    gain: float = 1.0,
    layout: Layout = "oi",
    groups: int = 1,
    gates: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Glorot & Bengio (2010): N(0, std²), std = gain·sqrt(2 / (fan_in + fan_out))."""
    _check_generator("xavier_normal_", weight, generator)
    fan_in, fan_out = fans(weight, layout=layout, groups=groups, gates=gates)
    std = _real("xavier_normal_", "gain", gain, low=0.0) * math.sqrt(2.0 / max(fan_in + fan_out, 1))
    return weight.normal_(0.0, std, generator=generator)


def _he_std(
    op: str,
    weight: Tensor,
    mode: Mode,
    nonlinearity: str,
    param: float | None,
    layout: Layout,
    groups: int,
    gates: int,
) -> float:
    fan = _fan(op, weight, mode, layout, groups, gates)
    return gain(nonlinearity, param) / math.sqrt(max(fan, 1))


@torch.no_grad()
def he_uniform_(
    weight: Tensor,
    *,
    mode: Mode = "fan_in",
    nonlinearity: str = "relu",
    param: float | None = None,
    layout: Layout = "oi",
    groups: int = 1,
    gates: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """He et al. (2015): U(−a, a), a = sqrt(3)·gain(nonlinearity)/sqrt(fan).

    ``torch.nn.init.kaiming_uniform_`` (whose default nonlinearity is
    leaky_relu; here relu, as the paper) with layout-aware fans.
    """
    _check_generator("he_uniform_", weight, generator)
    bound = math.sqrt(3.0) * _he_std(
        "he_uniform_", weight, mode, nonlinearity, param, layout, groups, gates
    )
    return weight.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def he_normal_(
    weight: Tensor,
    *,
    mode: Mode = "fan_in",
    nonlinearity: str = "relu",
    param: float | None = None,
    layout: Layout = "oi",
    groups: int = 1,
    gates: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """He et al. (2015): N(0, std²), std = gain(nonlinearity)/sqrt(fan)."""
    _check_generator("he_normal_", weight, generator)
    std = _he_std("he_normal_", weight, mode, nonlinearity, param, layout, groups, gates)
    return weight.normal_(0.0, std, generator=generator)


@torch.no_grad()
def lecun_normal_(
    weight: Tensor,
    *,
    layout: Layout = "oi",
    groups: int = 1,
    gates: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """LeCun et al. (1998): N(0, 1/fan_in) (for SELU networks). Keras'
    ``lecun_normal`` draws a truncated normal of that std instead."""
    _check_generator("lecun_normal_", weight, generator)
    std = 1.0 / math.sqrt(max(_fan("lecun_normal_", weight, "fan_in", layout, groups, gates), 1))
    return weight.normal_(0.0, std, generator=generator)


@torch.no_grad()
def orthogonal_(
    weight: Tensor,
    *,
    gain: float = 1.0,
    gates: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Saxe et al. (2014): a (semi-)orthogonal matrix times ``gain``, per gate.

    ``torch.nn.init.orthogonal_``'s algorithm (QR of a normal matrix, signs
    fixed by R's diagonal, so the result is Haar-distributed) on the weight
    read as ``(rows, prod(rest))``; with ``gates`` each gate's block of rows
    is made orthogonal by itself, as recurrent weights want.
    """
    op = "orthogonal_"
    _check_generator(op, weight, generator)
    rows_all = _shape(op, weight)[0]
    if isinstance(gates, bool) or not isinstance(gates, int) or gates < 1 or rows_all % gates:
        fail(op, "gates", f"an int >= 1 dividing the weight's {rows_all} rows", gates)
    scale = _real(op, "gain", gain, low=0.0)
    for block in weight.view(gates, rows_all // gates, -1).unbind(0) if weight.numel() else []:
        rows, cols = block.shape
        flat = torch.empty(
            max(rows, cols),
            min(rows, cols),
            dtype=torch.float32 if weight.dtype != torch.float64 else weight.dtype,
            device=weight.device,
        )
        flat.normal_(0.0, 1.0, generator=generator)
        q, r = torch.linalg.qr(flat)
        q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, 1.0)
        block.copy_((q.T if rows < cols else q) * scale)
    return weight


@torch.no_grad()
def trunc_normal_(
    weight: Tensor,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """N(mean, std²) truncated to [mean + a·std, mean + b·std].

    The bounds are in standard deviations, where ``torch.nn.init.trunc_normal_``
    takes absolute bounds (its default [−2, 2] cuts at 2 std only when std = 1,
    a classic pitfall: ``trunc_normal_(w, std=0.02)`` there truncates nothing).
    Sampled by inverting the CDF on [Φ(a), Φ(b)], as torch does.
    """
    op = "trunc_normal_"
    _check_generator(op, weight, generator)
    mu, sigma = _real(op, "mean", mean), _real(op, "std", std, low=0.0, low_open=True)
    low, high = _real(op, "a", a), _real(op, "b", b)
    if low >= high:
        fail(op, "a", f"< b ({high})", low)
    cdf_low, cdf_high = (0.5 * (1 + math.erf(x / math.sqrt(2))) for x in (low, high))
    weight.uniform_(2 * cdf_low - 1, 2 * cdf_high - 1, generator=generator)
    weight.erfinv_().mul_(sigma * math.sqrt(2.0)).add_(mu)
    return weight.clamp_(mu + low * sigma, mu + high * sigma)


def _allocating(inplace: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The new-tensor form of an in-place initializer."""

    def create(
        shape: Sequence[int],
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> Tensor:
        return inplace(torch.empty(tuple(shape), dtype=dtype, device=device), **kwargs)

    name = inplace.__name__.removesuffix("_")
    create.__name__ = create.__qualname__ = name
    create.__doc__ = (
        f"A new tensor of ``shape`` (``dtype``, ``device``) drawn by :func:`{inplace.__name__}`,"
        " which takes the other keyword arguments."
    )
    return create


xavier_uniform = _allocating(xavier_uniform_)
xavier_normal = _allocating(xavier_normal_)
he_uniform = _allocating(he_uniform_)
he_normal = _allocating(he_normal_)
lecun_normal = _allocating(lecun_normal_)
orthogonal = _allocating(orthogonal_)
trunc_normal = _allocating(trunc_normal_)


def bias_prior(
    p: Tensor | float | Sequence[float], *, kind: Literal["sigmoid", "softmax"] = "sigmoid"
) -> Tensor:
    """An output bias that makes the untrained model predict the class frequencies ``p``.

    Computed in float64 and returned in ``p``'s dtype when it is a floating
    tensor (float64 for numbers, sequences and integer counts).
    ``kind="sigmoid"`` (binary or multi-label outputs): b = log(p / (1 − p))
    per output, so sigmoid(b) = p. ``kind="softmax"``: b_k = log p_k − mean_k
    log p_k (``p`` normalized to sum 1), so softmax(b) = p; softmax is blind to
    a constant, and this one centres b. The "prior probability" bias of Lin et
    al. (2017, focal loss), against the long first epoch a zero bias gives a
    rare class.

    >>> bias_prior(0.01)
    tensor(-4.5951, dtype=torch.float64)
    >>> torch.softmax(bias_prior([0.7, 0.2, 0.1], kind="softmax"), 0)
    tensor([0.7000, 0.2000, 0.1000], dtype=torch.float64)
    """
    op = "bias_prior"
    probs = (
        p.detach().double() if isinstance(p, Tensor) else torch.as_tensor(p, dtype=torch.float64)
    )
    if kind not in ("sigmoid", "softmax"):
        fail(op, "kind", "'sigmoid' or 'softmax'", kind)
    if probs.numel() == 0 or not bool(
        ((probs > 0) & (probs < 1 if kind == "sigmoid" else probs > 0)).all()
    ):
        fail(
            op,
            "p",
            "non-empty probabilities in (0, 1)"
            if kind == "sigmoid"
            else "non-empty positive frequencies",
            p,
        )
    if kind == "sigmoid":
        bias = torch.log(probs / (1 - probs))
    else:
        logs = torch.log(probs / probs.sum())
        bias = logs - logs.mean()
    # Computed in float64; a floating tensor's dtype and device come back
    # (class counts given as integers get a float64 bias, not truncated logs).
    if isinstance(p, Tensor):
        return bias.to(p.device, p.dtype if p.is_floating_point() else torch.float64)
    return bias
