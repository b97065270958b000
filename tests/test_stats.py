"""Weight statistics: every statistic against its NumPy twin, σmax and stable
rank against scipy.linalg.svdvals, the power-law fit on known spectra, and the
documented edge cases (empty, constant, zero, non-finite)."""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

import weightops.functional.stats as WF
import weightops.reference.stats as WR
from weightops.testing import DTYPES, ELEMENTS, assert_matches_reference, shapes, tensors

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
FLOAT64_EPS = float(torch.finfo(torch.float64).eps)
#: Every value a float can hold that is not finite.
NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])
WITH_NONFINITE = st.one_of(ELEMENTS, ELEMENTS, ELEMENTS, NONFINITE)
MATRICES = shapes(min_dims=2, max_dims=2, max_side=12, max_numel=144)


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread() -> Iterator[None]:
    """NumPy's and SciPy's BLAS (the references) on one thread: their threads,
    spinning after a call, and torch's take turns on a small machine (a 30 ms
    σmax then takes 3 s). torch's own threads are left alone."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then the tests are only slower
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def svdvals(matrix: np.ndarray) -> np.ndarray:
    """``scipy.linalg.svdvals``, the independent reference for σmax and stable rank."""
    return scipy.linalg.svdvals(matrix)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.double().cpu().numpy()


def eps_of(dtype: torch.dtype) -> float:
    """Machine epsilon of the dtype a matrix op computes in (float32 below float64)."""
    return FLOAT64_EPS if dtype == torch.float64 else FLOAT32_EPS


# --- the op table: each statistic, its arguments' shapes and its comparison ---


def check_weight_stats(weight: torch.Tensor) -> None:
    actual = WF.weight_stats(weight)
    assert actual.device == weight.device
    # Both sides are float64 computations on the same float64 values: only
    # their summation orders differ.
    assert_matches_reference(actual, WR.weight_stats(as_numpy(weight)), dtype=torch.float64)


def check_max_cosine(weight: torch.Tensor) -> None:
    bound = 0.5
    best, pairs = WF.max_cosine(weight, bound=bound)
    assert best.device == pairs.device == weight.device
    assert pairs.dtype == torch.int64
    # Cosines are computed in float32 below float64: each carries about
    # cols·eps of rounding, so a pair that close to the bound may go either way.
    tol = 4 * weight.shape[1] * eps_of(weight.dtype)
    want_best, _ = WR.max_cosine(as_numpy(weight), bound=bound)
    assert_matches_reference(best, np.array(want_best), overrides={torch.float64: (tol, tol)})
    low = WR.max_cosine(as_numpy(weight), bound=bound + tol)[1]
    high = WR.max_cosine(as_numpy(weight), bound=bound - tol)[1]
    assert low <= int(pairs) <= high


def check_stable_rank(weight: torch.Tensor) -> None:
    sigma, _ = WR.sigma_max(as_numpy(weight))
    actual = WF.stable_rank(weight, torch.tensor(sigma, dtype=torch.float64))
    assert actual.device == weight.device
    assert_matches_reference(actual, np.array(WR.stable_rank(as_numpy(weight), sigma)))


def check_singular_values(weight: torch.Tensor) -> None:
    actual = WF.singular_values(weight)
    expected = WR.singular_values(as_numpy(weight))
    assert actual.dtype == (torch.float64 if weight.dtype == torch.float64 else torch.float32)
    assert tuple(actual.shape) == expected.shape
    # A backward-stable SVD moves every singular value by a few eps·σ₁, and
    # by a few of the smallest subnormals where σ₁ is itself subnormal.
    top = float(expected[0]) if expected.size else 0.0
    compute = torch.float64 if weight.dtype == torch.float64 else torch.float32
    subnormal = float(torch.finfo(compute).smallest_normal) * eps_of(compute)
    atol = 8 * max(weight.shape) * eps_of(compute) * top + 4 * subnormal
    np.testing.assert_allclose(actual.double().cpu().numpy(), expected, rtol=0, atol=atol)


def check_sigma_max(weight: torch.Tensor) -> None:
    tol = 1e-4
    sigma, iterations = WF.sigma_max(weight, tol=tol)
    true, _ = WR.sigma_max(as_numpy(weight))
    assert sigma.dtype == torch.float64 and sigma.shape == () and sigma.device == weight.device
    assert 0 <= iterations <= 1000
    assert_sigma_within(float(sigma), true, tol, weight.dtype)


@dataclass(frozen=True)
class StatOp:
    name: str
    shape: st.SearchStrategy[tuple[int, ...]]
    check: Callable[[torch.Tensor], None]
    elements: st.SearchStrategy[float] = ELEMENTS
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}-{self.label}" if self.label else self.name


STAT_OPS = (
    StatOp("weight_stats", shapes(), check_weight_stats),
    StatOp("weight_stats", shapes(), check_weight_stats, WITH_NONFINITE, "nonfinite"),
    StatOp("max_cosine", MATRICES, check_max_cosine),
    StatOp("stable_rank", MATRICES, check_stable_rank),
    StatOp("singular_values", MATRICES, check_singular_values),
    StatOp("sigma_max", MATRICES, check_sigma_max),
)


def test_every_statistic_has_a_reference_twin_and_a_table_row() -> None:
    assert sorted(WF.__all__) == sorted(WR.__all__)
    assert WF.STAT_NAMES == WR.STAT_NAMES
    tabled = {op.name for op in STAT_OPS} | {"STAT_NAMES", "power_law_alpha"}
    assert tabled == set(WF.__all__)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", STAT_OPS, ids=lambda op: op.id)
@given(data=st.data())
def test_statistic_matches_reference(
    op: StatOp, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    weight = data.draw(tensors(dtype, shape=op.shape, device=device, elements=op.elements))
    before = weight.clone()
    op.check(weight)
    assert torch.equal(weight.nan_to_num(), before.nan_to_num()), f"{op.name} modified its input"


# --- weight_stats ---


def test_weight_stats_returns_float64_vector_on_device(device: str) -> None:
    out = WF.weight_stats(torch.randn(3, 4, device=device))
    assert out.dtype == torch.float64
    assert out.shape == (len(WF.STAT_NAMES),)
    assert out.device.type == device


@pytest.mark.parametrize("shape", [(0,), (3, 0, 2), (0, 0)])
def test_weight_stats_empty_is_all_zeros(shape: tuple[int, ...]) -> None:
    assert WF.weight_stats(torch.empty(shape)).tolist() == [0.0] * len(WF.STAT_NAMES)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("value", [0.0, -0.0, 0.1, -3.0, 1e4])
@pytest.mark.parametrize("numel", [1, 7, 100_003])
def test_weight_stats_constant_is_finite_with_zero_spread(
    dtype: torch.dtype, value: float, numel: int
) -> None:
    weight = torch.full((numel,), value, dtype=dtype)
    stats = dict(zip(WF.STAT_NAMES, WF.weight_stats(weight).tolist(), strict=True))
    assert all(math.isfinite(v) for v in stats.values()), stats
    stored = float(weight[0])
    # float64 sums of 0.1 round; float32 and narrower values sum exactly in float64.
    assert stats["mean"] == pytest.approx(stored, rel=4 * FLOAT64_EPS)
    assert stats["std"] == 0.0
    assert stats["kurtosis"] == 0.0
    assert stats["max_abs"] == abs(stored)
    assert stats["zero_fraction"] == (1.0 if stored == 0 else 0.0)


def test_weight_stats_counts_nonfinite_and_leaves_them_out_of_moments() -> None:
    finite = torch.tensor([1.0, -2.0, 0.0, 4.0, 0.5])
    weight = torch.cat([finite, torch.tensor([math.nan, math.inf, -math.inf, math.nan])])
    stats = dict(zip(WF.STAT_NAMES, WF.weight_stats(weight).tolist(), strict=True))
    moments = dict(zip(WF.STAT_NAMES, WF.weight_stats(finite).tolist(), strict=True))
    assert stats["nan_count"] == 2.0
    assert stats["inf_count"] == 2.0
    for name in ("mean", "std", "l1", "l2", "max_abs", "kurtosis"):
        assert stats[name] == pytest.approx(moments[name], rel=1e-12), name
    assert stats["zero_fraction"] == 1 / 9


def test_weight_stats_without_finite_values_counts_only() -> None:
    stats = WF.weight_stats(torch.tensor([math.nan, math.inf, -math.inf]))
    assert stats.tolist() == [0.0] * 7 + [1.0, 2.0]


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided", "sliced"])
def test_weight_stats_merges_chunks_exactly(monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    # A large mean and a small spread: merging naive power sums would cancel
    # catastrophically; merging central moments must not.
    monkeypatch.setattr(WF, "_CPU_CHUNK", 1000)
    gen = torch.Generator().manual_seed(1)
    base = 1000.0 + 1e-3 * torch.randn(37, 101, 3, generator=gen, dtype=torch.float64) ** 3
    base[5, 7, 1], base[30, 2, 0], base[11, 50, 2] = math.nan, math.inf, 0.0
    weight = {
        "contiguous": base,
        "transposed": base.permute(2, 0, 1),
        "strided": base[..., 1],
        "sliced": base[3:, ::2].transpose(0, 1),
    }[layout]
    assert layout == "contiguous" or not weight.is_contiguous()
    assert_matches_reference(
        WF.weight_stats(weight), WR.weight_stats(as_numpy(weight)), overrides={}
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.zeros(50, 70),
        lambda: torch.zeros(50, 70, 2)[..., 0],
        lambda: torch.zeros(70, 50).T,
        lambda: torch.zeros(3, 1, 9000)[:, :, ::3],
        lambda: torch.zeros(1, 1, 40_000)[..., ::2],
    ],
)
def test_chunks_cover_the_tensor_in_bounded_pieces(make: Callable[[], torch.Tensor]) -> None:
    weight = make()
    weight.copy_(torch.arange(weight.numel(), dtype=weight.dtype).reshape(weight.shape))
    size = 500
    pieces = list(WF._chunks(weight, size))
    assert all(p.ndim == 1 and 0 < p.numel() <= size for p in pieces)
    covered = torch.sort(torch.cat(pieces)).values
    assert torch.equal(covered, torch.arange(weight.numel(), dtype=weight.dtype))


def test_weight_stats_rejects_integer_tensors() -> None:
    with pytest.raises(TypeError, match="weight_stats: weight must be float16"):
        WF.weight_stats(torch.ones(3, dtype=torch.int64))


# --- sigma_max and stable_rank against scipy ---


def assert_sigma_within(sigma: float, true: float, tol: float, dtype: torch.dtype) -> None:
    """The documented guarantee: σ₁(1 - tol) - 10·ε·σ₁ <= σ̂ <= σ₁(1 + 10·ε)."""
    slack = 10 * eps_of(dtype) * true
    assert true * (1 - tol) - slack <= sigma <= true + slack, (sigma, true, tol)


def random_matrix(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """A float64 matrix of one of :data:`KINDS`, the same in every run."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, shape)
    if kind == "positive":
        return rng.uniform(0.0, 1.0, shape)
    rank = max(1, min(shape) // 10)
    low = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))
    return low + 0.1 * rng.standard_normal(shape)


