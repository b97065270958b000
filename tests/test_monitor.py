"""WeightMonitor: what it logs, when, where to, and what a non-logging step costs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize as P
from torch.utils._python_dispatch import TorchDispatchMode

import weightops.monitor as M
from weightops.functional.stats import STAT_NAMES, weight_stats
from weightops.monitor import GRAD_STAT_NAMES, WeightMonitor

ROOT = Path(__file__).resolve().parents[1]


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def layer(net: nn.Module, i: int) -> nn.Linear:
    return cast(nn.Linear, cast(nn.Sequential, net)[i])


def train(net: nn.Module, opt: torch.optim.Optimizer, steps: int, monitor: Any = None) -> None:
    """Full steps on a fixed stream of batches; ``monitor.step()`` per step when given."""
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(16, 6, generator=g)).square().mean().backward()
        if monitor is not None:
            monitor.step()
        opt.step()


def lines(path: Path) -> list[dict[str, Any]]:
    def refuse(token: str) -> None:
        raise ValueError(f"not strict JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def sgd(net: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=0.1)


class Recorder(TorchDispatchMode):
    """Every aten op run while it is active."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


class FakeWriter:
    """A SummaryWriter look-alike that remembers its calls."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.raw: list[dict[str, Any]] = []
        self.flushed = 0

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, value, global_step))

    def add_histogram_raw(self, tag: str, **kwargs: Any) -> None:
        self.raw.append({"tag": tag, **kwargs})

    def flush(self) -> None:
        self.flushed += 1


class PlainHistogramWriter:
    """A writer with add_histogram only (it bins the values itself)."""

    def __init__(self) -> None:
        self.histograms: list[tuple[str, torch.Tensor, int]] = []

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        pass

    def add_histogram(self, tag: str, values: torch.Tensor, global_step: int) -> None:
        self.histograms.append((tag, values, global_step))


# --- schedule and JSONL ----------------------------------------------------------


def test_monitor_jsonl_lines_parse_as_strict_json(tmp_path: Path) -> None:
    net = mlp()
    opt = sgd(net)
    with WeightMonitor(net, tmp_path / "log.jsonl", every=2) as monitor:
        monitor.attach(opt)
        train(net, opt, 6)
    records = lines(tmp_path / "log.jsonl")
    assert [set(r) for r in records] == [{"step", "weights", "grads"}] * 3


def test_monitor_logs_every_n_steps(tmp_path: Path) -> None:
    net = mlp()
    opt = sgd(net)
    with WeightMonitor(net, tmp_path / "log.jsonl", every=3) as monitor:
        monitor.attach(opt)
        train(net, opt, 10)
    assert [r["step"] for r in lines(tmp_path / "log.jsonl")] == [3, 6, 9]


def test_monitor_logs_every_statistic_of_every_default_weight() -> None:
    net = mlp()
    opt = sgd(net)
    with WeightMonitor(net, every=1) as monitor:
        monitor.attach(opt)
        train(net, opt, 1)
    record = monitor.records[0]
    assert {n: list(s) for n, s in record["weights"].items()} == {
        "0.weight": list(STAT_NAMES),
        "2.weight": list(STAT_NAMES),
    }
    assert {n: list(s) for n, s in record["grads"].items()} == {
        "0.weight": list(GRAD_STAT_NAMES),
        "2.weight": list(GRAD_STAT_NAMES),
    }


def test_monitor_weights_are_weight_stats_before_the_update() -> None:
    net = mlp()
    opt = sgd(net)
    before = layer(net, 0).weight.detach().clone()
    with WeightMonitor(net, every=1) as monitor:
        monitor.attach(opt)
        train(net, opt, 1)
    logged = monitor.records[0]["weights"]["0.weight"]
    expected = dict(zip(STAT_NAMES, weight_stats(before).tolist(), strict=True))
    assert logged == pytest.approx(expected, rel=1e-12, abs=0)


def test_monitor_logs_grads_present_at_the_step_before_zero_grad() -> None:
    net = mlp()
    opt = sgd(net)
    seen: list[torch.Tensor] = []
    opt.register_step_pre_hook(
        lambda o, a, k: seen.append(cast(torch.Tensor, layer(net, 2).weight.grad).clone())
    )
    with WeightMonitor(net, every=1) as monitor:
        monitor.attach(opt)
        train(net, opt, 2)  # zero_grad (set_to_none) runs between the steps
    g = seen[-1].double()
    assert monitor.records[-1]["grads"]["2.weight"] == pytest.approx(
        {
            "max_abs": g.abs().max().item(),
            "mean_abs": g.abs().mean().item(),
            "norm": g.norm().item(),
        },
        rel=1e-6,
    )


def test_monitor_step_counts_like_attach() -> None:
    a, b = mlp(), mlp()
    opt_a, opt_b = sgd(a), sgd(b)
    with WeightMonitor(a, every=2) as hooked, WeightMonitor(b, every=2) as manual:
        hooked.attach(opt_a)
        train(a, opt_a, 4)
        train(b, opt_b, 4, monitor=manual)
    assert hooked.records == manual.records


def test_monitor_records_stay_empty_with_a_path(tmp_path: Path) -> None:
    net = mlp()
    with WeightMonitor(net, tmp_path / "log.jsonl", every=1) as monitor:
        monitor.step()
    assert monitor.records == []


def test_monitor_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    for _ in range(2):
        with WeightMonitor(mlp(), path, every=1) as monitor:
            monitor.step()
    assert [r["step"] for r in lines(path)] == [1, 1]


def test_monitor_flushes_each_line_at_once(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    monitor = WeightMonitor(mlp(), path, every=1)
    monitor.step()
    assert len(lines(path)) == 1
    monitor.close()


def test_monitor_log_records_step_zero() -> None:
    with WeightMonitor(mlp()) as monitor:
        monitor.log()
    assert [r["step"] for r in monitor.records] == [0]


def test_monitor_step_count_set_resumes_numbering() -> None:
    with WeightMonitor(mlp(), every=10) as monitor:
        monitor.step_count = 95
        for _ in range(6):
            monitor.step()
    assert [r["step"] for r in monitor.records] == [100]


def test_monitor_nonfinite_gradient_is_null_in_strict_json(tmp_path: Path) -> None:
    net = mlp()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    layer(net, 0).weight.grad[0, 0] = math.inf  # type: ignore[index]
    with WeightMonitor(net, tmp_path / "log.jsonl", every=1) as monitor:
        monitor.step()
    grads = lines(tmp_path / "log.jsonl")[0]["grads"]["0.weight"]
    assert grads["max_abs"] is None and grads["norm"] is None


def test_monitor_counts_are_ints() -> None:
    net = mlp()
    with torch.no_grad():
        layer(net, 0).weight[0, 0] = math.nan
    with WeightMonitor(net, every=1) as monitor:
        monitor.step()
    stats = monitor.records[0]["weights"]["0.weight"]
    assert (stats["nan_count"], stats["inf_count"]) == (1, 0)
    assert all(type(stats[k]) is int for k in ("nan_count", "inf_count"))


def test_monitor_missing_gradient_has_no_entry() -> None:
    net = mlp()
    layer(net, 2).weight.grad = torch.ones_like(layer(net, 2).weight)
    with WeightMonitor(net, every=1) as monitor:
        monitor.step()
    assert list(monitor.records[0]["grads"]) == ["2.weight"]


# --- cost -----------------------------------------------------------------------


def test_monitor_non_logging_steps_run_no_tensor_op() -> None:
    net = mlp()
    opt = sgd(net)
    with WeightMonitor(net, every=100, histogram_every=50) as monitor:
        monitor.attach(opt)
        with Recorder() as recorder:
            for _ in range(49):
                monitor.step()
    assert (recorder.ops, monitor.records) == ([], [])


def test_monitor_logging_step_reads_the_host_once(monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    calls = []
    tolist = torch.Tensor.tolist

    def counted(self: torch.Tensor) -> Any:
        calls.append(self.shape)
        return tolist(self)

    def scalar_reads(ops: list[str]) -> int:
        return sum("_local_scalar_dense" in op for op in ops)

    # weight_stats may read CPU scalars (no device to wait for there); the
    # monitor must add no read of its own beyond the one tolist().
    with Recorder() as direct:
        for module in net:
            weight_stats(cast(nn.Linear, module).weight)
    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    with WeightMonitor(net, every=1, histogram_every=1) as monitor:
        with Recorder() as recorder:
            monitor.step()
    assert len(calls) == 1
    assert scalar_reads(recorder.ops) == scalar_reads(direct.ops)


# --- selection -------------------------------------------------------------------


def test_monitor_where_glob_selects_biases_too() -> None:
    with WeightMonitor(mlp(), where="*", every=1) as monitor:
        monitor.step()
    assert sorted(monitor.records[0]["weights"]) == ["0.bias", "0.weight", "2.bias", "2.weight"]


def test_monitor_logs_a_tied_tensor_once() -> None:
    emb, out = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    out.weight = emb.weight
    net = nn.ModuleDict({"emb": emb, "out": out})
    with WeightMonitor(net, every=1) as monitor:
        monitor.step()
    assert (monitor.names, list(monitor.records[0]["weights"])) == (["emb.weight"], ["emb.weight"])


class Double(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * weight


def test_monitor_logs_a_parametrized_weight_as_used_and_its_stored_gradient() -> None:
    net = mlp()
    stored = layer(net, 0).weight.detach().clone()
    P.register_parametrization(layer(net, 0), "weight", Double())
    opt = sgd(net)
    with WeightMonitor(net, every=1) as monitor:
        monitor.attach(opt)
        train(net, opt, 1)
    record = monitor.records[0]
    expected = weight_stats(2 * stored).tolist()
    assert list(record["weights"]["0.weight"].values()) == pytest.approx(expected, rel=1e-12)
    assert set(record["grads"]) == {"0.parametrizations.weight.original", "2.weight"}


class Sum(nn.Module):
    """A parametrization storing the weight as two tensors."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight, torch.zeros_like(weight)


