"""The op table: every functional op, how to draw its arguments, its dtypes.

One row per op in ``weightops.functional``; ``test_reference.py`` checks each
row against the NumPy twin of the same name in ``weightops.reference``. An op
whose name ends in ``_`` works in place: the test also checks that it returns
its argument and wrote the result into it.

Arguments drawn as float64 NumPy arrays are passed to the op as tensors of
the first argument's dtype and device, and to the reference as those tensors'
values; integer arrays stay integer. Ops returning a named tuple are compared
field by field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weightops.functional import stats
from weightops.testing import DTYPES, ELEMENTS, shapes

Shape = tuple[int, ...]
Kwargs = st.SearchStrategy[dict[str, Any]]


@dataclass(frozen=True)
class Op:
    name: str
    #: Given the first argument's shape, a strategy for the op's other arguments.
    kwargs: Callable[[Shape], Kwargs]
    dtypes: tuple[torch.dtype, ...] = DTYPES
    #: Shapes of the first argument.
    shape: st.SearchStrategy[Shape] = field(default_factory=shapes)
    #: Values of the first argument.
    elements: st.SearchStrategy[float] = ELEMENTS
    #: Per-dtype (rtol, atol) merged over weightops.testing.TOLERANCES.
    tolerance: Mapping[torch.dtype, tuple[float, float]] = field(default_factory=dict)
    #: False for ops whose float outputs have a dtype of their own (float32
    #: quantization parameters); they are compared in that dtype.
    keeps_dtype: bool = True

    @property
    def inplace(self) -> bool:
        return self.name.endswith("_")


BOUND = st.floats(-50.0, 50.0, allow_nan=False)
#: Non-negative values: power iteration on them has no cancellation, so a
#: float32 and a float64 run take the same path to the same vectors.
NON_NEGATIVE = st.one_of(st.just(0.0), st.floats(0.1, 10.0))
#: See NORMALIZED below.
NORMALIZING_EPS = st.sampled_from([1e-3, 1e-1])


def array(
    shape: Shape, elements: st.SearchStrategy[float] = ELEMENTS
) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=elements)


def dims(shape: Shape, *, optional: bool) -> st.SearchStrategy[int | None]:
    ints = st.integers(-len(shape), len(shape) - 1) if shape else st.nothing()
    return st.none() | ints if optional else ints


def clip_kwargs(shape: Shape) -> Kwargs:
    def bounds(pair: tuple[float | None, float | None]) -> dict[str, Any]:
        low, high = pair
        if low is not None and high is not None and low > high:
            low, high = high, low
        return {"min": low, "max": high}

    optional = st.none() | BOUND
    return st.tuples(optional, optional).filter(lambda p: p != (None, None)).map(bounds)


def max_norm_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries(
        {
            "max_norm": st.floats(1e-3, 200.0),
            "dim": dims(shape, optional=True),
            "eps": st.sampled_from([1e-7, 1e-3, 0.0]),
        }
    )


def unit_shape(shape: Shape, dim: int | None) -> Shape:
    """The shape of a per-unit statistic (torch.norm_except_dim's)."""
    if dim is None:
        return ()
    d = dim % len(shape)
    return tuple(n if i == d else 1 for i, n in enumerate(shape))


def weight_norm_kwargs(shape: Shape) -> Kwargs:
    return dims(shape, optional=True).flatmap(
        lambda d: st.fixed_dictionaries(
            {"g": array(unit_shape(shape, d), st.floats(-10, 10)), "dim": st.just(d)}
        )
    )


def standardize_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries({"dim": dims(shape, optional=True), "eps": NORMALIZING_EPS})


def power_iteration_kwargs(shape: Shape) -> Kwargs:
    rows, cols = shape
    return st.fixed_dictionaries(
        {
            "u": array((rows,), NON_NEGATIVE),
            "v": array((cols,), NON_NEGATIVE),
            "n_power_iterations": st.integers(0, 3),
        }
    )


def spectral_norm_kwargs(shape: Shape) -> Kwargs:
    def vectors(d: int) -> Kwargs:
        rows = shape[d]
        cols = int(np.prod(shape)) // rows if rows else int(np.prod(shape[:d] + shape[d + 1 :]))
        if len(shape) == 1:
            rows, cols = 1, 1
        return st.fixed_dictionaries(
            {
                "u": array((rows,), NON_NEGATIVE),
                "v": array((cols,), NON_NEGATIVE),
                "dim": st.just(d),
                "n_power_iterations": st.integers(0, 2),
                "update": st.booleans(),
            }
        )

    return st.integers(0, len(shape) - 1).flatmap(vectors)


def batch_norm_kwargs(shape: Shape) -> Kwargs:
    channels = shape[1]
    per_channel = int(np.prod(shape)) // channels if channels else 0
    # Batch statistics need two or more values per channel; without running
    # statistics, so does evaluation.
    running = st.tuples(array((channels,), BOUND), array((channels,), st.floats(0.0, 20.0)))
    stats = st.none() | running if per_channel > 1 else running
    affine = st.none() | array((channels,), st.floats(-5, 5))
    return st.fixed_dictionaries(
        {
            "stats": stats,
            "weight": affine,
            "bias": affine,
            "training": st.booleans() if per_channel > 1 else st.just(False),
            "momentum": st.none() | st.floats(0.0, 1.0),
            "eps": NORMALIZING_EPS,
            "num_batches_tracked": st.integers(0, 5).map(lambda n: np.array(n, dtype=np.int64)),
        }
    ).map(
        lambda kw: {
            "running_mean": None if kw["stats"] is None else kw["stats"][0],
            "running_var": None if kw["stats"] is None else kw["stats"][1],
            **{k: v for k, v in kw.items() if k != "stats"},
        }
    )


def layer_norm_kwargs(shape: Shape) -> Kwargs:
    def with_k(k: int) -> Kwargs:
        normalized = shape[len(shape) - k :]
        affine = st.none() | array(normalized, st.floats(-5, 5))
        return st.fixed_dictionaries(
            {
                "normalized_shape": st.just(normalized),
                "weight": affine,
                "bias": affine,
                "eps": NORMALIZING_EPS,
            }
        )

    return st.integers(1, len(shape)).flatmap(with_k)


#: Decay coefficients and learning rates, 0 included.
RATE = st.one_of(st.just(0.0), st.floats(1e-4, 1.0))
UNIT = st.one_of(st.just(0.0), st.floats(-1.0, 1.0, width=32))
#: torch's CPU kernels for float16/bfloat16 round λ·w to the dtype before
#: adding it to the gradient (as the optimizers' weight_decay does), so at
#: cancellation the error is half an ulp of λ·w, not of the result: with
#: |λ·w| <= 1, 2^-12 (float16) and 2^-9 (bfloat16).
ROUNDED_PRODUCT = {torch.float16: (1e-3, 3e-4), torch.bfloat16: (1.6e-2, 2e-3)}


def l2_grad_kwargs(shape: Shape) -> Kwargs:
    # The first argument is the gradient; the weight is drawn here.
    return st.fixed_dictionaries({"weight": array(shape, UNIT), "weight_decay": RATE})


def weight_decay_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries({"weight_decay": RATE, "lr": RATE})


def l1_prox_kwargs(shape: Shape) -> Kwargs:
    # Thresholds lr·weight_decay up to 50 against weights up to 100: some
    # elements are zeroed, some not.
    return st.fixed_dictionaries(
        {"weight_decay": st.just(0.0) | st.floats(0.0, 10.0), "lr": st.floats(0.0, 5.0)}
    )


#: torch reduces a non-contiguous float32 tensor sequentially, so a norm of n
#: terms carries a relative error up to about n/2 · 2^-24 (2.5e-6 measured for
#: 200 equal terms, against 7e-8 contiguous); 3e-5 covers the 1024 elements
#: the strategies draw at most. A wrong formula is off by far more.
FLOAT32_NORM = {torch.float32: (3e-5, 1e-5)}
#: Power iteration in half precision rounds at every matrix-vector product
#: and normalization (a few roundings per iteration, up to three iterations).
HALF_ITERATIONS = {torch.float16: (8e-3, 1e-3), torch.bfloat16: (6e-2, 1e-2), **FLOAT32_NORM}
#: Normalizing divides by sqrt(var + eps): on a constant unit the rounding
#: error of its mean (up to n ulps in torch's float32 sum of n terms) is
#: multiplied by up to 1/sqrt(eps), 316 for the default 1e-5 (1.2e-3 was
#: measured on 60 equal values). The op table therefore draws eps >= 1e-3
#: (a factor 31 at most) and inputs bounded by 10; the default eps is checked
#: against torch's own modules in test_normalization.py.
NORMALIZED = {
    torch.float16: (4e-3, 3e-3),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float32: (3e-5, 1e-3),
}
MODERATE = st.one_of(st.just(0.0), st.floats(-10.0, 10.0, width=32))


def fans_kwargs(shape: Shape) -> Kwargs:
    def divisors(n: int) -> st.SearchStrategy[int]:
        return st.sampled_from([d for d in range(1, n + 1) if n % d == 0] or [1])

    def for_layout(layout: str) -> Kwargs:
        # Both layouts store the side that groups divide along dim 0.
        return st.fixed_dictionaries(
            {
                "layout": st.just(layout),
                "groups": divisors(shape[0]),
                "gates": divisors(shape[0]),
            }
        ).filter(lambda kw: kw["gates"] == 1 or layout == "oi")

    return st.sampled_from(["oi", "io"]).flatmap(for_layout)


def bias_prior_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries({"kind": st.sampled_from(["sigmoid", "softmax"])})


def quantization_kwargs(shape: Shape) -> Kwargs:
    def granularity(symmetric: bool) -> Kwargs:
        axes = st.integers(-len(shape), len(shape) - 1) if shape else st.nothing()
        last = shape[-1] if shape else 0
        groups = st.sampled_from([g for g in range(1, last + 1) if last % g == 0] or [1])
        per = st.sampled_from(["tensor", "channel", "group"] if shape and last else ["tensor"])
        return per.flatmap(
            lambda kind: st.fixed_dictionaries(
                {
                    "bits": st.integers(2, 16),
                    "symmetric": st.just(symmetric),
                    "preserve_zero": st.just(True) if symmetric else st.booleans(),
                    "axis": axes if kind == "channel" else st.none(),
                    "group_size": groups if kind == "group" else st.none(),
                }
            )
        )

    return st.booleans().flatmap(granularity)


#: Magnitudes that repeat, so that masks meet ties (the index tie-break).
TIED = st.one_of(st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, 3.0]), ELEMENTS)


