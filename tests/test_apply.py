"""Model level: selection, parametrize/unparametrize, apply_, constrain."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from toys import Direction, Scale

import weightops as wo
from weightops.testing import DTYPES


class Tied(nn.Module):
    """A language-model-shaped net whose output layer shares the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.hidden = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 12, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(torch.relu(self.hidden(self.emb(x)))))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.up = nn.ConvTranspose2d(4, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.up(torch.relu(self.conv(x))))).flatten(1))


TOKENS = torch.arange(12).view(3, 4)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- selection ---------------------------------------------------------------


def test_default_selection_takes_layer_weights_not_biases_or_norms() -> None:
    names = wo.apply_(ConvNet(), wo.Clip(-1, 1))
    assert sorted(names) == ["conv.weight", "fc.weight", "up.weight"]


def test_default_selection_takes_every_recurrent_weight() -> None:
    names = wo.apply_(nn.LSTM(3, 4, num_layers=2), wo.Clip(-1, 1))
    assert sorted(names) == ["weight_hh_l0", "weight_hh_l1", "weight_ih_l0", "weight_ih_l1"]


def test_where_accepts_a_glob_a_type_and_a_callable() -> None:
    net = ConvNet()
    assert wo.apply_(net, wo.Clip(-1, 1), where="*.bias") == [
        "conv.bias",
        "up.bias",
        "bn.bias",
        "fc.bias",
    ]
    assert wo.apply_(net, wo.Clip(-1, 1), where=nn.Conv2d) == ["conv.weight"]
    assert wo.apply_(net, wo.Clip(-1, 1), where=(nn.Conv2d, nn.Linear)) == [
        "conv.weight",
        "fc.weight",
    ]
    chosen = wo.apply_(net, wo.Clip(-1, 1), where=lambda name, module, p: p.ndim == 1)
    assert chosen == ["conv.bias", "up.bias", "bn.weight", "bn.bias", "fc.bias"]


def test_shared_parameters_lists_tied_names() -> None:
    assert wo.shared_parameters(Tied()) == [["emb.weight", "out.weight"]]


# --- apply_ ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"t": wo.MaxNorm(1.0, dim=3)}, ValueError, "weight"),
        ({"t": nn.ReLU()}, TypeError, "t"),
        ({"t": wo.Clip(-1, 1), "where": 3}, TypeError, "where"),
        ({"t": wo.Clip(-1, 1), "where": "no.such.*"}, ValueError, "where"),
    ],
)
def test_apply_bad_argument_raises_and_leaves_every_parameter_bitwise_unchanged(
    kwargs: dict,
    error: type[Exception],
    name: str,  # type: ignore[type-arg]
) -> None:
    net = ConvNet()
    before = _snapshot(net)
    with pytest.raises(error, match=rf"\b{name}\b must"):
        wo.apply_(net, **kwargs)
    assert _bitwise_equal(_snapshot(net), before)


def test_apply_checks_every_weight_before_changing_any() -> None:
    # MaxNorm(dim=1) fits the 2-D fc weight but not the 1-D biases: the error
    # comes before any weight is clipped, whatever order they are visited in.
    net = ConvNet()
    before = _snapshot(net)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        wo.apply_(net, wo.MaxNorm(1e-3, dim=1), where=lambda n, m, p: n in ("fc.weight", "fc.bias"))
    assert _bitwise_equal(_snapshot(net), before)