def test_monitor_logs_each_stored_tensor_gradient_of_a_parametrization() -> None:
    net = mlp()
    P.register_parametrization(layer(net, 2), "weight", Sum())
    opt = sgd(net)
    with WeightMonitor(net, every=1) as monitor:
        monitor.attach(opt)
        train(net, opt, 1)
    grads = monitor.records[0]["grads"]
    stored = "2.parametrizations.weight.original"
    assert grads[stored + "0"] == grads[stored + "1"]  # d(a + b)/da = d(a + b)/db
    assert set(grads) == {"0.weight", stored + "0", stored + "1"}


def test_monitor_sparse_gradient_stats_as_dense() -> None:
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 1, 4])).sum().backward()
    with WeightMonitor(emb, every=1) as monitor:
        monitor.step()
    dense = cast(torch.Tensor, emb.weight.grad).to_dense()
    assert monitor.records[0]["grads"]["weight"] == pytest.approx(
        {"max_abs": 2.0, "mean_abs": dense.abs().mean().item(), "norm": dense.norm().item()}
    )


# --- histograms ------------------------------------------------------------------


def test_monitor_histograms_on_their_own_schedule(tmp_path: Path) -> None:
    net = mlp()
    opt = sgd(net)
    with WeightMonitor(net, tmp_path / "log.jsonl", every=2, histogram_every=3) as monitor:
        monitor.attach(opt)
        train(net, opt, 6)
    kinds = [(r["step"], "histograms" in r) for r in lines(tmp_path / "log.jsonl")]
    assert kinds == [(2, False), (3, True), (4, False), (6, False), (6, True)]