SHAPES = [(64, 64), (300, 40), (40, 300), (257, 129), (1, 50), (50, 1), (400, 350)]
KINDS = ["gaussian", "uniform", "positive", "low-rank"]


@cache
def scipy_case(
    shape: tuple[int, int], kind: str, dtype: torch.dtype
) -> tuple[torch.Tensor, np.ndarray]:
    """A matrix (seeded by its shape and kind) and its singular values by
    ``scipy.linalg.svdvals``, computed once for every tolerance."""
    seed = zlib.crc32(f"{shape}{kind}".encode())
    weight = torch.from_numpy(random_matrix(kind, shape, seed)).to(dtype)
    return weight, svdvals(as_numpy(weight))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("tol", [1e-2, 1e-4, 1e-6])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sigma_max_within_tolerance_of_svdvals(
    shape: tuple[int, int], kind: str, tol: float, dtype: torch.dtype
) -> None:
    weight, s = scipy_case(shape, kind, dtype)
    true = float(s[0])
    sigma, iterations = WF.sigma_max(weight, tol=tol)
    assert_sigma_within(float(sigma), true, tol, dtype)
    assert 1 <= iterations <= 1000


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_stable_rank_within_tolerance_of_svdvals(shape: tuple[int, int], kind: str) -> None:
    tol = 1e-4
    weight, s = scipy_case(shape, kind, torch.float32)
    sigma, _ = WF.sigma_max(weight, tol=tol)
    actual = float(WF.stable_rank(weight, sigma))
    # ‖W‖_F²/σ̂² with σ̂ = σ₁(1 - δ), 0 <= δ <= tol (+ rounding): relative
    # error 1/(1 - δ)² - 1, at most 2·tol plus rounding.
    true = float(np.sum(s**2) / s[0] ** 2)
    assert true * (1 - 1e-5) <= actual <= true * ((1 + 1e-5) / (1 - tol) ** 2)


