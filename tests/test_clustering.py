"""kmeans: agreement with the NumPy twin, quality against scipy and the optimum, properties."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.cluster.vq import kmeans2, vq

import weightops.functional as WF
import weightops.reference as WR
from weightops.testing import DTYPES, ELEMENTS, assert_matches_reference, shapes, tensors

#: Values that repeat (ties, zeros, constant channels) mixed with arbitrary ones.
REPEATED = st.sampled_from([0.0, -0.0, 0.5, -0.5, 1.0, 3.0])
VALUES = st.one_of(REPEATED, ELEMENTS, ELEMENTS)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.double().cpu().numpy()


def inertia(values: np.ndarray, codebook: np.ndarray, indices: np.ndarray) -> float:
    """Σ (w − codebook[index])², per tensor (1-D codebook) or per row (2-D)."""
    if codebook.ndim == 1:
        return float(np.sum((values - codebook[indices]) ** 2))
    return float(np.sum((values - np.take_along_axis(codebook, indices, axis=1)) ** 2))


def nearest(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """The nearest centroid of each value, ties to the lower index, by float64 midpoints."""
    mids = (codebook[:-1] + codebook[1:]) * 0.5
    return np.searchsorted(mids, values, side="left")


def rows(a: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return a.reshape(1, a.size)
    return np.moveaxis(a, axis, 0).reshape(a.shape[axis], a.size // max(a.shape[axis], 1))


@st.composite
def problems(draw: st.DrawFn, dtype: torch.dtype) -> dict[str, Any]:
    """A small weight and kmeans arguments that fit it."""
    weight = draw(tensors(dtype, shape=shapes(min_dims=1, max_numel=200), elements=VALUES))
    axis = draw(st.none() | st.integers(-weight.ndim, weight.ndim - 1))
    groups = 1 if axis is None else weight.shape[axis]
    n = weight.numel() // groups if groups else 0
    k = draw(st.integers(1, max(1, min(n, 8))))
    init: Any = draw(st.sampled_from(["linear", "quantile", "explicit"]))
    if init == "explicit":
        shape = (k,) if axis is None else draw(st.sampled_from([(k,), (groups, k)]))
        init = torch.from_numpy(draw(_arrays(shape))).to(dtype)
    return {
        "weight": weight,
        "k": k,
        "axis": axis,
        "init": init,
        "iters": draw(st.integers(1, 12)),
        "tol": draw(st.sampled_from([0.0, 1e-6, 1e-2])),
        "preserve_zero": draw(st.booleans()),
    }


def _arrays(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    from hypothesis.extra import numpy as hnp

    return hnp.arrays(np.float64, shape, elements=VALUES)


def assert_same_assignment(
    x: np.ndarray, got: np.ndarray, codebook: np.ndarray, want: np.ndarray, ref: np.ndarray
) -> None:
    """Rows of values ``x``: ``got`` (indices into the op's ``codebook``) equals
    ``want`` (into the reference's ``ref``) except where the op's centroid is,
    for the reference codebook, as near as the reference's own within the two
    codebooks' rounding difference."""
    slack = 2 * float(np.max(np.abs(codebook - ref), initial=0.0)) + 1e-12
    for g in range(x.shape[0]):
        differ = got[g] != want[g]
        if not differ.any():
            continue
        values = x[g][differ]
        mine = np.abs(values - ref[g][got[g][differ]])
        theirs = np.abs(values - ref[g][want[g][differ]])
        assert np.all(mine <= theirs + slack), (values, got[g][differ], want[g][differ])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_kmeans_matches_reference(dtype: torch.dtype, data: st.DataObject) -> None:
    kw = data.draw(problems(dtype))
    weight, init = kw.pop("weight"), kw.pop("init")
    codebook, indices = WF.kmeans(weight, init=init, **kw)
    ref_init = as_numpy(init) if isinstance(init, torch.Tensor) else init
    want_codebook, want_indices = WR.kmeans(as_numpy(weight), init=ref_init, **kw)
    assert_matches_reference(codebook, want_codebook, dtype=dtype)
    assert indices.dtype == torch.int64
    assert indices.shape == weight.shape
    if weight.numel() == 0:
        return
    axis = kw["axis"]
    mine, ref = as_numpy(codebook), want_codebook
    if axis is None:
        mine, ref = mine[None], ref[None]
    assert_same_assignment(
        rows(as_numpy(weight), axis),
        rows(indices.numpy(), axis),
        mine,
        rows(want_indices, axis),
        ref,
    )


def test_kmeans_matches_reference_on_many_values() -> None:
    """Bit for bit up to the last step, so the float64 codebooks agree closely."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 400, generator=g, dtype=torch.float64)
    for axis in (None, 1):
        codebook, indices = WF.kmeans(w, 16, axis=axis, init="quantile")
        want_codebook, want_indices = WR.kmeans(w.numpy(), 16, axis=axis, init="quantile")
        np.testing.assert_allclose(codebook.numpy(), want_codebook, rtol=1e-12, atol=1e-14)
        assert np.mean(indices.numpy() != want_indices) < 1e-4


def _dp_layer(
    previous: np.ndarray, cost: Callable[[np.ndarray, int], np.ndarray], layer: int
) -> np.ndarray:
    """best[i] = min over m of previous[m] + cost(m, i): one more cluster, for
    every prefix of i values, by divide and conquer on the monotone argmin."""
    n = previous.size - 1
    best = np.full(n + 1, np.inf)

    def solve(lo: int, hi: int, opt_lo: int, opt_hi: int) -> None:
        if lo > hi:
            return
        mid = (lo + hi) // 2
        starts = np.arange(max(opt_lo, layer - 1), min(opt_hi, mid - 1) + 1)
        split = opt_lo
        if starts.size:
            totals = previous[starts] + cost(starts, mid)
            j = int(np.argmin(totals))
            best[mid], split = totals[j], int(starts[j])
        solve(lo, mid - 1, opt_lo, split)
        solve(mid + 1, hi, split, opt_hi)

    solve(layer, n, layer - 1, n - 1)
    return best


def dp_optimum(values: np.ndarray, k: int) -> float:
    """The least inertia of ``k`` clusters of 1-D ``values``: the O(k n log n)
    divide-and-conquer dynamic program (optimal split points are monotone)."""
    x = np.sort(values.astype(np.float64))
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])

    def cost(m: np.ndarray, i: int) -> np.ndarray:
        # The inertia of x[m:i] about its mean, for an array of starts m < i.
        total = s1[i] - s1[m]
        return np.maximum((s2[i] - s2[m]) - total * total / (i - m), 0.0)

    with np.errstate(divide="ignore", invalid="ignore"):
        best = np.maximum(s2 - s1 * s1 / np.arange(x.size + 1), 0.0)
    best[0] = np.inf
    for layer in range(2, k + 1):
        best = _dp_layer(best, cost, layer)
    return float(best[x.size])


def test_dp_optimum_matches_brute_force() -> None:
    from itertools import combinations

    x = np.random.default_rng(1).normal(size=9)
    s = np.sort(x)
    best = min(
        sum(float(np.sum((p - p.mean()) ** 2)) for p in np.split(s, list(cuts)))
        for cuts in combinations(range(1, 9), 2)
    )
    assert dp_optimum(x, 3) == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_kmeans_inertia_near_the_optimum(dist: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=10_000) if dist == "normal" else rng.laplace(size=10_000)
    codebook, indices = WF.kmeans(torch.from_numpy(x), 4)
    got = inertia(x, codebook.numpy(), indices.numpy())
    assert got <= 1.001 * dp_optimum(x, 4)


def _samples(dist: str, size: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.normal(size=size) if dist == "normal" else rng.laplace(size=size)
    return x.astype(np.float32)


# kmeans2 warns about its empty clusters, which keep their centroids (as ours do).
@pytest.mark.filterwarnings("ignore:One of the clusters is empty")
@pytest.mark.parametrize(("k", "size"), [(4, 1_000_000), (16, 1_000_000), (256, 100_000)], ids=str)
@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_kmeans_inertia_within_1_percent_of_kmeans2(dist: str, k: int, size: int) -> None:
    """Same initial centroids, same number of steps; kmeans2's codebook judged
    with every value at its nearest centroid (its best case)."""
    x = _samples(dist, size)
    init = np.linspace(x.min(), x.max(), k, dtype=np.float32)
    codebook, indices = WF.kmeans(torch.from_numpy(x), k, init=torch.from_numpy(init), tol=0.0)
    theirs, _ = kmeans2(x, init.copy(), iter=30, minit="matrix", missing="warn")
    values = x.astype(np.float64)
    mine = inertia(values, codebook.double().numpy(), indices.numpy())
    best = inertia(values, theirs.astype(np.float64), vq(x, theirs)[0])
    assert mine <= 1.01 * best


def _drawn(dtype: torch.dtype) -> st.SearchStrategy[torch.Tensor]:
    return tensors(dtype, shape=shapes(min_dims=1, max_numel=300), elements=VALUES)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(data=st.data())
def test_kmeans_indices_are_nearest_ties_low(dtype: torch.dtype, data: st.DataObject) -> None:
    w = data.draw(_drawn(dtype).filter(lambda t: t.numel() > 0))
    k = data.draw(st.integers(1, min(w.numel(), 8)))
    init = data.draw(st.sampled_from(["linear", "quantile", "kmeans++"]))
    codebook, indices = WF.kmeans(w, k, init=init, generator=torch.Generator().manual_seed(0))
    assert codebook.dtype == dtype and codebook.shape == (k,)
    c = as_numpy(codebook)
    assert np.all(np.diff(c) >= 0), "codebook not sorted"
    np.testing.assert_array_equal(indices.numpy().ravel(), nearest(as_numpy(w).ravel(), c))


@given(data=st.data())
def test_kmeans_per_channel_is_per_tensor_of_each_channel(data: st.DataObject) -> None:
    w = data.draw(
        tensors(torch.float32, shape=shapes(min_dims=2, max_dims=3, max_numel=200), elements=VALUES)
    )
    axis = data.draw(st.integers(-w.ndim, w.ndim - 1))
    n = w.numel() // w.shape[axis] if w.shape[axis] else 0
    k = data.draw(st.integers(1, max(1, min(n, 5))))
    codebook, indices = WF.kmeans(w, k, axis=axis, init="quantile")
    assert codebook.shape == (w.shape[axis], k) and indices.shape == w.shape
    for c in range(w.shape[axis] if n else 0):
        channel = w.select(axis, c)
        one, idx = WF.kmeans(channel, k, init="quantile")
        torch.testing.assert_close(codebook[c], one, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(
            indices.select(axis, c).numpy(), nearest(as_numpy(channel), as_numpy(codebook[c]))
        )
        assert idx.shape == channel.shape


def test_kmeans_tie_goes_to_the_lower_index() -> None:
    # 3 is the midpoint of 1 and 5: in the lower cluster, {0, 0, 3} has mean 1
    # (a fixed point); in the upper one the answer would be (0, 4).
    w = torch.tensor([0.0, 0.0, 3.0, 5.0])
    codebook, indices = WF.kmeans(w, 2, init=torch.tensor([1.0, 5.0]))
    assert codebook.tolist() == [1.0, 5.0]
    assert indices.tolist() == [0, 0, 0, 1]


def test_kmeans_equal_centroids_tie_to_the_first() -> None:
    codebook, indices = WF.kmeans(torch.full((3, 4), 2.5), 3)
    assert codebook.tolist() == [2.5, 2.5, 2.5]
    assert not indices.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fill", [0.0, -7.25])
@pytest.mark.parametrize("preserve_zero", [False, True])
def test_kmeans_constant_weight_gives_no_nan(
    dtype: torch.dtype, fill: float, preserve_zero: bool
) -> None:
    for init in ("linear", "quantile", "kmeans++"):
        codebook, indices = WF.kmeans(
            torch.full((6, 5), fill, dtype=dtype), 4, axis=0, init=init, preserve_zero=preserve_zero
        )
        assert not codebook.isnan().any()
        if not preserve_zero:
            assert (codebook == fill).all()
        recon = codebook.gather(1, indices)
        assert (recon == fill).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_kmeans_preserve_zero_keeps_pruned_weights_pruned(
    dtype: torch.dtype, axis: int | None
) -> None:
    g = torch.Generator().manual_seed(4)
    w = torch.randn(40, 30, generator=g)
    w[torch.rand(40, 30, generator=g) < 0.5] = 0.0
    w[0, 0] = -0.0
    w = w.to(dtype)
    codebook, indices = WF.kmeans(w, 6, axis=axis, preserve_zero=True)
    book = codebook if axis is not None else codebook[None]
    assert ((book == 0).sum(dim=1) >= 1).all(), "no zero centroid"
    if axis is None:
        recon = codebook[indices]
    else:
        recon = book.gather(1, indices.movedim(axis, 0).reshape(book.shape[0], -1))
        recon = recon.reshape(indices.movedim(axis, 0).shape).movedim(0, axis)
    assert (recon[w == 0] == 0).all()
    assert (recon[w != 0] != 0).any()


def test_kmeans_preserve_zero_zeros_do_not_pull_other_centroids() -> None:
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 4.0, 5.0, 10.0, 11.0])
    codebook, indices = WF.kmeans(w, 3, preserve_zero=True)
    assert codebook.tolist() == [0.0, 4.5, 10.5]
    assert indices.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]


def test_kmeans_kmeans_plus_plus_is_deterministic_per_generator() -> None:
    w = torch.randn(200, 50, generator=torch.Generator().manual_seed(5))
    runs = [
        WF.kmeans(w, 8, axis=1, init="kmeans++", generator=torch.Generator().manual_seed(s))
        for s in (7, 7)
    ]
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert torch.equal(runs[0][1], runs[1][1])


def test_kmeans_kmeans_plus_plus_quality() -> None:
    x = torch.from_numpy(_samples("laplace", 50_000).astype(np.float64))
    mine = WF.kmeans(x, 16, init="kmeans++", generator=torch.Generator().manual_seed(0))
    linear = WF.kmeans(x, 16)
    values = x.numpy()
    assert inertia(values, mine[0].numpy(), mine[1].numpy()) <= 1.05 * inertia(
        values, linear[0].numpy(), linear[1].numpy()
    )


def test_kmeans_reference_kmeans_plus_plus_is_deterministic() -> None:
    w = np.random.default_rng(6).normal(size=(30, 20))
    a = WR.kmeans(w, 5, axis=0, init="kmeans++", generator=np.random.default_rng(1))
    b = WR.kmeans(w, 5, axis=0, init="kmeans++", generator=np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    assert np.all(np.diff(a[0], axis=1) >= 0)


@pytest.mark.parametrize(
    ("shape", "axis", "book"), [((0,), None, (3,)), ((0, 4), 1, (4, 3)), ((2, 0), 0, (2, 3))]
)
def test_kmeans_empty_weight(
    shape: tuple[int, ...], axis: int | None, book: tuple[int, ...]
) -> None:
    codebook, indices = WF.kmeans(torch.zeros(shape), 3, axis=axis)
    assert codebook.shape == book and (codebook == 0).all()
    assert indices.shape == shape and indices.dtype == torch.int64
    want, _ = WR.kmeans(np.zeros(shape), 3, axis=axis)
    assert want.shape == book


def test_kmeans_does_not_touch_the_weight_or_its_graph() -> None:
    w = torch.randn(10, 10, requires_grad=True)
    before, version = w.detach().clone(), w._version
    codebook, _ = WF.kmeans(w, 4)
    assert torch.equal(w.detach(), before) and w._version == version
    assert not codebook.requires_grad


def test_kmeans_one_centroid_is_the_mean() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=torch.float64)
    assert WF.kmeans(w, 1)[0].tolist() == [3.0]
    assert WF.kmeans(w, 1, axis=0)[0].tolist() == [[1.5], [4.5]]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"weight": [1.0, 2.0]}, TypeError, "weight"),
        ({"weight": torch.arange(4)}, TypeError, "weight"),
        ({"k": 0}, ValueError, "k"),
        ({"k": 2.0}, TypeError, "k"),
        ({"k": True}, TypeError, "k"),
        ({"k": 1 + (1 << 16)}, ValueError, "k"),
        ({"k": 13}, ValueError, "k"),
        ({"k": 4, "axis": 1}, ValueError, "k"),
        ({"axis": 2}, ValueError, "axis"),
        ({"axis": 1.0}, TypeError, "axis"),
        ({"init": "random"}, ValueError, "init"),
        ({"init": torch.zeros(3)}, ValueError, "init"),
        ({"init": torch.zeros(2, 2), "axis": 0}, ValueError, "init"),
        ({"init": torch.tensor([0.0, float("nan")])}, ValueError, "init"),
        ({"init": torch.zeros(2, dtype=torch.int64)}, TypeError, "init"),
        ({"iters": 0}, ValueError, "iters"),
        ({"iters": 2.5}, TypeError, "iters"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"tol": "0"}, TypeError, "tol"),
        ({"preserve_zero": 1}, TypeError, "preserve_zero"),
        ({"generator": 0}, TypeError, "generator"),
        ({"weight": torch.tensor([1.0, float("nan"), 2.0])}, ValueError, "weight"),
        ({"weight": torch.tensor([1.0, float("inf")])}, ValueError, "weight"),
        (
            {"weight": torch.tensor([-1e308, 1e308], dtype=torch.float64)},
            ValueError,
            "weight",
        ),
    ],
)
def test_kmeans_bad_arguments_name_the_argument(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    args: dict[str, Any] = {"weight": torch.randn(3, 4), "k": 2, **kwargs}
    with pytest.raises(error, match=f"^kmeans: {name} must be"):
        WF.kmeans(args.pop("weight"), args.pop("k"), **args)
