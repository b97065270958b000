"""Weight reports: rows, kinds, gates, ties, sources, activations, diagnoses, outputs, compare."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

import weightops as wo
from weightops.inspection import Thresholds, compare, inspect
from weightops.inspection.activations import record_activations
from weightops.inspection.report import COLUMNS, Report

INJURED = {"0.weight", "5.weight", "9.weight", "8"}


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),  # 0
        nn.ReLU(),  # 1
        nn.Conv2d(8, 16, 3),  # 2
        nn.ReLU(),  # 3
        nn.Flatten(),  # 4
        nn.Linear(16 * 4 * 4, 32),  # 5
        nn.ReLU(),  # 6
        nn.Linear(32, 16),  # 7
        nn.ReLU(),  # 8
        nn.Linear(16, 10),  # 9
    )


@functools.cache
def _training() -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    torch.manual_seed(0)
    net = small_cnn()
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    for _ in range(10):  # plain SGD, lr 0.05 (torch.optim's first step costs seconds of imports)
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.05 * p.grad
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return net.state_dict(), grads, x


def trained_cnn() -> tuple[nn.Sequential, Tensor]:
    """The small CNN after 10 SGD steps on random 8×8 images (fixed seed),
    with the last step's gradients; trained once, a fresh copy each call."""
    state, grads, x = _training()
    net = small_cnn()
    net.load_state_dict(state)
    for name, p in net.named_parameters():
        p.grad = grads[name].clone()
    return net, x.clone()


def injured_cnn() -> tuple[nn.Sequential, Tensor]:
    """The trained CNN with four problems: 0.weight re-drawn from N(0, 100),
    5.weight a constant 0.05, 7.bias -100 (ReLU 8 dead), 9.weight zero."""
    net, x = trained_cnn()
    with torch.no_grad():
        net[0].weight.normal_(0.0, 10.0, generator=torch.Generator().manual_seed(1))
        net[5].weight.fill_(0.05)
        net[7].bias.fill_(-100.0)
        net[9].weight.zero_()
    return net, x


# ---------------------------------------------------------------- acceptance


def test_inspect_trained_cnn_healthy_has_no_diagnoses() -> None:
    net, x = trained_cnn()
    report = inspect(net, example_input=x)
    assert report.diagnoses == []


def test_inspect_injured_cnn_flags_each_problem() -> None:
    net, x = injured_cnn()
    with torch.no_grad():  # the premise: ReLU 8's inputs are negative everywhere
        assert float(net[:8](x).max()) < 0
    report = inspect(net, example_input=x)
    found = {(d.code, d.name) for d in report.diagnoses}
    assert {
        ("std_far_from_init", "0.weight"),
        ("symmetric_units", "5.weight"),
        ("dead_units", "8"),
        ("zero_fraction", "9.weight"),
    } <= found


def test_inspect_injured_cnn_flags_nothing_on_healthy_layers() -> None:
    net, x = injured_cnn()
    report = inspect(net, example_input=x)
    assert {d.name for d in report.diagnoses} <= INJURED
    assert report.row("2.weight").std_he is not None
    assert {d.name for d in report.diagnoses} & {"2.weight", "1", "3", "6"} == set()


def test_diagnosis_messages_name_metric_and_threshold() -> None:
    net, x = injured_cnn()
    for d in inspect(net, example_input=x).diagnoses:
        assert d.metric.split("/")[0].split("+")[0].split(" ")[0] in d.message
        assert "thresholds." in d.message or d.code == "nonfinite"
        assert d.name in d.message


# ---------------------------------------------------------------- kinds, gates, ties