def test_sigma_max_zero_matrix_is_zero_without_iterating() -> None:
    sigma, iterations = WF.sigma_max(torch.zeros(300, 200))
    assert (float(sigma), iterations) == (0.0, 0)


@pytest.mark.parametrize(("value", "expected"), [(math.nan, math.nan), (-math.inf, math.inf)])
def test_sigma_max_nonfinite_matrix_is_nonfinite(value: float, expected: float) -> None:
    weight = torch.ones(20, 10)
    weight[3, 4] = value
    sigma, iterations = WF.sigma_max(weight)
    assert (float(sigma), iterations) == pytest.approx((expected, 0), nan_ok=True)


@pytest.mark.parametrize("scale", [2.0**-140, 1e-30, 1e30, 3e38])
def test_sigma_max_extreme_scales_stay_accurate(scale: float) -> None:
    unit = torch.from_numpy(random_matrix("gaussian", (40, 30), seed=9))
    unit /= unit.abs().max()  # max|W| = scale, finite in float32
    true = float(svdvals(unit.numpy())[0]) * scale
    weight = (unit * scale).float()
    sigma, _ = WF.sigma_max(weight)
    # Subnormal float32 entries keep fewer digits: 2^-140 holds 9 bits.
    assert float(sigma) == pytest.approx(true, rel=1e-2 if scale < 1e-38 else 1e-4)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_sigma_max_empty_is_zero(shape: tuple[int, int]) -> None:
    sigma, iterations = WF.sigma_max(torch.empty(shape))
    assert (float(sigma), iterations) == (0.0, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sigma_max_constant_matrix_is_exact(dtype: torch.dtype) -> None:
    # Rank one, top singular vectors constant: a start vector orthogonal to
    # them would give 0.
    sigma, _ = WF.sigma_max(torch.full((400, 300), 0.05, dtype=dtype))
    stored = float(torch.tensor(0.05, dtype=dtype))
    assert float(sigma) == pytest.approx(stored * math.sqrt(400 * 300), rel=1e-5)


def test_sigma_max_deterministic_and_leaves_global_rng_alone() -> None:
    weight = torch.randn(200, 150)
    state = torch.get_rng_state()
    first = WF.sigma_max(weight, tol=1e-3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    second = WF.sigma_max(weight, tol=1e-3)
    assert float(first[0]) == float(second[0]) and first[1] == second[1]


def test_sigma_max_stops_at_max_iter() -> None:
    _, iterations = WF.sigma_max(torch.randn(500, 500), tol=1e-12, max_iter=6)
    assert iterations == 6


def test_sigma_max_restarts_beyond_the_basis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WF, "_MAX_BASIS", 8)
    weight = torch.from_numpy(random_matrix("gaussian", (200, 120), seed=3))
    sigma, iterations = WF.sigma_max(weight, tol=1e-6)
    assert iterations > 2  # more than one cycle of 8 vectors (2 steps)
    assert_sigma_within(float(sigma), float(svdvals(weight.numpy())[0]), 1e-6, weight.dtype)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tol": 0.0}, ValueError, "tol must be"),
        ({"tol": 1.5}, ValueError, "tol must be"),
        ({"max_iter": 0}, ValueError, "max_iter must be an int >= 1"),
        ({"max_iter": 2.0}, TypeError, "max_iter must be an int >= 1"),
    ],
)
def test_sigma_max_rejects_bad_options(
    kwargs: dict[str, float], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        WF.sigma_max(torch.ones(3, 3), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("op", [WF.sigma_max, WF.singular_values, WF.max_cosine])
def test_matrix_statistics_reject_non_matrices(op: Callable[..., object]) -> None:
    with pytest.raises(ValueError, match="weight2d must be 2-D"):
        op(torch.ones(2, 3, 4))


def test_stable_rank_zero_matrix_is_zero() -> None:
    weight = torch.zeros(30, 20)
    assert float(WF.stable_rank(weight, WF.sigma_max(weight)[0])) == 0.0


def test_stable_rank_of_identity_is_its_size() -> None:
    weight = torch.eye(17)
    assert float(WF.stable_rank(weight, WF.sigma_max(weight)[0])) == pytest.approx(17.0)


def test_singular_values_descending_and_match_svdvals() -> None:
    weight = torch.from_numpy(random_matrix("gaussian", (90, 60), seed=5))
    s = WF.singular_values(weight)
    assert s.dtype == torch.float64 and s.shape == (60,)
    assert bool((s[:-1] >= s[1:]).all())
    np.testing.assert_allclose(s.numpy(), svdvals(weight.numpy()), rtol=1e-12)


# --- power_law_alpha ---


def pareto_spectrum(alpha: float, n: int, seed: int) -> np.ndarray:
    """Singular values whose squares follow a density ∝ λ^-alpha above 1."""
    lam = np.random.default_rng(seed).pareto(alpha - 1.0, n) + 1.0
    return np.sqrt(lam)


@pytest.mark.parametrize("alpha", [1.8, 2.5, 3.5, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_power_law_alpha_recovers_pareto_exponent(alpha: float, seed: int) -> None:
    n = 2000
    estimate = WF.power_law_alpha(pareto_spectrum(alpha, n, seed))
    assert estimate is not None
    # The MLE's standard error is (α-1)/√n_tail; the KS-chosen tail keeps
    # most of a pure Pareto sample.
    assert abs(estimate - alpha) < 5 * (alpha - 1) / math.sqrt(n / 4)


def test_power_law_alpha_finds_the_tail_above_a_bulk() -> None:
    rng = np.random.default_rng(2)
    bulk = rng.uniform(0.1, 0.9, 3000)
    tail = np.random.default_rng(3).pareto(2.0, 500) + 1.0  # density ∝ λ^-3 above 1
    estimate = WF.power_law_alpha(np.sqrt(np.concatenate([bulk, tail])))
    assert estimate is not None and abs(estimate - 3.0) < 0.4


def test_power_law_alpha_none_below_min_tail() -> None:
    spectrum = pareto_spectrum(3.0, 60, seed=0)
    assert WF.power_law_alpha(spectrum[:49]) is None
    assert WF.power_law_alpha(spectrum[:50]) is not None
    assert WF.power_law_alpha(spectrum[:20], min_tail=20) is not None
    # Zeros and non-finite values are not eigenvalues of the tail.
    padded = np.concatenate([spectrum[:49], np.zeros(30), [np.nan, np.inf]])
    assert WF.power_law_alpha(padded) is None


@pytest.mark.parametrize(
    "spectrum",
    [np.ones(80), np.full(80, 3.7), np.zeros(80), np.zeros(0)],
    ids=["ones", "constant", "zeros", "empty"],
)
def test_power_law_alpha_none_without_a_tail(spectrum: np.ndarray) -> None:
    assert WF.power_law_alpha(spectrum) is None


@given(
    values=st.lists(
        st.one_of(st.floats(1e-3, 1e3), st.sampled_from([0.5, 1.0, 2.0])), min_size=3, max_size=120
    ),
    min_tail=st.integers(2, 60),
)
def test_power_law_alpha_matches_reference(values: list[float], min_tail: int) -> None:
    spectrum = np.array(values)
    actual = WF.power_law_alpha(torch.from_numpy(spectrum), min_tail=min_tail)
    expected = WR.power_law_alpha(spectrum, min_tail=min_tail)
    assert (actual is None) == (expected is None)
    if actual is not None:
        assert actual == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("arg", "kwargs", "error"),
    [
        ([1.0, 2.0], {}, TypeError),
        (np.ones((3, 3)), {}, ValueError),
        (np.ones(60), {"min_tail": 1}, ValueError),
        (np.ones(60), {"min_tail": True}, TypeError),
    ],
)
def test_power_law_alpha_rejects_bad_arguments(
    arg: object, kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error, match="power_law_alpha"):
        WF.power_law_alpha(arg, **kwargs)  # type: ignore[arg-type]


# --- max_cosine ---


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_max_cosine_identical_rows_is_one(dtype: torch.dtype) -> None:
    rows = 40
    weight = torch.randn(1, 30).to(dtype).expand(rows, 30)
    best, pairs = WF.max_cosine(weight)
    assert float(best) == pytest.approx(1.0, abs=1e-6)
    assert int(pairs) == rows * (rows - 1) // 2


def test_max_cosine_constant_init_flags_every_pair() -> None:
    best, pairs = WF.max_cosine(torch.full((16, 9), 0.05))
    assert float(best) == pytest.approx(1.0, abs=1e-6) and int(pairs) == 120


def test_max_cosine_random_rows_match_reference_and_stay_low() -> None:
    weight = torch.from_numpy(random_matrix("gaussian", (300, 64), seed=11))
    best, pairs = WF.max_cosine(weight)
    want_best, want_pairs = WR.max_cosine(weight.numpy())
    assert float(best) == pytest.approx(want_best, abs=1e-12)
    assert float(best) < 0.8 and int(pairs) == want_pairs == 0


def test_max_cosine_blocks_agree_with_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = torch.from_numpy(random_matrix("uniform", (103, 5), seed=4))
    weight[40] = weight[90] * 3.0
    weight[7] = 0.0
    whole = WF.max_cosine(weight, bound=0.9)
    monkeypatch.setattr(WF, "_COSINE_BLOCK", 10)
    blocked = WF.max_cosine(weight, bound=0.9)
    assert float(blocked[0]) == float(whole[0]) == pytest.approx(1.0)
    assert int(blocked[1]) == int(whole[1]) == WR.max_cosine(weight.numpy(), bound=0.9)[1]


class _LargestTensor(TorchFunctionMode):
    """Records the element count of the largest tensor any torch call returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_function__(
        self,
        func: Callable[..., object],
        types: object,
        args: tuple[object, ...] = (),
        kwargs: dict[str, object] | None = None,
    ) -> object:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_max_cosine_memory_bounded_by_tiles_not_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # A block of `tile` rows against all rows would be 64 x 2500 cosines; tiles
    # over both dimensions keep every temporary within tile² or the weight's size.
    tile, rows, cols = 64, 2500, 3
    weight = torch.from_numpy(random_matrix("gaussian", (rows, cols), seed=5))
    weight[2100] = weight[17] * 2.0
    monkeypatch.setattr(WF, "_COSINE_BLOCK", tile)
    with _LargestTensor() as largest:
        best, pairs = WF.max_cosine(weight, bound=0.99)
    assert largest.numel <= max(rows * cols, tile * tile)
    want_best, want_pairs = WR.max_cosine(weight.numpy(), bound=0.99)
    assert float(best) == pytest.approx(want_best, abs=1e-12) == pytest.approx(1.0)
    assert int(pairs) == want_pairs


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]], (0.0, 0)),
        ([[1.0, 0.0], [-2.0, 0.0], [0.0, 0.0]], (-1.0, 0)),
        ([[1.0, 0.0], [math.nan, 0.0], [0.0, 1.0]], (0.0, 0)),
        ([[1.0, 2.0]], (0.0, 0)),
        ([[0.0, 0.0], [0.0, 0.0]], (0.0, 0)),
    ],
)
def test_max_cosine_leaves_out_zero_and_nonfinite_rows(
    rows: list[list[float]], expected: tuple[float, int]
) -> None:
    best, pairs = WF.max_cosine(torch.tensor(rows))
    assert (float(best), int(pairs)) == expected


def test_max_cosine_empty_matrix_is_zero() -> None:
    best, pairs = WF.max_cosine(torch.empty(0, 4))
    assert (float(best), int(pairs)) == (0.0, 0)


def test_max_cosine_rejects_bound_outside_range() -> None:
    with pytest.raises(
        ValueError, match=r"max_cosine: bound must be a real number in \[-1.0, 1.0\]"
    ):
        WF.max_cosine(torch.ones(2, 2), bound=1.5)
