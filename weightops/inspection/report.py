"""Weight reports: :func:`inspect` a model, a state dict or a checkpoint; :func:`compare` two.

:func:`inspect` reads the tensors one at a time, computes each one's
statistics on its own device (:mod:`weightops.functional.stats`) and reads
them on the host once per tensor, so a checkpoint larger than memory can be
inspected. The :class:`Report` holds one :class:`Row` per weight, the
activations of an example input, the diagnoses and the tensors it skipped
(with the reason: nothing is dropped silently), and writes Markdown, JSON and
CSV.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from weightops._checks import FLOAT_DTYPES
from weightops._progress import progress as progress_bar
from weightops._readback import Readback
from weightops._select import (
    Target,
    Where,
    _modules,
    _predicate,
    groups,
    parametrization_list,
    stored_tensors,
)
from weightops.functional import init as I
from weightops.functional import stats as S
from weightops.functional.gradients import grad_summary
from weightops.init import layout_of
from weightops.inspection.activations import ActivationRow, record_activations
from weightops.inspection.diagnose import FAN_KINDS, Diagnosis, Thresholds, diagnose

__all__ = [
    "COLUMNS",
    "COMPARE_COLUMNS",
    "KINDS",
    "Comparison",
    "Report",
    "Row",
    "TensorSource",
    "compare",
    "compare_to_csv",
    "compare_to_json",
    "compare_to_markdown",
    "inspect",
]

Spectral = Literal["power", "none", "full"]
SPECTRAL = ("power", "none", "full")

#: Every row kind.
KINDS = ("linear", "conv", "embedding", "lstm-gate", "gru-gate", "norm", "bias", "other")
#: Gate names in PyTorch's row order: LSTM (W_i | W_f | W_g | W_o), GRU (W_r | W_z | W_n).
GATE_NAMES = {4: ("i", "f", "g", "o"), 3: ("r", "z", "n")}

#: What an SVD raises on a matrix with NaN/Inf (torch's stubs do not export it).
_LINALG_ERROR: type[RuntimeError] = getattr(torch.linalg, "LinAlgError", RuntimeError)

#: Kinds seen as a matrix (out × in·k): σmax, stable rank, spectrum.
_MATRIX_KINDS = FAN_KINDS | {"other"}
#: Kinds whose rows are units, for max_cosine: an embedding's rows are
#: tokens (and a vocabulary makes the all-pairs product quadratic in it).
_COSINE_KINDS = _MATRIX_KINDS - {"embedding"}

_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_RECURRENT_GATES: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    ((nn.LSTM, nn.LSTMCell), "lstm-gate"),
    ((nn.GRU, nn.GRUCell), "gru-gate"),
)
_RECURRENT_WEIGHT = re.compile(
    r"^(?P<prefix>.*)weight_(?:ih|hh)(?P<suffix>(?:_l\d+)?(?:_reverse)?)$"
)


@runtime_checkable
class TensorSource(Protocol):
    """Anything that lists tensor names and reads one tensor at a time
    (:class:`weightops.checkpoint.Checkpoint`). ``info(name) -> (shape, dtype)``,
    ``skipped() -> [(name, reason)]`` and ``aliases() -> {alias: canonical
    name}`` (tied tensors, one row with ``shared_with``) are used when present."""

    def names(self) -> Iterable[str]: ...

    def get(self, name: str) -> Tensor: ...


@dataclass(frozen=True)
class Row:
    """The statistics of one weight (or one gate of a recurrent weight).

    Attributes:
        name: the tensor's name; a gate's is ``"lstm.weight_ih_l0[i]"``.
        kind: one of :data:`KINDS`.
        gate: ``"i"``, ``"f"``, ``"g"``, ``"o"`` (LSTM), ``"r"``, ``"z"``,
            ``"n"`` (GRU), or ``""``.
        shape, numel, dtype: of the inspected tensor (of the gate slice).
        mean, std: over the finite values; population std (ddof 0).
        std_xavier: std ÷ the Xavier-normal std ``sqrt(2 / (fan_in + fan_out))``;
            None for kinds without fans (bias, norm, other).
        std_he: std ÷ the He-normal std ``sqrt(2 / fan_in)``; None as std_xavier.
        l1, l2, max_abs: Σ|w|, ‖w‖₂, max|w| over the finite values.
        zero_fraction: exact zeros ÷ numel.
        kurtosis: excess kurtosis (0 for a normal distribution).
        nan_count, inf_count: non-finite values.
        sigma_max: the largest singular value of the out × in view (power
            iteration to a relative tolerance of 1e-4, or the SVD's with
            ``spectral="full"``); None with ``spectral="none"`` and for
            biases, norm parameters and 1-D tensors.
        sigma_iters: power-iteration steps taken (0 when from the SVD).
        stable_rank: ‖W‖_F² / sigma_max².
        alpha: power-law tail exponent of the eigenvalues σ²
            (``spectral="full"``); None ("n/a") with fewer than 50 nonzero
            singular values.
        max_cosine: the largest cosine similarity between two nonzero units
            (rows of the out × in view); None for embeddings and kinds without units.
        similar_pairs: unit pairs with cosine above ``Thresholds.cosine``.
        shared_with: the other names of a tied tensor.
        grad_norm, grad_max_abs, grad_mean_abs: of the gradient (None without one).
        spectrum: the singular values, descending (``spectral="full"`` only;
            written to JSON, not to CSV or Markdown).
    """

    name: str
    kind: str
    gate: str
    shape: tuple[int, ...]
    numel: int
    dtype: str
    mean: float
    std: float
    std_xavier: float | None
    std_he: float | None
    l1: float
    l2: float
    max_abs: float
    zero_fraction: float
    kurtosis: float
    nan_count: int
    inf_count: int
    sigma_max: float | None = None
    sigma_iters: int | None = None
    stable_rank: float | None = None
    alpha: float | None = None
    max_cosine: float | None = None
    similar_pairs: int | None = None
    shared_with: tuple[str, ...] = ()
    grad_norm: float | None = None
    grad_max_abs: float | None = None
    grad_mean_abs: float | None = None
    spectrum: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain Python values (tuples as lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)
        }


#: Row fields written to CSV and Markdown (the spectrum goes to JSON only).
COLUMNS = tuple(f.name for f in fields(Row) if f.name != "spectrum")


# --------------------------------------------------------------------------- sources


def _no_grad() -> None:
    return None


@dataclass
class _Entry:
    """One tensor to read: how to read it, its gradient, and how to classify it."""

    name: str
    read: Callable[[], Any]
    classify: Callable[[tuple[int, ...]], tuple[str, int, dict[str, Any]]]
    grad: Callable[[], Tensor | None] = _no_grad
    shared_with: tuple[str, ...] = ()
    #: Known dtype before reading (a checkpoint's header), to skip without reading.
    dtype: torch.dtype | None = None
    #: A state dict's callable ``where``, which needs the tensor.
    keep: Callable[[Tensor], bool] | None = None


def _module_kind(
    module: nn.Module, attr: str, name: str, shape: tuple[int, ...]
) -> tuple[str, int, dict[str, Any]]:
    """(kind, gates, fan options) of ``module.<attr>`` from the module's type."""
    if "bias" in attr:
        return "bias", 1, {}
    if isinstance(module, _NORM_LAYERS):
        return "norm", 1, {}
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding", 1, {}
    if isinstance(module, nn.modules.conv._ConvNd):
        layout = layout_of(module, attr)
        return "conv", 1, {"layout": layout["layout"], "groups": layout["groups"]}
    for types, kind in _RECURRENT_GATES:
        if isinstance(module, types):
            gates = layout_of(module, attr)["gates"]
            return (kind, gates, {}) if gates > 1 else ("linear", 1, {})
    if isinstance(module, (nn.Linear, nn.Bilinear, nn.RNNBase, nn.RNNCellBase)):
        return "linear", 1, {}
    return _name_kind(name, shape, _no_shape)