def threshold_mask_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries(
        {"threshold": st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 120.0)}
    )


def magnitude_mask_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries(
        {
            "sparsity": st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 1.0),
            "dim": dims(shape, optional=True),
        }
    )


def nm_mask_kwargs(shape: Shape) -> Kwargs:
    def for_dim(d: int) -> Kwargs:
        size = shape[d]
        divisors = [m for m in range(1, size + 1) if size % m == 0] or [1, 2, 4]
        return st.sampled_from(divisors).flatmap(
            lambda m: st.fixed_dictionaries(
                {"n": st.integers(0, m), "m": st.just(m), "dim": st.just(d)}
            )
        )

    return dims(shape, optional=False).flatmap(for_dim)


#: Codes, scales and zero points are exact: the reference repeats the
#: float32 arithmetic.
EXACT = {dtype: (0.0, 0.0) for dtype in DTYPES}

OPS: list[Op] = [
    Op("clip", clip_kwargs),
    Op("clip_", clip_kwargs),
    Op("max_norm", max_norm_kwargs, tolerance=FLOAT32_NORM),
    Op("max_norm_", max_norm_kwargs, tolerance=FLOAT32_NORM),
    Op("weight_norm", weight_norm_kwargs, tolerance=FLOAT32_NORM),
    Op("standardize", standardize_kwargs, elements=MODERATE, tolerance=NORMALIZED),
    Op(
        "power_iteration",
        power_iteration_kwargs,
        shape=shapes(min_dims=2, max_dims=2, max_side=12),
        elements=NON_NEGATIVE,
        tolerance=HALF_ITERATIONS,
    ),
    Op(
        "spectral_norm",
        spectral_norm_kwargs,
        shape=shapes(min_dims=1),
        elements=NON_NEGATIVE,
        tolerance=HALF_ITERATIONS,
    ),
    Op(
        "batch_norm",
        batch_norm_kwargs,
        shape=shapes(min_dims=2),
        elements=MODERATE,
        tolerance=NORMALIZED,
    ),
    Op("l2_grad_", l2_grad_kwargs, tolerance=ROUNDED_PRODUCT),
    Op("weight_decay_", weight_decay_kwargs),
    Op("l1_prox_", l1_prox_kwargs),
    Op("quantize_params", quantization_kwargs, tolerance=EXACT, keeps_dtype=False),
    Op("quantize", quantization_kwargs),
    Op("fake_quantize", quantization_kwargs, tolerance=EXACT),
    Op("fake_quantize_", quantization_kwargs, tolerance=EXACT),
    Op("threshold_mask", threshold_mask_kwargs, elements=TIED),
    Op("sparsify", threshold_mask_kwargs, elements=TIED),
    Op("sparsify_", threshold_mask_kwargs, elements=TIED),
    Op("magnitude_mask", magnitude_mask_kwargs, elements=TIED),
    Op("nm_mask", nm_mask_kwargs, shape=shapes(min_dims=1), elements=TIED),
    Op("fans", fans_kwargs, shape=shapes(min_dims=2, max_side=6)),
    Op(
        "bias_prior",
        bias_prior_kwargs,
        dtypes=(torch.float32, torch.float64),
        shape=shapes(min_dims=1, max_dims=1, max_side=8).filter(lambda s: s[0] > 0),
        elements=st.floats(0.02, 0.98),
    ),
    Op(
        "layer_norm",
        layer_norm_kwargs,
        shape=shapes(min_dims=1),
        elements=MODERATE,
        tolerance=NORMALIZED,
    ),
]


