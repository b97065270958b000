"""Weight statistics for inspection and monitoring, computed on the weight's device.

* :func:`weight_stats`: mean, std, L1, L2, max|w|, zero fraction, excess
  kurtosis and NaN/Inf counts of any tensor, in one float64 vector, in one
  pass over the data, without a host sync.
* :func:`sigma_max`, :func:`stable_rank`, :func:`singular_values`: the
  spectral norm of a matrix to a relative tolerance, ‖W‖_F²/σ², the full
  spectrum.
* :func:`power_law_alpha`: the tail exponent of the eigenvalue spectrum
  (WeightWatcher's α).
* :func:`max_cosine`: near-identical rows (the symmetry problem).

Every function has a NumPy twin of the same name in
:mod:`weightops.reference.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor

from weightops._checks import check_real, check_weight, fail
from weightops._stat_names import STAT_NAMES

__all__ = [
    "STAT_NAMES",
    "max_cosine",
    "power_law_alpha",
    "sigma_max",
    "singular_values",
    "stable_rank",
    "weight_stats",
]

#: Elements per chunk of :func:`weight_stats`. On a CPU a chunk's float64
#: copy and its temporaries (4 x 256 KiB) stay in cache while the reductions
#: read them (twice this was 4x slower on a 2-core machine); on an
#: accelerator fewer, larger chunks mean fewer kernel launches.
_CPU_CHUNK = 1 << 15
_DEVICE_CHUNK = 1 << 22

#: A standard deviation below this times max|w| is rounding noise of the
#: mean (64 float64 ulps: the error of summing up to 2^63 values pairwise).
_SPREAD_FLOOR = 64 * 2.0**-52
#: Vectors per block of :func:`sigma_max`'s Krylov iteration.
_BLOCK = 4
#: Basis vectors kept before :func:`sigma_max` restarts.
_MAX_BASIS = 128
#: Steps between two convergence checks (each check is one host sync).
_CHECK_EVERY = 2
#: Seed of :func:`sigma_max`'s start vector: a private generator, so the
#: result never depends on (or changes) the global RNG.
_START_SEED = 0x5EED
#: Largest binary exponent of max|W| that :func:`sigma_max` iterates on unscaled.
_SCALE_FREE = 40
#: Rows (and columns) per tile of :func:`max_cosine`'s cosine matrix.
_COSINE_BLOCK = 1024


def _chunks(t: Tensor, size: int) -> Iterator[Tensor]:
    """1-D pieces of ``t`` of at most ``size`` elements (about ``size`` when it is
    large), together covering it once, without copying a contiguous tensor.

    A non-contiguous tensor is cut along its first dimension until the pieces
    are contiguous or small, so no copy is ever larger than one chunk.
    """
    if t.numel() <= size or t.is_contiguous():
        yield from torch.split(t.reshape(-1), size)
        return
    if t.ndim > 1:
        # The statistics ignore element order: read in memory order, so a
        # transposed view is contiguous again instead of a strided gather.
        order = sorted(range(t.ndim), key=lambda i: (t.stride(i), t.shape[i]), reverse=True)
        t = t.permute(order)
        if t.is_contiguous():
            yield from torch.split(t.reshape(-1), size)
            return
    if t.shape[0] == 1:
        yield from _chunks(t[0], size)
        return
    per_row = t.numel() // t.shape[0]
    for piece in torch.split(t, max(1, size // per_row), dim=0):
        yield from _chunks(piece, size)


def _chunk_moments(chunk: Tensor) -> Tensor:
    """Per-chunk sums, as a float64 vector: count of finite values, their sum,
    2nd/3rd/4th moments about the chunk's own mean, L1, max|w|, zeros, NaNs,
    Infs."""
    x = chunk.to(torch.float64)
    if chunk.device.type == "cpu":
        # Reading a CPU scalar is free (no device to wait for), and a finite
        # float64 sum proves every value finite: skip masking and counting,
        # which cost as much as everything else together.
        total = x.sum()
        if math.isfinite(total.item()):
            n = torch.tensor(float(x.numel()), dtype=torch.float64)
            zero = torch.zeros((), dtype=torch.float64)
            return _moments(chunk, x, total, x - total / x.numel(), n, zero, zero)
    finite = torch.isfinite(x)
    n = finite.sum().to(torch.float64)
    nans = torch.isnan(x).sum().to(torch.float64)
    x = torch.where(finite, x, 0.0)
    total = x.sum()
    d = torch.where(finite, x - total / n.clamp(min=1), 0.0)
    return _moments(chunk, x, total, d, n, nans, chunk.numel() - n - nans)


def _moments(
    chunk: Tensor, x: Tensor, total: Tensor, d: Tensor, n: Tensor, nans: Tensor, infs: Tensor
) -> Tensor:
    """:func:`_chunk_moments` from the finite values ``x`` (others zeroed),
    their sum, and their deviations ``d`` from their mean (others zeroed)."""
    # Products and sums, not torch.dot: BLAS dot threads on its own and, on a
    # busy machine, took 100x longer on a chunk this small.
    d2 = d * d
    a = x.abs()
    return torch.stack(
        [
            n,
            total,
            d2.sum(),
            (d2 * d).sum(),
            (d2 * d2).sum(),
            a.sum(),
            a.amax(),
            (chunk.numel() - torch.count_nonzero(chunk)).to(torch.float64),
            nans,
            infs,
        ]
    )


def weight_stats(weight: Tensor) -> Tensor:
    """Summary statistics of a tensor, as one float64 vector on its device.

    Entries, named by :data:`STAT_NAMES`, over the ``n`` finite values ``w``
    (NaN and ±Inf are counted and left out of everything else):

    .. math::
        \\mu = \\tfrac1n \\textstyle\\sum w, \\quad
        \\sigma = \\sqrt{\\tfrac1n \\textstyle\\sum (w-\\mu)^2}, \\quad
        \\kappa = \\frac{\\frac1n \\sum (w-\\mu)^4}{\\sigma^4} - 3

    ``mean``, ``std`` (population, ddof=0), ``l1`` (Σ|w|), ``l2``
    (√Σw²), ``max_abs``, ``zero_fraction`` (exact zeros ÷ all elements,
    non-finite ones included), ``kurtosis`` (excess, Fisher: 0 for a normal
    distribution), ``nan_count``, ``inf_count``. A spread within the rounding
    error of the mean (σ <= 2^-46·max|w|) counts as none: a constant tensor
    has std and kurtosis exactly 0.
    An empty tensor, or one without finite values, gives 0 for every moment.

    Reads the weight once, in chunks of 32 Ki elements on a CPU (4 Mi on an
    accelerator), each converted to float64 on its own: a 256 MB float32
    weight never has a float64 copy. Each chunk's moments are taken about its
    own mean and merged with the exact identity Σ(w-μ)^k = Σ((w-μ_i)+δ_i)^k,
    so they are as accurate as a two-pass float64 computation. A
    non-contiguous weight is read in memory order (a transposed view costs
    nothing extra); other strided views are copied one chunk at a time.
    No device sync: on an accelerator the vector stays there, to be read with
    other statistics in one transfer. (On a CPU, a chunk whose float64 sum
    is finite skips the NaN/Inf masking; reading a CPU scalar costs nothing.)

    Args:
        weight: any shape (0-size to N-D), any strides; float16, bfloat16,
            float32 or float64.

    Returns:
        A float64 tensor of shape ``(len(STAT_NAMES),)`` on ``weight``'s device.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor.

    >>> s = weight_stats(torch.tensor([1.0, -1.0, 0.0, float("nan")]))
    >>> dict(zip(STAT_NAMES, s.tolist()))  # doctest: +NORMALIZE_WHITESPACE
    {'mean': 0.0, 'std': 0.816496580927726, 'l1': 2.0, 'l2': 1.4142135623730951,
     'max_abs': 1.0, 'zero_fraction': 0.25, 'kurtosis': -1.5, 'nan_count': 1.0,
     'inf_count': 0.0}
    """
    check_weight("weight_stats", weight)
    out = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=weight.device)
    if weight.numel() == 0:
        return out
    size = _CPU_CHUNK if weight.device.type == "cpu" else _DEVICE_CHUNK
    with torch.no_grad():
        parts = torch.stack([_chunk_moments(c) for c in _chunks(weight.detach(), size)])
        n_i, sum_i, m2_i, m3_i, m4_i = parts[:, :5].unbind(1)
        l1, max_abs, zeros, nans, infs = parts[:, 5:].unbind(1)
        n = n_i.sum()
        mean = sum_i.sum() / n.clamp(min=1)
        # Σ(w-μ)^k over a chunk, from its moments about its own mean μ_i:
        # expand (w-μ_i+δ)^k with δ = μ_i - μ; an empty chunk contributes 0.
        delta = torch.where(n_i > 0, sum_i / n_i.clamp(min=1) - mean, 0.0)
        m2 = (m2_i + n_i * delta**2).sum()
        m4 = (m4_i + 4 * delta * m3_i + 6 * delta**2 * m2_i + n_i * delta**4).sum()
        peak = max_abs.max()
        var = m2 / n.clamp(min=1)
        # A spread within the rounding error of the mean is no spread: without
        # this a float64 constant would have std 1e-17 and kurtosis -2.
        spread = var > (_SPREAD_FLOOR * peak) ** 2
        var = torch.where(spread, var, 0.0)
        kurtosis = torch.where(spread, n * m4 / torch.where(spread, m2, 1.0) ** 2 - 3.0, 0.0)
        out = torch.stack(
            [
                mean,
                var.sqrt(),
                l1.sum(),
                # Σw² = Σ(w-μ)² + nμ²: two non-negative terms, no cancellation.
                (m2 + n * mean**2).sqrt(),
                peak,
                zeros.sum() / weight.numel(),
                kurtosis,
                nans.sum(),
                infs.sum(),
            ]
        )
    return out


def _check_matrix(op: str, weight2d: Any) -> None:
    check_weight(op, weight2d, "weight2d")
    if weight2d.ndim != 2:
        fail(op, "weight2d", "2-D (rows, cols)", tuple(weight2d.shape))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_int(op: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        fail(op, name, f"an int >= {low}", value, TypeError)
    if value < low:
        fail(op, name, f"an int >= {low}", value)
    return int(value)


def _extend(block: Tensor, basis: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """Orthonormalize the rows of ``block``, one by one, against the
    orthonormal (or zero) rows of ``basis`` and the rows made before it, by
    classical Gram-Schmidt done twice (one pass loses orthogonality to
    rounding).

    Returns ``(coefficients, rows)``: ``block[i] = Σ_j coefficients[j, i] ·
    [basis; rows][j]`` up to the dropped remainders, and the new rows. A
    remainder of norm at most ``floor``, or at most 64 ulps of the row it came
    from, is rounding noise (the Krylov space is exhausted: an invariant
    subspace, which holds σ₁); its row is zero rather than noise blown up to
    unit length, which would not be orthogonal to the others. No host sync.
    """
    k, b = basis.shape[0], block.shape[0]
    ulps = 64 * torch.finfo(block.dtype).eps
    coefficients = block.new_zeros(k + b, b)
    rows = torch.zeros_like(block)
    for i in range(b):
        w = block[i]
        before = torch.linalg.vector_norm(w)
        for _ in range(2):
            if k:
                c = basis @ w
                w = w - c @ basis
                coefficients[:k, i] += c
            if i:
                c = rows[:i] @ w
                w = w - c @ rows[:i]
                coefficients[k : k + i, i] += c
        norm = torch.linalg.vector_norm(w)
        keep = (norm > floor) & (norm > ulps * before)
        rows[i] = torch.where(keep, w / norm.clamp(min=floor), 0.0)
        coefficients[k + i, i] = torch.where(keep, norm, 0.0)
    return coefficients, rows


def sigma_max(weight2d: Tensor, *, tol: float = 1e-4, max_iter: int = 1000) -> tuple[Tensor, int]:
    """The largest singular value σ₁ = ‖W‖₂ of a matrix, to a relative tolerance.

    Block power iteration accelerated by Krylov (block Golub-Kahan-Lanczos
    with Rayleigh-Ritz): each step multiplies ``W`` and ``Wᵀ`` by a block of 4
    vectors (reading ``W`` twice, as one power iteration does; about twice its
    time on a CPU), and σ̂ is the largest singular value of
    ``W`` projected on the Krylov spaces built so far, which contain the
    power iterates: σ̂ is never below the power-iteration estimate, and never
    above σ₁. Plain power iteration converges like (σ₂/σ₁)^2k and stalls on
    random matrices: on a 4096×4096 Gaussian (σ₂ 0.07% below σ₁) it changes
    by less than 1e-4 per 4 iterations while still 1e-3 low. A block of
    random start vectors, unlike one, almost never starts nearly orthogonal
    to the top singular vector, the way a single-vector Lanczos run stops on
    σ₂ (1% of random matrices at tol 1e-2). Bases are reorthogonalized fully
    and restarted from the best 4 vectors every 128 vectors. A 4096×4096
    float32 Gaussian takes 44 steps at ``tol=1e-4`` (0.85 s on one CPU core).

    Runs in float32 (float64 for a float64 input) on the weight's device from
    fixed start vectors (a private seeded generator: deterministic, the
    global RNG untouched). Host syncs: one read of max|W| first (a zero or
    non-finite matrix returns at once; a matrix beyond 2^±40 is rescaled by a
    power of two), then one every 2 steps, where iteration stops once the
    Ritz residual ‖Wᵀũ - σ̂ṽ‖ (free from the projected matrix) is at most
    ``tol``·σ̂ (a singular value of ``W`` then lies within ``tol``·σ̂ of σ̂),
    or when the bases span a whole row or column space (σ̂ exact), or after
    ``max_iter`` steps. The residual is a stricter test than the change of
    σ̂, which also stalls on clustered top singular values.

    Accuracy, tested against ``scipy.linalg.svdvals`` on Gaussian, uniform,
    non-negative and low-rank-plus-noise matrices, tall, wide and square, for
    ``tol`` from 1e-2 to 1e-6:
    ``σ₁·(1 - tol) - 10·ε·σ₁ <= σ̂ <= σ₁·(1 + 10·ε)``, ε the compute dtype's
    machine epsilon.

    Args:
        weight2d: (rows, cols); float16, bfloat16, float32 or float64.
        tol: the relative residual that ends the iteration, in (0, 1).
        max_iter: the most steps, >= 1.

    Returns:
        ``(sigma, iterations)``: σ̂ as a 0-d float64 tensor on the weight's
        device (0 for an empty or zero matrix; NaN or Inf only for a
        non-finite matrix), and the number of steps (each one product of
        ``W`` and one of ``Wᵀ`` with a block of up to 4 vectors; 0 for an
        empty, zero or non-finite matrix).

    Raises:
        TypeError: ``weight2d`` is not a floating-point tensor; ``max_iter`` is
            not an int.
        ValueError: ``weight2d`` is not 2-D; ``tol`` or ``max_iter`` out of range.

    >>> s, iterations = sigma_max(torch.diag(torch.tensor([3.0, 1.0, 0.5])))
    >>> round(float(s), 4), iterations
    (3.0, 1)
    """
    op = "sigma_max"
    _check_matrix(op, weight2d)
    check_real(op, "tol", tol, low=0.0, high=1.0, low_open=True)
    max_iter = _check_int(op, "max_iter", max_iter, 1)
    device = weight2d.device
    rows, cols = weight2d.shape
    if rows == 0 or cols == 0:
        return torch.zeros((), dtype=torch.float64, device=device), 0
    dtype = _compute_dtype(weight2d.dtype)
    with torch.no_grad():
        a = weight2d.detach().to(dtype)
        # One read on the host before iterating: a zero or non-finite matrix
        # needs no iteration, and a matrix of tiny (or huge) values is scaled
        # by a power of two (exact) so that no vector norm underflows.
        peak = float(a.abs().amax())
        if peak == 0.0 or not math.isfinite(peak):
            return _finish(peak, device), 0
        exponent = math.frexp(peak)[1]
        if abs(exponent) > _SCALE_FREE:
            # In two factors: 2^-exponent itself may be beyond float32's range.
            half = -exponent // 2
            a = a * math.ldexp(1.0, half) * math.ldexp(1.0, -exponent - half)
            peak = math.ldexp(peak, -exponent)
        else:
            exponent = 0
        floor = 8 * torch.finfo(dtype).eps * peak
        b = min(_BLOCK, rows, cols)
        generator = torch.Generator().manual_seed(_START_SEED)
        start = torch.linalg.qr(torch.randn(cols, b, generator=generator, dtype=torch.float64))
        pending = start.Q.T.to(device, dtype)
        per_cycle = -(-min(_MAX_BASIS, rows, cols) // b)  # steps before a restart
        steps = 0
        while True:
            cycle = min(per_cycle, max_iter - steps)
            vs = torch.zeros(cycle * b, cols, dtype=dtype, device=device)
            us = torch.zeros(cycle * b, rows, dtype=dtype, device=device)
            # projected[i, j] = u_i · W v_j, filled column block by column block.
            projected = torch.zeros(cycle * b, cycle * b, dtype=dtype, device=device)
            n = 0
            for step in range(cycle):
                vs[n : n + b] = pending
                c, us[n : n + b] = _extend(pending @ a.T, us[:n], floor)
                projected[: n + b, n : n + b] = c
                # Wᵀ u for the new u: its part outside the done v's is the
                # next block, and its coefficients there are the residual.
                c, pending = _extend(us[n : n + b] @ a, vs[: n + b], floor)
                outside = c[n + b :]
                n += b
                steps += 1
                exhausted = n >= rows or n >= cols
                if exhausted or (step + 1) % _CHECK_EVERY == 0 or step + 1 == cycle:
                    sigma, residual, right = _ritz(projected[:n, :n], outside, exhausted)
                    if exhausted or residual <= tol * sigma or steps >= max_iter:
                        return _finish(math.ldexp(sigma, exponent), device), steps
            # Restart from the best b right Ritz vectors (orthonormal).
            pending = right.to(device, dtype) @ vs


def _ritz(projected: Tensor, outside: Tensor, exhausted: bool) -> tuple[float, float, Tensor]:
    """σ̂, the top singular value of the projected matrix ``Uᵀ W V``; the Ritz
    residual ‖outside · x_new‖ (``x`` its left singular vector, ``x_new`` its
    entries on the newest u block); the top right singular vectors (one per
    row of ``outside``), on the host in float64: the check's one sync.

    When ``exhausted`` (``U`` spans all rows or ``V`` all columns), ``W`` in
    the bases is ``[Uᵀ W V | outsideᵀ]`` exactly, and σ̂ is its top singular
    value (``outside`` in its newest rows).

    torch's SVD, not NumPy's: NumPy's BLAS threads and torch's would take
    turns spinning on the same cores (25x slower on two busy cores).
    """
    n, b = projected.shape[0], outside.shape[0]
    both = torch.cat([projected.reshape(-1), outside.reshape(-1)]).to("cpu", torch.float64)
    t = both[: n * n].reshape(n, n)
    coupling = both[n * n :].reshape(b, b)
    if exhausted:
        extended = torch.zeros(n, n + b, dtype=torch.float64)
        extended[:, :n] = t
        extended[n - b :, n:] = coupling.T
        return float(torch.linalg.svdvals(extended)[0]), 0.0, extended.new_zeros(b, n)
    u, s, vt = torch.linalg.svd(t)
    residual = float(torch.linalg.vector_norm(coupling @ u[n - b :, 0]))
    return float(s[0]), residual, vt[:b]


def _finish(sigma: float, device: torch.device) -> Tensor:
    return torch.tensor(sigma, dtype=torch.float64, device=device)


def _frobenius_squared(weight: Tensor) -> Tensor:
    size = _CPU_CHUNK if weight.device.type == "cpu" else _DEVICE_CHUNK
    total = torch.zeros((), dtype=torch.float64, device=weight.device)
    for chunk in _chunks(weight.detach(), size):
        x = chunk.to(torch.float64)
        total = total + (x * x).sum()
    return total


def stable_rank(weight2d: Tensor, sigma: Tensor) -> Tensor:
    """The stable rank ‖W‖_F² / σ₁², a smooth lower bound of the rank.

    ``‖W‖_F²`` is accumulated in float64 chunk by chunk (no float64 copy of
    ``W``); ``sigma`` is σ₁ as from :func:`sigma_max`. Between 1 and
    ``rank(W)`` when ``sigma`` is exact; 0 for a zero matrix (``sigma == 0``).
    No host sync.

    Args:
        weight2d: (rows, cols); float16, bfloat16, float32 or float64.
        sigma: 0-d tensor, the largest singular value of ``weight2d``.

    Returns:
        A 0-d float64 tensor on ``weight2d``'s device.

    Raises:
        TypeError: ``weight2d`` is not a floating-point tensor, or ``sigma``
            not a tensor.
        ValueError: ``weight2d`` is not 2-D, or ``sigma`` has elements other than one.

    >>> w = torch.eye(3)
    >>> float(stable_rank(w, sigma_max(w)[0]))
    3.0
    """
    op = "stable_rank"
    _check_matrix(op, weight2d)
    if not isinstance(sigma, torch.Tensor):
        fail(op, "sigma", "a 0-d tensor", type(sigma).__name__, TypeError)
    if sigma.numel() != 1:
        fail(op, "sigma", "a 0-d tensor", tuple(sigma.shape))
    with torch.no_grad():
        s2 = sigma.detach().reshape(()).to(weight2d.device, torch.float64) ** 2
        frob = _frobenius_squared(weight2d)
        return torch.where(s2 > 0, frob / torch.where(s2 > 0, s2, 1.0), 0.0)


def singular_values(weight2d: Tensor) -> Tensor:
    """All singular values of a matrix, descending (``torch.linalg.svdvals``).

    Float16 and bfloat16 are computed in float32. Costs a full SVD,
    O(rows·cols·min(rows, cols)).

    Args:
        weight2d: (rows, cols); float16, bfloat16, float32 or float64.

    Returns:
        A ``(min(rows, cols),)`` float32 tensor (float64 for float64 input) on
        the weight's device.

    Raises:
        TypeError: ``weight2d`` is not a floating-point tensor.
        ValueError: ``weight2d`` is not 2-D.

    >>> singular_values(torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
    tensor([2., 1.])
    """
    _check_matrix("singular_values", weight2d)
    with torch.no_grad():
        values: Tensor = torch.linalg.svdvals(weight2d.detach().to(_compute_dtype(weight2d.dtype)))
    return values


def _ks_fit(lam: np.ndarray, min_tail: int) -> float | None:
    """α at the xmin minimising the KS distance; ``lam`` sorted ascending, > 0."""
    n = lam.size
    logs = np.log(lam)
    # Σ_{j>=i} ln λ_j for every i: the MLE for each candidate in O(n).
    tail_log_sums = np.cumsum(logs[::-1])[::-1]
    best_d, best_alpha = math.inf, None
    last_start = n - min_tail
    for i in range(last_start + 1):
        if i and lam[i] == lam[i - 1]:
            continue  # ties: the first index of a value has the largest tail
        if lam[i] == lam[-1]:
            break  # every tail value equals xmin: no exponent to fit
        m = n - i
        total = tail_log_sums[i] - m * logs[i]
        alpha = 1.0 + m / float(total)
        cdf = 1.0 - (lam[i:] / lam[i]) ** (1.0 - alpha)
        ranks = np.arange(1, m + 1)
        d = max(float(np.max(ranks / m - cdf)), float(np.max(cdf - (ranks - 1) / m)))
        if d < best_d:
            best_d, best_alpha = d, alpha
    return best_alpha


def power_law_alpha(singular_values: Tensor | np.ndarray, *, min_tail: int = 50) -> float | None:
    """The power-law tail exponent α of the eigenvalue spectrum (WeightWatcher's α).

    The eigenvalues λ = σ² of WᵀW are fitted with a density ∝ λ^-α above
    ``xmin``, as Clauset, Shalizi & Newman (2009): for each candidate ``xmin``
    (each distinct positive λ leaving at least ``min_tail`` values ≥ it) the
    maximum-likelihood exponent

    .. math:: \\alpha = 1 + n \\Big/ \\sum_{\\lambda_i \\ge x_{min}} \\ln(\\lambda_i / x_{min})

    and the Kolmogorov-Smirnov distance between the tail and the fitted CDF
    1 - (λ/xmin)^(1-α); the α with the smallest distance is returned.
    O(n²) time in the number of eigenvalues, on the host in float64.
    Well-trained layers have α around 2-6; α < 2 means a very heavy tail.

    Args:
        singular_values: 1-D, any order, as from :func:`singular_values`;
            a tensor (any device) or a NumPy array. Zeros and non-finite values
            are ignored.
        min_tail: the fewest eigenvalues the tail may have, >= 2.

    Returns:
        α as a float; ``None`` when there are fewer than ``min_tail`` positive
        eigenvalues, or when every candidate tail is constant (all equal
        singular values: no tail to fit).

    Raises:
        TypeError: ``singular_values`` is not a tensor or array, or
            ``min_tail`` not an int.
        ValueError: ``singular_values`` is not 1-D, or ``min_tail < 2``.

    >>> rng = np.random.default_rng(0)
    >>> lam = rng.pareto(2.0, 2000) + 1.0  # density ∝ λ^-3
    >>> round(power_law_alpha(np.sqrt(lam)), 1)
    3.0
    >>> power_law_alpha(torch.ones(10)) is None
    True
    """
    op = "power_law_alpha"
    min_tail = _check_int(op, "min_tail", min_tail, 2)
    if isinstance(singular_values, torch.Tensor):
        s = singular_values.detach().to("cpu", torch.float64).numpy()
    elif isinstance(singular_values, np.ndarray):
        s = np.asarray(singular_values, dtype=np.float64)
    else:
        fail(
            op,
            "singular_values",
            "a tensor or NumPy array",
            type(singular_values).__name__,
            TypeError,
        )
    if s.ndim != 1:
        fail(op, "singular_values", "1-D", s.shape)
    lam = np.sort(s[np.isfinite(s)] ** 2)
    lam = lam[lam > 0]
    if lam.size < min_tail:
        return None
    return _ks_fit(lam, min_tail)


def max_cosine(weight2d: Tensor, *, bound: float = 0.999) -> tuple[Tensor, Tensor]:
    """The largest cosine similarity between two rows, and how many pairs exceed ``bound``.

    Rows are units (a Linear layer's output neurons, a conv layer's filters
    flattened): two rows with cosine near 1 compute the same feature, the
    symmetry a constant initialization never breaks.

    .. math:: c = \\max_{i<j} \\frac{w_i \\cdot w_j}{\\lVert w_i\\rVert \\lVert w_j\\rVert}

    Rows that are zero or whose norm is not finite are left out. The cosine
    matrix is computed in 1024 x 1024 tiles of its upper triangle (memory
    O(1024² + rows) besides the normalised copy of the weight, whatever the
    row count), in float32 (float64 for float64 input), clamped to [-1, 1].
    Time stays O(rows²·cols). No host sync.

    Args:
        weight2d: (rows, cols); float16, bfloat16, float32 or float64.
        bound: the cosine above which a pair counts, in [-1, 1].

    Returns:
        ``(max_cos, pairs)``: 0-d tensors on the weight's device, float64 and
        int64; ``(0, 0)`` with fewer than two usable rows.

    Raises:
        TypeError: ``weight2d`` is not a floating-point tensor.
        ValueError: ``weight2d`` is not 2-D, or ``bound`` outside [-1, 1].

    >>> c, pairs = max_cosine(torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0], [2.0, -1.0]]))
    >>> round(float(c), 6), int(pairs)
    (1.0, 1)
    """
    op = "max_cosine"
    _check_matrix(op, weight2d)
    limit = check_real(op, "bound", bound, low=-1.0, high=1.0)
    assert limit is not None
    device = weight2d.device
    rows = weight2d.shape[0]
    best = torch.full((), -math.inf, dtype=torch.float64, device=device)
    pairs = torch.zeros((), dtype=torch.int64, device=device)
    if rows < 2:
        return torch.zeros((), dtype=torch.float64, device=device), pairs
    with torch.no_grad():
        a = weight2d.detach().to(_compute_dtype(weight2d.dtype))
        # Rows scaled to max|w| = 1 first: the squares of tiny (or huge) rows
        # would underflow to a zero norm (or overflow).
        peak = a.abs().amax(dim=1, keepdim=True) if a.shape[1] else a.new_zeros(rows, 1)
        usable = (torch.isfinite(peak) & (peak > 0)).squeeze(1)
        a = a / torch.where(usable[:, None], peak, 1.0)
        norms = torch.linalg.vector_norm(a, dim=1, keepdim=True)
        a = torch.where(usable[:, None], a / norms.clamp(min=1.0), 0.0)
        tile = _COSINE_BLOCK
        # Strictly above the diagonal of a diagonal tile: each pair once, no
        # row with itself.
        upper = torch.ones(tile, tile, dtype=torch.bool, device=device).triu(1)
        # Tiles over both dimensions, upper triangle only: the live cosines
        # are tile x tile whatever the row count (a block of all rows would
        # be GBs for a 128k-row embedding).
        for i in range(0, rows, tile):
            left, left_ok = a[i : i + tile], usable[i : i + tile]
            for j in range(i, rows, tile):
                right, right_ok = a[j : j + tile], usable[j : j + tile]
                cos = (left @ right.T).clamp_(-1.0, 1.0)
                keep = left_ok[:, None] & right_ok[None, :]
                if i == j:
                    keep &= upper[: keep.shape[0], : keep.shape[1]]
                cos.masked_fill_(~keep, -math.inf)
                best = torch.maximum(best, cos.max().to(torch.float64))
                pairs = pairs + (cos > limit).sum()
        enough = usable.sum() >= 2
        return torch.where(enough, best, 0.0), torch.where(enough, pairs, 0)