def _name_kind(
    name: str, shape: tuple[int, ...], shape_of: Callable[[str], tuple[int, ...] | None]
) -> tuple[str, int, dict[str, Any]]:
    """(kind, gates, fan options) from a state-dict name and shape alone."""
    if "bias" in name:
        return "bias", 1, {}
    if len(shape) == 1:
        return "norm", 1, {}
    if len(shape) == 2:
        if "embed" in name.lower():
            return "embedding", 1, {}
        gates = _state_dict_gates(name, shape, shape_of)
        if gates:
            return ("lstm-gate" if gates == 4 else "gru-gate"), gates, {}
        return "linear", 1, {}
    if 3 <= len(shape) <= 5:
        return "conv", 1, {}
    return "other", 1, {}


def _state_dict_gates(
    name: str, shape: tuple[int, ...], shape_of: Callable[[str], tuple[int, ...] | None]
) -> int:
    """4 (LSTM) or 3 (GRU) for a ``weight_ih``/``weight_hh`` whose matching
    ``weight_hh`` has 4 or 3 times as many rows as the hidden size; else 0."""
    match = _RECURRENT_WEIGHT.match(name.rsplit(".", 1)[-1])
    if match is None:
        return 0
    stem = name[: len(name) - len(name.rsplit(".", 1)[-1])] + match["prefix"]
    hh = shape_of(f"{stem}weight_hh{match['suffix']}")
    if hh is None or len(hh) != 2:
        return 0
    hr = shape_of(f"{stem}weight_hr{match['suffix']}")  # LSTM with proj_size
    hidden = hr[1] if hr is not None and len(hr) == 2 else hh[1]
    if not hidden or hh[0] % hidden or hh[0] // hidden not in (3, 4) or shape[0] != hh[0]:
        return 0
    return hh[0] // hidden


def _no_shape(name: str) -> None:
    return None


def _tensor_grad(state: Mapping[str, Any], key: Any) -> Tensor | None:
    """The ``.grad`` of a mapping's value (a dict of parameters has them)."""
    grad = getattr(state[key], "grad", None)
    return grad if isinstance(grad, Tensor) else None


def _target_value(target: Target) -> Tensor:
    return target.value


def _grad_of(target: Target) -> Tensor | None:
    module, attr = target.owners[0]
    if not target.parametrized:
        return target.value.grad
    stored = stored_tensors(parametrization_list(module, attr))
    # One stored tensor of the weight's shape (a mask, a quantizer) holds the
    # gradient of the weight's storage; a factored one (g and v) has none.
    if len(stored) == 1:
        return stored[0].grad
    return None


