"""Inspecting weights: per-tensor statistics, activations, diagnoses and reports.

:func:`inspect` turns a model, a state dict or a checkpoint into a
:class:`Report` (a :class:`Row` of statistics per weight, the activations of
an example input, :class:`Diagnosis` entries that name the metric and the
threshold that fired); :func:`compare` gives the relative change of every
tensor between two of them. See ``docs/inspect.md``.
"""

from weightops.inspection.activations import ActivationRow
from weightops.inspection.diagnose import Diagnosis, Thresholds
from weightops.inspection.report import Report, Row, TensorSource, compare, inspect

__all__ = [
    "ActivationRow",
    "Diagnosis",
    "Report",
    "Row",
    "TensorSource",
    "Thresholds",
    "compare",
    "inspect",
]
