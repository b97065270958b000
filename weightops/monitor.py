"""Model level: log weight and gradient statistics while a model trains.

:class:`WeightMonitor` counts optimizer steps (a step pre-hook, or ``step()``
in a hand-written loop) and every ``every`` steps records, for each selected
weight, the statistics of :func:`weightops.functional.stats.weight_stats` and
the norm, max and mean of the absolute value of its gradient; every
``histogram_every`` steps, a histogram of each weight. Records go to a JSONL
file, to TensorBoard, or to a list in memory.
"""

from __future__ import annotations

import json
import math
import os
from numbers import Integral
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from weightops._checks import check_weight, fail
from weightops._histogram import MAX_BINS
from weightops._readback import Readback
from weightops._select import Target, Where, parametrization_list, select, stored_tensors
from weightops.functional.gradients import grad_summary
from weightops.functional.stats import STAT_NAMES, weight_stats

__all__ = ["GRAD_STAT_NAMES", "WeightMonitor"]

#: The gradient statistics, in the order
#: :func:`weightops.functional.gradients.grad_summary` returns them.
GRAD_STAT_NAMES = ("max_abs", "mean_abs", "norm")

#: Elements per pass of the histogram, so that its float64 temporaries stay
#: small (32 MiB each) whatever the weight's size.
HISTOGRAM_CHUNK = 1 << 22

#: Per-histogram summaries computed with the counts, in this order: what
#: TensorBoard's ``add_histogram_raw`` needs beside the buckets.
_SUMMARY = ("min", "max", "num", "sum", "sum_squares")


def _histogram(weight: Tensor, bins: int) -> Tensor:
    """One float64 vector on the weight's device: ``_SUMMARY``, then ``bins + 1``
    edges, then ``bins`` counts, of the weight's finite values. No host sync.

    Bins are those of ``numpy.histogram`` (half-open, the last one closed)
    over [min, max] of the finite values, widened to [v − 1, v + 1] when every
    finite value is v (as ``torch.histc``), [−1, 1] when there is none.
    Counts are accumulated with ``index_add_`` rather than ``torch.histc``,
    because ``histc`` takes its range as host numbers (a sync per tensor) and
    fails on a non-finite value; ``index_add_`` is also deterministic on CUDA.
    """
    device = weight.device
    f64 = torch.float64
    flat = weight.detach().reshape(-1)
    inf = torch.tensor(math.inf, dtype=f64, device=device)
    lo, hi = inf, -inf
    total = torch.zeros(3, dtype=f64, device=device)  # num, sum, sum of squares
    chunks = torch.split(flat, HISTOGRAM_CHUNK) if flat.numel() else ()
    for chunk in chunks:
        c = chunk.to(f64)
        finite = torch.isfinite(c)
        lo = torch.minimum(lo, torch.where(finite, c, inf).amin())
        hi = torch.maximum(hi, torch.where(finite, c, -inf).amax())
        kept = torch.where(finite, c, 0.0)
        total += torch.stack([finite.sum(dtype=f64), kept.sum(), kept.square().sum()])
    empty = lo > hi
    vmin, vmax = torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)
    same = vmin == vmax
    lo, hi = torch.where(same, vmin - 1, vmin), torch.where(same, vmax + 1, vmax)
    steps = torch.arange(bins + 1, dtype=f64, device=device) / bins
    edges = torch.cat([(lo + (hi - lo) * steps)[:-1], hi[None]])
    counts = torch.zeros(bins, dtype=torch.int64, device=device)
    for chunk in chunks:
        c = chunk.to(f64)
        finite = torch.isfinite(c)
        position = ((c - lo) / (hi - lo) * bins).floor_().clamp_(0, bins - 1)
        index = torch.where(finite, position, 0.0).long()
        counts.index_add_(0, index, finite.long())
    return torch.cat([vmin[None], vmax[None], total, edges, counts.to(f64)])


def _strict(value: float) -> float | None:
    """JSON has no NaN or infinity: a non-finite statistic becomes null."""
    return value if math.isfinite(value) else None


def _grad_sources(target: Target) -> list[tuple[str, Tensor]]:
    """The parameters holding the gradient of a target, with their names: the
    parameter itself, or a parametrization's stored tensors
    (``<module>.parametrizations.<attr>.original``)."""
    if not target.parametrized:
        return [(target.name, target.value)]
    name, module, attr = target.entries[0]
    plist = parametrization_list(module, attr)
    prefix = f"{name[: len(name) - len(attr)]}parametrizations.{attr}."
    keys = ["original"] if plist.is_tensor else [f"original{i}" for i in range(plist.ntensors)]
    return [(prefix + k, t) for k, t in zip(keys, stored_tensors(plist), strict=True)]