def _model_entries(model: nn.Module, where: Where) -> tuple[list[_Entry], list[tuple[str, str]]]:
    chosen = None if where is None else _predicate("inspect", where)
    targets = groups(model)
    buffers: dict[int, Target] = {}
    for prefix, module in _modules(model):
        for attr, buf in module._buffers.items():
            if buf is not None:
                target = buffers.setdefault(id(buf), Target())
                name = f"{prefix}.{attr}" if prefix else attr
                target.names.append(name)
                target.entries.append((name, module, attr))
                if not any(m is module and a == attr for m, a in target.owners):
                    target.owners.append((module, attr))
    entries: list[_Entry] = []
    skipped: list[tuple[str, str]] = []
    for target, is_buffer in [
        *((t, False) for t in targets),
        *((t, True) for t in buffers.values()),
    ]:
        if chosen is not None and not any(chosen(n, m, a, target) for n, m, a in target.entries):
            continue
        module, attr = target.owners[0]
        if is_buffer and not isinstance(module, _NORM_LAYERS):
            kind = type(module).__name__
            skipped.append((target.name, f"a buffer of {kind}, not of a normalisation layer"))
            continue

        entries.append(
            _Entry(
                target.name,
                read=partial(_target_value, target),
                classify=partial(_module_kind, module, attr, target.name),
                grad=_no_grad if is_buffer else partial(_grad_of, target),
                shared_with=tuple(target.names[1:]),
            )
        )
    if chosen is not None and not entries and not skipped:
        raise ValueError(
            f"inspect: where must select at least one tensor of the model, got where={where!r}, "
            "which selects none"
        )
    return entries, skipped


def _alias_key(value: Tensor) -> tuple[Any, ...] | None:
    """Tensors of a state dict that are the same memory (tied weights) share this key."""
    # A sparse (or other non-strided) tensor has no single storage: no key,
    # and _skip_reason gives it its reason.
    if value.layout != torch.strided or value.is_nested:
        return None
    if value.device.type == "meta" or value.numel() == 0:
        return None
    storage = value.untyped_storage().data_ptr()
    return (
        value.device,
        storage,
        value.storage_offset(),
        tuple(value.shape),
        value.stride(),
        value.dtype,
    )


def _name_filter(
    where: Where,
) -> tuple[Callable[[str], bool], Callable[[str, Tensor], bool] | None]:
    """(by name, by tensor) filters of a state dict's ``where``."""
    if where is None:
        return (lambda name: True), None
    if isinstance(where, str):
        pattern = where
        return (lambda name: fnmatch.fnmatchcase(name, pattern)), None
    if callable(where) and not isinstance(where, type):
        call = where
        return (lambda name: True), (lambda name, value: bool(call(name, None, value)))  # type: ignore[arg-type]
    raise TypeError(
        "inspect: where must be None, a glob on tensor names or a callable "
        f"(name, None, tensor) -> bool for a state dict or checkpoint, got {where!r}"
    )


def _mapping_entries(state: Mapping[str, Any], where: Where) -> list[_Entry]:
    by_name, by_tensor = _name_filter(where)
    shapes = {str(k): tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)}
    first: dict[tuple[Any, ...], _Entry] = {}
    entries: list[_Entry] = []
    for key, value in state.items():
        name = str(key)
        if not by_name(name):
            continue
        alias = _alias_key(value) if isinstance(value, Tensor) else None
        if alias is not None and alias in first:
            owner = first[alias]
            owner.shared_with = (*owner.shared_with, name)
            continue
        entry = _Entry(
            name,
            read=partial(operator.getitem, state, key),
            classify=partial(_name_kind, name, shape_of=shapes.get),
            grad=partial(_tensor_grad, state, key),
            keep=None if by_tensor is None else partial(by_tensor, name),
        )
        if alias is not None:
            first[alias] = entry
        entries.append(entry)
    return entries


def _source_entries(source: TensorSource, where: Where) -> list[_Entry]:
    by_name, by_tensor = _name_filter(where)
    names = [str(n) for n in source.names()]
    info = getattr(source, "info", None)
    known = set(names)
    cache: dict[str, tuple[int, ...] | None] = {}

    def shape_of(name: str) -> tuple[int, ...] | None:
        if name not in known:
            return None
        if name not in cache:
            cache[name] = tuple(info(name)[0]) if callable(info) else tuple(source.get(name).shape)
        return cache[name]

    # A checkpoint's tied tensors ({alias: canonical name}, e.g. lm_head.weight
    # saved as wte.weight's storage) are one row, as a mapping's shared memory.
    aliases = getattr(source, "aliases", None)
    tied: Mapping[str, str] = aliases() if callable(aliases) else {}
    first: dict[str, _Entry] = {}
    entries = []
    for name in names:
        if not by_name(name):
            continue
        group = str(tied.get(name, name))
        if group in first:
            owner = first[group]
            owner.shared_with = (*owner.shared_with, name)
            continue
        dtype = info(name)[1] if callable(info) else None
        entry = _Entry(
            name,
            read=partial(source.get, name),
            classify=partial(_name_kind, name, shape_of=shape_of),
            dtype=dtype,
            keep=None if by_tensor is None else partial(by_tensor, name),
        )
        first[group] = entry
        entries.append(entry)
    return entries


def _dtype_reason(dtype: torch.dtype | None) -> str | None:
    """Why a tensor of ``dtype`` gets no row (None: it gets one, or unknown)."""
    if dtype is not None and not dtype.is_floating_point:
        return f"not floating point ({dtype})"
    return None


def _skip_reason(value: Any) -> str | None:
    """Why a value gets no row, or None when it gets one."""
    if not isinstance(value, Tensor):
        return f"not a tensor ({type(value).__name__})"
    if nn.parameter.is_lazy(value):
        return "uninitialized (a lazy module before its first forward)"
    if value.is_meta:
        return "on the meta device (no data)"
    if value.is_nested:
        return "a nested tensor (no single shape)"
    if value.layout != torch.strided:
        # Sparse statistics would count the implicit zeros or not: neither is
        # the weight's distribution, and storage-based reads fail on them.
        kind = "sparse" if "sparse" in str(value.layout) else "non-dense"
        return f"{kind} layout ({value.layout})"
    if not value.is_floating_point():
        return f"not floating point ({value.dtype})"
    return None


# --------------------------------------------------------------------------- statistics


