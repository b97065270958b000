"""1-D k-means of weight values: the codebook of weight sharing (Deep Compression).

:func:`kmeans` clusters the values of a weight, per tensor or per channel, on a
fine histogram instead of on the values:

1. one pass bins every value: ``B`` uniform bins from min to max per tensor
   or channel (``B`` a power of two, 16 per value up to 2^16, fewer with
   many channels: :func:`histogram_bins`), and per bin its count and its
   float64 sum (``bincount``, the values converted to float64 a chunk at a
   time, so that no float64 copy of the weight is made);
2. Lloyd steps on the bin means weighted by their counts. Bins are ordered,
   so a cluster is a contiguous range of bins, found by a search of the
   centroids' midpoints among the bin means, and its sum and count are two
   differences of prefix sums: O(k log B) a step, whatever the weight's size;
3. the last step works on the values themselves: each value goes to its
   nearest centroid and every centroid becomes the exact mean of its
   members. Only the values of the few bins holding a midpoint need a
   comparison; every other bin lies wholly on one side of each midpoint,
   since the binning is monotone. The same cheap route gives the indices.

Sorting the values (O(n log n)) is never needed, except for ``init="quantile"``.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from weightops._checks import check_dim, check_real, check_weight, fail
from weightops._histogram import MAX_SCALE, histogram_bins

__all__ = ["kmeans"]

#: The most centroids.
MAX_K = 1 << 16
INITS = ("linear", "quantile", "kmeans++")


#: Values converted to float64 at a time when building the histogram.
CHUNK = 1 << 20


def _check(
    weight: Any,
    k: Any,
    axis: Any,
    init: Any,
    iters: Any,
    tol: Any,
    preserve_zero: Any,
    generator: Any,
) -> tuple[int | None, int, int]:
    """Every check that needs no pass over the values; returns (axis, groups, n)."""
    op = "kmeans"
    check_weight(op, weight)
    if isinstance(k, bool) or not isinstance(k, Integral):
        fail(op, "k", f"an int in [1, {MAX_K}]", k, TypeError)
    if not 1 <= k <= MAX_K:
        fail(op, "k", f"an int in [1, {MAX_K}]", k)
    dim = check_dim(op, axis, weight.ndim, name="axis", optional=True)
    groups = 1 if dim is None else weight.shape[dim]
    n = weight.numel() // groups if groups else 0
    if n and k > n:
        where = "in the tensor" if dim is None else "per channel"
        fail(op, "k", f"at most the number of values {where} ({n})", k)
    if isinstance(init, Tensor):
        shapes = [(k,)] if dim is None else [(k,), (groups, k)]
        if init.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            fail(op, "init", "a floating-point tensor", init.dtype, TypeError)
        if tuple(init.shape) not in shapes:
            fail(op, "init", f"a tensor of shape {' or '.join(map(str, shapes))}", init.shape)
        if not bool(torch.isfinite(init).all()):
            fail(op, "init", "finite", "a tensor with NaN or inf")
    elif init not in INITS:
        fail(op, "init", f"one of {INITS} or a tensor of centroids", init)
    if isinstance(iters, bool) or not isinstance(iters, Integral):
        fail(op, "iters", "an int >= 1", iters, TypeError)
    if iters < 1:
        fail(op, "iters", "an int >= 1", iters)
    check_real(op, "tol", tol, low=0.0)
    if not isinstance(preserve_zero, bool):
        fail(op, "preserve_zero", "a bool", preserve_zero, TypeError)
    if generator is not None and not isinstance(generator, torch.Generator):
        fail(op, "generator", "a torch.Generator or None", type(generator).__name__, TypeError)
    return dim, groups, n


def _update(c: Tensor, counts: Tensor, sums: Tensor, fixed: Tensor | None) -> Tensor:
    """Cluster means; an empty cluster keeps its centroid, the fixed zero stays 0."""
    new = torch.where(counts > 0, sums / counts, c)
    # A no-op in exact arithmetic (1-D Lloyd keeps centroids in order); it
    # keeps the midpoints sorted for the searches when rounding is not.
    new = torch.cummax(new, dim=1).values
    if fixed is not None:
        new = new.masked_fill(fixed, 0.0)
    return new


def _kmeans_pp(means: Tensor, counts: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """k-means++ on the histogram: D² sampling of bin means weighted by their counts."""
    groups, bins = means.shape
    u = torch.rand((groups, k), generator=generator, dtype=torch.float64, device=means.device)
    chosen = torch.empty((groups, k), dtype=torch.float64, device=means.device)
    rows = torch.arange(groups, device=means.device)
    by_count = torch.cumsum(counts, dim=1)
    d2 = torch.ones_like(means)
    for j in range(k):
        if j == 0:
            cdf = by_count
        else:
            cdf = torch.cumsum(counts * d2, dim=1)
            # Every weighted bin already on a centroid: draw by counts again.
            cdf = torch.where(cdf[:, -1:] <= 0, by_count, cdf)
        target = u[:, j : j + 1] * cdf[:, -1:]
        pick = torch.searchsorted(cdf, target, right=True)[:, 0].clamp_(max=bins - 1)
        chosen[:, j] = means[rows, pick]
        gap = (means - chosen[:, j : j + 1]) ** 2
        d2 = gap if j == 0 else torch.minimum(d2, gap)
    return chosen.sort(dim=1).values


def _initial(
    x: Tensor,
    k: int,
    init: str | Tensor,
    lo: Tensor,
    hi: Tensor,
    means: Tensor,
    counts: Tensor,
    generator: torch.Generator | None,
) -> Tensor:
    groups, n = x.shape
    if isinstance(init, Tensor):
        c = init.detach().to(device=x.device, dtype=torch.float64).expand(groups, k)
        return c.sort(dim=1).values
    if init == "linear":
        step = (hi - lo) / (k - 1) if k > 1 else torch.zeros_like(lo)
        ramp = torch.arange(k, dtype=torch.float64, device=x.device)
        return lo[:, None] + ramp * step[:, None]
    if init == "quantile":
        ordered = x.sort(dim=1).values.to(torch.float64)
        pos = (torch.arange(k, dtype=torch.float64, device=x.device) + 0.5) / k * (n - 1)
        below = pos.floor().long()
        above = (below + 1).clamp_(max=n - 1)
        a, b = ordered[:, below], ordered[:, above]
        return a + (pos - below) * (b - a)
    return _kmeans_pp(torch.where(counts > 0, means, 0.0), counts, k, generator)


def _bin_of(v: Tensor, lo: Tensor, scale: Tensor, bins: int) -> Tensor:
    """The bins of ``v`` (groups, m): ``min(floor((v - lo) · scale), bins - 1)``, -1 below ``lo``.

    Values are binned by the same map (truncation is the floor there, as
    ``v >= lo``). It is monotone, so a value in a bin below (above) a
    midpoint's bin is below (above) the midpoint: only the values sharing a
    bin with a midpoint need a comparison.
    """
    return ((v - lo[:, None]) * scale[:, None]).floor_().clamp_(-1, bins - 1).long()


def _marked(at: Tensor, bins: int, spread: int = 0) -> Tensor:
    """(groups, bins) bool: the bins ``at`` (groups, m; -1 for none) and ``spread`` either side."""
    width = bins + 1 + 2 * spread
    full = torch.zeros((at.shape[0], width), dtype=torch.bool, device=at.device)
    for d in range(2 * spread + 1):
        full.scatter_(1, at + 1 + d, True)
    return full[:, 1 + spread : 1 + spread + bins].contiguous()


def _clusters_of_bins(at: Tensor, bins: int) -> Tensor:
    """(groups, bins): the number of midpoints in bins below each bin, which is
    the cluster of every value of a bin that holds none (``at`` as above)."""
    held = torch.zeros((at.shape[0], bins + 1), dtype=torch.int64, device=at.device)
    held.scatter_add_(1, at + 1, torch.ones_like(at))
    return torch.cumsum(held[:, :bins], dim=1)


def _picked(x: Tensor, flat: Tensor, bins: Tensor) -> tuple[Tensor, Tensor]:
    """The flat positions of the values in the marked ``bins``, and the values."""
    where = torch.index_select(bins.view(-1), 0, flat).nonzero().view(-1)
    return where, torch.index_select(x.view(-1), 0, where).to(torch.float64)


def _chunked_bincount(flat: Tensor, weights: Tensor, size: int) -> Tensor:
    """``bincount(flat, weights)`` in float64, converting ``weights`` a chunk
    at a time (no float64 copy of the whole weight)."""
    total = torch.zeros(size, dtype=torch.float64, device=flat.device)
    for at in range(0, flat.numel(), CHUNK):
        part = weights[at : at + CHUNK].to(torch.float64)
        total += torch.bincount(flat[at : at + CHUNK], part, minlength=size)
    return total


def _search(mids: Tensor, values: Tensor, where: Tensor, n: int) -> Tensor:
    """The number of midpoints below each value (at ``where`` in rows of ``n``)."""
    groups = mids.shape[0]
    if groups == 1:
        return torch.searchsorted(mids[0], values)
    # One row per group, padded with +inf: a batched search.
    group = torch.div(where, n, rounding_mode="floor")
    per_group = torch.bincount(group, minlength=groups)
    start = torch.cumsum(per_group, 0) - per_group
    rank = torch.arange(where.numel(), device=values.device) - start[group]
    width = int(per_group.max()) if where.numel() else 0
    padded = torch.full((groups, width), torch.inf, dtype=values.dtype, device=values.device)
    padded[group, rank] = values
    return torch.searchsorted(mids, padded)[group, rank]


def kmeans(
    weight: Tensor,
    k: int,
    *,
    axis: int | None = None,
    init: str | Tensor = "linear",
    iters: int = 30,
    tol: float = 1e-6,
    preserve_zero: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """1-D k-means of the weight's values: a sorted codebook and each value's index.

    Minimises Σᵢ (wᵢ − c[indexᵢ])² over a codebook of ``k`` values, per tensor
    or separately per channel along ``axis`` (all channels in one batch), by
    Lloyd's iteration from ``init``. The first ``iters - 1`` steps run on a
    histogram of ``B`` bins per tensor or channel (16 per value, at most
    2^16, see :func:`histogram_bins`; a bin joins the cluster of its mean) and
    stop early once no centroid moves by more than ``tol · (max − min)``. The
    last step always runs on the values: exact assignment, exact means in
    float64. Then the codebook is rounded to the weight's dtype and the
    indices are computed against it.

    Guarantees: the codebook is sorted ascending (non-strictly; equal
    centroids can occur when values are few or tied); ``indices[i]`` is the
    index of the centroid of the returned codebook nearest to ``weight[i]``,
    ties to the lower index (exact for float16/bfloat16/float32 weights,
    within float64 rounding for float64), except that with ``preserve_zero``
    every exact zero (either sign) maps to the fixed zero centroid. An empty
    cluster keeps its previous centroid (scipy's ``kmeans2(missing="warn")``
    does the same). A constant weight gives ``k`` equal centroids.

    Centroids are computed in float64 from the values, whatever the weight's
    dtype. Compared with exact Lloyd steps (``scipy.cluster.vq.kmeans2``) the
    histogram steps move values of a bin as one; the inertia reached is
    within a fraction of a percent of exact Lloyd's from the same start.

    Args:
        weight: any shape; float16, bfloat16, float32 or float64; finite. Not
            differentiated through (the values are clustered under
            ``detach``).
        k: the number of centroids, an int in [1, 2^16], at most the number
            of values per tensor (per channel with ``axis``) unless there are
            none.
        axis: ``None`` for one codebook, or the dim whose every index (channel)
            gets its own.
        init: the initial centroids: ``"linear"`` (``k`` evenly spaced from
            min to max, Deep Compression's choice), ``"quantile"`` (the
            ``(j + 0.5)/k`` quantiles, linearly interpolated like
            ``numpy.quantile``; sorts the values), ``"kmeans++"`` (D² sampling
            of the histogram's bin means weighted by their counts, using
            ``generator``), or a float tensor of shape ``(k,)`` or ``(C, k)``
            (sorted before use).
        iters: the most Lloyd steps, an int >= 1.
        tol: the early stop, relative to each tensor's or channel's range;
            0 stops only at a fixed point.
        preserve_zero: fix one centroid at exactly 0.0 (the initial centroid
            nearest 0 is replaced by it), never updated. Exact zeros map to it
            and do not count towards any other centroid, so pruned weights
            stay pruned by ``codebook[indices]``.
        generator: the random source of ``init="kmeans++"``; the same seed
            gives the same codebook.

    Returns:
        ``(codebook, indices)``: the codebook in the weight's dtype on its
        device, shape ``(k,)``, or ``(C, k)`` with ``C = weight.shape[axis]``;
        the indices, int64 of the weight's shape. An empty weight gives a
        zero codebook (or the sorted ``init`` tensor) and empty indices.

    Raises:
        TypeError: ``weight`` is not a float tensor; ``k``, ``iters``,
            ``axis``, ``tol``, ``preserve_zero``, ``generator`` or ``init``
            of the wrong type.
        ValueError: ``k`` out of range or above the number of values;
            ``axis`` out of range; an unknown ``init`` or one of the wrong
            shape; ``iters < 1``; ``tol < 0``; a non-finite weight or
            ``init``; a float64 weight whose range overflows.

    Differs from ``scipy.cluster.vq.kmeans2``: 1-D only, sorted codebook,
    ties to the lower index, histogram steps but for the last, and the
    indices match the returned codebook (kmeans2's labels are those of the
    codebook before its last update).

    >>> w = torch.tensor([0.0, 0.1, 0.2, 1.0, 1.1, 1.2])
    >>> codebook, indices = kmeans(w, 2)
    >>> codebook
    tensor([0.1000, 1.1000])
    >>> indices
    tensor([0, 0, 0, 1, 1, 1])
    """
    dim, groups, n = _check(weight, k, axis, init, iters, tol, preserve_zero, generator)
    device, dtype = weight.device, weight.dtype
    w = weight.detach()
    rows = w.reshape(1, n) if dim is None else w.movedim(dim, 0).reshape(groups, n)
    if rows.numel() == 0:
        empty = torch.zeros((groups, k), dtype=dtype, device=device)
        if isinstance(init, Tensor):
            empty = init.detach().to(device, dtype).expand(groups, k).sort(dim=1).values
        indices = torch.zeros(w.shape, dtype=torch.int64, device=device)
        return (empty[0] if dim is None else empty), indices

    lo, hi = torch.aminmax(rows, dim=1) if groups > 1 else torch.aminmax(rows.view(-1))
    lo, hi = lo.view(groups), hi.view(groups)
    # The one host sync: aminmax propagates NaN, and an inf shows as a bound.
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        fail("kmeans", "weight", "finite", "a tensor with NaN or inf")
    # The values in their own dtype: float64 copies are made a chunk at a time
    # (a float64 copy of a large weight would double kmeans' memory).
    x = rows.contiguous()
    lo, hi = lo.double(), hi.double()
    span = hi - lo
    if not bool(torch.isfinite(span).all()):
        fail("kmeans", "weight", "values with a finite range (max - min)", "an overflowing range")
    bins = histogram_bins(n, groups)
    scale = torch.where(span > 0, bins / span, 0.0).clamp_(max=MAX_SCALE)

    # The indices' memory serves first for the bins' float64 scratch: on the
    # CPU a fresh buffer of this size costs page faults worth several passes.
    indices = torch.empty((groups, n), dtype=torch.int64, device=device)
    scratch = torch.sub(x, lo[:, None], out=indices.view(torch.float64))
    # Bins: v - lo >= 0, so truncation is the floor.
    flat = scratch.mul_(scale[:, None]).clamp_(max=bins - 1).to(torch.int32)
    del scratch
    if groups > 1:
        flat += torch.arange(0, groups * bins, bins, dtype=torch.int32, device=device)[:, None]
    flat = flat.view(-1)
    members = (x != 0).view(-1) if preserve_zero else None
    if members is None:
        counts = torch.bincount(flat, minlength=groups * bins).to(torch.float64)
    else:
        counts = _chunked_bincount(flat, members, groups * bins)
    sums = _chunked_bincount(flat, x.view(-1), groups * bins)
    counts, sums = counts.view(groups, bins), sums.view(groups, bins)
    means = torch.where(counts > 0, sums / counts, -torch.inf)

    c = _initial(x, k, init, lo, hi, means, counts, generator)
    fixed: Tensor | None = None
    if preserve_zero:
        nearest = c.abs().argmin(dim=1, keepdim=True)
        c = c.scatter(1, nearest, 0.0).sort(dim=1).values
        zero = (c < 0).sum(dim=1, keepdim=True)
        fixed = torch.arange(k, device=device) == zero

    zeros = torch.zeros((groups, 1), dtype=torch.float64, device=device)
    prefix_counts = torch.cat([zeros, torch.cumsum(counts, dim=1)], dim=1)
    prefix_sums = torch.cat([zeros, torch.cumsum(sums, dim=1)], dim=1)
    ends = torch.full((groups, 1), bins, dtype=torch.int64, device=device)
    limit = tol * span

    def step(c: Tensor) -> Tensor:
        """One Lloyd step on the histogram: a bin joins the cluster of its mean.

        The bins below a midpoint's bin lie below it, those above above it, so
        only the mean of the midpoint's own bin is compared: the cut is
        ``searchsorted(means, mids, right=True)`` (the twin's form), without
        the search.
        """
        mids = (c[:, :-1] + c[:, 1:]) * 0.5
        at = _bin_of(mids, lo, scale, bins)
        own = means.gather(1, at.clamp(min=0)) <= mids
        cut = torch.where(at < 0, 0, at + own)
        bounds = torch.cat([torch.zeros_like(ends), cut, ends], dim=1)
        n_in = torch.diff(prefix_counts.gather(1, bounds), dim=1)
        s_in = torch.diff(prefix_sums.gather(1, bounds), dim=1)
        return _update(c, n_in, s_in, fixed)

    for _ in range(iters - 1):
        new = step(c)
        done = bool(((new - c).abs().amax(dim=1) <= limit).all())
        c = new
        if done:
            break

    # The last step on the values. The values of the bins holding a midpoint
    # are taken one by one, and so are those of the bins likely to hold the
    # final codebook's midpoints (those after one more histogram step, and
    # their neighbours), so that one pass usually serves both assignments.
    # Every other bin goes whole to the cluster between the midpoints' bins.
    mids = (c[:, :-1] + c[:, 1:]) * 0.5
    at = _bin_of(mids, lo, scale, bins)
    ahead = _bin_of((lambda d: (d[:, :-1] + d[:, 1:]) * 0.5)(step(c)), lo, scale, bins)
    near = _marked(torch.cat([at, ahead], dim=1), bins, spread=1)
    where, values = _picked(x, flat, near)
    cluster = _search(mids, values, where, n)
    whole_counts = torch.cat([zeros, torch.cumsum(counts.masked_fill(near, 0), dim=1)], dim=1)
    whole_sums = torch.cat([zeros, torch.cumsum(sums.masked_fill(near, 0), dim=1)], dim=1)
    # Cluster j's whole bins lie strictly between the bins of midpoints j-1 and j.
    lower = torch.cat([torch.zeros_like(ends), at + 1], dim=1)
    upper = torch.cat([at.clamp(min=0), ends], dim=1)
    n_in = whole_counts.gather(1, upper) - whole_counts.gather(1, lower)
    s_in = whole_sums.gather(1, upper) - whole_sums.gather(1, lower)
    member = torch.div(where, n, rounding_mode="floor") * k + cluster
    ones = torch.ones_like(values)
    n_in = n_in.view(-1).index_add_(
        0, member, ones if members is None else members[where].to(torch.float64)
    )
    s_in = s_in.view(-1).index_add_(0, member, values)
    codebook = _update(c, n_in.view(groups, k), s_in.view(groups, k), fixed).to(dtype)

    # Indices against the codebook as returned.
    final = codebook.to(torch.float64)
    mids = (final[:, :-1] + final[:, 1:]) * 0.5
    at = _bin_of(mids, lo, scale, bins)
    if bool((~near.gather(1, at.clamp(min=0)) & (at >= 0)).any()):
        where, values = _picked(x, flat, _marked(at, bins))
    torch.index_select(_clusters_of_bins(at, bins).view(-1), 0, flat, out=indices.view(-1))
    indices.view(-1)[where] = _search(mids, values, where, n)
    if fixed is not None:
        torch.where(x == 0, fixed.long().argmax(dim=1, keepdim=True), indices, out=indices)
    if dim is None:
        return codebook[0], indices.view(w.shape)
    moved = (groups, *w.shape[:dim], *w.shape[dim + 1 :])
    return codebook, indices.view(moved).movedim(0, dim).contiguous()
