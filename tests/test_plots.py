"""Plots of an inspection report: files, pixel sizes, shared bins, memory discipline."""

from __future__ import annotations

import builtins
import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

import matplotlib.image

from weightops.inspection import plots
from weightops.inspection.plots import plot_report


@dataclass
class FakeRow:
    name: str
    kind: str
    shape: tuple[int, ...]
    gate: str = ""
    mean: float | None = None
    std: float | None = None
    l2: float | None = None
    sigma_max: float | None = None
    std_xavier: float | None = None
    std_he: float | None = None


@dataclass
class FakeReport:
    """Rows and ``tensor(name)`` over a dict, handing out a fresh copy on every
    read and remembering (weakly) what it handed out."""

    tensors: dict[str, torch.Tensor]
    kinds: dict[str, str] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    alive_at_read: list[int] = field(default_factory=list)
    _handed: list[weakref.ref[torch.Tensor]] = field(default_factory=list)

    @property
    def rows(self) -> list[FakeRow]:
        rows = []
        for name, t in self.tensors.items():
            finite = t[torch.isfinite(t)].double()
            clean = t.double().nan_to_num(0.0, 0.0, 0.0)
            sigma = torch.linalg.matrix_norm(clean, 2) if t.ndim == 2 else None
            rows.append(
                FakeRow(
                    name=name,
                    kind=self.kinds.get(name, "linear"),
                    shape=tuple(t.shape),
                    gate=name[-2] if name.endswith("]") else "",
                    mean=finite.mean().item() if finite.numel() else 0.0,
                    std=finite.std(correction=0).item() if finite.numel() else 0.0,
                    l2=finite.norm().item(),
                    sigma_max=None if sigma is None else sigma.item(),
                    std_he=1.0 if t.ndim >= 2 else None,
                )
            )
        return rows

    def tensor(self, name: str) -> torch.Tensor:
        self.alive_at_read.append(sum(ref() is not None for ref in self._handed))
        self.reads.append(name)
        value = self.tensors[name].clone()
        self._handed.append(weakref.ref(value))
        return value


def inches_to_pixels(width: float, height: float, dpi: int) -> tuple[int, int]:
    """(rows, columns) of the PNG, as ``imread`` gives its shape."""
    return round(height * dpi), round(width * dpi)


def grid(n: int, columns: int) -> tuple[int, int]:
    cols = min(columns, n)
    return cols, math.ceil(n / cols)


def histogram_pixels(panels: int, dpi: int = 100) -> tuple[int, int]:
    cols, rows = grid(panels, 4)
    return inches_to_pixels(3.0 * cols, 2.5 * rows + 0.5, dpi)


def bias_pixels(panels: int, dpi: int = 100) -> tuple[int, int]:
    cols, rows = grid(panels, 3)
    return inches_to_pixels(4.0 * cols, 2.5 * rows + 0.5, dpi)


def kernel_pixels(kernels: int, dpi: int = 100) -> tuple[int, int]:
    cols, rows = grid(kernels, 8)
    return inches_to_pixels(1.0 * cols + 1.5, 1.0 * rows + 0.7, dpi)


HEATMAP = inches_to_pixels(7.0, 6.0, 100)
DEPTH = inches_to_pixels(10.0, 9.0, 100)


def check_png(path: Path, shape: tuple[int, int]) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > 1024, path
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == shape, path


def small_cnn_report() -> FakeReport:
    g = torch.Generator().manual_seed(0)
    linear = torch.randn(32, 600, generator=g)
    linear[3, 7] = float("nan")
    tensors = {
        "conv1.weight": torch.randn(12, 3, 3, 3, generator=g),
        "conv1.bias": torch.randn(12, generator=g),
        "conv2.weight": torch.randn(16, 12, 3, 3, generator=g) * 0.1,
        "fc.weight": linear,
        "fc.bias": torch.randn(300, generator=g),
        "lstm.weight_ih_l0[i]": torch.randn(300, 20, generator=g, dtype=torch.float64),
        "lstm.weight_hh_l0[f]": torch.randn(5, 5, generator=g).to(torch.bfloat16),
        "lstm.bias_ih_l0": torch.randn(5000, generator=g),
        "bn.weight": torch.ones(16),
        "head.weight": torch.zeros(10, 32),
    }
    kinds = {
        "conv1.weight": "conv",
        "conv2.weight": "conv",
        "conv1.bias": "bias",
        "fc.bias": "bias",
        "lstm.bias_ih_l0": "bias",
        "lstm.weight_ih_l0[i]": "lstm-gate",
        "lstm.weight_hh_l0[f]": "lstm-gate",
        "bn.weight": "norm",
    }
    return FakeReport(tensors, kinds)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[FakeReport, list[Path]]:
    report = small_cnn_report()
    return report, plot_report(report, tmp_path_factory.mktemp("plots") / "new", log_y=True)


def test_plot_report_writes_each_plot_in_order(written: tuple[FakeReport, list[Path]]) -> None:
    _, paths = written
    assert [p.name for p in paths] == [
        "histograms.png",
        "heatmap_fc.weight.png",
        "heatmap_lstm.weight_ih_l0_i_.png",
        "heatmap_lstm.weight_hh_l0_f_.png",
        "heatmap_head.weight.png",
        "conv_kernels.png",
        "biases.png",
        "depth.png",
    ]