def _matrix(weight: Tensor, layout: str, groups: int) -> Tensor:
    """The out × (in·k) view of a weight; ConvTranspose ``(in, out/g, *k)``
    is regrouped so that each row is one output unit."""
    if layout == "io":
        in_, per_group, *kernel = weight.shape
        split = weight.reshape(groups, in_ // groups, per_group, *kernel).transpose(1, 2)
        return split.reshape(groups * per_group, -1)
    return weight.reshape(weight.shape[0], -1)


def _init_ratios(
    std: float, shape: tuple[int, ...], options: dict[str, Any]
) -> tuple[float | None, float | None]:
    """std ÷ Xavier-normal std and std ÷ He-normal std for the weight's fans."""
    if len(shape) < 2:
        return None, None
    fan_in, fan_out = I.fans(
        shape, layout=options.get("layout", "oi"), groups=options.get("groups", 1)
    )
    xavier = std / math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else None
    he = std / (I.gain("relu") / math.sqrt(fan_in)) if fan_in else None
    return xavier, he


def _rows_of(
    entry: _Entry,
    value: Tensor,
    grad: Tensor | None,
    spectral: Spectral,
    thresholds: Thresholds,
) -> list[tuple[Row, tuple[int, int] | None]]:
    """The row(s) of one tensor (one per gate of a recurrent weight) and each
    row's slice of the tensor's rows; one host transfer for all of them."""
    shape = tuple(value.shape)
    kind, gates, options = entry.classify(shape)
    dtype = str(value.dtype).removeprefix("torch.")
    if value.dtype not in FLOAT_DTYPES:  # float8 and other storage formats
        value = value.float()
    if grad is not None and (grad.shape != value.shape or not grad.is_floating_point()):
        grad = None
    spans: list[tuple[str, str, tuple[int, int] | None]] = [(entry.name, "", None)]
    if gates > 1:
        h = shape[0] // gates
        spans = [
            (f"{entry.name}[{g}]", g, (k * h, (k + 1) * h)) for k, g in enumerate(GATE_NAMES[gates])
        ]
    batch: Readback[str] = Readback()
    plans: list[dict[str, Any]] = []
    with torch.no_grad():
        for index, (label, gate, span) in enumerate(spans):
            w = value if span is None else value[span[0] : span[1]]
            g = grad if grad is None or span is None else grad[span[0] : span[1]]
            plan: dict[str, Any] = {"label": label, "gate": gate, "shape": tuple(w.shape)}
            batch.add(f"{index}.stats", S.weight_stats(w))
            is_matrix = kind in _MATRIX_KINDS and w.ndim >= 2 and w.numel() > 0
            matrix = (
                _matrix(w, options.get("layout", "oi"), options.get("groups", 1))
                if is_matrix
                else None
            )
            if matrix is not None and spectral != "none":
                if spectral == "full":
                    # No finiteness check before the SVD (it would be a second
                    # host sync): a CPU SVD raises on NaN/Inf, a GPU one may
                    # return NaN, dropped once the row's nan/inf counts are read.
                    try:
                        spectrum = S.singular_values(matrix)
                    except _LINALG_ERROR:
                        pass
                    else:
                        plan["iters"] = 0
                        batch.add(f"{index}.spectrum", spectrum)
                else:
                    try:
                        sigma, plan["iters"] = S.sigma_max(matrix)
                    except np.linalg.LinAlgError:
                        # Non-finite values: no σ (the row's nan/inf counts say why).
                        pass
                    else:
                        batch.add(f"{index}.sigma", sigma)
            # All pairs of units cost rows²·cols: beyond the limit (an output
            # layer over a vocabulary, lm_head) the columns stay None.
            if (
                matrix is not None
                and kind in _COSINE_KINDS
                and matrix.shape[0] <= thresholds.cosine_max_rows
            ):
                cos, pairs = S.max_cosine(matrix, bound=thresholds.cosine)
                batch.add(f"{index}.cosine", torch.stack([cos, pairs.to(torch.float64)]))
            if g is not None:
                batch.add(f"{index}.grad", grad_summary(g.detach(), torch.float64, g.device))
            plans.append(plan)
        values = batch.read()
    rows = []
    for index, plan in enumerate(plans):
        stats = dict(zip(S.STAT_NAMES, values[f"{index}.stats"], strict=True))
        sub = plan["shape"]
        xavier, he = _init_ratios(stats["std"], sub, options) if kind in FAN_KINDS else (None, None)
        singular = values.get(f"{index}.spectrum")
        cosine = values.get(f"{index}.cosine")
        grads = values.get(f"{index}.grad")
        sigma_values = values.get(f"{index}.sigma")
        sigma_max = sigma_values[0] if sigma_values else None
        if singular is not None:
            # A weight with NaN/Inf has no spectrum (what a GPU SVD returns
            # for it is NaN or meaningless): none, as the power path gives.
            finite = stats["nan_count"] + stats["inf_count"] == 0
            if finite and singular and all(map(math.isfinite, singular)):
                sigma_max = singular[0]
            else:
                singular = None
                plan.pop("iters", None)
        # Stable rank ‖W‖_F²/σ² from the l2 already measured: the same value as
        # stats.stable_rank without its second pass over the weight.
        rank = None
        if sigma_max is not None:
            rank = stats["l2"] ** 2 / sigma_max**2 if sigma_max > 0 else 0.0
        row = Row(
            name=plan["label"],
            kind=kind,
            gate=plan["gate"],
            shape=sub,
            numel=math.prod(sub),
            dtype=dtype,
            mean=stats["mean"],
            std=stats["std"],
            std_xavier=xavier,
            std_he=he,
            l1=stats["l1"],
            l2=stats["l2"],
            max_abs=stats["max_abs"],
            zero_fraction=stats["zero_fraction"],
            kurtosis=stats["kurtosis"],
            nan_count=int(stats["nan_count"]),
            inf_count=int(stats["inf_count"]),
            sigma_max=sigma_max,
            sigma_iters=plan.get("iters"),
            stable_rank=rank,
            alpha=S.power_law_alpha(np.asarray(singular)) if singular is not None else None,
            max_cosine=cosine[0] if cosine else None,
            similar_pairs=int(cosine[1]) if cosine else None,
            shared_with=entry.shared_with,
            grad_max_abs=grads[0] if grads else None,
            grad_mean_abs=grads[1] if grads else None,
            grad_norm=grads[2] if grads else None,
            spectrum=tuple(singular) if singular is not None else None,
        )
        rows.append((row, spans[index][2]))
    return rows


# --------------------------------------------------------------------------- report


def _cell(name: str, value: Any) -> str:
    """One CSV/Markdown cell: alpha None is "n/a", other None is empty."""
    if value is None:
        return "n/a" if name == "alpha" else ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return "x".join(map(str, value)) if name in ("shape", "output_shape") else ";".join(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    """JSON has no NaN or Inf: a non-finite float becomes null (``nan_count``
    and ``inf_count`` say why a statistic is missing)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _json_text(document: Any) -> str:
    """JSON with one line per list item (a row, a record), not one per number:
    readable, diffable, and a spectrum stays on its row's line."""

    def one(value: Any) -> str:
        return json.dumps(value, allow_nan=False)

    def items(values: list[Any], indent: str) -> str:
        if not values:
            return "[]"
        inner = f",\n{indent}  ".join(one(v) for v in values)
        return f"[\n{indent}  {inner}\n{indent}]"

    if isinstance(document, list):
        return items(document, "") + "\n"
    fields_ = [
        f"  {one(k)}: {items(v, '  ') if isinstance(v, list) else one(v)}"
        for k, v in document.items()
    ]
    return "{\n" + ",\n".join(fields_) + "\n}\n"


def _markdown_table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return out


class Report:
    """What :func:`inspect` found: rows, activations, diagnoses, skipped tensors.

    Attributes:
        rows: one :class:`Row` per tensor (per gate of a recurrent weight).
        activations: one :class:`ActivationRow` per leaf-module call on the
            example input (empty without one).
        diagnoses: every :class:`Diagnosis` that fired.
        skipped: ``(name, reason)`` of every tensor that got no row.
        spectral: the spectral mode the rows were computed with.
        thresholds: the thresholds the diagnoses used.
    """

    def __init__(
        self,
        rows: Sequence[Row],
        *,
        activations: Sequence[ActivationRow] = (),
        diagnoses: Sequence[Diagnosis] = (),
        skipped: Sequence[tuple[str, str]] = (),
        spectral: str = "power",
        thresholds: Thresholds | None = None,
        reader: Callable[[str], Tensor] | None = None,
    ) -> None:
        self.rows = list(rows)
        self.activations = list(activations)
        self.diagnoses = list(diagnoses)
        self.skipped = list(skipped)
        self.spectral = spectral
        self.thresholds = Thresholds() if thresholds is None else thresholds
        self._reader = reader
        self._index = {row.name: row for row in self.rows}

    def row(self, name: str) -> Row:
        """The row named ``name`` (a gate's is ``"lstm.weight_ih_l0[i]"``).

        Raises:
            KeyError: no row has that name.
        """
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"Report.row: no row named {name!r}") from None

    def tensor(self, name: str) -> Tensor:
        """The inspected value of row ``name`` as a CPU tensor, read again from
        the source (a gate row's is its gate's slice), one tensor at a time.

        Raises:
            KeyError: no row has that name.
            ValueError: the report was built without a source to read from.
        """
        self.row(name)
        if self._reader is None:
            raise ValueError("Report.tensor: this report has no source to read tensors from")
        return self._reader(name)

    def to_markdown(self) -> str:
        """The report as Markdown: diagnoses, a table of the rows, the
        activations and the skipped tensors (no spectra)."""
        n_rows = len(self.rows)
        lines = [
            "# Weight report",
            "",
            f"{n_rows} row{'s' * (n_rows != 1)}, spectral={self.spectral}, "
            f"{len(self.diagnoses)} diagnos{'es' if len(self.diagnoses) != 1 else 'is'}, "
            f"{len(self.skipped)} skipped.",
            "",
            "## Diagnoses",
            "",
        ]
        if self.diagnoses:
            lines += _markdown_table(
                ("name", "code", "metric", "value", "threshold", "message"),
                (
                    (
                        d.name,
                        d.code,
                        d.metric,
                        _cell("", d.value),
                        _cell("", d.threshold),
                        d.message,
                    )
                    for d in self.diagnoses
                ),
            )
        else:
            lines.append("None.")
        lines += ["", "## Weights", ""]
        lines += _markdown_table(
            COLUMNS, ([_cell(c, getattr(row, c)) for c in COLUMNS] for row in self.rows)
        )
        if self.activations:
            header = tuple(f.name for f in fields(ActivationRow))
            lines += ["", "## Activations", ""]
            lines += _markdown_table(
                header, ([_cell(c, getattr(a, c)) for c in header] for a in self.activations)
            )
        if self.skipped:
            lines += ["", "## Skipped", ""]
            lines += [f"- `{name}`: {reason}" for name, reason in self.skipped]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """Everything, spectra included, as one JSON object: ``spectral``,
        ``thresholds``, ``rows``, ``activations``, ``diagnoses``, ``skipped``.
        A non-finite statistic is ``null``; a missing alpha is ``"n/a"``."""
        rows = []
        for row in self.rows:
            data = row.to_dict()
            if data["alpha"] is None:
                data["alpha"] = "n/a"
            if data["spectrum"] is None:
                del data["spectrum"]
            rows.append(data)
        document = {
            "spectral": self.spectral,
            "thresholds": {f.name: getattr(self.thresholds, f.name) for f in fields(Thresholds)},
            "rows": rows,
            "activations": [a.to_dict() for a in self.activations],
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
        }
        return _json_text(_jsonable(document))

    def to_csv(self) -> str:
        """The rows as CSV: a header of :data:`COLUMNS`, one line per row
        (shape as ``8x1x3x3``, shared names joined by ``;``)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            writer.writerow(
                [
                    _cell(c, v) if not isinstance(v := getattr(row, c), float) else repr(v)
                    for c in COLUMNS
                ]
            )
        return buffer.getvalue()

    def plot(self, directory: str | Path) -> list[Path]:
        """Write the report's plots as PNG files in ``directory`` (the ``plots``
        extra: matplotlib); see :func:`weightops.inspection.plots.plot_report`.

        Returns:
            The paths of the files written.
        """
        from weightops.inspection.plots import plot_report

        return plot_report(self, Path(directory))

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return (
            f"Report({len(self.rows)} rows, {len(self.activations)} activations, "
            f"{len(self.diagnoses)} diagnoses, {len(self.skipped)} skipped, "
            f"spectral={self.spectral!r})"
        )


# --------------------------------------------------------------------------- inspect


def _entries_of(source: Any, where: Where) -> tuple[list[_Entry], list[tuple[str, str]], bool]:
    """(entries, skipped, copy on read) of a model, a state dict or a tensor source."""
    if isinstance(source, nn.Module):
        entries, skipped = _model_entries(source, where)
        return entries, skipped, True
    if isinstance(source, Mapping):
        return _mapping_entries(source, where), [], True
    if isinstance(source, TensorSource):
        extra = getattr(source, "skipped", None)
        by_name = _name_filter(where)[0]
        listed = extra() if callable(extra) else []
        skipped = [(str(n), str(r)) for n, r in listed if by_name(str(n))]
        return _source_entries(source, where), skipped, False
    raise TypeError(
        "inspect: model_or_state_dict must be an nn.Module, a mapping of names to tensors, "
        f"or an object with names() and get(name), got {type(source).__name__}"
    )


def inspect(
    model_or_state_dict: nn.Module | Mapping[str, Any] | TensorSource,
    spectral: Spectral = "power",
    *,
    example_input: Any = None,
    where: Where = None,
    thresholds: Thresholds | None = None,
    progress: bool = False,
) -> Report:
    """Statistics and diagnoses of every weight of a model, state dict or checkpoint.

    What gets a row:

    * a model: every parameter (a tied one once, under its first name, the
      others in ``shared_with``; a parametrized weight as the value the layer
      uses, under its user-facing name such as ``"0.weight"``) and the
      floating-point buffers of normalisation layers (running mean and
      variance, kind ``"norm"``). Other buffers and non-floating tensors go
      to ``report.skipped``. Kinds come from the layer types.
    * a state dict (a mapping of names to tensors), or an object with
      ``names()`` and ``get(name)`` such as
      :class:`weightops.checkpoint.Checkpoint`, read one tensor at a time:
      every dense floating-point tensor; anything else (integers, sparse
      tensors, non-tensors) goes to ``report.skipped`` with the reason.
      Kinds from the name and shape: ``*bias*`` → bias, 1-D → norm, 2-D
      with ``embed`` in the name → embedding, 2-D → linear, 3- to 5-D →
      conv, anything else → other. Tensors of a mapping that share memory,
      and the names a source's ``aliases()`` maps to one tensor (a
      checkpoint's tied weights), are one row with ``shared_with``.

    Conv weights are seen as out × (in·kh·kw) (ConvTranspose's ``(in, out/g,
    ...)`` regrouped by output unit); LSTM and GRU ``weight_ih``/``weight_hh``
    give one row per gate (``"lstm.weight_ih_l0[f]"``; in a state dict, 4 or
    3 gates from the matching ``weight_hh``'s shape). The statistics of a
    tensor are computed on its device and read with one host transfer
    (power iteration's convergence checks aside). Gradients present on a
    model's parameters fill the ``grad_*`` columns. ``max_cosine`` and
    ``similar_pairs`` (all pairs of units, rows²·cols) stay None for a
    matrix of more than ``thresholds.cosine_max_rows`` rows (default 16384:
    an output layer over a vocabulary), and for embeddings.

    Args:
        model_or_state_dict: an ``nn.Module``, a mapping of names to tensors,
            or a :class:`TensorSource`.
        spectral: ``"power"``: σmax by power iteration (Lanczos) to a relative
            tolerance of 1e-4, and the stable rank; ``"none"``: no spectral
            statistics; ``"full"``: all singular values (an SVD per matrix;
            σmax is the largest), their power-law tail exponent ``alpha``
            (``None``, "n/a", with fewer than 50 nonzero singular values) and
            the spectrum itself in the JSON output; a weight with NaN or Inf
            values gets none of them (its ``nonfinite`` diagnosis says why).
        example_input: with a model, run it once on this input
            (:func:`weightops.inspection.activations.record_activations`:
            a tensor, a tuple of arguments or a dict of keyword arguments) to
            fill ``report.activations``.
        where: which tensors: None (all), a glob on names, and for a model
            also layer types or a callable ``(name, module, tensor) -> bool``
            as everywhere in weightops (types select those layers' weights);
            for a state dict a callable gets ``(name, None, tensor)``.
        thresholds: the diagnoses' bounds; None for :class:`Thresholds`' defaults.
        progress: show a progress bar over the tensors on stderr.

    Returns:
        A :class:`Report`.

    Raises:
        TypeError: ``model_or_state_dict`` is none of the three; ``where``,
            ``thresholds`` or ``progress`` of the wrong type.
        ValueError: ``spectral`` not one of the three; ``example_input``
            without a model; ``where`` selects nothing.

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> report = inspect(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> [(row.name, row.kind) for row in report.rows]
    [('0.weight', 'linear'), ('0.bias', 'bias'), ('2.weight', 'linear'), ('2.bias', 'bias')]
    >>> report.diagnoses
    []
    """
    op = "inspect"
    if spectral not in SPECTRAL:
        raise ValueError(f"{op}: spectral must be one of {SPECTRAL}, got {spectral!r}")
    if thresholds is not None and not isinstance(thresholds, Thresholds):
        got = type(thresholds).__name__
        raise TypeError(f"{op}: thresholds must be a Thresholds or None, got {got}")
    if not isinstance(progress, bool):
        raise TypeError(f"{op}: progress must be a bool, got {type(progress).__name__}")
    is_model = isinstance(model_or_state_dict, nn.Module)
    if example_input is not None and not is_model:
        raise ValueError(f"{op}: example_input needs a model (an nn.Module), got a state dict")
    t = Thresholds() if thresholds is None else thresholds
    entries, skipped, copy = _entries_of(model_or_state_dict, where)
    rows: list[Row] = []
    spans: dict[str, tuple[_Entry, tuple[int, int] | None]] = {}
    selected = len(skipped)
    for entry in progress_bar(entries, desc=op, enable=progress):
        # A checkpoint's header tells a non-floating tensor without reading it
        # (unless a callable ``where`` must see it first).
        reason = _dtype_reason(entry.dtype) if entry.keep is None else None
        value = None if reason else entry.read()
        if entry.keep is not None and isinstance(value, Tensor) and not entry.keep(value):
            continue
        selected += 1
        reason = reason or _skip_reason(value)
        if reason is not None:
            skipped.append((entry.name, reason))
            continue
        assert isinstance(value, Tensor)
        for row, span in _rows_of(entry, value, entry.grad(), spectral, t):
            rows.append(row)
            spans[row.name] = (entry, span)
        del value
    if where is not None and not selected and not is_model:
        raise ValueError(
            f"{op}: where must select at least one tensor, got where={where!r}, which selects none"
        )
    activations = (
        record_activations(model_or_state_dict, example_input)  # type: ignore[arg-type]
        if example_input is not None
        else []
    )

    def reader(name: str) -> Tensor:
        entry, span = spans[name]
        with torch.no_grad():
            value = entry.read()
            part = value if span is None else value[span[0] : span[1]]
            out: Tensor = part.detach().to("cpu", copy=copy)
            return out

    return Report(
        rows,
        activations=activations,
        diagnoses=diagnose(rows, activations, t),
        skipped=skipped,
        spectral=spectral,
        thresholds=t,
        reader=reader,
    )


# --------------------------------------------------------------------------- compare

#: Elements per step of :func:`compare`'s norms (float64 temporaries of a few MB).
_CHUNK = 1 << 22


def _tensors(
    source: Any, op: str
) -> tuple[list[str], Callable[[str], Any], Callable[[str], tuple[list[int], str] | None]]:
    """(names, read one, shape and dtype of one) of a source; a checkpoint's
    shape and dtype come from its header, without reading the tensor."""
    if isinstance(source, nn.Module):
        source = source.state_dict()
    if isinstance(source, Mapping):
        mapping = source
        names = [str(k) for k in mapping]
        get: Callable[[str], Any] = mapping.__getitem__
    elif isinstance(source, TensorSource):
        names, get = [str(n) for n in source.names()], source.get
    else:
        raise TypeError(
            f"{op}: a and b must each be an nn.Module, a mapping of names to tensors, or an "
            f"object with names() and get(name), got {type(source).__name__}"
        )
    info = getattr(source, "info", None)

    def describe(name: str) -> tuple[list[int], str] | None:
        if callable(info):
            shape, dtype = info(name)
            return list(shape), str(dtype).removeprefix("torch.")
        value = get(name)
        return _describe(value) if isinstance(value, Tensor) else None

    return names, get, describe


def _difference_norms(a: Tensor, b: Tensor) -> tuple[float, float]:
    """(‖a‖_F, ‖b − a‖_F) accumulated in float64, a few MB at a time."""
    flat_a, flat_b = a.detach().reshape(-1), b.detach().to(a.device).reshape(-1)
    totals = torch.zeros(2, dtype=torch.float64, device=a.device)
    for start in range(0, flat_a.numel(), _CHUNK):
        x = flat_a[start : start + _CHUNK].to(torch.float64)
        d = flat_b[start : start + _CHUNK].to(torch.float64) - x
        totals += torch.stack([torch.dot(x, x), torch.dot(d, d)])
    norm_a, norm_d = totals.sqrt().tolist()
    return norm_a, norm_d


#: The fields of every :func:`compare` record, in order (``reason`` only when skipped).
COMPARE_COLUMNS = (
    "name",
    "status",
    "shape_a",
    "shape_b",
    "dtype_a",
    "dtype_b",
    "norm_a",
    "norm_diff",
    "relative_change",
    "reason",
)


class Comparison(list[dict[str, Any]]):
    """:func:`compare`'s records: a list of dicts that can also write itself."""

    def to_markdown(self) -> str:
        """See :func:`compare_to_markdown`."""
        return compare_to_markdown(self)

    def to_csv(self) -> str:
        """See :func:`compare_to_csv`."""
        return compare_to_csv(self)

    def to_json(self) -> str:
        """See :func:`compare_to_json`."""
        return compare_to_json(self)


def _compare_cell(name: str, value: Any) -> str:
    if isinstance(value, list):
        return "x".join(map(str, value))
    return _cell(name, value)


def compare_to_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """:func:`compare`'s records as Markdown: a count per status, then one
    table line per tensor (relative change ‖b − a‖/‖a‖ first)."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items()) or "no tensors"
    header = ("name", "status", "relative_change", "norm_a", "norm_diff", "shape_a", "shape_b")
    lines = ["# Checkpoint comparison", "", f"{summary}.", ""]
    lines += _markdown_table(
        (*header, "reason"),
        ([*(_compare_cell(c, r.get(c)) for c in header), r.get("reason", "")] for r in records),
    )
    return "\n".join(lines) + "\n"


def compare_to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """:func:`compare`'s records as CSV: a header of :data:`COMPARE_COLUMNS`,
    one line per tensor (floats in full precision, shapes as ``8x1x3x3``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COMPARE_COLUMNS)
    for record in records:
        writer.writerow(
            [
                repr(v) if isinstance(v := record.get(c), float) else _compare_cell(c, v)
                for c in COMPARE_COLUMNS
            ]
        )
    return buffer.getvalue()


def compare_to_json(records: Sequence[Mapping[str, Any]]) -> str:
    """:func:`compare`'s records as a JSON list (a non-finite number is ``null``:
    ``relative_change`` is null exactly when ``norm_a`` is 0 and ``norm_diff`` is not)."""
    return _json_text(_jsonable([dict(r) for r in records]))


def compare(a: Any, b: Any, *, progress: bool = False) -> Comparison:
    """Per-tensor relative change ‖b − a‖_F / ‖a‖_F between two sources.

    ``a`` and ``b`` are each a model (its ``state_dict()`` names), a mapping
    of names to tensors, or a :class:`TensorSource` (a checkpoint), read one
    tensor at a time. One record per name of either, ``a``'s names first in
    its order, then those only in ``b``:

    * ``status``: ``"compared"``, ``"only in a"``, ``"only in b"``,
      ``"shape mismatch"`` or ``"skipped"`` (not a floating-point tensor in
      one of them; ``reason`` says which);
    * ``name``, ``shape_a``, ``shape_b``, ``dtype_a``, ``dtype_b`` (None
      where absent);
    * ``norm_a`` (‖a‖_F), ``norm_diff`` (‖b − a‖_F) and ``relative_change``
      (their ratio: 0 when both are zero, ``inf`` when only ``a`` is zero),
      for compared tensors, computed in float64.

    Args:
        a, b: the two sources.
        progress: show a progress bar on stderr.

    Returns:
        The records: a :class:`Comparison`, a list of dicts with
        ``to_markdown()``, ``to_csv()`` and ``to_json()``.

    Raises:
        TypeError: ``a`` or ``b`` is none of the three kinds of source, or
            ``progress`` not a bool.

    >>> x = {"w": torch.ones(4), "b": torch.zeros(2)}
    >>> y = {"w": torch.full((4,), 1.5), "b": torch.zeros(2), "new": torch.ones(1)}
    >>> [(r["name"], r["status"], r["relative_change"]) for r in compare(x, y)]
    [('w', 'compared', 0.5), ('b', 'compared', 0.0), ('new', 'only in b', None)]
    """
    op = "compare"
    if not isinstance(progress, bool):
        raise TypeError(f"{op}: progress must be a bool, got {type(progress).__name__}")
    names_a, get_a, describe_a = _tensors(a, op)
    names_b, get_b, describe_b = _tensors(b, op)
    in_b = set(names_b)
    in_a = set(names_a)
    order = [*names_a, *(n for n in names_b if n not in in_a)]
    records = Comparison()
    for name in progress_bar(order, desc=op, enable=progress):
        record: dict[str, Any] = {
            "name": name,
            "status": "compared",
            "shape_a": None,
            "shape_b": None,
            "dtype_a": None,
            "dtype_b": None,
            "norm_a": None,
            "norm_diff": None,
            "relative_change": None,
        }
        records.append(record)
        if name not in in_b or name not in in_a:
            side = "a" if name in in_a else "b"
            record["status"] = f"only in {side}"
            described = (describe_a if side == "a" else describe_b)(name)
            if described is not None:
                record[f"shape_{side}"], record[f"dtype_{side}"] = described
            continue
        x, y = get_a(name), get_b(name)
        for side, value in (("a", x), ("b", y)):
            if isinstance(value, Tensor):
                record[f"shape_{side}"], record[f"dtype_{side}"] = _describe(value)
        reasons = [
            f"{side}: {why}"
            for side, value in (("a", x), ("b", y))
            if (why := _skip_reason(value)) is not None
        ]
        if reasons:
            record["status"], record["reason"] = "skipped", "; ".join(reasons)
            continue
        if x.shape != y.shape:
            record["status"] = "shape mismatch"
            continue
        with torch.no_grad():
            norm_a, norm_d = _difference_norms(x, y)
        record["norm_a"], record["norm_diff"] = norm_a, norm_d
        record["relative_change"] = norm_d / norm_a if norm_a else (math.inf if norm_d else 0.0)
        del x, y
    return records


def _describe(value: Tensor) -> tuple[list[int], str]:
    return list(value.shape), str(value.dtype).removeprefix("torch.")
