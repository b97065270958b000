"""Diagnoses: rules over a report's rows that name the metric and the threshold that fired.

Every rule reads statistics already in the report (no tensor is read
again). A :class:`Diagnosis` names the tensor or module, the rule's code, the
metric, its value and the threshold, and says it in one sentence.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any

from weightops._checks import check_real, fail

if TYPE_CHECKING:
    from weightops.inspection.activations import ActivationRow
    from weightops.inspection.report import Row

__all__ = ["CODES", "FAN_KINDS", "SIGMA_KINDS", "Diagnosis", "Thresholds", "diagnose"]

#: Every diagnosis code, in the order the rules run.
CODES = (
    "nonfinite",
    "std_far_from_init",
    "zero_fraction",
    "symmetric_units",
    "heavy_tail",
    "exploding_gradients",
    "sigma_outlier",
    "vanishing_gradients",
    "dead_units",
)

#: Kinds of rows that have fans, hence Xavier and He init stds.
FAN_KINDS = frozenset({"linear", "conv", "embedding", "lstm-gate", "gru-gate"})
#: Kinds whose σmax is a layer gain, compared across layers by ``sigma_outlier``
#: (an embedding's rows are looked up, not multiplied: its σmax is no gain).
SIGMA_KINDS = frozenset({"linear", "conv", "lstm-gate", "gru-gate"})
#: Kinds whose exact zeros are a finding: biases, norm shifts and running
#: means start at zero by design, so ``zero_fraction`` skips them.
_ZERO_KINDS = frozenset({"linear", "conv", "embedding", "lstm-gate", "gru-gate", "other"})


@dataclass(frozen=True)
class Thresholds:
    """When each diagnosis fires. The defaults are set for trained models.

    Attributes:
        init_std_factor: ``std_far_from_init`` fires when a weight's std is
            outside ``[1/f, f]`` times its init std, taking whichever of the
            Xavier-normal std ``sqrt(2 / (fan_in + fan_out))`` and the
            He-normal std ``sqrt(2 / fan_in)`` is nearer (for an embedding
            also 1, ``nn.Embedding``'s N(0, 1)). Default 5: the usual inits
            sit well inside (PyTorch's default Linear/Conv init at 0.41× He;
            N(0, 0.02), GPT-style, at 0.5× to 2× for widths 768 to 16k), so
            only a scale error of 5× or more fires (N(0, 1) in a 512-wide
            layer is 16× He; a zeroed or constant layer is left to the
            rules below). A depth-scaled init (GPT-2's residual projections,
            0.02/√(2·layers): 0.11× Xavier at 12 layers, width 768) fires at
            initialisation; raise the factor to inspect such a model untrained.
        zero_fraction: ``zero_fraction`` fires when at least this fraction of
            a weight is exactly zero (a dead, pruned or never-initialised
            layer). Default 0.5: a dense float weight has essentially no
            exact zeros; a pruned one is flagged on purpose. Biases and norm
            parameters are skipped (zero is their usual init).
        cosine: ``symmetric_units`` fires when two nonzero units (rows of the
            out × in view) have cosine similarity above this bound: units that
            compute the same function get the same gradient and never split
            (the symmetry problem of a constant init). Default 0.999: random
            units of width n have cosines of about 1/√n (0.04 at n = 512), so
            only copies reach 0.999; a layer with 2 or 3 inputs can have
            near-parallel units by chance.
        dead_fraction: ``dead_units`` fires when at least this fraction of a
            ReLU-family module's units output ``<= 0`` on the whole example
            batch. Default 0.5: a healthy ReLU layer has a few dead units on a
            batch; half of them dead means the layer lost half its width. Use
            a batch of realistic inputs: dead on a handful of samples is weak
            evidence.
        sigma_factor: ``sigma_outlier`` fires when a layer's σmax is above
            this many times the median σmax of the linear, conv and recurrent
            weights (at least 3 of them). Default 10: the layers of one
            network typically differ in σmax by a few times; 10× means one
            layer amplifies far more than the rest (an init at the wrong
            scale, or a layer about to blow up).
        alpha: ``heavy_tail`` fires when the power-law exponent of a weight's
            eigenvalue spectrum is below this (``spectral="full"`` only).
            Default 2.0: WeightWatcher's bound; well-trained layers have α
            between 2 and 6, α < 2 signals over-fitting or over-training
            (a random Gaussian matrix gives about 3 or more).
        vanishing: ``vanishing_gradients`` fires when the gradient norm of the
            last weight is above this many times that of the first. Default
            1e3: ratios up to about 100 are common in deep nets without
            normalisation; 1000 means the first layers hardly learn.
        exploding: ``exploding_gradients`` fires when a tensor's gradient norm
            is above this (or not finite). Default 1e3: per-tensor gradient
            norms stay far below it in stable training (gradient clipping
            thresholds are usually 0.1 to 10), so 1e3 is an explosion.
        cosine_max_rows: the most rows (units) of a matrix whose
            ``max_cosine`` and ``similar_pairs`` are computed; a larger one
            keeps them None, so ``symmetric_units`` cannot fire on it. All
            pairs cost rows²·cols: at the default 16384 rows of 1024 columns
            that is about 4 s on one CPU core, and an ``lm_head.weight`` over
            a 50k- to 128k-token vocabulary, 9 to 60 times as many pairs, is
            left out; raise it to check such a layer, 0 to skip the check
            everywhere. An int ``>= 0``.

    Raises:
        ValueError, TypeError: a threshold outside its range (each factor
            ``> 1``, fractions in ``(0, 1]``, cosine in ``[0, 1]``, ``alpha``,
            ``vanishing`` and ``exploding`` ``> 0``, ``cosine_max_rows`` an
            int ``>= 0``; ``math.inf`` disables a rule where it is allowed).

    >>> Thresholds(init_std_factor=3).init_std_factor
    3.0
    """

    init_std_factor: float = 5.0
    zero_fraction: float = 0.5
    cosine: float = 0.999
    dead_fraction: float = 0.5
    sigma_factor: float = 10.0
    alpha: float = 2.0
    vanishing: float = 1e3
    exploding: float = 1e3
    cosine_max_rows: int = 16384

    def __post_init__(self) -> None:
        op = "Thresholds"
        ranges: dict[str, dict[str, Any]] = {
            "init_std_factor": {"low": 1.0, "low_open": True},
            "zero_fraction": {"low": 0.0, "high": 1.0, "low_open": True},
            "cosine": {"low": 0.0, "high": 1.0},
            "dead_fraction": {"low": 0.0, "high": 1.0, "low_open": True},
            "sigma_factor": {"low": 1.0, "low_open": True},
            "alpha": {"low": 0.0, "low_open": True},
            "vanishing": {"low": 0.0, "low_open": True},
            "exploding": {"low": 0.0, "low_open": True},
        }
        for name, bounds in ranges.items():
            object.__setattr__(self, name, check_real(op, name, getattr(self, name), **bounds))
        rows = self.cosine_max_rows
        if isinstance(rows, bool) or not isinstance(rows, Integral):
            fail(op, "cosine_max_rows", "an int >= 0", rows, TypeError)
        if rows < 0:
            fail(op, "cosine_max_rows", "an int >= 0", rows)
        object.__setattr__(self, "cosine_max_rows", int(rows))


@dataclass(frozen=True)
class Diagnosis:
    """One finding: which tensor or module, which rule, the metric's value and the bound.

    Attributes:
        name: the row name (a tensor, ``"lstm.weight_ih_l0[f]"`` for a gate)
            or the module name for ``dead_units``.
        code: one of :data:`CODES`.
        metric: the statistic the rule read (a :class:`Row` field name, or a
            ratio of them).
        value: its value.
        threshold: the bound it crossed.
        message: one sentence naming the metric and the threshold.
    """

    name: str
    code: str
    metric: str
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The diagnosis as a dict."""
        return asdict(self)


def _g(value: float) -> str:
    return f"{value:.4g}"


def init_std_ratio(row: Row) -> tuple[float, str] | None:
    """The row's std ÷ the nearest reference init std, and which reference;
    None when the row has no fans or no reference ratio."""
    options = [(r, label) for r, label in ((row.std_xavier, "Xavier"), (row.std_he, "He")) if r]
    if row.kind == "embedding" and row.std > 0:
        options.append((row.std, "N(0, 1)"))
    if not options:
        return None
    return min(options, key=lambda option: abs(math.log(option[0])))


def _row_rules(row: Row, t: Thresholds) -> list[Diagnosis]:
    found: list[Diagnosis] = []

    def add(code: str, metric: str, value: float, threshold: float, message: str) -> None:
        found.append(Diagnosis(row.name, code, metric, value, threshold, f"{row.name}: {message}"))

    bad = row.nan_count + row.inf_count
    if bad:
        add(
            "nonfinite",
            "nan_count+inf_count",
            float(bad),
            0.0,
            f"{row.nan_count} NaN and {row.inf_count} Inf values (nan_count+inf_count > 0)",
        )
    finite = not bad and math.isfinite(row.std)
    if row.kind in FAN_KINDS and finite and row.std > 0:
        nearest = init_std_ratio(row)
        f = t.init_std_factor
        if nearest is not None and not 1 / f <= nearest[0] <= f:
            ratio, label = nearest
            add(
                "std_far_from_init",
                "std/init_std",
                ratio,
                f,
                f"std {_g(row.std)} is {_g(ratio)}× the nearer init std ({label}), outside "
                f"[1/{_g(f)}, {_g(f)}] (thresholds.init_std_factor)",
            )
    if row.kind in _ZERO_KINDS and row.numel and row.zero_fraction >= t.zero_fraction:
        state = "all zero" if row.zero_fraction == 1 else "mostly zero"
        add(
            "zero_fraction",
            "zero_fraction",
            row.zero_fraction,
            t.zero_fraction,
            f"zero_fraction {_g(row.zero_fraction)} >= {_g(t.zero_fraction)} "
            f"(thresholds.zero_fraction): {state}, a dead or pruned layer",
        )
    if row.max_cosine is not None and row.similar_pairs and row.max_cosine > t.cosine:
        add(
            "symmetric_units",
            "max_cosine",
            row.max_cosine,
            t.cosine,
            f"max_cosine {_g(row.max_cosine)} > {_g(t.cosine)} (thresholds.cosine) between "
            f"units, {row.similar_pairs} near-identical pair(s): symmetric units that "
            "learn the same thing",
        )
    if row.alpha is not None and row.alpha < t.alpha:
        add(
            "heavy_tail",
            "alpha",
            row.alpha,
            t.alpha,
            f"power-law alpha {_g(row.alpha)} < {_g(t.alpha)} (thresholds.alpha): "
            "heavy-tailed spectrum",
        )
    if row.grad_norm is not None and not row.grad_norm <= t.exploding:
        add(
            "exploding_gradients",
            "grad_norm",
            row.grad_norm,
            t.exploding,
            f"grad_norm {_g(row.grad_norm)} > {_g(t.exploding)} (thresholds.exploding)",
        )
    return found


def _sigma_outliers(rows: Sequence[Row], t: Thresholds) -> list[Diagnosis]:
    sigmas = [
        (row, row.sigma_max)
        for row in rows
        if row.kind in SIGMA_KINDS and row.sigma_max is not None and math.isfinite(row.sigma_max)
    ]
    if len(sigmas) < 3:
        return []
    median = statistics.median(s for _, s in sigmas)
    bound = t.sigma_factor * median
    return [
        Diagnosis(
            row.name,
            "sigma_outlier",
            "sigma_max/median",
            sigma / median if median else math.inf,
            t.sigma_factor,
            f"{row.name}: sigma_max {_g(sigma)} > {_g(t.sigma_factor)} × the median "
            f"sigma_max {_g(median)} of {len(sigmas)} weights (thresholds.sigma_factor)",
        )
        for row, sigma in sigmas
        if sigma > bound
    ]


def _vanishing(rows: Sequence[Row], t: Thresholds) -> list[Diagnosis]:
    graded = [
        row
        for row in rows
        if row.kind in FAN_KINDS and row.grad_norm is not None and math.isfinite(row.grad_norm)
    ]
    if len(graded) < 2:
        return []
    first, last = graded[0], graded[-1]
    assert first.grad_norm is not None and last.grad_norm is not None
    if not last.grad_norm:
        return []
    ratio = last.grad_norm / first.grad_norm if first.grad_norm else math.inf
    if ratio <= t.vanishing:
        return []
    return [
        Diagnosis(
            first.name,
            "vanishing_gradients",
            "grad_norm last/first",
            ratio,
            t.vanishing,
            f"{first.name}: grad_norm of the last weight ({last.name}, {_g(last.grad_norm)}) "
            f"÷ that of the first ({first.name}, {_g(first.grad_norm)}) = {_g(ratio)} > "
            f"{_g(t.vanishing)} (thresholds.vanishing): vanishing gradients",
        )
    ]


def _dead(activations: Sequence[ActivationRow], t: Thresholds) -> list[Diagnosis]:
    return [
        Diagnosis(
            a.name,
            "dead_units",
            "dead_fraction",
            a.dead_fraction,
            t.dead_fraction,
            f"{a.name} ({a.type}): dead_fraction {_g(a.dead_fraction)} >= "
            f"{_g(t.dead_fraction)} (thresholds.dead_fraction): units that output <= 0 on "
            "every sample of the example input",
        )
        for a in activations
        if a.zero_is_off and a.dead_fraction is not None and a.dead_fraction >= t.dead_fraction
    ]


def diagnose(
    rows: Sequence[Row],
    activations: Sequence[ActivationRow] = (),
    thresholds: Thresholds | None = None,
) -> list[Diagnosis]:
    """Every diagnosis the rows and activations call for.

    Rules per row first (in row order, codes in :data:`CODES` order), then
    the rules across rows (``sigma_outlier``, ``vanishing_gradients``), then
    ``dead_units`` from the activations.

    Args:
        rows: the report's rows.
        activations: the report's activation rows.
        thresholds: the bounds; None for the defaults.

    Returns:
        The diagnoses; an empty list for a healthy model.
    """
    t = Thresholds() if thresholds is None else thresholds
    found = [d for row in rows for d in _row_rules(row, t)]
    found += _sigma_outliers(rows, t)
    found += _vanishing(rows, t)
    found += _dead(activations, t)
    return found