def test_monitor_histogram_matches_numpy(tmp_path: Path) -> None:
    net = mlp()
    with WeightMonitor(net, every=1, histogram_every=1, bins=16) as monitor:
        monitor.step()
    hist = monitor.records[1]["histograms"]["0.weight"]
    values = layer(net, 0).weight.detach().double().numpy()
    counts, edges = np.histogram(values, bins=16, range=(values.min(), values.max()))
    np.testing.assert_allclose(hist["edges"], edges, rtol=1e-12)
    assert hist["counts"] == counts.tolist()


@pytest.mark.parametrize(
    ("values", "edges", "counts"),
    [
        ([0.5, 0.5, 0.5], [-0.5, 0.5, 1.5], [0, 3]),  # constant: widened by 1 as torch.histc
        ([math.nan, math.inf, 1.0, 3.0], [1.0, 2.0, 3.0], [1, 1]),  # non-finite left out
        ([math.nan], [-1.0, 0.0, 1.0], [0, 0]),  # nothing finite
        ([], [-1.0, 0.0, 1.0], [0, 0]),  # empty
    ],
)
def test_histogram_edge_cases(values: list[float], edges: list[float], counts: list[int]) -> None:
    out = M._histogram(torch.tensor(values, dtype=torch.float32), 2).tolist()
    s = len(M._SUMMARY)
    assert (out[s : s + 3], out[s + 3 :]) == (edges, counts)


def test_histogram_counts_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "HISTOGRAM_CHUNK", 7)
    torch.manual_seed(0)
    w = torch.randn(5, 9, dtype=torch.bfloat16)[:, ::2]  # non-contiguous, 25 values
    out = M._histogram(w, 4).tolist()
    s = len(M._SUMMARY)
    values = w.double().numpy()
    assert out[:s] == pytest.approx(
        [values.min(), values.max(), 25, values.sum(), np.square(values).sum()]
    )
    assert out[s + 5 :] == np.histogram(values, bins=4)[0].tolist()


# --- TensorBoard -------------------------------------------------------------------


def test_monitor_tensorboard_scalars_per_statistic() -> None:
    writer = FakeWriter()
    with WeightMonitor(mlp(), every=1, tensorboard=writer) as monitor:
        monitor.step()
    tags = {tag for tag, _, _ in writer.scalars}
    assert "weights/0.weight/std" in tags
    assert len(tags) == 2 * len(STAT_NAMES)  # no gradients yet
    assert {step for _, _, step in writer.scalars} == {1}