def _positive_int(op: str, name: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    accepted = "an int >= 1" + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, Integral):
        fail(op, name, accepted, value, TypeError)
    if value < 1:
        fail(op, name, accepted, value)
    return int(value)


class WeightMonitor:
    """Log weight and gradient statistics every ``every`` optimizer steps.

    ``attach(optimizer)`` registers a step pre-hook (the gradients of the step
    are still there, and the weights are those the step is about to update);
    in a hand-written loop call ``step()`` once per step after ``backward()``
    and before ``zero_grad()``. Step ``n`` (counted from 1) is logged when
    ``n % every == 0``; histograms when ``n % histogram_every == 0``.

    Cost. A step that logs nothing costs one integer increment and one modulo
    (no tensor is touched). A logging step computes every statistic of every
    selected tensor on its device and reads them all with ONE host
    synchronization (one ``tolist()`` of one concatenated float64 vector):
    one chunked float64 pass over each weight
    (:func:`~weightops.functional.stats.weight_stats`), three reductions of
    each gradient, two more passes per histogram.

    What is logged (tensors chosen once, at construction):

    * ``weights[name]``: every statistic of
      :data:`weightops.functional.stats.STAT_NAMES` (``mean, std, l1, l2,
      max_abs, zero_fraction, kurtosis`` over the finite values; ``nan_count``
      and ``inf_count`` as ints). A parametrized weight is logged as the value
      its module uses (computed under ``no_grad``, its transforms in eval
      mode), under its user-facing name (``"0.weight"``).
    * ``grads[name]``: ``max_abs``, ``mean_abs``, ``norm`` (L2) of the
      gradient, accumulated in float32 or wider. Named as the parameter that
      holds the gradient: the weight's name, or for a parametrized weight its
      stored tensor (``"0.parametrizations.weight.original"``). A parameter
      whose ``.grad`` is None at that step has no entry.
    * ``histograms[name]``: ``edges`` (``bins + 1`` floats) and ``counts``
      (``bins`` ints) of the weight's finite values over their [min, max]
      (bins as ``numpy.histogram``: half-open, the last one closed; a
      value within rounding error of an inner edge may be counted in the
      bin beside; a constant tensor v gets [v − 1, v + 1], as ``torch.histc``).

    JSONL schema (``path``): one line per logged step, appended and flushed
    at once, so ``tail -f`` and a crash lose nothing::

        {"step": 100, "weights": {"0.weight": {"mean": 0.0, "std": 0.02, ...}},
         "grads": {"0.weight": {"max_abs": 0.1, "mean_abs": 0.01, "norm": 1.5}}}

    and, on histogram steps, a separate line::

        {"step": 100, "histograms": {"0.weight": {"edges": [...], "counts": [...]}}}

    Scalars and histograms are separate lines because they come at different
    rates and sizes: ``jq 'select(.weights)'`` or
    ``[r for r in records if "weights" in r]`` reads the scalars without
    wading through bins. Keys per tensor (not one line per tensor) keep a
    step in one line, so a row is one step in a DataFrame built with
    ``pandas.json_normalize``. A non-finite statistic (a NaN or infinite
    gradient) is written as ``null``, so every line is strict JSON; the
    in-memory ``records`` hold exactly what a line holds.

    TensorBoard: ``add_scalar("weights/<name>/<stat>", value, step)`` and
    ``add_scalar("grads/<name>/<stat>", ...)`` for every scalar, and a
    histogram ``"weights/<name>"`` from the same bins through
    ``add_histogram_raw`` (no copy of the weight to the host), or through
    ``add_histogram(tag, values, step)`` for a writer without it.

    A tied tensor is logged once, under its first name (:attr:`names`).
    Several optimizers each count a step: attach the monitor to one of them.
    A step skipped by ``torch.amp.GradScaler`` (non-finite gradients) never
    calls ``optimizer.step()`` and is not counted.

    Args:
        model: the model whose weights to watch.
        path: a JSONL file to append records to, or None to keep them in
            :attr:`records`.
        every: log scalars every this many steps, an int >= 1.
        where: which tensors, as :func:`weightops.apply_` selects them
            (default: the weights of Linear, Conv*, Embedding and RNN layers;
            ``where="*"`` for every parameter, biases and norms included).
        histogram_every: log histograms every this many steps, an int >= 1,
            or None for none.
        bins: histogram bins, an int in [1, 65536].
        tensorboard: False; True for a ``torch.utils.tensorboard.SummaryWriter()``
            in its default directory (``runs/...``); a directory for one
            there; or a writer (anything with ``add_scalar``, and
            ``add_histogram_raw`` or ``add_histogram`` for histograms),
            which :meth:`close` flushes but leaves open.

    Raises:
        TypeError/ValueError: a bad argument, or ``where`` selecting nothing.
        ImportError: TensorBoard asked for by ``True`` or a directory, and the
            ``tensorboard`` package is not installed.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> with WeightMonitor(net, every=2) as monitor:
    ...     _ = monitor.attach(opt)
    ...     for _ in range(4):
    ...         opt.zero_grad()
    ...         net(torch.randn(16, 4)).square().mean().backward()
    ...         opt.step()
    >>> [r["step"] for r in monitor.records]
    [2, 4]
    >>> sorted(monitor.records[0]["grads"]["2.weight"])
    ['max_abs', 'mean_abs', 'norm']
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | os.PathLike[str] | None = None,
        *,
        every: int = 100,
        where: Where = None,
        histogram_every: int | None = None,
        bins: int = 64,
        tensorboard: bool | str | os.PathLike[str] | Any = False,
    ) -> None:
        op = "WeightMonitor"
        self.every = cast(int, _positive_int(op, "every", every))
        self.histogram_every = _positive_int(op, "histogram_every", histogram_every, optional=True)
        b = cast(int, _positive_int(op, "bins", bins))
        if b > MAX_BINS:
            fail(op, "bins", f"an int in [1, {MAX_BINS}]", bins)
        self.bins = b
        if path is not None and not isinstance(path, (str, os.PathLike)):
            fail(op, "path", "None, a str or an os.PathLike", type(path).__name__, TypeError)
        self._targets = select(model, where, op)
        for target in self._targets:
            check_weight(op, target.value, target.name)
        #: The name each watched tensor is logged under (a tied one's first name).
        self.names: list[str] = [t.name for t in self._targets]
        writer, owned = self._writer(op, tensorboard)
        if writer is not None and self.histogram_every is not None:
            if not any(hasattr(writer, m) for m in ("add_histogram_raw", "add_histogram")):
                fail(
                    op,
                    "tensorboard",
                    "a writer with add_histogram_raw or add_histogram when histogram_every is set",
                    type(writer).__name__,
                    TypeError,
                )
        self._writer_obj, self._owns_writer = writer, owned
        #: The JSONL file, or None.
        self.path: Path | None = None if path is None else Path(path)
        self._file: IO[str] | None = None
        if self.path is not None:
            self._file = self.path.open("a", encoding="utf-8")
        #: The records logged so far, when ``path`` is None (else empty).
        self.records: list[dict[str, Any]] = []
        #: Optimizer steps counted so far (set it to resume a run's numbering).
        self.step_count = 0
        # Both schedules in one test on the fast path: a step can log only
        # when its number is a multiple of their gcd.
        self._period = math.gcd(self.every, self.histogram_every or self.every)
        self._handles: list[RemovableHandle] = []
        self._closed = False

    @staticmethod
    def _writer(op: str, tensorboard: Any) -> tuple[Any, bool]:
        """The TensorBoard writer (or None) and whether the monitor created it."""
        if tensorboard is False or tensorboard is None:
            return None, False
        if tensorboard is True or isinstance(tensorboard, (str, os.PathLike)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError(
                    f"{op}: tensorboard={tensorboard!r} needs the tensorboard package, which is "
                    "not installed: pip install tensorboard (or pass tensorboard=False and read "
                    "the JSONL file)"
                ) from e
            log_dir = None if tensorboard is True else os.fspath(tensorboard)
            return SummaryWriter(log_dir=log_dir), True
        if not callable(getattr(tensorboard, "add_scalar", None)):
            fail(
                op,
                "tensorboard",
                "False, True, a log directory, or a SummaryWriter-like object with add_scalar",
                type(tensorboard).__name__,
                TypeError,
            )
        return tensorboard, False

    def attach(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Count (and log at) every ``optimizer.step()``, through a step pre-hook.

        Args:
            optimizer: the optimizer whose steps to count.

        Returns:
            The hook's handle: ``remove()`` it to stop counting that
            optimizer's steps; :meth:`close` removes every handle.

        Raises:
            TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``.
            ValueError: the monitor is closed.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            fail(
                "WeightMonitor.attach",
                "optimizer",
                "a torch.optim.Optimizer",
                type(optimizer).__name__,
                TypeError,
            )
        self._check_open()
        handle = optimizer.register_step_pre_hook(self._on_step)
        self._handles.append(handle)
        return handle

    def _on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.step()

    def step(self) -> None:
        """Count one training step, and log when it is due.

        Call it after ``backward()`` and before ``zero_grad()`` (or use
        :meth:`attach`, which calls it from ``optimizer.step()``).
        """
        self.step_count += 1
        if self.step_count % self._period:
            return
        n = self.step_count
        scalars = n % self.every == 0
        hist = self.histogram_every is not None and n % self.histogram_every == 0
        if scalars or hist:
            self._log(n, scalars=scalars, histograms=hist)

    def log(self, *, histograms: bool = False) -> None:
        """Log the scalars now, at the current ``step_count`` (e.g. 0, before
        training), and the histograms too when ``histograms`` is true."""
        self._log(self.step_count, scalars=True, histograms=histograms)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("WeightMonitor: the monitor is closed")

    def _log(self, n: int, *, scalars: bool, histograms: bool) -> None:
        self._check_open()
        batch: Readback[tuple[str, str]] = Readback()
        with torch.no_grad():
            for target in self._targets:
                weight = target.value
                if scalars:
                    batch.add(("weights", target.name), weight_stats(weight))
                    for name, param in _grad_sources(target):
                        grad = param.grad
                        if grad is None:
                            continue
                        if grad.is_sparse:
                            grad = grad.to_dense()  # the norms of a sparse gradient's zeros count
                        batch.add(("grads", name), grad_summary(grad, torch.float64, grad.device))
                if histograms:
                    batch.add(("histograms", target.name), _histogram(weight, self.bins))
            values = batch.read()  # the one host sync
        raw: dict[str, dict[str, list[float]]] = {"weights": {}, "grads": {}, "histograms": {}}
        for (section, name), vs in values.items():
            raw[section][name] = vs
        if scalars:
            self._emit(self._scalar_record(n, raw))
        if histograms:
            self._emit(self._histogram_record(n, raw["histograms"]))
        self._to_tensorboard(n, raw)

    @staticmethod
    def _scalar_record(n: int, raw: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
        weights = {
            name: {
                stat: int(v) if stat.endswith("_count") else _strict(v)
                for stat, v in zip(STAT_NAMES, vs, strict=True)
            }
            for name, vs in raw["weights"].items()
        }
        grads = {
            name: {stat: _strict(v) for stat, v in zip(GRAD_STAT_NAMES, vs, strict=True)}
            for name, vs in raw["grads"].items()
        }
        return {"step": n, "weights": weights, "grads": grads}

    def _histogram_record(self, n: int, raw: dict[str, list[float]]) -> dict[str, Any]:
        s, b = len(_SUMMARY), self.bins
        hists = {
            name: {"edges": vs[s : s + b + 1], "counts": [int(c) for c in vs[s + b + 1 :]]}
            for name, vs in raw.items()
        }
        return {"step": n, "histograms": hists}

    def _emit(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.records.append(record)
            return
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def _to_tensorboard(self, n: int, raw: dict[str, dict[str, list[float]]]) -> None:
        writer = self._writer_obj
        if writer is None:
            return
        for section, stat_names in (("weights", STAT_NAMES), ("grads", GRAD_STAT_NAMES)):
            for name, vs in raw[section].items():
                for stat, v in zip(stat_names, vs, strict=True):
                    writer.add_scalar(f"{section}/{name}/{stat}", v, n)
        s, b = len(_SUMMARY), self.bins
        for name, vs in raw["histograms"].items():
            tag = f"weights/{name}"
            edges, counts = vs[s : s + b + 1], vs[s + b + 1 :]
            if hasattr(writer, "add_histogram_raw"):
                vmin, vmax, num, total, squares = vs[:s]
                writer.add_histogram_raw(
                    tag,
                    min=vmin,
                    max=vmax,
                    num=int(num),
                    sum=total,
                    sum_squares=squares,
                    bucket_limits=edges[1:],
                    bucket_counts=counts,
                    global_step=n,
                )
            else:
                # A writer without the raw form bins the values itself.
                target = self._targets[self.names.index(name)]
                writer.add_histogram(tag, target.value.detach().float().cpu(), n)

    def close(self) -> None:
        """Remove every hook, close the JSONL file, close a TensorBoard writer
        the monitor created (flush one it was given). Calling it again does
        nothing."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._file is not None:
            self._file.close()
        writer = self._writer_obj
        if writer is not None:
            if self._owns_writer:
                writer.close()
            elif callable(getattr(writer, "flush", None)):
                writer.flush()

    def __enter__(self) -> WeightMonitor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