class Zoo(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.conv = nn.Conv1d(6, 4, 3)
        self.up = nn.ConvTranspose1d(4, 6, 3, groups=2)
        self.bn = nn.BatchNorm1d(6)
        self.lstm = nn.LSTM(6, 5)
        self.gru = nn.GRU(5, 3)
        self.norm = nn.LayerNorm(3)
        self.head = nn.Linear(3, 2)


def test_inspect_model_kinds_from_layer_types() -> None:
    kinds = {row.name: row.kind for row in inspect(Zoo(), "none").rows}
    assert kinds["embed.weight"] == "embedding"
    assert kinds["conv.weight"] == kinds["up.weight"] == "conv"
    assert kinds["bn.weight"] == kinds["bn.running_var"] == kinds["norm.weight"] == "norm"
    assert kinds["bn.bias"] == kinds["lstm.bias_ih_l0"] == kinds["head.bias"] == "bias"
    assert kinds["lstm.weight_ih_l0[f]"] == "lstm-gate"
    assert kinds["gru.weight_hh_l0[z]"] == "gru-gate"
    assert kinds["head.weight"] == "linear"


def test_inspect_state_dict_kinds_from_names_and_shapes() -> None:
    state = Zoo().state_dict()
    report = inspect(state, "none")
    model = {row.name: row.kind for row in inspect(Zoo(), "none").rows}
    assert {row.name: row.kind for row in report.rows} == model


def test_inspect_lstm_splits_rows_per_gate() -> None:
    lstm = nn.LSTM(6, 5)
    report = inspect(lstm)
    gates = [row for row in report.rows if row.name.startswith("weight_ih_l0")]
    assert [row.gate for row in gates] == ["i", "f", "g", "o"]
    assert [row.shape for row in gates] == [(5, 6)] * 4
    forget = lstm.weight_ih_l0.detach()[5:10].double()
    assert report.row("weight_ih_l0[f]").std == pytest.approx(float(forget.std(correction=0)))


def test_inspect_state_dict_gates_with_projection_and_gru() -> None:
    lstm = nn.LSTM(6, 8, proj_size=3)
    rows = inspect(lstm.state_dict(), "none").rows
    assert [r.name for r in rows if r.kind == "lstm-gate"][:4] == [
        f"weight_ih_l0[{g}]" for g in "ifgo"
    ]
    assert {r.name: r.kind for r in rows}["weight_hr_l0"] == "linear"
    gru = {r.name: r for r in inspect(nn.GRU(4, 7).state_dict(), "none").rows}
    assert gru["weight_hh_l0[n]"].shape == (7, 7)


def test_inspect_gate_fans_are_the_gates() -> None:
    lstm = nn.LSTM(40, 30)
    wo.init_(lstm, "he_normal", generator=torch.Generator().manual_seed(0))
    ratios = [row.std_he for row in inspect(lstm, "none").rows if row.kind == "lstm-gate"]
    assert ratios and all(r is not None and 0.8 < r < 1.2 for r in ratios)


def test_inspect_tied_parameters_once_with_shared_with() -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4), "out": nn.Linear(4, 10, bias=False)})
    model["out"].weight = model["emb"].weight
    rows = [row for row in inspect(model).rows if "weight" in row.name]
    assert [(row.name, row.shared_with) for row in rows] == [("emb.weight", ("out.weight",))]


def test_inspect_state_dict_tied_tensors_once() -> None:
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4), "out": nn.Linear(4, 10, bias=False)})
    model["out"].weight = model["emb"].weight
    rows = inspect(model.state_dict()).rows
    assert [(row.name, row.shared_with) for row in rows] == [("emb.weight", ("out.weight",))]


def test_inspect_parametrized_weight_as_effective_value() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8))
    wo.parametrize(net, wo.Prune(0.5))
    report = inspect(net)
    assert [row.name for row in report.rows] == ["0.weight", "0.bias"]
    assert report.row("0.weight").zero_fraction == 0.5
    assert torch.equal(report.tensor("0.weight"), net[0].weight.detach())


def test_inspect_conv_transpose_units_are_output_channels() -> None:
    up = nn.ConvTranspose2d(4, 6, 3)  # weight (in 4, out 6, 3, 3)
    with torch.no_grad():
        up.weight.zero_()
        up.weight[:, :2] = 1.0  # output channels 0 and 1: one identical pair
    row = inspect(nn.Sequential(up)).row("0.weight")
    assert (row.max_cosine, row.similar_pairs) == (pytest.approx(1.0), 1)