def test_plot_report_pngs_open_with_expected_pixels(
    written: tuple[FakeReport, list[Path]],
) -> None:
    _, paths = written
    expected = {
        "histograms.png": histogram_pixels(6),  # 2 conv, fc, 2 gates, head; not bn, not biases
        "conv_kernels.png": kernel_pixels(12),
        "biases.png": bias_pixels(3),
        "depth.png": DEPTH,
    }
    for path in paths:
        check_png(path, expected.get(path.name, HEATMAP))


def test_plot_report_reads_one_tensor_at_a_time(written: tuple[FakeReport, list[Path]]) -> None:
    report, _ = written
    assert report.alive_at_read and max(report.alive_at_read) == 0
    # Two passes at most: weight rows for the range, then every plotted row once.
    assert all(report.reads.count(name) <= 2 for name in report.tensors)
    assert "bn.weight" not in report.reads


def test_plot_report_dpi_sets_pixels(tmp_path: Path) -> None:
    report = FakeReport({"w": torch.randn(3, 4)})
    paths = plot_report(report, tmp_path, dpi=50)
    assert [p.name for p in paths] == ["histograms.png", "heatmap_w.png", "depth.png"]
    check_png(paths[0], histogram_pixels(1, dpi=50))
    check_png(paths[1], inches_to_pixels(7.0, 6.0, 50))
    check_png(paths[2], inches_to_pixels(10.0, 9.0, 50))


def test_plot_report_continues_grids_on_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pages keep the test fast; the code path is the one of 32 panels.
    monkeypatch.setattr(plots, "_HISTOGRAM_PAGE", 6)
    monkeypatch.setattr(plots, "_BIAS_PAGE", 2)
    tensors = {f"p{i}": torch.randn(5) for i in range(8)}
    report = FakeReport(tensors, {**dict.fromkeys(tensors, "other"), "p7": "bias"})
    paths = plot_report(report, tmp_path, dpi=50)
    assert [p.name for p in paths] == [
        "histograms.png",
        "histograms_2.png",
        "biases.png",
        "depth.png",
    ]
    check_png(paths[0], histogram_pixels(6, dpi=50))
    check_png(paths[1], histogram_pixels(1, dpi=50))
    check_png(paths[2], bias_pixels(1, dpi=50))


@pytest.mark.parametrize("shape", [(10, 2, 5), (3, 2, 3, 4, 5)])
def test_plot_report_conv_kernels_any_dimension(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...]
) -> None:
    monkeypatch.setattr(plots, "_MAX_KERNELS", 9)  # the cap, at a size that draws fast
    report = FakeReport({"conv.weight": torch.randn(shape)}, {"conv.weight": "conv"})
    paths = plot_report(report, tmp_path, dpi=50)
    assert paths[1].name == "conv_kernels.png"
    check_png(paths[1], kernel_pixels(min(shape[0], 9), dpi=50))


def test_plot_report_warns_naming_skipped_heatmaps(tmp_path: Path) -> None:
    report = FakeReport({name: torch.randn(2, 2) for name in ("a", "b", "c")})
    with pytest.warns(UserWarning, match=r"2 heat maps not drawn \(max_heatmaps=1\): b, c"):
        paths = plot_report(report, tmp_path, max_heatmaps=1, dpi=20)
    assert [p.name for p in paths if p.name.startswith("heatmap")] == ["heatmap_a.png"]


def test_shared_range_is_global_and_finite() -> None:
    report = FakeReport(
        {"a": torch.tensor([0.5, float("inf"), 1.0]), "b": torch.tensor([-2.0, float("nan")])}
    )
    assert plots._shared_range(report, report.rows) == (-2.0, 1.0)


@pytest.mark.parametrize(("values", "expected"), [([], (-1.0, 1.0)), ([0.0, 0.0], (-0.5, 0.5))])
def test_shared_range_widens_empty_and_constant(
    values: list[float], expected: tuple[float, float]
) -> None:
    report = FakeReport({"a": torch.tensor(values)})
    assert plots._shared_range(report, report.rows) == expected


def test_counts_bin_finite_values_on_shared_edges() -> None:
    values = torch.tensor([-1.0, -0.5, 0.0, 0.25, 1.0, float("nan"), float("-inf")])
    counts, nonfinite = plots._counts(values, -1.0, 1.0, 4)
    expected, _ = np.histogram(values[:5].numpy(), bins=np.linspace(-1.0, 1.0, 5))
    np.testing.assert_array_equal(counts, expected)
    assert nonfinite == 2


def test_counts_chunked_equal_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    values = torch.randn(1000, dtype=torch.float16)
    whole, _ = plots._counts(values, -4.0, 4.0, 16)
    monkeypatch.setattr(plots, "_CHUNK", 7)
    chunked, _ = plots._counts(values, -4.0, 4.0, 16)
    np.testing.assert_array_equal(chunked, whole)
    assert whole.sum() == int(((values >= -4) & (values <= 4)).sum())


