"""Histogram sizing shared by ``WF.kmeans`` and its NumPy twin (no torch here,
so that the reference can import it)."""

from __future__ import annotations

__all__ = ["BIN_BUDGET", "MAX_BINS", "MAX_SCALE", "histogram_bins"]

#: The most histogram bins in all, over many channels.
BIN_BUDGET = 1 << 20
#: The most histogram bins per tensor or channel.
MAX_BINS = 1 << 16
#: A bound on the histogram scale, so that a range of a few subnormals does
#: not give an infinite one.
MAX_SCALE = 1e300


def histogram_bins(n: int, groups: int = 1) -> int:
    """Bins per tensor or channel of ``n`` values, a power of two.

    Enough that values rarely share a bin (16 per value) up to
    :data:`MAX_BINS`; with many channels, at most :data:`BIN_BUDGET` in all
    but never fewer than one per value.
    """
    fine = min(MAX_BINS, 1 << max(16 * n - 1, 0).bit_length())
    share = 1 << max(BIN_BUDGET // max(groups, 1), 1).bit_length() - 1
    return min(fine, max(share, 1 << max(n - 1, 0).bit_length()))