def test_apply_refuses_a_parametrized_weight() -> None:
    net = nn.Linear(3, 3)
    wo.parametrize(net, wo.Clip(-1, 1))
    with pytest.raises(ValueError, match="parametrized"):
        wo.apply_(net, wo.Clip(-1, 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_apply_matches_the_transform(dtype: torch.dtype, device: str) -> None:
    net = nn.Linear(5, 4).to(device=device, dtype=dtype)
    t = wo.Clip(-0.1, 0.2) >> wo.MaxNorm(0.3)
    expected = t(net.weight.detach())
    wo.apply_(net, t)
    assert torch.equal(net.weight.detach(), expected)


# --- tied weights ------------------------------------------------------------


def test_tied_weight_is_transformed_once_and_stays_tied_under_apply() -> None:
    net = Tied()
    before = net.emb.weight.detach().clone()
    names = wo.apply_(net, Scale(2.0))
    assert sorted(names) == ["emb.weight", "hidden.weight", "out.weight"]
    assert net.out.weight is net.emb.weight
    assert torch.equal(net.emb.weight.detach(), 2.0 * before)


def test_tied_weight_is_transformed_once_and_stays_tied_under_parametrize() -> None:
    net = Tied()
    before = net.emb.weight.detach().clone()
    registered = wo.parametrize(net, Scale(2.0))
    assert registered["emb.weight"] is registered["out.weight"]
    assert net.out.parametrizations.weight is net.emb.parametrizations.weight
    assert torch.equal(net.out.weight, 2.0 * before)
    assert torch.equal(net.emb.weight, 2.0 * before)
    stored = [p for p in net.parameters() if p.shape == before.shape]
    assert len(stored) == 1, "one stored tensor for the tied pair"

    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(TOKENS).logsumexp(-1).sum().backward()
    opt.step()
    assert torch.equal(net.out.weight, net.emb.weight), "still tied after a step"

    live = net.emb.weight.detach().clone()
    wo.unparametrize(net)
    assert net.out.weight is net.emb.weight
    assert net.emb.weight is stored[0], "the same Parameter object, so optimizers stay valid"
    assert torch.equal(net.emb.weight.detach(), live)


def test_tied_weight_is_transformed_once_and_stays_tied_under_constrain() -> None:
    net = Tied()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    before = net.emb.weight.detach().clone()
    handle = wo.constrain(opt, Scale(2.0), model=net)
    assert handle.transforms["emb.weight"] is handle.transforms["out.weight"]
    net(TOKENS).sum().backward()
    opt.step()
    assert net.out.weight is net.emb.weight
    assert torch.equal(net.emb.weight.detach(), 2.0 * before)


def test_a_tied_weight_selected_by_one_name_is_transformed_for_both() -> None:
    net = Tied()
    wo.parametrize(net, wo.Clip(-0.1, 0.1), where="out.weight")
    assert torch.equal(net.emb.weight, net.out.weight)
    assert bool((net.emb.weight.abs() <= torch.tensor(0.1)).all())


def test_two_tensor_parametrization_of_a_tied_weight_stays_tied() -> None:
    net = Tied()
    x = net(TOKENS)
    wo.parametrize(net, Direction())
    torch.testing.assert_close(net(TOKENS), x)
    wo.unparametrize(net)
    assert net.out.weight is net.emb.weight
    torch.testing.assert_close(net(TOKENS), x)


# --- parametrize / unparametrize --------------------------------------------


def test_parametrize_then_bake_leaves_the_output_unchanged() -> None:
    torch.manual_seed(0)
    net = ConvNet().eval()
    x = torch.randn(2, 1, 8, 8)
    wo.parametrize(net, wo.Clip(-0.2, 0.2) >> wo.MaxNorm(1.0))
    live = net(x)
    assert sorted(wo.unparametrize(net, bake=True)) == ["conv.weight", "fc.weight", "up.weight"]
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in net.modules())
    assert torch.equal(net(x), live)


def test_unparametrize_without_bake_restores_the_stored_weights() -> None:
    net = ConvNet()
    before = _snapshot(net)
    wo.parametrize(net, wo.Clip(-0.01, 0.01))
    wo.unparametrize(net, bake=False)
    assert _bitwise_equal(_snapshot(net), before)


def test_unparametrize_without_bake_refuses_a_two_tensor_parametrization() -> None:
    net = nn.Linear(3, 3)
    wo.parametrize(net, Direction())
    with pytest.raises(ValueError, match="bake"):
        wo.unparametrize(net, bake=False)
    assert torch.nn.utils.parametrize.is_parametrized(net, "weight")


def test_parametrize_stacks_on_an_existing_parametrization() -> None:
    net = nn.Linear(4, 4)
    wo.parametrize(net, Scale(2.0))
    wo.parametrize(net, Scale(3.0))
    original = net.parametrizations.weight.original
    assert torch.equal(net.weight, 6.0 * original)


def test_state_dict_round_trip_into_a_fresh_model_is_exact() -> None:
    torch.manual_seed(0)
    net = Tied()
    wo.parametrize(net, wo.Clip(-0.3, 0.3) >> wo.MaxNorm(0.8))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(TOKENS).logsumexp(-1).sum().backward()
    opt.step()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)

    torch.manual_seed(1)
    fresh = Tied()
    wo.parametrize(fresh, wo.Clip(-0.3, 0.3) >> wo.MaxNorm(0.8))
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert _bitwise_equal(fresh.state_dict(), net.state_dict())
    assert torch.equal(fresh(TOKENS), net(TOKENS))
    assert fresh.out.weight.data_ptr() != 0 and torch.equal(fresh.out.weight, fresh.emb.weight)


def test_deepcopy_of_a_parametrized_model_is_independent_and_tied() -> None:
    net = Tied()
    wo.parametrize(net, wo.MaxNorm(0.5))
    twin = copy.deepcopy(net)
    assert torch.equal(twin(TOKENS), net(TOKENS))
    assert twin.out.parametrizations.weight is twin.emb.parametrizations.weight
    with torch.no_grad():
        twin.emb.parametrizations.weight.original.mul_(3.0)
    assert not torch.equal(twin(TOKENS), net(TOKENS))


