"""The names of ``weight_stats``' entries, shared by ``WF.weight_stats`` and its
NumPy twin (no torch here, so that the reference can import it)."""

from __future__ import annotations

__all__ = ["STAT_NAMES"]

#: The entries of ``weight_stats``' vector, in order.
STAT_NAMES: tuple[str, ...] = (
    "mean",
    "std",
    "l1",
    "l2",
    "max_abs",
    "zero_fraction",
    "kurtosis",
    "nan_count",
    "inf_count",
)