@dataclass(frozen=True)
class RandomOp:
    """An initializer: checked by the distribution of its samples, not their values.

    ``distribution(shape, kwargs)`` is the scipy.stats distribution every
    element must follow (a Kolmogorov–Smirnov test of the torch op's samples
    and of its NumPy twin's, in tests/test_init.py).
    """

    name: str
    kwargs: Callable[[Shape], Kwargs]
    distribution: Callable[[Shape, dict[str, Any]], Any]


def _xavier_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries({"gain": st.floats(0.5, 2.0)})


def _he_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries(
        {
            "mode": st.sampled_from(["fan_in", "fan_out"]),
            "nonlinearity": st.sampled_from(["relu", "tanh", "gelu", "leaky_relu"]),
        }
    )


def _trunc_kwargs(shape: Shape) -> Kwargs:
    return st.fixed_dictionaries(
        {
            "mean": st.floats(-1, 1),
            "std": st.floats(0.01, 2.0),
            "a": st.floats(-3, -0.5),
            "b": st.floats(0.5, 3),
        }
    )


def _none(shape: Shape) -> Kwargs:
    return st.just({})


def _fan_pair(shape: Shape) -> tuple[int, int]:
    k = int(np.prod(shape[2:]))
    return shape[1] * k, shape[0] * k