def test_inspect_grouped_conv_transpose_fans() -> None:
    up = nn.ConvTranspose2d(4, 8, 3, groups=2)  # fan_in (4 / 2)·9 = 18
    wo.init_(nn.Sequential(up), "he_normal", generator=torch.Generator().manual_seed(0))
    std_he = inspect(up, "none").row("weight").std_he
    assert std_he is not None and 0.8 < std_he < 1.2


# ---------------------------------------------------------------- statistics


def test_inspect_statistics_match_direct_computation() -> None:
    torch.manual_seed(0)
    w = torch.randn(30, 20)
    row = inspect({"w": w}).row("w")
    exact = torch.linalg.svdvals(w.double())
    assert row.std == pytest.approx(float(w.double().std(correction=0)))
    assert row.l2 == pytest.approx(float(w.double().norm()))
    assert row.sigma_max == pytest.approx(float(exact[0]), rel=1e-3)
    assert row.stable_rank == pytest.approx(float((exact**2).sum() / exact[0] ** 2), rel=2e-3)
    assert row.std_he == pytest.approx(row.std / math.sqrt(2 / 20))
    assert row.std_xavier == pytest.approx(row.std / math.sqrt(2 / 50))


def test_inspect_spectral_none_has_no_sigma() -> None:
    row = inspect({"w": torch.randn(5, 5)}, "none").row("w")
    assert (row.sigma_max, row.sigma_iters, row.stable_rank) == (None, None, None)
    assert row.max_cosine is not None


def test_inspect_spectral_full_gives_spectrum_and_alpha() -> None:
    g = torch.Generator().manual_seed(0)
    report = inspect(
        {"big": torch.randn(120, 100, generator=g), "small": torch.randn(8, 8)}, "full"
    )
    big, small = report.row("big"), report.row("small")
    assert big.spectrum is not None and len(big.spectrum) == 100
    assert big.sigma_max == big.spectrum[0] and big.sigma_iters == 0
    assert big.alpha is not None and big.alpha > 2
    assert small.alpha is None


def test_inspect_gradient_columns() -> None:
    lin = nn.Linear(3, 2)
    lin.weight.grad = torch.full((2, 3), -2.0)
    row = inspect(lin).row("weight")
    assert (row.grad_norm, row.grad_max_abs, row.grad_mean_abs) == pytest.approx(
        (math.sqrt(24.0), 2.0, 2.0)
    )
    assert inspect(lin).row("bias").grad_norm is None
    assert inspect(dict(lin.named_parameters())).row("weight").grad_norm == row.grad_norm


# ---------------------------------------------------------------- sources, skipped


def test_inspect_state_dict_skips_non_floating_with_reason() -> None:
    state: dict[str, Any] = {
        **nn.BatchNorm1d(3).state_dict(),
        "step": torch.tensor(3),
        "meta": {"epoch": 1},
    }
    report = inspect(state)
    skipped = dict(report.skipped)
    assert set(skipped) == {"num_batches_tracked", "step", "meta"}
    assert "int64" in skipped["step"] and "dict" in skipped["meta"]
    assert {row.name for row in report.rows} | set(skipped) == set(state)


