"""Weight decay: the functional ops, decay() step hooks, param_groups()."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import weightops.functional.decay as WFD
from weightops.decay import Decay, decay, param_groups
from weightops.testing import DTYPES, tensors

Make = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
ALL = lambda name, module, param: True  # noqa: E731


def mlp(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def train(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    steps: int = 50,
    scheduler: Any = None,
) -> list[torch.Tensor]:
    """Full steps on a fixed stream of batches; the parameters after."""
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g, dtype=next(net.parameters()).dtype)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return [p.detach().clone() for p in net.parameters()]


def fixed_grads_steps(net: nn.Module, opt: torch.optim.Optimizer, steps: int = 20) -> None:
    """Steps on gradients that do not depend on the weights."""
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        for p in net.parameters():
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --- functional ops (against their NumPy twins: tests/ops.py) -----------------


@given(w=tensors(torch.float64), t=st.floats(0.0, 60.0))
def test_l1_prox_is_softshrink(w: torch.Tensor, t: float) -> None:
    expected = torch.nn.functional.softshrink(w, t)
    assert torch.equal(WFD.l1_prox_(w, t, lr=1.0), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_l1_prox_sets_weights_within_the_threshold_exactly_to_zero(dtype: torch.dtype) -> None:
    w = torch.tensor([-0.375, -0.25, -0.125, 0.0, 0.125, 0.25, 0.75], dtype=dtype)
    out = WFD.l1_prox_(w, 0.5, lr=0.5)
    assert out.tolist() == [-0.125, 0, 0, 0, 0, 0, 0.5]


def test_l1_prox_keeps_nan_and_infinities() -> None:
    out = WFD.l1_prox_(torch.tensor([math.nan, math.inf, -math.inf]), 1.0, lr=1.0)
    assert math.isnan(out[0]) and out[1:].tolist() == [math.inf, -math.inf]


def test_weight_decay_matches_adamw_arithmetic() -> None:
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    expected = w.clone().mul_(1 - 0.3 * 0.07)
    assert torch.equal(WFD.weight_decay_(w, 0.07, lr=0.3), expected)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda w, g: WFD.weight_decay_(w, -0.1, lr=0.1), ValueError, "weight_decay"),
        (lambda w, g: WFD.weight_decay_(w, math.nan, lr=0.1), ValueError, "weight_decay"),
        (lambda w, g: WFD.weight_decay_(w, True, lr=0.1), TypeError, "weight_decay"),
        (lambda w, g: WFD.weight_decay_(w, 0.1, lr=math.inf), ValueError, "lr"),
        (lambda w, g: WFD.weight_decay_(w, 0.1, lr="0.1"), TypeError, "lr"),  # type: ignore[arg-type]
        (lambda w, g: WFD.weight_decay_(w.long(), 0.1, lr=0.1), TypeError, "weight"),
        (lambda w, g: WFD.l1_prox_(w, 0.1, lr=-1.0), ValueError, "lr"),
        (lambda w, g: WFD.l1_prox_(w, -0.1, lr=1.0), ValueError, "weight_decay"),
        (lambda w, g: WFD.l1_prox_([1.0], 0.1, lr=1.0), TypeError, "weight"),  # type: ignore[arg-type]
        (lambda w, g: WFD.l2_grad_(g, w, -1.0), ValueError, "weight_decay"),
        (lambda w, g: WFD.l2_grad_(g, w[:1], 0.1), ValueError, "weight"),
        (lambda w, g: WFD.l2_grad_(g, w.double(), 0.1), TypeError, "weight"),
        (lambda w, g: WFD.l2_grad_(g.int(), w, 0.1), TypeError, "grad"),
    ],
)
def test_decay_ops_bad_arguments_raise_naming_the_argument_and_change_nothing(
    call: Callable[[torch.Tensor, torch.Tensor], Any], error: type[Exception], name: str
) -> None:
    w, g = torch.ones(2, 3), torch.ones(2, 3)
    with pytest.raises(error, match=rf"^\w+: {name} must"):
        call(w, g)
    assert torch.equal(w, torch.ones(2, 3)) and torch.equal(g, torch.ones(2, 3))


# --- decay(): agreement with torch's own weight decay -------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
            lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.1),
        ),
        (
            lambda ps: torch.optim.Adam(ps, lr=1e-2),
            lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1),
        ),
    ],
    ids=["sgd", "adam"],
)
def test_decay_coupled_equals_torch_weight_decay_bitwise(ours: Make, theirs: Make) -> None:
    net = mlp()
    opt = ours(list(net.parameters()))
    decay(opt, 0.1, decoupled=False, where=ALL)
    ref = mlp()
    expected = train(ref, theirs(list(ref.parameters())))
    assert _equal(train(net, opt), expected)


def test_decay_decoupled_on_adam_equals_adamw_bitwise() -> None:
    net, ref = mlp(), mlp()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    decay(opt, 0.1, model=net, where="*")
    expected = train(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1))
    assert _equal(train(net, opt), expected)


def test_decay_decoupled_takes_a_tensor_lr_as_adamw() -> None:
    net, ref = mlp(), mlp()
    opt = torch.optim.Adam(net.parameters(), lr=torch.tensor(1e-2))
    decay(opt, 0.1, where=ALL)
    theirs = torch.optim.AdamW(ref.parameters(), lr=torch.tensor(1e-2), weight_decay=0.1)
    assert _equal(train(net, opt, 10), train(ref, theirs, 10))


def test_decay_coupled_follows_maximize_as_torch() -> None:
    net, ref = mlp(), mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, maximize=True)
    decay(opt, 0.1, decoupled=False, where=ALL)
    expected = train(
        ref, torch.optim.SGD(ref.parameters(), lr=0.05, maximize=True, weight_decay=0.1), 10
    )
    assert _equal(train(net, opt, 10), expected)


@pytest.mark.parametrize("decoupled", [True, False])
@pytest.mark.parametrize(
    "make",
    [lambda ps: torch.optim.SGD(ps, lr=0.1), lambda ps: torch.optim.Adam(ps, lr=0.1)],
    ids=["sgd", "adam"],
)
def test_decay_leaves_biases_and_norm_parameters_untouched_by_default(
    make: Make, decoupled: bool
) -> None:
    net, plain = mlp(), mlp()
    opt = make(list(net.parameters()))
    decay(opt, 0.5, decoupled=decoupled)
    fixed_grads_steps(net, opt)
    fixed_grads_steps(plain, make(list(plain.parameters())))
    for (name, p), q in zip(net.named_parameters(), plain.parameters(), strict=True):
        decayed = not torch.equal(p, q)
        assert decayed == (p.ndim >= 2), name


def test_decay_reads_lr_from_the_param_group_at_every_step() -> None:
    net = mlp(torch.float64)
    first = cast(nn.Linear, net[0])
    w0 = first.weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    decay(opt, 0.5, model=net)
    factor = 1.0
    for step in range(10):
        factor *= 1 - 0.5 * 0.1 / (1 + step)
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        scheduler.step()
    torch.testing.assert_close(first.weight.detach(), w0 * factor, rtol=1e-12, atol=0)


def test_decay_uses_each_param_groups_own_lr() -> None:
    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    groups: list[dict[str, Any]] = [
        {"params": a.parameters(), "lr": 0.1},
        {"params": b.parameters()},
    ]
    opt = torch.optim.SGD(groups, lr=0.2)
    decay(opt, 1.0)
    a.weight.grad, b.weight.grad = torch.zeros(3, 3), torch.zeros(3, 3)
    opt.step()
    assert torch.equal(a.weight.detach(), wa * 0.9) and torch.equal(b.weight.detach(), wb * 0.8)


def _sparse_regression(penalty: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 20, generator=g)
    truth = torch.zeros(20)
    truth[:4] = torch.tensor([2.0, -3.0, 1.5, 1.0])
    y = x @ truth + 0.1 * torch.randn(128, generator=g)
    torch.manual_seed(0)
    net = nn.Linear(20, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    decay(opt, 0.1, penalty=penalty)
    for _ in range(300):
        opt.zero_grad()
        (net(x).squeeze(1) - y).square().mean().backward()
        opt.step()
    return net.weight.detach()[0]


def test_decay_l1_sets_irrelevant_weights_exactly_to_zero_where_l2_does_not() -> None:
    l1, l2 = _sparse_regression("l1"), _sparse_regression("l2")
    assert bool((l1[:4] != 0).all()), "the relevant weights survive"
    assert int((l1[4:] == 0).sum()) >= 12, f"most of the 16 irrelevant weights are 0: {l1}"
    assert int((l2 == 0).sum()) == 0


def test_decay_decays_a_tied_weight_once() -> None:
    emb = nn.Embedding(5, 4)
    out = nn.Linear(4, 5, bias=False)
    out.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "out": out})
    w0 = emb.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = decay(opt, 0.5, model=model)
    assert sorted(handle.names) == ["emb.weight", "out.weight"]
    emb.weight.grad = torch.zeros(5, 4)
    opt.step()
    assert torch.equal(emb.weight.detach(), w0 * (1 - 0.1 * 0.5))


def test_decay_remove_stops_decay() -> None:
    net = nn.Linear(3, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    handle = decay(opt, 0.5)
    assert isinstance(handle, Decay)
    handle.remove()
    w0 = net.weight.detach().clone()
    net.weight.grad = torch.zeros(3, 3)
    opt.step()
    assert torch.equal(net.weight.detach(), w0)


def test_decay_as_a_context_manager_stops_on_exit() -> None:
    net = nn.Linear(3, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.weight.grad = torch.zeros(3, 3)
    w0 = net.weight.detach().clone()
    with decay(opt, 0.5, penalty="l1"):
        opt.step()
    assert not torch.equal(net.weight.detach(), w0)
    after = net.weight.detach().clone()
    opt.step()
    assert torch.equal(net.weight.detach(), after)


def test_decay_skips_parameters_without_a_gradient_as_adamw() -> None:
    net = nn.Linear(3, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    decay(opt, 0.5)
    w0 = net.weight.detach().clone()
    opt.step()
    assert torch.equal(net.weight.detach(), w0)


def _opt(**kwargs: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(3, 3).parameters(), lr=0.1, **kwargs)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda opt: decay("sgd", 0.1), TypeError, "optimizer"),  # type: ignore[arg-type]
        (lambda opt: decay(opt, -0.1), ValueError, "rate"),
        (lambda opt: decay(opt, math.nan), ValueError, "rate"),
        (lambda opt: decay(opt, "0.1"), TypeError, "rate"),  # type: ignore[arg-type]
        (lambda opt: decay(opt, 0.1, decoupled=1), TypeError, "decoupled"),  # type: ignore[arg-type]
        (lambda opt: decay(opt, 0.1, penalty="l3"), ValueError, "penalty"),
        (lambda opt: decay(opt, 0.1, penalty=None), TypeError, "penalty"),  # type: ignore[arg-type]
        (lambda opt: decay(opt, 0.1, decoupled=False, penalty="l1"), ValueError, "decoupled"),
        (lambda opt: decay(opt, 0.1, where="*.weight"), ValueError, "where"),
        (lambda opt: decay(opt, 0.1, where=lambda n, m, p: False), ValueError, "where"),
        (lambda opt: decay(opt, 0.1, where=3, model=nn.Linear(3, 3)), TypeError, "where"),  # type: ignore[arg-type]
        (lambda opt: decay(_opt(weight_decay=0.01), 0.1), ValueError, "optimizer"),
        (lambda opt: decay(opt, 0.1, model=nn.Linear(3, 3)), ValueError, "where"),
    ],
)
def test_decay_bad_arguments_raise_naming_the_argument_and_register_no_hook(
    call: Callable[[torch.optim.Optimizer], Any], error: type[Exception], name: str
) -> None:
    opt = _opt()
    with pytest.raises(error, match=rf"^decay: {name} must"):
        call(opt)
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_decay_allows_l1_on_top_of_the_optimizers_l2() -> None:
    # Elastic net: the optimizer's L2 and the proximal L1 step together.
    handle = decay(_opt(weight_decay=0.01), 0.1, penalty="l1")
    handle.remove()


# --- param_groups() ------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


class Net(nn.Module):
    """Root parameter, an embedding tied to the head, blocks in a ModuleList,
    a parameterless child, and a norm with a 2-D weight."""

    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 4))
        self.emb = nn.Embedding(10, 4)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.act = nn.ReLU()
        self.norm = nn.LayerNorm((2, 2))
        self.head = nn.Linear(4, 10)
        self.head.weight = self.emb.weight


def _names(model: nn.Module, params: list[torch.Tensor]) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


def _by_name(model: nn.Module, groups: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return {n: g[key] for g in groups for n in _names(model, g["params"])}


def test_param_groups_exempt_biases_norm_and_one_dimensional_parameters() -> None:
    net = Net()
    decays = _by_name(net, param_groups(net, 0.05), "weight_decay")
    assert {n for n, wd in decays.items() if wd} == {
        "cls",
        "emb.weight",
        "blocks.0.fc.weight",
        "blocks.1.fc.weight",
    }
    assert all(wd == 0.05 or wd == 0.0 for wd in decays.values())


@pytest.mark.parametrize(
    "no_decay",
    ["emb.*", "head.weight", nn.Embedding, lambda n, m, p: p.shape == (10, 4)],
    ids=["glob", "tied-name", "type", "callable"],
)
def test_param_groups_no_decay_exempts_more(no_decay: Any) -> None:
    net = Net()
    decays = _by_name(net, param_groups(net, 0.05, no_decay=no_decay), "weight_decay")
    assert decays["emb.weight"] == 0.0
    assert decays["blocks.0.fc.weight"] == 0.05


def test_param_groups_layer_decay_raises_lr_toward_the_last_layer() -> None:
    net = Net()
    lrs = _by_name(net, param_groups(net, 0.05, lr=1.0, layer_decay=0.5), "lr")
    # Layers: emb, blocks.0, blocks.1, norm, head (act has no parameters);
    # cls sits on the model itself and the tied head weight is emb's.
    expected = {
        "cls": 1 / 16,
        "emb.weight": 1 / 16,
        "blocks.0.fc.weight": 1 / 8,
        "blocks.0.norm.bias": 1 / 8,
        "blocks.1.fc.bias": 1 / 4,
        "norm.weight": 1 / 2,
        "head.bias": 1.0,
    }
    assert {n: lrs[n] for n in expected} == expected


def test_param_groups_lr_without_layer_decay_sets_every_group() -> None:
    net = Net()
    assert {g["lr"] for g in param_groups(net, 0.05, lr=3e-4)} == {3e-4}


def test_param_groups_list_every_parameter_exactly_once() -> None:
    net = Net()
    listed = [p for g in param_groups(net, 0.05, lr=1.0, layer_decay=0.8) for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed})
    assert {id(p) for p in listed} == {id(p) for p in net.parameters()}


def test_param_groups_list_the_stored_tensors_of_a_parametrized_weight() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    nn.utils.parametrizations.weight_norm(net[0])
    groups = param_groups(net, 0.1, lr=1.0, layer_decay=0.5)
    listed = [p for g in groups for p in g["params"]]
    assert {id(p) for p in listed} == {id(p) for p in net.parameters()} and len(listed) == 5
    assert _by_name(net, groups, "lr")["0.parametrizations.weight.original1"] == 0.5


@pytest.mark.parametrize(
    "make",
    [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop],
    ids=lambda m: m.__name__,
)
def test_param_groups_are_accepted_by_torch_optimizers(make: Any) -> None:
    net = Net()
    groups = param_groups(net, 0.05, lr=1e-2, layer_decay=0.7)
    opt = make(groups)
    loss = torch.stack([p.square().sum() for p in net.parameters()]).sum()
    torch.autograd.backward(loss)
    opt.step()
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [
        (g["lr"], g["weight_decay"]) for g in groups
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"weight_decay": None}, TypeError, "weight_decay"),
        ({"weight_decay": 0.1, "lr": -1.0}, ValueError, "lr"),
        ({"weight_decay": 0.1, "layer_decay": 0.5}, ValueError, "lr"),
        ({"weight_decay": 0.1, "lr": 1.0, "layer_decay": 0.0}, ValueError, "layer_decay"),
        ({"weight_decay": 0.1, "lr": 1.0, "layer_decay": 1.5}, ValueError, "layer_decay"),
        ({"weight_decay": 0.1, "no_decay": 3}, TypeError, "no_decay"),
    ],
)
def test_param_groups_bad_arguments_raise_naming_the_argument(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=rf"^param_groups: {name} must"):
        param_groups(Net(), **kwargs)
