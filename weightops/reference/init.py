"""NumPy twins of :mod:`weightops.functional.init`: the same numbers or the same distributions.

``fans``, ``gain`` and ``bias_prior`` return the same values. The
initializers draw from the same distributions with a ``numpy.random.Generator``
(``rng``); the tests compare both with the documented distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
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

_GAINS = {
    "tanh": 5.0 / 3,
    "relu": math.sqrt(2.0),
    "selu": 0.75,
    "gelu": 1.5335304411955353,
    "silu": 1.6765324703310913,
}


def gain(nonlinearity: str, param: float | None = None) -> float:
    """Reference :func:`weightops.functional.gain`."""
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    return _GAINS.get(nonlinearity, 1.0)


def fans(weight: Any, *, layout: str = "oi", groups: int = 1, gates: int = 1) -> tuple[int, int]:
    """Reference :func:`weightops.functional.fans`."""
    shape = tuple(np.shape(weight)) if not isinstance(weight, (tuple, list)) else tuple(weight)
    k = math.prod(shape[2:])
    out_units, in_units = (
        (shape[0] // gates, shape[1]) if layout == "oi" else (shape[1], shape[0] // gates)
    )
    if layout == "oi":
        return in_units * k, out_units // groups * k
    return in_units // groups * k, out_units * k


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng() if rng is None else rng


def xavier_uniform(
    shape: Sequence[int],
    *,
    gain: float = 1.0,
    layout: str = "oi",
    groups: int = 1,
    gates: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.xavier_uniform`."""
    fan_in, fan_out = fans(tuple(shape), layout=layout, groups=groups, gates=gates)
    bound = gain * math.sqrt(6.0 / max(fan_in + fan_out, 1))
    return _rng(rng).uniform(-bound, bound, size=tuple(shape))


def xavier_normal(
    shape: Sequence[int],
    *,
    gain: float = 1.0,
    layout: str = "oi",
    groups: int = 1,
    gates: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.xavier_normal`."""
    fan_in, fan_out = fans(tuple(shape), layout=layout, groups=groups, gates=gates)
    return _rng(rng).normal(
        0.0, gain * math.sqrt(2.0 / max(fan_in + fan_out, 1)), size=tuple(shape)
    )


def _he_std(
    shape: Sequence[int],
    mode: str,
    nonlinearity: str,
    param: float | None,
    layout: str,
    groups: int,
    gates: int,
) -> float:
    fan_in, fan_out = fans(tuple(shape), layout=layout, groups=groups, gates=gates)
    return gain(nonlinearity, param) / math.sqrt(max(fan_in if mode == "fan_in" else fan_out, 1))


def he_uniform(
    shape: Sequence[int],
    *,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    param: float | None = None,
    layout: str = "oi",
    groups: int = 1,
    gates: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.he_uniform`."""
    bound = math.sqrt(3.0) * _he_std(shape, mode, nonlinearity, param, layout, groups, gates)
    return _rng(rng).uniform(-bound, bound, size=tuple(shape))


def he_normal(
    shape: Sequence[int],
    *,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    param: float | None = None,
    layout: str = "oi",
    groups: int = 1,
    gates: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.he_normal`."""
    return _rng(rng).normal(
        0.0, _he_std(shape, mode, nonlinearity, param, layout, groups, gates), size=tuple(shape)
    )


def lecun_normal(
    shape: Sequence[int],
    *,
    layout: str = "oi",
    groups: int = 1,
    gates: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.lecun_normal`."""
    fan_in, _ = fans(tuple(shape), layout=layout, groups=groups, gates=gates)
    return _rng(rng).normal(0.0, 1.0 / math.sqrt(max(fan_in, 1)), size=tuple(shape))


def orthogonal(
    shape: Sequence[int],
    *,
    gain: float = 1.0,
    gates: int = 1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.orthogonal`."""
    rows_all = shape[0]
    cols = math.prod(shape[1:])
    blocks = []
    for _ in range(gates):
        rows = rows_all // gates
        flat = _rng(rng).normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(flat)
        q = q * np.where(np.diag(r) != 0, np.sign(np.diag(r)), 1.0)
        blocks.append(q.T if rows < cols else q)
    return (np.concatenate(blocks) * gain).reshape(tuple(shape))


def trunc_normal(
    shape: Sequence[int],
    *,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Reference :func:`weightops.functional.trunc_normal` (rejection sampling)."""
    out = np.empty(int(np.prod(shape)))
    filled = 0
    generator = _rng(rng)
    while filled < out.size:
        draw = generator.normal(size=out.size)
        keep = draw[(draw >= a) & (draw <= b)][: out.size - filled]
        out[filled : filled + keep.size] = keep
        filled += keep.size
    return (mean + std * out).reshape(tuple(shape))


def _filling(create: Any) -> Any:
    def fill(weight: np.ndarray, **kwargs: Any) -> np.ndarray:
        weight[...] = create(weight.shape, **kwargs)
        return weight

    fill.__name__ = create.__name__ + "_"
    fill.__doc__ = f"Reference in-place form: fills ``weight`` with :func:`{create.__name__}`."
    return fill


xavier_uniform_ = _filling(xavier_uniform)
xavier_normal_ = _filling(xavier_normal)
he_uniform_ = _filling(he_uniform)
he_normal_ = _filling(he_normal)
lecun_normal_ = _filling(lecun_normal)
orthogonal_ = _filling(orthogonal)
trunc_normal_ = _filling(trunc_normal)


def bias_prior(p: Any, *, kind: str = "sigmoid") -> np.ndarray:
    """Reference :func:`weightops.functional.bias_prior`."""
    probs = np.asarray(p, dtype=np.float64)
    if kind == "sigmoid":
        return np.asarray(np.log(probs / (1 - probs)))
    logs = np.log(probs / probs.sum())
    return np.asarray(logs - logs.mean())
