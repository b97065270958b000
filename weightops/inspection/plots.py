"""PNG plots of an inspection report: what practitioners look at when they look at weights.

:func:`plot_report` writes, into one directory:

* ``histograms.png``: a grid with one panel per weight row (every row that is
  not a bias or a norm row), all panels on the SAME bins, so that a layer
  whose values are far wider or narrower than the others stands out. The
  range is the smallest and largest finite value over all weight rows;
  NaN/Inf are not binned (each panel says how many there were). More than 32
  panels continue on ``histograms_2.png``, ``histograms_3.png``, ...
* ``heatmap_<name>.png``: one heat map per 2-D weight (linear, embedding,
  LSTM/GRU gate, other 2-D rows; not conv, which has its own grid), rows
  (output units) down and columns (inputs) across, on a diverging colour map
  centred at 0 with a colour bar; NaN/Inf drawn black. A matrix larger than
  256×256 is shown as the means of ``⌈rows/256⌉ × ⌈cols/256⌉`` blocks (black
  when a block holds a NaN/Inf), which the title says; the axes keep the original
  indices. At most ``max_heatmaps`` are drawn, the others are named in a
  warning.
* ``conv_kernels.png``: the kernels of the first conv row,
  ``weight[j, 0]`` (first input channel; the middle depth slice for 3-D
  kernels) for the first 64 ``j``, on one symmetric colour scale.
* ``biases.png``: a bar per unit for each bias row (a line, or its min-max
  envelope, for biases longer than 256), ``biases_2.png``, ... after 24 panels.
* ``depth.png``: L2 norm, σmax and std ÷ init std (Xavier and He) of the
  weight rows against their order in the report (depth).

Each plot is only written when the report has rows for it; norm rows
(normalisation weights, running statistics) are not plotted. Tensors are read
through ``report.tensor(name)`` one at a time and processed in chunks of 4M
elements: one pass over the weight rows for the histogram range, one pass
over all plotted rows for the counts, heat maps, kernels and biases, so that
a checkpoint larger than memory can be plotted.

Figures use matplotlib's object API on the Agg canvas (no pyplot, so no global
figure registry and no backend switch) at a fixed size in inches, so a PNG
has ``inches × dpi`` pixels (truncated):

===================  =========================================================
file                 size in inches
===================  =========================================================
histograms*.png      ``3.0·cols × (2.5·rows + 0.5)``, ``cols = min(4, panels)``
heatmap_*.png        ``7.0 × 6.0``
conv_kernels.png     ``(1.0·cols + 1.5) × (1.0·rows + 0.7)``, ``cols = min(8, kernels)``
biases*.png          ``4.0·cols × (2.5·rows + 0.5)``, ``cols = min(3, panels)``
depth.png            ``10.0 × 9.0``
===================  =========================================================

where ``rows = ⌈panels / cols⌉``. matplotlib is the ``plots`` extra:
``pip install 'weightops[plots]'``.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from weightops._checks import fail

__all__ = ["FIGURE_INCHES", "HEATMAP_LIMIT", "ReportLike", "plot_report"]

#: Largest heat map drawn, in cells per side; larger matrices are block means.
HEATMAP_LIMIT = 256
#: Fixed figure sizes in inches (width, height), and the per-panel sizes of the grids.
FIGURE_INCHES: dict[str, tuple[float, float]] = {
    "histogram_panel": (3.0, 2.5),
    "bias_panel": (4.0, 2.5),
    "kernel_cell": (1.0, 1.0),
    "heatmap": (7.0, 6.0),
    "depth": (10.0, 9.0),
}
#: Room for a grid's overall title (inches).
_TITLE_INCHES = 0.5
#: Room for the conv grid's colour bar (right) and title (top), in inches.
_KERNEL_MARGIN = (1.5, 0.7)
#: Inside each panel, room for its labels: left, right, bottom, top (inches).
_PANEL_MARGINS = (0.6, 0.15, 0.45, 0.45)
_KERNEL_CELL_MARGINS = (0.05, 0.05, 0.05, 0.2)
_HISTOGRAM_COLUMNS, _HISTOGRAM_PAGE = 4, 32
_BIAS_COLUMNS, _BIAS_PAGE = 3, 24
_KERNEL_COLUMNS, _MAX_KERNELS = 8, 64
#: Biases up to this length are bars; longer ones a line or an envelope.
_MAX_BARS = 256
#: Points of a long bias's line before it becomes a min-max envelope.
_MAX_POINTS = 4096
#: Elements converted to float64 at a time, so a large weight never needs a
#: float64 copy of itself.
_CHUNK = 1 << 22
#: Kinds that are not weight matrices: no histogram panel, no depth point, no heat map.
_NOT_WEIGHTS = ("bias", "norm")
_GATE_NAMES = {
    "lstm-gate": {"i": "input", "f": "forget", "g": "cell", "o": "output"},
    "gru-gate": {"r": "reset", "z": "update", "n": "new"},
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 120


class ReportLike(Protocol):
    """What :func:`plot_report` needs of a report.

    ``rows``: objects with ``name``, ``kind``, ``shape`` and optionally
    ``gate``, ``mean``, ``std``, ``l2``, ``sigma_max``, ``std_xavier``,
    ``std_he`` (absent or ``None`` values are left out of the plots), as in
    :class:`weightops.inspection.Report`; ``tensor(name)``: the row's tensor
    (for a gate row, the gate's slice).
    """

    @property
    def rows(self) -> Sequence[Any]: ...

    def tensor(self, name: str) -> Tensor: ...


def plot_report(
    report: ReportLike,
    directory: str | os.PathLike[str],
    *,
    bins: int = 64,
    log_y: bool = False,
    max_heatmaps: int = 64,
    dpi: int = 100,
) -> list[Path]:
    """Write the report's plots as PNG files into ``directory`` (created if missing).

    See the module docstring for the files, their contents and sizes.

    Args:
        report: a :class:`weightops.inspection.Report` or any object with
            ``rows`` and ``tensor(name)`` (:class:`ReportLike`).
        directory: where to write; existing files of the same names are replaced.
        bins: histogram bins, shared by every panel, in [2, 4096].
        log_y: log-scaled histogram counts, which shows the tails and the
            shape of narrow layers next to wide ones.
        max_heatmaps: the most heat maps to draw (the first in report order);
            the rest are named in a :class:`UserWarning`. 0 draws none.
        dpi: pixels per inch of every PNG, in [10, 600].

    Returns:
        The paths written, in this order: histograms, heat maps, conv kernels,
        biases, depth.

    Raises:
        ImportError: matplotlib is not installed.
        TypeError: ``report`` lacks ``rows`` or ``tensor``, or an option has the wrong type.
        ValueError: an option is out of range, or ``directory`` is an existing file.

    >>> import tempfile, torch
    >>> from types import SimpleNamespace
    >>> w = torch.randn(4, 3)
    >>> row = SimpleNamespace(name="fc.weight", kind="linear", shape=(4, 3), l2=1.0)
    >>> report = SimpleNamespace(rows=[row], tensor=lambda name: w)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     [p.name for p in plot_report(report, d)]
    ['histograms.png', 'heatmap_fc.weight.png', 'depth.png']
    """
    op = "plot_report"
    new_figure = _matplotlib(op)
    if not hasattr(report, "rows") or not callable(getattr(report, "tensor", None)):
        fail(op, "report", "an object with rows and tensor(name)", type(report).__name__, TypeError)
    bins = _check_int(op, "bins", bins, 2, 4096)
    max_heatmaps = _check_int(op, "max_heatmaps", max_heatmaps, 0, 1 << 30)
    dpi = _check_int(op, "dpi", dpi, 10, 600)
    if not isinstance(log_y, bool):
        fail(op, "log_y", "a bool", log_y, TypeError)
    if not isinstance(directory, (str, os.PathLike)):
        fail(op, "directory", "a str or os.PathLike path", type(directory).__name__, TypeError)
    out = Path(directory)
    if out.exists() and not out.is_dir():
        fail(op, "directory", "a directory (or a path to create one at)", str(out))

    rows = list(report.rows)
    weights = [r for r in rows if r.kind not in _NOT_WEIGHTS]
    eligible = [r for r in weights if r.kind != "conv" and len(r.shape) == 2 and _numel(r) > 0]
    heat, skipped = eligible[:max_heatmaps], eligible[max_heatmaps:]
    conv = next((r for r in weights if r.kind == "conv" and len(r.shape) >= 3 and _numel(r)), None)
    biases = [r for r in rows if r.kind == "bias"]

    out.mkdir(parents=True, exist_ok=True)
    plotter = _Plotter(new_figure, out, dpi)
    lo, hi = _shared_range(report, weights)
    edges = np.linspace(lo, hi, bins + 1)
    histograms: dict[str, tuple[np.ndarray, int]] = {}
    heatmaps: list[Path] = []
    kernels: list[Path] = []
    bias_values: dict[str, _Curve] = {}
    names = _file_stems([r.name for r in heat])
    heat_names = {id(r): n for r, n in zip(heat, names, strict=True)}
    # The second pass: each tensor read once, everything drawn from it extracted
    # (small arrays) before the next is read.
    for row in [*weights, *biases]:
        tensor = report.tensor(row.name)
        if row.kind not in _NOT_WEIGHTS:
            histograms[row.name] = _counts(tensor, lo, hi, bins)
        if id(row) in heat_names:
            heatmaps.append(plotter.heatmap(row, tensor, heat_names[id(row)]))
        if row is conv:
            kernels.append(plotter.kernels(row, tensor))
        if row.kind == "bias":
            bias_values[row.name] = _bias_curve(tensor)
        del tensor

    if skipped:
        shown = ", ".join(r.name for r in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        warnings.warn(
            f"{op}: {len(skipped)} heat maps not drawn (max_heatmaps={max_heatmaps}): {shown}",
            UserWarning,
            stacklevel=2,
        )
    paths = plotter.histograms(weights, histograms, edges, log_y)
    paths += heatmaps + kernels
    paths += plotter.biases(biases, bias_values)
    if weights:
        paths.append(plotter.depth(weights))
    return paths


def _matplotlib(op: str) -> Any:
    """A factory of Figures on an Agg canvas (no pyplot), or a one-line ImportError."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            f"{op} needs matplotlib: pip install 'weightops[plots]' (the plots extra)"
        ) from None

    def figure(width: float, height: float, dpi: int, constrained: bool) -> Any:
        fig = Figure(
            figsize=(width, height), dpi=dpi, layout="constrained" if constrained else None
        )
        FigureCanvasAgg(fig)
        return fig

    return figure


