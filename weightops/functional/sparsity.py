"""Sparsification: value threshold, exact-count magnitude pruning, N:M.

Every mask is a ``torch.bool`` tensor of the weight's shape on its device,
``True`` where a weight is kept. Apply one with ``torch.where(mask, w, 0)``
(or ``w * mask``, which turns a pruned NaN into NaN, not 0); :func:`sparsify`
applies the value threshold directly, in one pass.

One ordering serves all ranked masks: weights are ranked by ``|w|``, NaN
ranking above every number (``+inf`` included), and among equal magnitudes
the weight with the lower index is pruned first (the row-major index of the
weight's logical shape, whatever its strides). That is a stable ascending
sort of ``|w|`` (NumPy's ``argsort(kind="stable")``, ``torch.sort(stable=True)``)
whose first ``k`` entries are pruned, so the count is exact even when every
weight has the same magnitude.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from weightops._checks import check_dim, check_real, check_weight, fail

__all__ = ["magnitude_mask", "nm_mask", "sparsify", "sparsify_", "threshold_mask"]

_BITS = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


#: Per dtype narrower than float64: its precision in bits, the ``math.frexp``
#: exponent of its smallest normal number, and its largest finite number.
_FORMATS = {
    torch.float16: (11, -13, 65504.0),
    torch.bfloat16: (8, -125, float.fromhex("0x1.fep127")),
    torch.float32: (24, -125, float.fromhex("0x1.fffffep127")),
}


def _spacing(dtype: torch.dtype, x: float) -> float:
    """The gap between neighbouring values of ``dtype`` in the binade of the
    finite ``x >= 0`` (subnormals included)."""
    precision, smallest_normal, _ = _FORMATS[dtype]
    return math.ldexp(1.0, max(math.frexp(x)[1], smallest_normal) - precision)


# Plain float arithmetic (scaling by powers of two is exact), not tensor ops:
# it costs a microsecond and torch.compile traces through it.
def _threshold_in(dtype: torch.dtype, threshold: float) -> float:
    """The smallest value of ``dtype`` that is >= ``threshold`` (``inf`` above its range).

    Comparing a tensor with a Python scalar rounds the scalar to the tensor's
    dtype, to nearest; rounded down, it would keep weights just below the
    threshold. For ``w`` of ``dtype``, ``|w| < threshold`` exactly when
    ``|w| < _threshold_in(dtype, threshold)``.
    """
    if dtype == torch.float64:
        return threshold
    largest = _FORMATS[dtype][2]
    if threshold > largest:
        return math.inf
    step = _spacing(dtype, threshold)
    return float(math.ceil(threshold / step) * step)


def _largest_below(dtype: torch.dtype, value: float) -> float | None:
    """The largest value of ``dtype`` below its value ``value`` (``inf``
    included); ``None`` for ``value <= 0``."""
    if value <= 0.0:
        return None
    if dtype == torch.float64:
        return math.nextafter(value, 0.0)
    if value == math.inf:
        return _FORMATS[dtype][2]
    below = math.nextafter(value, 0.0)
    step = _spacing(dtype, below)
    return float(math.floor(below / step) * step)


def threshold_mask(weight: Tensor, threshold: float) -> Tensor:
    """Keep the weights whose magnitude reaches ``threshold``.

    .. math:: m_i = \\lvert w_i \\rvert \\ge \\tau

    Decided exactly: ``threshold`` is compared in float64 terms, not rounded
    to the weight's dtype first (a float16 weight of 0.1 rounds below 0.1 and
    is pruned by ``threshold=0.1``). A NaN weight is kept, as in every mask
    here NaN ranks above every magnitude: pruning would hide it behind a zero.

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        threshold: finite, >= 0. ``0`` keeps everything.

    Returns:
        A ``torch.bool`` tensor of ``weight``'s shape on its device, ``True``
        where the weight is kept.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or ``threshold``
            is not a real number.
        ValueError: ``threshold`` is negative, infinite or NaN.

    >>> threshold_mask(torch.tensor([-0.5, 0.1, 0.2, -0.3]), 0.2)
    tensor([ True, False,  True,  True])
    """
    check_weight("threshold_mask", weight)
    tau = check_real("threshold_mask", "threshold", threshold, low=0.0, high=sys.float_info.max)
    assert tau is not None
    # "not below" rather than ">=": NaN is kept.
    return ~(weight.abs() < _threshold_in(weight.dtype, tau))


def _shrink_bound(op: str, weight: Tensor, threshold: float) -> float | None:
    """``λ`` with ``|w| > λ`` exactly when ``|w| >= threshold``, for ``w`` of
    ``weight``'s dtype: the largest value of the dtype below the threshold
    rounded up (:func:`_threshold_in`); ``None`` where that is 0 (every
    weight is kept). Checks the arguments of ``op``.
    """
    check_weight(op, weight)
    tau = check_real(op, "threshold", threshold, low=0.0, high=sys.float_info.max)
    assert tau is not None
    return _largest_below(weight.dtype, _threshold_in(weight.dtype, tau))


def sparsify(weight: Tensor, threshold: float) -> Tensor:
    """Zero the weights whose magnitude is below ``threshold``.

    .. math:: w'_i = w_i \\text{ if } \\lvert w_i \\rvert \\ge \\tau \\text{ else } 0

    ``torch.where(threshold_mask(weight, threshold), weight, 0)`` in one
    pass, with no temporary: the same exact comparison (``threshold`` is not
    rounded to the weight's dtype first), and a NaN weight is kept. Pruned
    weights become ``+0``.

    It is ``torch.nn.functional.hardshrink`` (which keeps ``|w| > λ``) with
    ``λ`` the largest value of the weight's dtype below the threshold, so that
    it is differentiable the same way: the gradient passes where the weight is
    kept and is 0 where it is pruned.

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        threshold: finite, >= 0. ``0`` keeps everything.

    Returns:
        A new tensor, same shape, dtype and device as ``weight``.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or ``threshold``
            is not a real number.
        ValueError: ``threshold`` is negative, infinite or NaN.

    >>> sparsify(torch.tensor([-0.5, 0.1, 0.2, -0.3]), 0.2)
    tensor([-0.5000,  0.0000,  0.2000, -0.3000])
    """
    bound = _shrink_bound("sparsify", weight, threshold)
    if bound is None:
        return weight.clone()
    return torch.hardshrink(weight, bound)


def sparsify_(weight: Tensor, threshold: float) -> Tensor:
    """In-place :func:`sparsify`: zeros the weights of ``weight`` itself whose
    magnitude is below ``threshold``, and returns it.

    >>> w = torch.tensor([-0.5, 0.1, 0.2, -0.3])
    >>> _ = sparsify_(w, 0.25)
    >>> w
    tensor([-0.5000,  0.0000,  0.0000, -0.3000])
    """
    bound = _shrink_bound("sparsify_", weight, threshold)
    if bound is not None:
        torch.hardshrink(weight, bound, out=weight)
    return weight


def prune_count(sparsity: float, n: int) -> int:
    """How many of ``n`` weights ``sparsity`` prunes: ``round(sparsity * n)``,
    half to even (``torch.nn.utils.prune``'s count)."""
    return round(sparsity * n)


def _rank_mask(magnitude: Tensor, k: int) -> Tensor:
    """Prune the ``k`` smallest of each row of the 2-D ``magnitude``, with the
    module's ordering; ``True`` = kept.

    Local statistics, one reduce step, then a local decision: the k-th smallest
    magnitude of each row (a selection, not a sort) splits it into the weights
    below it, pruned, and those equal to it, of which the first ``k - below``
    are pruned. No value leaves the device.
    """
    rows, length = magnitude.shape
    if k == 0 or rows == 0:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k == length:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    kth = torch.kthvalue(magnitude, k, dim=1, keepdim=True).values
    # kthvalue ranks NaN above everything; where the k-th is NaN, every number
    # ranks below it and the NaNs tie with it.
    kth_nan = kth.isnan()
    nan = magnitude.isnan()
    below = torch.where(kth_nan, ~nan, magnitude < kth)
    tied = torch.where(kth_nan, nan, magnitude == kth)
    need = k - below.sum(dim=1, keepdim=True, dtype=torch.int64)
    first_tied = tied.cumsum(dim=1, dtype=torch.int32) <= need
    return ~(below | (tied & first_tied))


# --- exact counts over whole tensors: a radix select on the bit patterns ------

#: Elements per chunk on the CPU: a chunk and its few temporaries stay in the
#: cache, so that a pass over the weight costs one read of it from memory.
#: Measured on 16M float32 weights: 2^18 to 2^22 about equal, the whole
#: tensor at once 2.5 times slower. A multiple of 8 (:func:`_true_indices`).
_CHUNK = 1 << 20
#: Fewer weights than this in a selection go to one ``torch.kthvalue``: the
#: radix select's fixed cost (histograms of 32K bins, a few dozen small ops)
#: would outweigh it.
_RADIX_MIN = 1 << 15
#: A top-digit bin holding more than 1/_DENSE_BIN of the weights is not
#: collected (:func:`_cpu_select`).
_DENSE_BIN = 16
#: Keys are histogrammed 16 bits (one digit) at a time; the top digit has 15,
#: below the cleared sign bit.
_DIGIT_BITS = 16
_RADIX = 1 << _DIGIT_BITS
_TOP_RADIX = 1 << (_DIGIT_BITS - 1)
#: The bit pattern of +inf; a NaN's (sign cleared) lies above it.
_INF_KEY = {
    torch.float16: 0x7C00,
    torch.bfloat16: 0x7F80,
    torch.float32: 0x7F800000,
    torch.float64: 0x7FF0000000000000,
}


def _sync_free(device: torch.device) -> bool:
    """Whether selection must avoid host syncs: everywhere but on the CPU,
    where reading a count back costs nothing and saves passes."""
    return device.type != "cpu"


def _keys(chunk: Tensor) -> Tensor:
    """Integers ordered as the module orders ``|chunk|``: its order keys.

    A non-negative float's bit pattern, read as an integer of its width, grows
    with its value. Clearing the sign bit takes the magnitude; every NaN (a
    pattern above +inf's) becomes +inf's successor, so NaNs tie with one
    another above every number.
    """
    dtype = chunk.dtype
    magnitude = chunk.view(_BITS[dtype]) & ((1 << (8 * dtype.itemsize - 1)) - 1)
    return magnitude.clamp_max_(_INF_KEY[dtype] + 1)


def _histogram(digits: Tensor, bins: int) -> Tensor:
    """Counts of each value of the integer tensor ``digits`` in ``[0, bins)``, int64."""
    if not _sync_free(digits.device):
        return torch.bincount(digits, minlength=bins)
    # bincount reads the largest value back to size its output: a sync. Under
    # torch.use_deterministic_algorithms, CUDA's scatter_add_ on a 1-D tensor
    # takes a deterministic path of its own.
    ones = torch.ones(1, dtype=torch.int64, device=digits.device).expand(digits.numel())
    hist = torch.zeros(bins, dtype=torch.int64, device=digits.device)
    return hist.scatter_add_(0, digits.long(), ones)


def _pick(hist: Tensor, rank: Tensor) -> tuple[Tensor, Tensor]:
    """The bin holding the ``rank``-th smallest (1-based, a 0-D tensor) of
    the counted values, and its rank among that bin's members."""
    cum = hist.cumsum(0)
    digit = torch.searchsorted(cum, rank)
    return digit, rank - (cum[digit] - hist[digit])


def _true_indices(flags: Tensor) -> Tensor:
    """The indices of the few ``True`` entries of the 1-D bool ``flags``.

    ``nonzero`` reads bools one at a time; read as int64 words, eight at a
    time, the scan is eight times shorter, and only the words holding a
    ``True`` are opened.
    """
    if flags.numel() % 8 or flags.storage_offset() % 8:
        return flags.nonzero().view(-1)
    words = flags.view(torch.int64).nonzero().view(-1)
    hits = flags.view(-1, 8)[words].nonzero()
    return words[hits[:, 0]] * 8 + hits[:, 1]


class _Selection:
    """The flattened weights of one selection, read chunk by chunk in ``dtype``.

    Indices run through the row-major flattened weights one after the other;
    magnitudes are compared in ``dtype``, to which every weight's dtype
    converts exactly.
    """

    def __init__(self, weights: Sequence[Tensor], dtype: torch.dtype, size: int) -> None:
        self.flats = [w.detach().contiguous().view(-1) for w in weights]
        self.dtype = dtype
        self.size = size
        self.device = weights[0].device
        self.top_shift = 8 * dtype.itemsize - _DIGIT_BITS
        #: The top digit of the NaN key; every NaN's top digit is here or above.
        self.nan_top = (_INF_KEY[dtype] + 1) >> self.top_shift

    def chunks(self, flat: Tensor) -> Iterator[tuple[int, Tensor]]:
        for start in range(0, flat.numel(), self.size):
            yield start, flat[start : start + self.size].to(self.dtype)

    def top_digits(self, chunk: Tensor, out: Tensor | None = None) -> Tensor:
        """The top digits of ``chunk``'s keys, NaNs' not merged (above :attr:`nan_top`)."""
        bits = chunk.view(_BITS[self.dtype])
        if self.top_shift:
            bits = torch.bitwise_right_shift(bits, self.top_shift, out=out)
            return bits.bitwise_and_(_TOP_RADIX - 1)
        return torch.bitwise_and(bits, _TOP_RADIX - 1, out=out)

    def digit_buffer(self) -> Tensor | None:
        """Memory for one chunk's digits, reused chunk after chunk (on the CPU)."""
        if _sync_free(self.device):
            return None
        return torch.empty(self.size, dtype=_BITS[self.dtype])

    def top_histogram(self) -> Tensor:
        """How many keys have each top digit, every NaN counted at :attr:`nan_top`."""
        hist = torch.zeros(_TOP_RADIX, dtype=torch.int64, device=self.device)
        buffer = self.digit_buffer()
        for flat in self.flats:
            for _, chunk in self.chunks(flat):
                out = None if buffer is None else buffer[: chunk.numel()]
                hist += _histogram(self.top_digits(chunk, out), _TOP_RADIX)
        hist[self.nan_top] += hist[self.nan_top + 1 :].sum()
        hist[self.nan_top + 1 :] = 0
        return hist

    def bin_members(self, top: int, masks: Sequence[Tensor] | None = None) -> list[Tensor]:
        """The indices in each flattened weight of the keys with top digit ``top``.

        With ``masks``, writes into them, in the same pass, ``True`` where a
        key's top digit is above ``top`` and ``False`` where it is below. CPU only.
        """
        digits_buffer = torch.empty(self.size, dtype=_BITS[self.dtype])
        flags_buffer = torch.empty(self.size, dtype=torch.bool)
        members = []
        for i, flat in enumerate(self.flats):
            found = [torch.zeros(0, dtype=torch.int64)]
            for start, chunk in self.chunks(flat):
                n = chunk.numel()
                digits = self.top_digits(chunk, digits_buffer[:n])
                flags = flags_buffer[:n]
                out = None if masks is None else masks[i][start : start + n]
                if top < self.nan_top:
                    torch.eq(digits, top, out=flags)
                    if out is not None:
                        torch.gt(digits, top, out=out)
                else:
                    # NaNs are in the top bin, whatever their payloads' digits.
                    torch.ge(digits, top, out=flags)
                    if out is not None:
                        out.zero_()
                if n < self.size:
                    flags_buffer[n:] = False
                found.append(_true_indices(flags_buffer).add_(start))
            members.append(torch.cat(found))
        return members

    def keys_at(self, members: Sequence[Tensor]) -> Tensor:
        """The keys at ``members`` (per flattened weight), concatenated."""
        return torch.cat(
            [_keys(flat[i].to(self.dtype)) for flat, i in zip(self.flats, members, strict=True)]
        )

    def refine(self, top: int, rank: int, count: int) -> tuple[int, int, int]:
        """The ``rank``-th smallest of the ``count`` keys with top digit ``top``,
        its rank among the keys equal to it, and how many those are. CPU only.

        A pass over the weights per further digit, each histogramming the next
        16 bits of the keys that share the digits found so far.
        """
        prefix = top
        for shift in range(self.top_shift - _DIGIT_BITS, -1, -_DIGIT_BITS):
            # Bin 0 counts the keys below those sharing the prefix, the last bin
            # those above: cheaper than collecting the sharers, when they are many.
            hist = torch.zeros(_RADIX + 2, dtype=torch.int64)
            for flat in self.flats:
                for _, chunk in self.chunks(flat):
                    key = _keys(chunk)
                    if shift:
                        key >>= shift
                    key -= (prefix << _DIGIT_BITS) - 1
                    hist += _histogram(key.clamp_(0, _RADIX + 1), _RADIX + 2)
            hist = hist[1 : _RADIX + 1]
            digit, rank_in = _pick(hist, torch.full((), rank))
            prefix = (prefix << _DIGIT_BITS) | int(digit)
            rank, count = int(rank_in), int(hist[digit])
        return prefix, rank, count

    def prune_below(self, threshold: int, need: int, ties: int, masks: Sequence[Tensor]) -> None:
        """Write into ``masks``: keys below ``threshold`` and the first ``need``
        of the ``ties`` keys equal to it pruned. CPU only.

        Ties are counted chunk by chunk only while some are left to prune and
        some are to be kept; in the chunk where the last is pruned they are
        ranked by a cumulative sum.
        """
        left = need if need < ties else 0
        for flat, mask in zip(self.flats, masks, strict=True):
            for start, chunk in self.chunks(flat):
                key = _keys(chunk)
                out = mask[start : start + chunk.numel()]
                if left == 0:
                    # Every tie still to come is kept (or, need == ties, every tie is pruned).
                    (torch.gt if need == ties else torch.ge)(key, threshold, out=out)
                    continue
                torch.gt(key, threshold, out=out)
                tied = key == threshold
                count = int(tied.sum())
                if count > left:
                    out |= tied & (tied.cumsum(0) > left)
                    left = 0
                else:
                    left -= count


def _split(flat: Tensor, weights: Sequence[Tensor]) -> list[Tensor]:
    """``flat`` cut into tensors of ``weights``' shapes, each with memory of its own."""
    if len(weights) == 1:
        return [flat.view(weights[0].shape)]
    parts = torch.split(flat, [w.numel() for w in weights])
    return [p.view(w.shape).clone() for p, w in zip(parts, weights, strict=True)]


def _select_masks(weights: Sequence[Tensor], dtype: torch.dtype, k: int) -> list[Tensor]:
    """Masks pruning the ``k`` smallest magnitudes of all of ``weights`` together
    (the module's ordering; :class:`_Selection` for indices and ``dtype``).

    Up to :data:`_RADIX_MIN` weights in all, one ``torch.kthvalue``
    (:func:`_rank_mask`). Above, a radix select on the order keys
    (:func:`_keys`): a histogram of the keys' top digits finds the bin of the
    k-th smallest. On the CPU one more pass, chunk by chunk so that its
    temporaries stay in the cache, decides every weight outside that bin and
    collects the bin's members, typically a fraction of a percent, which are
    ranked among themselves (:func:`_rank_mask`). Elsewhere
    (:func:`_sync_free`), whole-tensor passes histogram the next 16 bits of
    the bin's members, and so on until the k-th key is whole, then prune
    below it (:func:`_prune_below`).
    """
    device = weights[0].device
    total = sum(w.numel() for w in weights)
    if k == 0 or k == total:
        return [torch.full(w.shape, k == 0, dtype=torch.bool, device=device) for w in weights]
    if total < _RADIX_MIN:
        magnitude = torch.cat([w.detach().reshape(-1).to(dtype).abs() for w in weights])
        return _split(_rank_mask(magnitude.view(1, -1), k).view(-1), weights)
    if _sync_free(device):
        sel = _Selection(weights, dtype, total)
        threshold, need = _radix_select(sel, k)
        masks = _prune_below(sel, threshold, need)
    else:
        sel = _Selection(weights, dtype, _CHUNK)
        masks = [torch.empty(flat.shape, dtype=torch.bool) for flat in sel.flats]
        _cpu_select(sel, k, masks)
    return [mask.view(w.shape) for mask, w in zip(masks, weights, strict=True)]


def _cpu_select(sel: _Selection, k: int, masks: Sequence[Tensor] | None = None) -> int:
    """The k-th smallest key of ``sel``; with ``masks``, written into them the
    masks pruning the ``k`` smallest. On the CPU.

    After the top digits' histogram, the bin of the k-th smallest is usually
    a sliver of the weights: one pass decides every weight outside it and
    collects its members, ranked among themselves. A bin holding more than
    1/:data:`_DENSE_BIN` of the weights (exact ties: zeros, a constant
    weight) would cost more to collect than to read again: then passes over
    the weights find the k-th key digit by digit, and a last one prunes below it.
    """
    hist = sel.top_histogram()
    digit, rank_in_bin = _pick(hist, torch.full((), k))
    top, rank, count = int(digit), int(rank_in_bin), int(hist[digit])
    if count * _DENSE_BIN > sum(flat.numel() for flat in sel.flats):
        key, need, ties = sel.refine(top, rank, count)
        if masks is not None:
            sel.prune_below(key, need, ties, masks)
        return key
    members = sel.bin_members(top, masks)
    keys = sel.keys_at(members)
    if masks is not None:
        kept = _rank_mask(keys.view(1, -1), rank).view(-1)
        parts = torch.split(kept, [len(i) for i in members])
        for mask, i, part in zip(masks, members, parts, strict=True):
            mask[i] = part
    return int(torch.kthvalue(keys, rank).values)


def _kth_magnitude(weight: Tensor, k: int) -> Tensor:
    """The ``k``-th smallest magnitude of ``weight`` (1-based; NaN above all),
    a 0-D tensor of its dtype: the largest that :func:`magnitude_mask` prunes
    when it prunes ``k``. The selection of :func:`_select_masks`, without the mask."""
    if not 1 <= k <= weight.numel():
        raise ValueError(f"_kth_magnitude: k must be in [1, {weight.numel()}], got {k}")
    if weight.numel() < _RADIX_MIN:
        # kthvalue ranks NaN above every number, as the module does.
        return torch.kthvalue(weight.detach().reshape(-1).abs(), k).values
    bits = _BITS[weight.dtype]
    if _sync_free(weight.device):
        key, _ = _radix_select(_Selection([weight], weight.dtype, weight.numel()), k)
        return key.to(bits).view(weight.dtype)
    key_value = _cpu_select(_Selection([weight], weight.dtype, _CHUNK), k)
    return torch.tensor(key_value, dtype=bits).view(weight.dtype)


def _radix_select(sel: _Selection, k: int) -> tuple[Tensor, Tensor]:
    """The k-th smallest key (0-D) and how many of the keys equal to it are
    among the ``k`` smallest; no host sync."""
    digit, rank = _pick(sel.top_histogram(), torch.full((), k, device=sel.device))
    prefix = digit
    for shift in range(sel.top_shift - _DIGIT_BITS, -1, -_DIGIT_BITS):
        # Non-members count in a last bin of their own, which is dropped.
        hist = torch.zeros(_RADIX + 1, dtype=torch.int64, device=sel.device)
        for flat in sel.flats:
            for _, chunk in sel.chunks(flat):
                key = _keys(chunk)
                member = (key >> (shift + _DIGIT_BITS)) == prefix
                digits = torch.where(member, (key >> shift) & (_RADIX - 1), _RADIX)
                hist += _histogram(digits, _RADIX + 1)
        digit, rank = _pick(hist[:_RADIX], rank)
        prefix = (prefix << _DIGIT_BITS) | digit
    return prefix, rank


def _prune_below(sel: _Selection, threshold: Tensor, need: Tensor) -> list[Tensor]:
    """Masks pruning every key below ``threshold`` and the first ``need`` of
    those equal to it (0-D tensors); no host sync."""
    carry = torch.zeros((), dtype=torch.int64, device=sel.device)
    masks = []
    for flat in sel.flats:
        mask = torch.empty(flat.shape, dtype=torch.bool, device=sel.device)
        for start, chunk in sel.chunks(flat):
            key = _keys(chunk)
            tied = key == threshold
            order = tied.cumsum(0) + carry
            carry = order[-1]
            out = mask[start : start + chunk.numel()]
            torch.gt(key, threshold, out=out)
            out |= tied & (order > need)
        masks.append(mask)
    return masks


def _check_sparsity(op: str, sparsity: Any) -> float:
    s = check_real(op, "sparsity", sparsity, low=0.0, high=1.0)
    assert s is not None
    return s


def magnitude_mask(weight: Tensor, sparsity: float, *, dim: int | None = None) -> Tensor:
    """Prune exactly ``round(sparsity · n)`` weights of smallest magnitude.

    ``n`` is ``weight.numel()`` for ``dim=None``; otherwise every unit
    ``weight.select(dim, i)`` (as :func:`~weightops.functional.max_norm`'s
    units) prunes ``round(sparsity · n)`` of its own ``n`` weights. The count
    rounds half to even, as ``torch.nn.utils.prune.l1_unstructured``.

    Ties are broken by index (the module docstring): among equal magnitudes
    the lower row-major index is pruned first, so the achieved sparsity always
    equals the target, even for a constant weight. TF-MOT prunes every weight
    tied with the threshold; torch's ``l1_unstructured`` breaks ties by
    ``topk``'s unspecified order. NaN ranks above every magnitude.

    The k-th smallest magnitude is found by selection, not a sort: per unit
    by ``torch.kthvalue``; for the whole tensor (``dim=None``) by a radix
    select on the magnitudes' bit patterns, several times faster than
    ``torch.kthvalue`` on large weights (on the CPU, chunk by chunk on one
    thread; elsewhere without host syncs).

    Args:
        weight: tensor of any shape; float16, bfloat16, float32 or float64.
        sparsity: the fraction of weights to prune, in ``[0, 1]``.
        dim: the dimension that indexes units pruned separately, or ``None``
            for the whole tensor.

    Returns:
        A ``torch.bool`` tensor of ``weight``'s shape on its device, ``True``
        where the weight is kept.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or an argument
            has the wrong type.
        ValueError: ``sparsity`` outside ``[0, 1]`` or ``dim`` out of range.

    >>> magnitude_mask(torch.tensor([0.3, -0.1, 0.2, 0.4]), 0.5)
    tensor([ True, False, False,  True])
    >>> magnitude_mask(torch.ones(4), 0.25)  # ties: the lowest index goes first
    tensor([False,  True,  True,  True])
    """
    op = "magnitude_mask"
    check_weight(op, weight)
    s = _check_sparsity(op, sparsity)
    d = check_dim(op, dim, weight.ndim, optional=True)
    if d is None:
        return _select_masks([weight], weight.dtype, prune_count(s, weight.numel()))[0]
    moved = weight.abs().movedim(d, 0)
    length = math.prod(moved.shape[1:])
    rows = moved.reshape(moved.shape[0], length)
    mask = _rank_mask(rows, prune_count(s, length))
    return mask.reshape(moved.shape).movedim(0, d).contiguous()


def global_magnitude_masks(weights: Sequence[Tensor], sparsity: float) -> list[Tensor]:
    """Prune exactly ``round(sparsity · n)`` weights of smallest magnitude across tensors.

    Global-scope magnitude pruning: one threshold for all of ``weights``
    together, ``n`` their total number of elements. It is
    :func:`magnitude_mask` (``dim=None``) of the concatenation of the
    row-major flattened tensors, in the order given, split back: ties are
    broken by the index in that concatenation, NaN ranks above every
    magnitude, and the count rounds half to even.

    Magnitudes of different dtypes are compared exactly, in the widest of
    them (``torch.promote_types``; float16 with bfloat16 is float32). The
    concatenation is never built: the selection (:func:`magnitude_mask`'s)
    reads the tensors one after the other. Each mask has memory of its own,
    so that storing one (a buffer) does not keep or save the others.

    Args:
        weights: a sequence of tensors of any shapes, all on one device;
            float16, bfloat16, float32 or float64 (they may differ).
        sparsity: the fraction of all the weights to prune, in ``[0, 1]``.

    Returns:
        One ``torch.bool`` mask per tensor, of its shape on its device,
        ``True`` where the weight is kept.

    Raises:
        TypeError: ``weights`` is a tensor, not a sequence of them; an element
            of it is not a floating-point tensor; or ``sparsity`` is not a
            real number.
        ValueError: ``sparsity`` outside ``[0, 1]``, or the tensors are on
            different devices.

    >>> a, b = torch.tensor([0.3, -0.1]), torch.tensor([[0.2], [0.4]])
    >>> global_magnitude_masks([a, b], 0.5)
    [tensor([ True, False]), tensor([[False],
            [ True]])]
    """
    op = "global_magnitude_masks"
    if isinstance(weights, Tensor):
        # Iterating over one tensor would prune its rows as separate weights.
        fail(op, "weights", "a sequence of tensors", "a Tensor", TypeError)
    tensors = list(weights)
    for i, w in enumerate(tensors):
        check_weight(op, w, f"weights[{i}]")
    s = _check_sparsity(op, sparsity)
    if not tensors:
        return []
    device = tensors[0].device
    for i, w in enumerate(tensors):
        if w.device != device:
            fail(op, f"weights[{i}]", f"on the device of weights[0] ({device})", w.device)
    dtype = tensors[0].dtype
    for w in tensors[1:]:
        dtype = torch.promote_types(dtype, w.dtype)
    return _select_masks(tensors, dtype, prune_count(s, sum(w.numel() for w in tensors)))


def _check_nm(op: str, n: Any, m: Any) -> tuple[int, int]:
    for name, value in (("m", m), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, Integral):
            fail(op, name, "an int", value, TypeError)
    if m < 1:
        fail(op, "m", "an int >= 1", m)
    if not 0 <= n <= m:
        fail(op, "n", f"an int in [0, m] = [0, {m}]", n)
    return int(n), int(m)


def nm_mask(weight: Tensor, n: int, m: int, *, dim: int = -1) -> Tensor:
    """Keep the ``n`` largest magnitudes of every ``m`` consecutive weights along ``dim``.

    N:M structured sparsity (2:4 for NVIDIA's sparse tensor cores): along the
    input dimension (``dim=-1`` for a Linear ``(out, in)`` weight; a conv
    weight ``(out, in, kh, kw)`` grouped along ``in`` takes ``dim=1``), groups
    ``[0, m), [m, 2m), ...`` each keep exactly ``n`` weights. Ties within a
    group are broken by index (the module docstring): the lower index is
    pruned first. NaN ranks above every magnitude.

    Args:
        weight: tensor with at least one dimension; float16, bfloat16, float32
            or float64; its size along ``dim`` divisible by ``m``.
        n: weights kept per group, ``0 <= n <= m``.
        m: group size, >= 1.
        dim: the dimension the groups run along.

    Returns:
        A ``torch.bool`` tensor of ``weight``'s shape on its device, ``True``
        where the weight is kept; exactly ``n`` per group.

    Raises:
        TypeError: ``weight`` is not a floating-point tensor, or an argument
            has the wrong type.
        ValueError: ``n`` outside ``[0, m]``, ``m < 1``, ``dim`` out of range
            (a 0-D weight has none), or the size along ``dim`` not divisible
            by ``m``.

    >>> nm_mask(torch.tensor([[0.1, -0.9, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0]]), 2, 4)
    tensor([[False,  True,  True, False],
            [False, False,  True,  True]])
    """
    op = "nm_mask"
    check_weight(op, weight)
    keep, size = _check_nm(op, n, m)
    d = check_dim(op, dim, weight.ndim)
    assert d is not None
    length = weight.shape[d]
    if length % size:
        fail(op, "m", f"a divisor of the size along dim {d} ({length})", size)
    moved = weight.abs().movedim(d, -1)
    groups = moved.reshape(*moved.shape[:-1], length // size, size)
    mask = torch.ones_like(groups, dtype=torch.bool)
    if keep < size and groups.numel():
        # A stable sort of m values per group; m is small (4, 8, 16).
        order = torch.sort(groups, dim=-1, stable=True).indices
        mask.scatter_(-1, order[..., : size - keep], False)
    return mask.reshape(moved.shape).movedim(-1, d).contiguous()