def _uniform(bound: float) -> Any:
    from scipy import stats

    return stats.uniform(-bound, 2 * bound)


def _normal(std: float) -> Any:
    from scipy import stats

    return stats.norm(0.0, std)


def _he_std(shape: Shape, kw: dict[str, Any]) -> float:
    from weightops.reference import gain

    fan_in, fan_out = _fan_pair(shape)
    return gain(kw["nonlinearity"]) / np.sqrt(fan_in if kw["mode"] == "fan_in" else fan_out)


def _trunc(shape: Shape, kw: dict[str, Any]) -> Any:
    from scipy import stats

    return stats.truncnorm(kw["a"], kw["b"], loc=kw["mean"], scale=kw["std"])


RANDOM_OPS: list[RandomOp] = []
for _suffix in ("", "_"):
    RANDOM_OPS += [
        RandomOp(
            "xavier_uniform" + _suffix,
            _xavier_kwargs,
            lambda s, kw: _uniform(kw["gain"] * np.sqrt(6 / sum(_fan_pair(s)))),
        ),
        RandomOp(
            "xavier_normal" + _suffix,
            _xavier_kwargs,
            lambda s, kw: _normal(kw["gain"] * np.sqrt(2 / sum(_fan_pair(s)))),
        ),
        RandomOp(
            "he_uniform" + _suffix, _he_kwargs, lambda s, kw: _uniform(np.sqrt(3) * _he_std(s, kw))
        ),
        RandomOp("he_normal" + _suffix, _he_kwargs, lambda s, kw: _normal(_he_std(s, kw))),
        RandomOp(
            "lecun_normal" + _suffix, _none, lambda s, kw: _normal(1 / np.sqrt(_fan_pair(s)[0]))
        ),
        RandomOp("trunc_normal" + _suffix, _trunc_kwargs, _trunc),
    ]

#: Functional ops checked against their twins by their own tests: gain takes
#: no tensor and an orthogonal matrix is checked by WᵀW = I (tests/test_init.py);
#: the gradient ops take parameters with .grad, not one weight
#: (GRAD_OPS in tests/test_gradients.py); dequantize takes integer codes
#: (its round trip with quantize, in tests/test_quantization.py).
CHECKED_ELSEWHERE = (
    "dequantize",
    "gain",
    "orthogonal",
    "orthogonal_",
    "adaptive_clip_grad_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "grad_stats",
    "kmeans",
    # Statistics: tests/test_stats.py checks each against its twin.
    *(name for name in stats.__all__ if name != "STAT_NAMES"),
)