def _check_int(op: str, name: str, value: Any, low: int, high: int) -> int:
    accepted = f"an int in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        fail(op, name, accepted, value, TypeError)
    if not low <= value <= high:
        fail(op, name, accepted, value)
    return int(value)


def _numel(row: Any) -> int:
    return math.prod(int(s) for s in row.shape)


def _chunks(tensor: Tensor) -> Iterator[Tensor]:
    """The tensor's values, flattened, as CPU chunks of ``_CHUNK`` in float32
    (float64 for float64: every value converts exactly)."""
    flat = tensor.detach().reshape(-1)
    dtype = torch.float64 if flat.dtype == torch.float64 else torch.float32
    for start in range(0, flat.numel(), _CHUNK):
        yield flat[start : start + _CHUNK].to("cpu", dtype)


def _shared_range(report: ReportLike, rows: Sequence[Any]) -> tuple[float, float]:
    """The smallest and largest finite value over ``rows`` (the first pass),
    widened when empty or a single value, so that the bins have a width."""
    lo, hi = math.inf, -math.inf
    for row in rows:
        for chunk in _chunks(report.tensor(row.name)):
            low, high = (v.item() for v in torch.aminmax(chunk))
            if not (math.isfinite(low) and math.isfinite(high)):
                # Only a chunk holding NaN/Inf pays for the mask.
                finite = chunk[torch.isfinite(chunk)]
                if not finite.numel():
                    continue
                low, high = (v.item() for v in torch.aminmax(finite))
            lo, hi = min(lo, low), max(hi, high)
    if lo > hi:
        return -1.0, 1.0
    if lo == hi:
        half = max(abs(lo) * 0.5, 0.5)
        return lo - half, hi + half
    return lo, hi