def test_torch_compile_fullgraph_runs_a_parametrized_model() -> None:
    torch.manual_seed(0)
    net = Tied()
    wo.parametrize(net, wo.Clip(-0.3, 0.3) >> wo.MaxNorm(0.8))
    compiled = torch.compile(net, fullgraph=True)
    torch.testing.assert_close(compiled(TOKENS), net(TOKENS))


def test_a_parametrized_lstm_runs() -> None:
    lstm = nn.LSTM(3, 4)
    wo.parametrize(lstm, wo.Clip(-0.05, 0.05))
    out, _ = lstm(torch.randn(5, 2, 3))
    assert bool((lstm.weight_hh_l0.abs() <= torch.tensor(0.05)).all())
    out.sum().backward()
    assert lstm.parametrizations.weight_hh_l0.original.grad is not None


# --- constrain ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "within"),
    [
        (wo.Clip(-0.05, 0.05), lambda w: bool((w.abs() <= torch.tensor(0.05)).all())),
        (
            wo.MaxNorm(0.5),
            lambda w: float(w.double().flatten(1).norm(dim=1).max()) <= 0.5 * (1 + 1e-6),
        ),
    ],
    ids=["clip", "max_norm"],
)
def test_constrain_holds_after_each_of_100_large_steps(t: wo.Transform, within) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    net = ConvNet()
    opt = torch.optim.SGD(net.parameters(), lr=5.0, momentum=0.9)
    handle = wo.constrain(opt, t, model=net)
    selected = [net.conv.weight, net.up.weight, net.fc.weight]
    for _ in range(100):
        opt.zero_grad()
        # A linear loss: large steps without the squared loss' blow-up to inf.
        net(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
        assert all(bool(torch.isfinite(w).all()) and within(w.detach()) for w in selected)
    handle.remove()


def test_constrain_stops_after_remove() -> None:
    net = nn.Linear(3, 3, bias=False)
    opt = torch.optim.SGD(net.parameters(), lr=100.0)
    with wo.constrain(opt, wo.Clip(-0.01, 0.01)):
        net(torch.ones(1, 3)).sum().backward()
        opt.step()
        assert bool((net.weight.abs() <= torch.tensor(0.01)).all())
    opt.zero_grad()
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert float(net.weight.detach().abs().max()) > 1.0


def test_constrain_without_a_model_selects_matrices() -> None:
    net = nn.Linear(3, 3)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    handle = wo.constrain(opt, wo.Clip(-0.1, 0.1))
    assert list(handle.transforms) == ["param_groups[0].params[0]"]


def test_constrain_by_name_needs_a_model() -> None:
    opt = torch.optim.SGD(nn.Linear(3, 3).parameters(), lr=1.0)
    with pytest.raises(ValueError, match="where"):
        wo.constrain(opt, wo.Clip(-1, 1), where="*.weight")


class AtLeast(wo.Transform):
    """Refuses, in setup, a weight of fewer than ``n`` elements."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def setup(self, weight: torch.Tensor, module: nn.Module | None = None) -> None:
        if weight.numel() < self.n:
            raise ValueError(
                f"AtLeast: weight must have >= {self.n} elements, got {weight.numel()}"
            )

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * 2


@pytest.mark.parametrize("call", [wo.apply_, wo.parametrize], ids=["apply_", "parametrize"])
def test_a_setup_failure_on_a_later_weight_leaves_the_model_unchanged(call) -> None:  # type: ignore[no-untyped-def]
    net = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))
    before = _snapshot(net)
    with pytest.raises(ValueError, match="weight must have"):
        call(net, AtLeast(10))
    assert _bitwise_equal(_snapshot(net), before)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in net.modules())


def test_a_module_used_twice_is_selectable_by_either_name() -> None:
    layer = nn.Linear(3, 3)
    net = nn.Sequential(layer, nn.ReLU(), layer)
    assert wo.shared_parameters(net) == [["0.weight", "2.weight"], ["0.bias", "2.bias"]]
    assert wo.apply_(net, Scale(2.0), where="2.weight") == ["0.weight", "2.weight"]
    wo.parametrize(net, Scale(3.0), where="2.weight")
    assert torch.nn.utils.parametrize.is_parametrized(layer, "weight")


def test_selecting_and_checking_advances_no_transform_state() -> None:
    net = nn.Linear(4, 4)
    t = wo.parametrize(net, wo.SpectralNorm())["weight"]
    u = t._u.clone()  # type: ignore[union-attr]
    wo.apply_(net, wo.Clip(-1, 1), where=lambda name, module, p: p.ndim == 1)
    wo.parametrize(net, Scale(2.0))
    assert torch.equal(t._u, u)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("where", "error"),
    [(torch.Tensor, TypeError), (int, TypeError), ((int,), TypeError), ((), TypeError)],
    ids=["Tensor", "int", "(int,)", "()"],
)
def test_where_types_that_are_not_modules_are_a_type_error(where, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match="where must"):
        wo.apply_(nn.Linear(2, 2), wo.Clip(-1, 1), where=where)