class Source:
    """A checkpoint-like object: names(), info(), get() counting reads, skipped()."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self.tensors = tensors
        self.reads: list[str] = []

    def names(self) -> list[str]:
        return list(self.tensors)

    def info(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        return tuple(self.tensors[name].shape), self.tensors[name].dtype

    def get(self, name: str) -> Tensor:
        self.reads.append(name)
        return self.tensors[name].clone()

    def skipped(self) -> list[tuple[str, str]]:
        return [("optimizer", "not a tensor (dict)")]


def test_inspect_tensor_source_reads_each_tensor_once() -> None:
    tensors = {
        "lstm.weight_ih_l0": torch.randn(12, 2),
        "lstm.weight_hh_l0": torch.randn(12, 3),
        "step": torch.tensor(7),
    }
    source = Source(tensors)
    report = inspect(source)
    assert source.reads == ["lstm.weight_ih_l0", "lstm.weight_hh_l0"]  # "step": header only
    assert report.row("lstm.weight_hh_l0[o]").kind == "lstm-gate"
    assert dict(report.skipped) == {
        "optimizer": "not a tensor (dict)",
        "step": "not floating point (torch.int64)",
    }
    assert torch.equal(report.tensor("lstm.weight_ih_l0[g]"), tensors["lstm.weight_ih_l0"][6:9])


class TiedSource:
    """A .pt checkpoint-like source: names(), get() counting reads, aliases()."""

    def __init__(self, tensors: dict[str, Tensor], aliases: dict[str, str]) -> None:
        self.tensors, self._aliases = tensors, aliases
        self.reads: list[str] = []

    def names(self) -> list[str]:
        return list(self.tensors)

    def get(self, name: str) -> Tensor:
        self.reads.append(name)
        return self.tensors[name]

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)


def test_inspect_source_aliases_are_one_row_with_shared_with() -> None:
    wte = torch.randn(10, 4)
    tensors = {"wte.weight": wte, "h.weight": torch.randn(4, 4), "lm_head.weight": wte}
    source = TiedSource(tensors, {"lm_head.weight": "wte.weight"})
    report = inspect(source)
    assert [(row.name, row.shared_with) for row in report.rows] == [
        ("wte.weight", ("lm_head.weight",)),
        ("h.weight", ()),
    ]
    assert source.reads == ["wte.weight", "h.weight"]  # the alias is never read
    # Selected without its canonical name, an alias is a row of its own.
    alone = inspect(TiedSource(tensors, {"lm_head.weight": "wte.weight"}), where="lm_head*")
    assert [(row.name, row.shared_with) for row in alone.rows] == [("lm_head.weight", ())]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_inspect_sparse_tensors_skipped_with_layout() -> None:
    dense = torch.randn(3, 4)
    state = {"w": dense, "coo": dense.to_sparse(), "csr": dense.to_sparse_csr()}
    report = inspect(state)
    assert [row.name for row in report.rows] == ["w"]
    assert dict(report.skipped) == {
        "coo": "sparse layout (torch.sparse_coo)",
        "csr": "sparse layout (torch.sparse_csr)",
    }
    from_source = inspect(TiedSource(state, {}))
    assert dict(from_source.skipped) == dict(report.skipped)
    assert compare(state, state)[1]["status"] == "skipped"


def test_inspect_where_glob_selects_rows() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    assert [r.name for r in inspect(net, where="1.*").rows] == ["1.weight", "1.bias"]
    assert [r.name for r in inspect(net.state_dict(), where="*bias").rows] == ["0.bias", "1.bias"]


def test_inspect_where_types_and_callables() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2))
    assert [r.name for r in inspect(net, where=nn.Conv2d).rows] == ["0.weight"]
    matrices = inspect(net.state_dict(), where=lambda name, module, t: t.ndim > 1)
    assert [r.name for r in matrices.rows] == ["0.weight", "1.weight"]
    with pytest.raises(TypeError, match="where"):
        inspect(net.state_dict(), where=nn.Conv2d)


def test_inspect_lazy_and_other_buffers_are_skipped() -> None:
    model = nn.Sequential(nn.LazyLinear(3))
    model.register_buffer("table", torch.ones(4))
    skipped = dict(inspect(model).skipped)
    assert set(skipped) == {"0.weight", "0.bias", "table"}
    assert "lazy" in skipped["0.weight"] and "normalisation" in skipped["table"]


def test_inspect_bad_arguments_raise() -> None:
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="spectral"):
        inspect(net, "svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="example_input"):
        inspect(net.state_dict(), example_input=torch.ones(2))
    with pytest.raises(TypeError, match="model_or_state_dict"):
        inspect([torch.ones(2)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="where"):
        inspect(net, where="nothing*")
    with pytest.raises(ValueError, match="where"):
        inspect(net.state_dict(), where="nothing*")
    with pytest.raises(TypeError, match="thresholds"):
        inspect(net, thresholds={"cosine": 0.9})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"init_std_factor": 1.0}, {"zero_fraction": 0.0}, {"cosine": 1.5}, {"alpha": -1.0}],
)
def test_thresholds_out_of_range_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Thresholds(**kwargs)


# ---------------------------------------------------------------- activations


def test_activations_output_shapes_follow_the_network() -> None:
    net, x = trained_cnn()
    shapes = {a.name: a.output_shape for a in inspect(net, example_input=x).activations}
    assert shapes["0"] == (64, 8, 6, 6)
    assert shapes["2"] == (64, 16, 4, 4)
    assert shapes["4"] == (64, 256)
    assert shapes["9"] == (64, 10)


def test_activations_dead_fraction_counts_units_off_everywhere() -> None:
    lin = nn.Linear(2, 4)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    rows = record_activations(nn.Sequential(lin, nn.ReLU()), torch.randn(5, 2))
    assert [r.dead_fraction for r in rows] == [0.5, 0.5]
    assert [r.zero_is_off for r in rows] == [False, True]


def test_dead_units_only_for_relu_family() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    with torch.no_grad():
        lin.bias.fill_(-100.0)
    x = torch.randn(5, 8)
    assert inspect(nn.Sequential(lin, nn.Tanh()), example_input=x).diagnoses == []
    found = inspect(nn.Sequential(lin, nn.ReLU6()), example_input=x).diagnoses
    assert [(d.code, d.name) for d in found] == [("dead_units", "1")]


def all_hooks(model: nn.Module) -> Iterator[object]:
    for module in model.modules():
        yield from module._forward_hooks.values()
        yield from module._forward_pre_hooks.values()


def test_activations_hooks_removed() -> None:
    net, x = trained_cnn()
    inspect(net, example_input=x)
    assert list(all_hooks(net)) == []


def test_activations_hooks_removed_on_error() -> None:
    net = small_cnn()
    with pytest.raises(RuntimeError):
        inspect(net, example_input=torch.randn(2, 3, 8, 8))  # 3 channels, conv wants 1
    assert list(all_hooks(net)) == []


def test_activations_run_in_current_mode_without_grad() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    net.eval()
    rows = inspect(net, example_input=torch.ones(3, 4)).activations
    assert rows[0].mean == pytest.approx(rows[1].mean)  # eval: dropout is identity
    assert not net.training and net[0].weight.grad is None


def test_activations_train_mode_leaves_buffers_and_rng_unchanged() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5)).train()
    before = {name: buf.clone() for name, buf in net.named_buffers()}
    buffers = dict(net.named_buffers())
    x = torch.randn(8, 4) + 5.0
    rng = torch.get_rng_state()
    rows = inspect(net, example_input=x).activations
    assert rows[3].output_shape == (8, 6) and net.training
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew from a forked generator
    for name, buf in net.named_buffers():
        assert buf is buffers[name]
        assert torch.equal(buf, before[name]), name  # running stats, num_batches_tracked


class _BatchNormThenFails(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)

    def forward(self, x: Tensor) -> Tensor:
        self.norm(x)
        self.norm.running_var = torch.zeros(3)  # a module rebinding its buffer
        raise RuntimeError("after the norm layer")


def test_activations_buffers_restored_on_error() -> None:
    net = _BatchNormThenFails().train()
    var = net.norm.running_var
    with pytest.raises(RuntimeError, match="after the norm layer"):
        inspect(net, example_input=torch.randn(5, 3) + 2.0)
    buffers = dict(net.norm.named_buffers())
    assert buffers["running_var"] is var and torch.equal(buffers["running_var"], torch.ones(3))
    assert torch.equal(buffers["running_mean"], torch.zeros(3))
    assert int(buffers["num_batches_tracked"]) == 0


# ---------------------------------------------------------------- diagnoses


def test_diagnose_nonfinite_values() -> None:
    w = torch.randn(6, 6)
    w[0, 0] = math.nan
    w[1, 1] = math.inf
    for spectral in ("power", "full"):
        found = inspect({"w": w}, spectral).diagnoses  # type: ignore[arg-type]
        assert [(d.code, d.value) for d in found] == [("nonfinite", 2.0)]


class _HostSyncs(TorchFunctionMode):
    """Records every tensor-to-host read (bool, item, float, int, tolist)."""

    READS = frozenset({"__bool__", "item", "__float__", "__int__", "tolist"})

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(
        self,
        func: Any,
        types: object,
        args: tuple[object, ...] = (),
        kwargs: dict[str, object] | None = None,
    ) -> object:
        if getattr(func, "__name__", "") in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("bad", [None, math.nan, math.inf])
def test_inspect_full_spectrum_one_host_sync_and_no_nan(bad: float | None) -> None:
    w = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    if bad is not None:
        w[2, 3] = bad
    with _HostSyncs() as syncs:
        report = inspect({"w": w}, "full")
    # One read of the batch, no finiteness check before the SVD (weight_stats'
    # item() reads a CPU scalar only for CPU tensors, which costs no sync).
    assert [read for read in syncs.reads if read != "item"] == ["tolist"]
    row = report.row("w")
    if bad is None:
        assert row.sigma_max == pytest.approx(float(torch.linalg.svdvals(w)[0]), rel=1e-5)
        assert row.spectrum is not None and len(row.spectrum) == 6
    else:
        assert (row.spectrum, row.sigma_max, row.stable_rank, row.alpha) == (None,) * 4
        assert row.sigma_iters is None
        assert [d.code for d in report.diagnoses] == ["nonfinite"]
        json.loads(report.to_json(), parse_constant=pytest.fail)  # no NaN/Infinity leaked


def test_diagnose_heavy_tail_with_full_spectrum() -> None:
    g = torch.Generator().manual_seed(0)
    cauchy = torch.tan(math.pi * (torch.rand(200, 200, generator=g) - 0.5)) * 0.01
    found = {d.code for d in inspect({"w": cauchy}, "full").diagnoses}
    assert "heavy_tail" in found
    gauss = torch.randn(200, 200, generator=g) * math.sqrt(2 / 200)
    assert inspect({"w": gauss}, "full").diagnoses == []


def test_diagnose_exploding_and_vanishing_gradients() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    net[0].weight.grad = torch.full((4, 4), 1e-6)
    net[1].weight.grad = torch.full((4, 4), 1e-3)
    net[2].weight.grad = torch.full((4, 4), 1e3)
    found = {(d.code, d.name) for d in inspect(net).diagnoses}
    assert found == {("vanishing_gradients", "0.weight"), ("exploding_gradients", "2.weight")}


def test_diagnose_sigma_outlier() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(*(nn.Linear(16, 16) for _ in range(4)))
    with torch.no_grad():
        net[2].weight.mul_(100.0)
    found = [
        (d.code, d.name) for d in inspect(net, thresholds=Thresholds(init_std_factor=1e3)).diagnoses
    ]
    assert found == [("sigma_outlier", "2.weight")]


def test_diagnose_embedding_default_init_is_not_far_from_init() -> None:
    torch.manual_seed(0)
    assert inspect(nn.Embedding(1000, 64)).diagnoses == []


def test_inspect_cosine_skipped_above_row_limit() -> None:
    constant = torch.full((40, 3), 0.05)  # every pair of units identical
    row = inspect({"w": constant}).row("w")
    assert row.max_cosine == pytest.approx(1.0) and row.similar_pairs == 40 * 39 // 2
    limited = inspect({"w": constant}, thresholds=Thresholds(cosine_max_rows=39))
    assert (limited.row("w").max_cosine, limited.row("w").similar_pairs) == (None, None)
    assert "symmetric_units" not in {d.code for d in limited.diagnoses}
    # An output layer over a vocabulary: more rows than the default limit.
    head = torch.randn(Thresholds().cosine_max_rows + 1, 2)
    assert inspect({"lm_head.weight": head}, "none").row("lm_head.weight").max_cosine is None


@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_thresholds_cosine_max_rows_must_be_a_count(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="cosine_max_rows must be an int >= 0"):
        Thresholds(cosine_max_rows=value)  # type: ignore[arg-type]


def test_diagnose_thresholds_change_what_fires() -> None:
    net, x = injured_cnn()
    strict = Thresholds(cosine=1.0, zero_fraction=1.0, dead_fraction=1.0)
    codes = {d.code for d in inspect(net, example_input=x, thresholds=strict).diagnoses}
    assert "symmetric_units" not in codes and "zero_fraction" in codes


# ---------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def report() -> Report:
    net, x = injured_cnn()
    return inspect(net, example_input=x)


def test_report_json_parses_with_everything(report: Report) -> None:
    document = json.loads(report.to_json())
    assert [row["name"] for row in document["rows"]] == [row.name for row in report.rows]
    assert len(document["diagnoses"]) == len(report.diagnoses)
    assert len(document["activations"]) == len(report.activations)
    assert document["rows"][0]["alpha"] == "n/a"
    assert "spectrum" not in document["rows"][0]


def test_report_json_has_spectrum_with_full() -> None:
    document = json.loads(inspect({"w": torch.eye(3)}, "full").to_json())
    assert document["rows"][0]["spectrum"] == [1.0, 1.0, 1.0]


def test_report_csv_header_and_one_line_per_row(report: Report) -> None:
    lines = list(csv.reader(io.StringIO(report.to_csv())))
    assert tuple(lines[0]) == COLUMNS and "spectrum" not in lines[0]
    assert [line[0] for line in lines[1:]] == [row.name for row in report.rows]
    assert float(lines[1][COLUMNS.index("std")]) == report.rows[0].std


def test_report_markdown_tables(report: Report) -> None:
    text = str(report)
    weights = text.split("## Weights")[1].split("##")[0].strip().splitlines()
    assert weights[0].startswith("| name | kind |")
    assert len(weights) == 2 + len(report.rows)
    assert "## Diagnoses" in text and "## Activations" in text
    assert all(d.message.replace("|", "\\|") in text for d in report.diagnoses)


def test_report_tensor_rereads_cpu_copy(report: Report) -> None:
    w = report.tensor("5.weight")
    assert w.device.type == "cpu" and w.shape == (32, 256) and bool((w == 0.05).all())
    with pytest.raises(KeyError, match="nope"):
        report.tensor("nope")


def test_report_row_to_dict_round_trips() -> None:
    row = inspect({"w": torch.ones(2, 2)}).row("w")
    data = row.to_dict()
    assert data["shape"] == [2, 2] and data["name"] == "w" and set(data) >= set(COLUMNS)


def test_inspect_progress_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    inspect({f"w{i}": torch.ones(2) for i in range(3)}, progress=True)
    assert capsys.readouterr().err


# ---------------------------------------------------------------- compare


def test_compare_relative_change_and_membership() -> None:
    a = {"w": torch.ones(4), "z": torch.zeros(2), "zz": torch.zeros(2), "s": torch.ones(2, 2)}
    b = {"w": torch.full((4,), 1.5), "z": torch.ones(2), "zz": torch.zeros(2), "s": torch.ones(4)}
    b["new"] = torch.ones(1)
    records = {r["name"]: r for r in compare(a, b)}
    assert records["w"]["relative_change"] == pytest.approx(0.5)
    assert records["z"]["relative_change"] == math.inf
    assert records["zz"]["relative_change"] == 0.0
    assert records["s"]["status"] == "shape mismatch"
    assert records["new"]["status"] == "only in b"
    assert list(records) == ["w", "z", "zz", "s", "new"]


def test_compare_model_with_checkpoint_source_one_tensor_at_a_time() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net[0].weight.mul_(1.1)
    source = Source(state)
    records = {r["name"]: r for r in compare(source, net)}
    assert records["0.weight"]["relative_change"] == pytest.approx(0.1, rel=1e-5)
    assert records["0.bias"]["relative_change"] == 0.0
    assert records["1.num_batches_tracked"]["status"] == "skipped"
    assert sorted(source.reads) == sorted(state)


def test_compare_writers() -> None:
    records = compare({"w": torch.ones(2)}, {"w": torch.zeros(2), "v": torch.ones(1)})
    assert json.loads(records.to_json())[0]["relative_change"] == 1.0
    assert records.to_csv().splitlines()[0].startswith("name,status,")
    assert "| w | compared | 1 |" in records.to_markdown()
    assert np.isclose(records[0]["norm_a"], math.sqrt(2))