def _counts(tensor: Tensor, lo: float, hi: float, bins: int) -> tuple[np.ndarray, int]:
    """Histogram counts of the finite values on ``bins`` equal bins of
    ``[lo, hi]`` (the last bin closed), and the number of NaN/Inf.

    ``torch.histc`` ignores NaN and values outside the range; ``[lo, hi]``
    holds every finite value (the first pass), so what it leaves out is
    exactly the NaN/Inf.
    """
    counts = torch.zeros(bins, dtype=torch.float64)
    for chunk in _chunks(tensor):
        counts += torch.histc(chunk, bins=bins, min=lo, max=hi)
    return counts.numpy(), tensor.numel() - int(counts.sum().item())


def _block_mean(matrix: Tensor, limit: int = HEATMAP_LIMIT) -> tuple[np.ndarray, int, int]:
    """Means of ``⌈r/limit⌉ × ⌈c/limit⌉`` blocks of an ``r × c`` matrix, and
    the block sizes.

    The last block of a row or column may be partial (its mean is over the
    cells it has). A block holding a NaN or Inf is NaN, so that non-finite
    values stay visible however far the matrix is reduced. Converted to
    float64 a band of block rows at a time.
    """
    r, c = matrix.shape
    fr, fc = -(-r // limit) or 1, -(-c // limit) or 1
    out_r, out_c = -(-r // fr), -(-c // fc)
    sums = np.empty((out_r, out_c))
    # A band holds a few float64 temporaries of its size: a quarter chunk each.
    band = max(1, _CHUNK // 4 // max(fr * c, 1))
    for b0 in range(0, out_r, band):
        b1 = min(out_r, b0 + band)
        x = matrix[b0 * fr : b1 * fr].detach().to("cpu", torch.float64)
        x = torch.where(torch.isfinite(x), x, math.nan)
        x = F.pad(x, (0, out_c * fc - c, 0, (b1 - b0) * fr - x.shape[0]))
        sums[b0:b1] = x.reshape(b1 - b0, fr, out_c, fc).sum((1, 3)).numpy()
    # Cells per block: full blocks but the last row and column of blocks.
    rows = np.minimum(fr, r - fr * np.arange(out_r))
    cols = np.minimum(fc, c - fc * np.arange(out_c))
    return sums / np.outer(rows, cols), fr, fc


_Curve = tuple[int, np.ndarray, np.ndarray, np.ndarray]


def _bias_curve(tensor: Tensor) -> _Curve:
    """What a bias panel draws: the number of values and (x, low, high), the
    values themselves (low = high) up to ``_MAX_POINTS``, their min-max
    envelope beyond, so that what is kept until the figure is drawn stays small."""
    values = torch.cat([*_chunks(tensor), torch.zeros(0, dtype=torch.float64)]).numpy()
    if values.size <= _MAX_POINTS:
        return values.size, np.arange(values.size), values, values
    return values.size, *_envelope(values, _MAX_POINTS)


def _file_stems(names: Sequence[str]) -> list[str]:
    """``heatmap_<name>`` with characters outside ``[A-Za-z0-9._-]`` made ``_``,
    long names shortened, and a ``-2``, ``-3``... suffix where two collide."""
    stems: list[str] = []
    seen: set[str] = set()
    for name in names:
        base = _UNSAFE.sub("_", name)[:_MAX_STEM] or "_"
        stem, k = base, 1
        while stem.lower() in seen:  # case-insensitive file systems
            k += 1
            stem = f"{base}-{k}"
        seen.add(stem.lower())
        stems.append(f"heatmap_{stem}")
    return stems


def _shape(row: Any) -> str:
    return "×".join(str(int(s)) for s in row.shape) or "scalar"


def _stat(row: Any, name: str) -> float | None:
    value = getattr(row, name, None)
    return None if value is None else float(value)


def _label(row: Any) -> str:
    gate = getattr(row, "gate", "") or ""
    if gate and row.kind in _GATE_NAMES:
        return f"{row.name} (gate {gate}: {_GATE_NAMES[row.kind].get(gate, gate)})"
    return str(row.name)


def _axis_labels(row: Any) -> tuple[str, str]:
    """(x, y) labels of a heat map: what the columns and rows of the matrix are."""
    if row.kind in _GATE_NAMES:
        source = "hidden-state feature" if "weight_hh" in row.name else "input feature"
        return f"{source} (in)", f"hidden unit of gate {getattr(row, 'gate', '')}"
    if row.kind == "embedding":
        return "embedding dimension", "token index"
    if row.kind == "linear":
        return "input feature (in)", "output unit (out)"
    return "column (dim 1)", "row (dim 0)"


def _grid(n: int, columns: int) -> tuple[int, int]:
    cols = min(columns, n)
    return cols, -(-n // cols)


def _pages(items: Sequence[Any], size: int) -> Iterator[tuple[int, Sequence[Any]]]:
    for start in range(0, len(items), size):
        yield start // size, items[start : start + size]


def _envelope(values: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block starts, minima and maxima of ``values`` in ``points`` blocks."""
    step = -(-values.size // points)
    padded = np.pad(values, (0, -values.size % step), mode="edge").reshape(-1, step)
    return np.arange(0, values.size, step), padded.min(axis=1), padded.max(axis=1)


@dataclass
class _Plotter:
    """Draws and saves one figure at a time; every figure is cleared after saving."""

    figure: Callable[[float, float, int, bool], Any]
    directory: Path
    dpi: int

    def _grid(
        self,
        n: int,
        columns: int,
        panel: tuple[float, float],
        margins: tuple[float, float, float, float],
        extra: tuple[float, float],
    ) -> tuple[Any, list[Any]]:
        """A figure of ``n`` axes in a grid of fixed-size panels (inches), with
        ``extra`` inches right and on top; ``margins`` (left, right, bottom,
        top) inside each panel hold its labels. Placed by hand: a layout
        engine costs more than the drawing on grids of many panels."""
        cols, rows = _grid(n, columns)
        (pw, ph), (ew, eh) = panel, extra
        width, height = pw * cols + ew, ph * rows + eh
        fig = self.figure(width, height, self.dpi, False)
        left, right, bottom, top = margins
        axes = []
        for k in range(n):
            r, c = divmod(k, cols)
            x, y = c * pw + left, height - eh - (r + 1) * ph + bottom
            box = (x / width, y / height, (pw - left - right) / width, (ph - bottom - top) / height)
            axes.append(fig.add_axes(box))
        return fig, axes

    def _save(self, fig: Any, stem: str) -> Path:
        path = self.directory / f"{stem}.png"
        try:
            fig.savefig(path, format="png")
        finally:
            fig.clear()
        return path

    def _colormap(self) -> Any:
        from matplotlib import colormaps

        return colormaps["RdBu_r"].with_extremes(bad="black")

    def histograms(
        self,
        rows: Sequence[Any],
        counts: dict[str, tuple[np.ndarray, int]],
        edges: np.ndarray,
        log_y: bool,
    ) -> list[Path]:
        def draw(ax: Any, row: Any) -> None:
            values, nonfinite = counts[row.name]
            ax.stairs(values, edges, fill=True, color="tab:blue")
            ax.set_title(f"{_label(row)}\n{_shape(row)}", fontsize=8)
            ax.set_xlabel("weight value", fontsize=7)
            ax.set_ylabel("count", fontsize=7)
            ax.set_xlim(edges[0], edges[-1])
            ax.tick_params(labelsize=6)
            if log_y:
                ax.set_yscale("symlog", linthresh=1.0)
            ax.text(
                0.02,
                0.97,
                _summary(row, nonfinite),
                transform=ax.transAxes,
                fontsize=6,
                va="top",
                family="monospace",
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0},
            )

        title = f"{len(edges) - 1} shared bins over [{edges[0]:.4g}, {edges[-1]:.4g}]" + (
            ", log counts" if log_y else ""
        )
        return self._paged(
            rows,
            "histogram_panel",
            _HISTOGRAM_PAGE,
            _HISTOGRAM_COLUMNS,
            draw,
            lambda suffix: f"Weight histograms{suffix}: {title}",
            "histograms",
        )

    def _paged(
        self,
        rows: Sequence[Any],
        panel: str,
        per_page: int,
        columns: int,
        draw: Callable[[Any, Any], None],
        title: Callable[[str], str],
        stem: str,
    ) -> list[Path]:
        """A grid of one panel per row, continued on ``stem_2.png``, … past
        ``per_page`` panels."""
        paths = []
        pages = -(-len(rows) // per_page)
        for page, chunk in _pages(rows, per_page):
            fig, axes = self._grid(
                len(chunk), columns, FIGURE_INCHES[panel], _PANEL_MARGINS, (0.0, _TITLE_INCHES)
            )
            for ax, row in zip(axes, chunk, strict=True):
                draw(ax, row)
            suffix = f" (page {page + 1} of {pages})" if pages > 1 else ""
            fig.suptitle(title(suffix), fontsize=10)
            paths.append(self._save(fig, stem + (f"_{page + 1}" if page else "")))
        return paths

    def heatmap(self, row: Any, tensor: Tensor, stem: str) -> Path:
        r, c = (int(s) for s in row.shape)
        image, fr, fc = _block_mean(tensor.reshape(r, c))
        finite = np.isfinite(image)
        vmax = float(np.abs(image[finite]).max()) if finite.any() else 0.0
        vmax = vmax or 1.0
        width, height = FIGURE_INCHES["heatmap"]
        fig = self.figure(width, height, self.dpi, False)
        # Placed by hand (inches): room for the labels left and below, a
        # two-line title above and the colour bar on the right.
        ax = fig.add_axes((0.9 / width, 0.75 / height, 4.6 / width, 4.55 / height))
        cax = fig.add_axes((5.75 / width, 0.75 / height, 0.2 / width, 4.55 / height))
        out_r, out_c = image.shape
        im = ax.imshow(
            np.ma.masked_invalid(image),
            cmap=self._colormap(),
            vmin=-vmax,
            vmax=vmax,
            aspect="auto",
            interpolation="nearest",
            # Cells span their blocks in the original indices; the padding of a
            # partial last block is cut off by the limits below.
            extent=(-0.5, out_c * fc - 0.5, out_r * fr - 0.5, -0.5),
        )
        ax.set_xlim(-0.5, c - 0.5)
        ax.set_ylim(r - 0.5, -0.5)
        from matplotlib.ticker import MaxNLocator

        for axis in (ax.xaxis, ax.yaxis):  # indices, never half-cells
            axis.set_major_locator(MaxNLocator(integer=True))
        title = f"{_label(row)}  [{_shape(row)}]"
        if fr > 1 or fc > 1:
            title += f"\nblock means of {fr}×{fc} cells, {out_r}×{out_c} shown"
        ax.set_title(title, fontsize=10)
        xlabel, ylabel = _axis_labels(row)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        bar = fig.colorbar(im, cax=cax)
        bar.set_label("weight value" + (" (block mean)" if fr > 1 or fc > 1 else ""))
        return self._save(fig, stem)

    def kernels(self, row: Any, tensor: Tensor) -> Path:
        shape = tuple(int(s) for s in row.shape)
        weight = tensor.reshape(shape)
        n = min(shape[0], _MAX_KERNELS)
        first = weight[:n, 0].detach().to("cpu", torch.float64)
        while first.ndim > 3:  # Conv3d: the middle depth slice
            first = first[:, first.shape[1] // 2]
        if first.ndim == 2:  # Conv1d: a 1-D kernel per unit, drawn as a 1×k strip
            first = first[:, None, :]
        images = first.numpy()
        finite = np.isfinite(images)
        vmax = float(np.abs(images[finite]).max()) if finite.any() else 0.0
        vmax = vmax or 1.0
        cell = FIGURE_INCHES["kernel_cell"]
        fig, axes = self._grid(n, _KERNEL_COLUMNS, cell, _KERNEL_CELL_MARGINS, _KERNEL_MARGIN)
        cmap = self._colormap()
        for j, ax in enumerate(axes):
            im = ax.imshow(
                np.ma.masked_invalid(images[j]),
                cmap=cmap,
                vmin=-vmax,
                vmax=vmax,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"unit {j}", fontsize=7, pad=2)
        # The colour bar in the right margin, as tall as the grid.
        width, height = fig.get_size_inches()
        grid_height = height - _KERNEL_MARGIN[1]
        cax = fig.add_axes(
            (
                (width - _KERNEL_MARGIN[0] + 0.3) / width,
                0.1 / height,
                0.15 / width,
                max(grid_height - 0.2, 0.3) / height,
            )
        )
        bar = fig.colorbar(im, cax=cax)
        bar.set_label("weight value")
        depth = ", middle depth slice" if len(shape) > 4 else ""
        fig.suptitle(
            f"{row.name}  [{_shape(row)}]\nkernels weight[j, 0]: first input channel{depth}\n"
            f"units 0–{n - 1} of {shape[0]}",
            fontsize=8,
        )
        return self._save(fig, "conv_kernels")

    def biases(self, rows: Sequence[Any], values: dict[str, _Curve]) -> list[Path]:
        def draw(ax: Any, row: Any) -> None:
            _draw_bias(ax, values[row.name])
            ax.set_title(f"{row.name}  [{_shape(row)}]", fontsize=8)
            ax.set_xlabel("unit", fontsize=7)
            ax.set_ylabel("bias", fontsize=7)
            ax.tick_params(labelsize=6)

        return self._paged(
            rows,
            "bias_panel",
            _BIAS_PAGE,
            _BIAS_COLUMNS,
            draw,
            lambda suffix: f"Biases{suffix}",
            "biases",
        )

    def depth(self, rows: Sequence[Any]) -> Path:
        fig = self.figure(*FIGURE_INCHES["depth"], self.dpi, True)
        axes = fig.subplots(3, 1, sharex=True)
        index = np.arange(len(rows))
        series = [
            (axes[0], [("l2", "L2 norm ‖W‖_F", "tab:blue")], "L2 norm"),
            (axes[1], [("sigma_max", "σmax", "tab:red")], "σmax"),
            (
                axes[2],
                [
                    ("std_xavier", "std ÷ Xavier std", "tab:green"),
                    ("std_he", "std ÷ He std", "tab:purple"),
                ],
                "std ÷ init std",
            ),
        ]
        for ax, lines, ylabel in series:
            values = {a: np.array([_stat(r, a) for r in rows], dtype=float) for a, _, _ in lines}
            present = np.concatenate([v[np.isfinite(v)] for v in values.values()])
            log = _use_log(present)
            for attribute, label, color in lines:
                ys = values[attribute]
                if not np.isfinite(ys).any():
                    continue
                if log:
                    ax.set_yscale("log")
                    zero = ys == 0
                    ys = np.where(zero, np.nan, ys)
                    # A log axis has no 0: zeros are crosses on the bottom edge.
                    ax.plot(
                        index[zero],
                        np.full(zero.sum(), 0.02),
                        "x",
                        color=color,
                        markersize=7,
                        transform=ax.get_xaxis_transform(),
                    )
                ax.plot(index, ys, "o-", color=color, label=label, markersize=4)
            if present.size:
                ax.legend(fontsize=8, loc="best")
            else:
                ax.text(
                    0.5, 0.5, "n/a in this report", transform=ax.transAxes, ha="center", va="center"
                )
            ax.set_ylabel(ylabel + (" (log; × = 0)" if log else ""))
            ax.grid(True, alpha=0.3)
        axes[2].axhline(1.0, color="0.4", lw=0.8, ls="--")
        axes[2].set_xlabel("weight row (depth order)")
        if len(rows) <= 48:
            axes[2].set_xticks(index, [str(r.name) for r in rows], rotation=90, fontsize=7)
        fig.suptitle("Weight norms against depth", fontsize=10)
        return self._save(fig, "depth")


def _summary(row: Any, nonfinite: int) -> str:
    mean, std = _stat(row, "mean"), _stat(row, "std")
    lines = []
    if mean is not None and std is not None:
        lines.append(f"μ={mean:.3g}\nσ={std:.3g}")
    if _numel(row) == 0:
        lines.append("empty")
    if nonfinite:
        lines.append(f"{nonfinite} NaN/Inf not shown")
    return "\n".join(lines)


def _draw_bias(ax: Any, curve: _Curve) -> None:
    n, x, low, high = curve
    if n <= _MAX_BARS:
        ax.bar(x, low, color=np.where(low >= 0, "tab:red", "tab:blue"), width=0.8)
    elif n <= _MAX_POINTS:
        ax.plot(x, low, lw=0.6, color="tab:blue")
    else:
        ax.fill_between(x, low, high, color="tab:blue", lw=0, step="post")
    ax.axhline(0.0, color="0.3", lw=0.6)


def _use_log(values: np.ndarray) -> bool:
    """Log y when no value is negative and the positive ones span more than
    100×, so that one layer far off does not flatten the others."""
    positive = values[values > 0]
    return bool(positive.size and (values >= 0).all() and positive.max() > 100 * positive.min())