def test_block_mean_stays_within_limit_and_matches_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks so that the band loop takes several steps.
    monkeypatch.setattr(plots, "_CHUNK", 1000)
    matrix = torch.randn(600, 300, dtype=torch.float64)
    image, fr, fc = plots._block_mean(matrix)
    assert (fr, fc) == (3, 2)
    assert image.shape == (200, 150)
    np.testing.assert_allclose(image, matrix.numpy().reshape(200, 3, 150, 2).mean(axis=(1, 3)))


def test_block_mean_partial_blocks_and_nonfinite() -> None:
    matrix = torch.arange(5 * 3, dtype=torch.float32).reshape(5, 3)
    matrix[0, 0] = float("inf")
    image, fr, fc = plots._block_mean(matrix, limit=2)
    assert (fr, fc, image.shape) == (3, 2, (2, 2))
    assert np.isnan(image[0, 0])
    # The last blocks are partial: their means are over the cells they have.
    np.testing.assert_allclose(
        image[1], [matrix[3:, :2].mean().item(), matrix[3:, 2].mean().item()]
    )
    np.testing.assert_allclose(image[0, 1], matrix[:3, 2].mean().item())


def test_block_mean_leaves_small_matrices_whole() -> None:
    matrix = torch.randn(256, 17)
    image, fr, fc = plots._block_mean(matrix)
    assert (fr, fc) == (1, 1)
    np.testing.assert_allclose(image, matrix.double().numpy())


def test_file_stems_are_safe_and_unique() -> None:
    stems = plots._file_stems(["lstm.weight_ih_l0[i]", "a/b", "a_b", "A_B", "x" * 300])
    assert stems[:4] == [
        "heatmap_lstm.weight_ih_l0_i_",
        "heatmap_a_b",
        "heatmap_a_b-2",
        "heatmap_A_B-3",
    ]
    assert len(stems[4]) == len("heatmap_") + 120


def test_plot_report_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    target = tmp_path / "plots"
    with pytest.raises(ImportError, match=r"weightops\[plots\]") as info:
        plot_report(FakeReport({"w": torch.randn(2, 2)}), target)
    assert "\n" not in str(info.value)
    assert not target.exists()


def test_plot_report_leaves_no_pyplot_figures(tmp_path: Path) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    plot_report(FakeReport({"w": torch.randn(2, 2)}), tmp_path, dpi=20)
    assert plt.get_fignums() == figures
    assert matplotlib.get_backend() == backend


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bins": 1}, ValueError, r"bins must be an int in \[2, 4096\]"),
        ({"bins": 8.0}, TypeError, "bins must be an int"),
        ({"dpi": 5}, ValueError, r"dpi must be an int in \[10, 600\]"),
        ({"max_heatmaps": -1}, ValueError, "max_heatmaps must be an int"),
        ({"log_y": "yes"}, TypeError, "log_y must be a bool"),
    ],
)
def test_plot_report_rejects_bad_options(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    report = FakeReport({"w": torch.randn(2, 2)})
    with pytest.raises(error, match=match):
        plot_report(report, tmp_path / "out", **kwargs)
    assert report.reads == []
    assert not (tmp_path / "out").exists()


def test_plot_report_rejects_a_file_as_directory(tmp_path: Path) -> None:
    target = tmp_path / "file.png"
    target.write_bytes(b"x")
    with pytest.raises(ValueError, match="plot_report: directory must be a directory"):
        plot_report(FakeReport({"w": torch.randn(2, 2)}), target)


def test_plot_report_rejects_an_object_without_rows(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"report must be an object with rows and tensor\(name\)"):
        plot_report({"w": torch.randn(2, 2)}, tmp_path)  # type: ignore[arg-type]


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 8)
        self.lstm = nn.LSTM(8, 3)
        self.norm = nn.LayerNorm(3)


def test_inspect_report_plot_end_to_end(tmp_path: Path) -> None:
    from weightops.inspection import inspect

    torch.manual_seed(0)
    paths = inspect(TinyNet()).plot(tmp_path)
    gates = [f"heatmap_lstm.weight_{m}_l0_{g}_.png" for m in ("ih", "hh") for g in "ifgo"]
    assert [p.name for p in paths] == [
        "histograms.png",
        "heatmap_fc.weight.png",
        *gates,
        "conv_kernels.png",
        "biases.png",
        "depth.png",
    ]
    expected = {
        "histograms.png": histogram_pixels(10),  # conv, fc, 8 gates
        "conv_kernels.png": kernel_pixels(4),
        "biases.png": bias_pixels(4),  # conv, fc, lstm ih and hh
        "depth.png": DEPTH,
    }
    for path in paths:
        check_png(path, expected.get(path.name, HEATMAP))


def test_bias_curve_keeps_the_extremes_of_long_biases() -> None:
    values = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    values[1234] = 50.0
    n, x, low, high = plots._bias_curve(values)
    assert n == 10_000
    assert x.size == low.size == high.size <= 4096
    assert high.max() == 50.0
    assert low.min() == values.min().item()