def test_monitor_tensorboard_scalar_equals_the_record() -> None:
    writer = FakeWriter()
    with WeightMonitor(mlp(), every=1, tensorboard=writer) as monitor:
        monitor.step()
    logged = {tag: value for tag, value, _ in writer.scalars}
    assert logged["weights/2.weight/l2"] == monitor.records[0]["weights"]["2.weight"]["l2"]


def test_monitor_tensorboard_histogram_raw_from_the_same_bins() -> None:
    writer = FakeWriter()
    with WeightMonitor(mlp(), every=5, histogram_every=1, bins=8, tensorboard=writer) as monitor:
        monitor.step()
    raw = {r["tag"]: r for r in writer.raw}
    hist = monitor.records[0]["histograms"]["0.weight"]
    entry = raw["weights/0.weight"]
    assert (entry["bucket_limits"], entry["bucket_counts"]) == (hist["edges"][1:], hist["counts"])
    assert (entry["num"], entry["global_step"]) == (48, 1)


def test_monitor_tensorboard_add_histogram_fallback() -> None:
    writer = PlainHistogramWriter()
    net = mlp()
    with WeightMonitor(net, every=5, histogram_every=1, tensorboard=writer) as monitor:
        monitor.step()
    tag, values, step = writer.histograms[0]
    assert (tag, step) == ("weights/0.weight", 1)
    assert torch.equal(values, layer(net, 0).weight.detach())


def test_monitor_close_flushes_a_given_writer() -> None:
    writer = FakeWriter()
    WeightMonitor(mlp(), tensorboard=writer).close()
    assert writer.flushed == 1


@pytest.mark.parametrize("tensorboard", [True, "runs/monitor"])
def test_monitor_tensorboard_without_package_names_pip(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tensorboard: bool | str
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        WeightMonitor(mlp(), tmp_path / "log.jsonl", tensorboard=tensorboard)
    assert not (tmp_path / "log.jsonl").exists()  # nothing opened


def test_monitor_tensorboard_refuses_a_non_writer() -> None:
    with pytest.raises(TypeError, match="tensorboard"):
        WeightMonitor(mlp(), tensorboard=object())


def test_monitor_histograms_need_a_histogram_writer() -> None:
    class ScalarsOnly:
        def add_scalar(self, tag: str, value: float, global_step: int) -> None:
            pass

    with pytest.raises(TypeError, match="add_histogram"):
        WeightMonitor(mlp(), histogram_every=10, tensorboard=ScalarsOnly())


# --- hooks and lifetime -------------------------------------------------------------


def test_monitor_hook_handle_removes() -> None:
    net = mlp()
    opt = sgd(net)
    monitor = WeightMonitor(net, every=1)
    monitor.attach(opt).remove()
    train(net, opt, 3)
    assert (monitor.step_count, monitor.records) == (0, [])


def test_monitor_close_removes_hooks_and_closes_the_file(tmp_path: Path) -> None:
    net = mlp()
    opt = sgd(net)
    with WeightMonitor(net, tmp_path / "log.jsonl", every=1) as monitor:
        monitor.attach(opt)
        train(net, opt, 2)
    train(net, opt, 2)
    assert (monitor.step_count, len(lines(tmp_path / "log.jsonl"))) == (2, 2)
    assert monitor._file is not None and monitor._file.closed


def test_monitor_closed_refuses_to_log() -> None:
    monitor = WeightMonitor(mlp(), every=1)
    monitor.close()
    monitor.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        monitor.step()


# --- arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"every": 0}, ValueError, "every"),
        ({"every": True}, TypeError, "every"),
        ({"every": 2.0}, TypeError, "every"),
        ({"every": np.int64(0)}, ValueError, "every"),
        ({"histogram_every": 0}, ValueError, "histogram_every"),
        ({"bins": 0}, ValueError, "bins"),
        ({"bins": 1 << 17}, ValueError, "bins"),
        ({"where": "nothing*"}, ValueError, "where"),
        ({"path": 3}, TypeError, "path"),
    ],
)
def test_monitor_bad_argument_names_it(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        WeightMonitor(mlp(), **kwargs)


def test_monitor_attach_refuses_a_non_optimizer() -> None:
    with pytest.raises(TypeError, match="optimizer"):
        WeightMonitor(mlp()).attach(object())  # type: ignore[arg-type]


# --- benchmark suite ---------------------------------------------------------------------


def test_bench_monitor_suite_runs_quick(tmp_path: Path) -> None:
    from weightops import bench

    suite = ROOT / "benchmarks" / "bench_monitor.py"
    assert bench.main([str(suite), "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["op/floor"] > 0
