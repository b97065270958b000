"""Initialization: distributions, fans, gains, model-level init_, bias priors, seeding."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ops import RANDOM_OPS, RandomOp
from scipy import integrate, special, stats
from torch import nn

import weightops as wo
import weightops.functional as WF
import weightops.reference as WR

#: A KS test of a correct sampler fails with this probability; low enough to
#: never flake, high enough to catch a wrong std or bound (thousands of samples).
P_VALUE = 1e-6
SHAPES = st.sampled_from([(64, 48), (32, 16, 3), (24, 8, 3, 3)])


def _ks(samples: np.ndarray, distribution: object) -> float:
    return float(stats.kstest(samples.ravel(), distribution.cdf).pvalue)  # type: ignore[attr-defined]


def _continuous(out: torch.Tensor, seed: int) -> np.ndarray:
    """Samples of a low-precision dtype spread uniformly over the interval that
    rounds to each, so that a KS test sees a continuous sample: bfloat16's
    spacing near 1 (2^-7) is a large fraction of a small std, and the ties
    alone would fail the test."""
    if out.dtype in (torch.float32, torch.float64):
        return out.double().cpu().numpy()
    inf = torch.full_like(out, float("inf"))
    up, down = torch.nextafter(out, inf).double(), torch.nextafter(out, -inf).double()
    x = out.double()
    low, high = (x + down) / 2, (x + up) / 2
    u = torch.rand(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (low + u.to(x.device) * (high - low)).cpu().numpy()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", RANDOM_OPS, ids=lambda op: op.name)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_initializer_draws_from_its_documented_distribution(
    op: RandomOp, dtype: torch.dtype, device: str, data: st.DataObject
) -> None:
    shape = data.draw(SHAPES, "shape")
    kwargs = data.draw(op.kwargs(shape), "kwargs")
    seed = data.draw(st.integers(0, 2**31), "seed")
    generator = torch.Generator(device=device).manual_seed(seed)
    if op.name.endswith("_"):
        weight = torch.empty(shape, dtype=dtype, device=device)
        out = getattr(WF, op.name)(weight, generator=generator, **kwargs)
        assert out is weight
    else:
        out = getattr(WF, op.name)(shape, dtype=dtype, device=device, generator=generator, **kwargs)
    assert out.dtype == dtype and tuple(out.shape) == shape
    distribution = op.distribution(shape, kwargs)
    assert _ks(_continuous(out, seed), distribution) > P_VALUE


@pytest.mark.parametrize(
    "op", [op for op in RANDOM_OPS if not op.name.endswith("_")], ids=lambda op: op.name
)
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_reference_initializer_draws_from_the_same_distribution(
    op: RandomOp, data: st.DataObject
) -> None:
    shape = (64, 48)
    kwargs = data.draw(op.kwargs(shape), "kwargs")
    samples = getattr(WR, op.name)(shape, rng=np.random.default_rng(0), **kwargs)
    assert _ks(samples, op.distribution(shape, kwargs)) > P_VALUE
    filled = getattr(WR, op.name + "_")(np.empty(shape), rng=np.random.default_rng(1), **kwargs)
    assert _ks(filled, op.distribution(shape, kwargs)) > P_VALUE


def test_initializers_are_deterministic_for_a_generator() -> None:
    a = WF.he_normal((8, 4), generator=torch.Generator().manual_seed(3))
    b = WF.he_normal((8, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6), (8, 4, 3), (5, 5)])
@pytest.mark.parametrize("impl", ["torch", "numpy"])
def test_orthogonal_gives_orthonormal_rows_or_columns(shape: tuple[int, ...], impl: str) -> None:
    w = (
        WF.orthogonal(shape, dtype=torch.float64, gain=2.0).numpy()
        if impl == "torch"
        else WR.orthogonal(shape, gain=2.0, rng=np.random.default_rng(0))
    )
    m = w.reshape(shape[0], -1) / 2.0
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, np.eye(min(m.shape)), atol=1e-12)


def test_orthogonal_per_gate_makes_each_gate_block_orthogonal() -> None:
    w = WF.orthogonal((4 * 5, 5), gates=4, dtype=torch.float64)
    for block in w.view(4, 5, 5):
        torch.testing.assert_close(block @ block.T, torch.eye(5, dtype=torch.float64))


def test_trunc_normal_bounds_are_in_standard_deviations() -> None:
    w = WF.trunc_normal((10000,), std=0.02, generator=torch.Generator().manual_seed(0))
    assert float(w.abs().max()) <= 0.04
    torch_style = torch.nn.init.trunc_normal_(torch.empty(10000), std=0.02)
    assert float(torch_style.abs().max()) <= 2.0  # torch's [-2, 2] is absolute


# --- fans and gains ----------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(7, 5),
        nn.Conv1d(3, 6, 4),
        nn.Conv2d(4, 8, 3),
        nn.Conv3d(2, 3, 2),
        nn.ConvTranspose2d(4, 6, 3),
    ],
    ids=lambda m: type(m).__name__,
)
def test_fans_equal_torchs(layer: nn.Module) -> None:
    expected = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
    assert WF.fans(layer.weight) == expected
    assert WR.fans(layer.weight.detach().numpy()) == expected


def test_conv_transpose_fans_swap_with_layout_io() -> None:
    layer = nn.ConvTranspose2d(4, 6, 3)  # weight (in=4, out=6, 3, 3)
    assert WF.fans(layer.weight, layout="io") == (4 * 9, 6 * 9)


def test_grouped_conv_fans_count_groups() -> None:
    layer = nn.Conv2d(8, 12, 3, groups=4)  # weight (12, 2, 3, 3)
    assert WF.fans(layer.weight, groups=4) == (2 * 9, 3 * 9)


def test_recurrent_fans_are_per_gate() -> None:
    lstm = nn.LSTM(10, 20)
    assert WF.fans(lstm.weight_ih_l0, gates=4) == (10, 20)


@pytest.mark.parametrize(
    ("nonlinearity", "param"),
    [
        ("linear", None), ("conv1d", None), ("conv2d", None), ("conv3d", None),
        ("conv_transpose1d", None), ("conv_transpose2d", None), ("conv_transpose3d", None),
        ("sigmoid", None), ("tanh", None), ("relu", None), ("selu", None),
        ("leaky_relu", None), ("leaky_relu", 0.2),
    ],
)  # fmt: skip
def test_gain_equals_torchs(nonlinearity: str, param: float | None) -> None:
    expected = torch.nn.init.calculate_gain(nonlinearity, param)
    assert WF.gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)
    assert WR.gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    ("name", "f"),
    [
        ("gelu", lambda z: z * 0.5 * (1 + special.erf(z / math.sqrt(2)))),
        ("silu", lambda z: z * special.expit(z)),
        ("relu", lambda z: max(z, 0.0)),
    ],
)
def test_gain_is_one_over_the_root_second_moment(name: str, f) -> None:  # type: ignore[no-untyped-def]
    moment = integrate.quad(lambda z: f(z) ** 2 * stats.norm.pdf(z), -np.inf, np.inf, epsabs=1e-13)[
        0
    ]
    assert WF.gain(name) == pytest.approx(1 / math.sqrt(moment), rel=1e-9)


# --- model level -------------------------------------------------------------


def _mlp(depth: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


def _activation_variances(net: nn.Sequential, x: torch.Tensor) -> list[float]:
    variances = []
    for layer in net:
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            variances.append(float(x.pow(2).mean()))
    return variances


@torch.no_grad()
def test_he_init_keeps_activation_scale_through_20_relu_layers() -> None:
    # He preserves the second moment in expectation; one finite-width draw
    # drifts (a product of 20 random gains), so the ratio is averaged over draws.
    ratios, exploded = [], []
    for seed in range(4):
        torch.manual_seed(seed)
        net, x = _mlp(20, 512), torch.randn(256, 512)
        wo.init_(net, "he_normal", generator=torch.Generator().manual_seed(seed))
        he = _activation_variances(net, x)
        ratios.append(he[-1] / he[0])
        for layer in net:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, 1.0)
        unit = _activation_variances(net, x)
        exploded.append(unit[-1] / unit[0])
    assert 0.5 <= sum(ratios) / len(ratios) <= 2.0
    assert min(exploded) > 1e6, "N(0, 1) explodes"


def test_init_zeroes_biases_and_uses_layout_aware_fans() -> None:
    net = nn.Sequential(nn.ConvTranspose2d(8, 4, 3, groups=2), nn.Conv2d(4, 6, 3))
    names = wo.init_(net, "xavier_uniform", nonlinearity="linear")
    assert names == ["0.weight", "1.weight"]
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in net)
    fan_in, fan_out = WF.fans(net[0].weight, layout="io", groups=2)
    assert float(net[0].weight.detach().abs().max()) <= math.sqrt(6 / (fan_in + fan_out))


def test_grouped_conv_transpose_fans_divide_the_stored_in_side() -> None:
    # weight (in=4, out/groups=3, 3): groups divides dim 0, not the 3 outputs per group.
    layer = nn.ConvTranspose1d(4, 6, 3, groups=2)
    assert WF.fans(layer.weight, layout="io", groups=2) == (2 * 3, 3 * 3)
    assert WR.fans(tuple(layer.weight.shape), layout="io", groups=2) == (2 * 3, 3 * 3)
    assert wo.init_(nn.Sequential(layer), "he_normal") == ["0.weight"]


def test_init_makes_each_lstm_gate_orthogonal() -> None:
    lstm = nn.LSTM(6, 6)
    wo.init_(lstm, "orthogonal", nonlinearity="linear")
    for block in lstm.weight_hh_l0.detach().view(4, 6, 6):
        torch.testing.assert_close(block @ block.T, torch.eye(6), atol=1e-5, rtol=0)


def test_init_by_layer_type() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 4))
    linear_before = net[1].weight.detach().clone()
    assert wo.init_(net, {nn.Conv2d: "he_normal"}) == ["0.weight"]
    assert torch.equal(net[1].weight, linear_before)


def test_init_initialises_a_tied_weight_once() -> None:
    emb, out = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    out.weight = emb.weight
    net = nn.ModuleDict({"emb": emb, "out": out})
    assert sorted(wo.init_(net, "xavier_normal")) == ["emb.weight", "out.weight"]
    assert net["out"].weight is net["emb"].weight


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"scheme": "glorot"}, ValueError, "scheme"),
        ({"scheme": 3}, TypeError, "scheme"),
        ({"scheme": "he_normal", "nonlinearity": "swish"}, ValueError, "nonlinearity"),
        ({"scheme": "he_normal", "bias": "zero"}, TypeError, "bias"),
    ],
)
def test_init_bad_argument_leaves_the_model_unchanged(kwargs, error, name) -> None:  # type: ignore[no-untyped-def]
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(error, match=rf"\b{name}\b must"):
        wo.init_(net, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# --- bias priors ----------------------------------------------------------


@given(p=st.floats(1e-4, 1 - 1e-4))
def test_sigmoid_of_the_binary_prior_is_p(p: float) -> None:
    assert float(torch.sigmoid(WF.bias_prior(p))) == pytest.approx(p, rel=1e-9)


@given(p=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=10))
def test_softmax_of_the_class_prior_is_the_frequencies(p: list[float]) -> None:
    expected = torch.tensor(p, dtype=torch.float64) / sum(p)
    torch.testing.assert_close(torch.softmax(WF.bias_prior(p, kind="softmax"), 0), expected)


def test_init_bias_prior_sets_the_output_bias() -> None:
    head = nn.Linear(8, 3)
    wo.init_bias_prior_(head, [0.5, 0.3, 0.2], kind="softmax")
    torch.testing.assert_close(
        torch.softmax(head.bias.detach().double(), 0),
        torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="p must"):
        wo.init_bias_prior_(head, [0.5, 0.5])
    with pytest.raises(ValueError, match="p must"):
        WF.bias_prior(1.5)


# --- seeding -----------------------------------------------------------------


def _train_once() -> torch.Tensor:
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(20):
        x = torch.randn(32, 6)
        opt.zero_grad()
        (net(x) - x[:, :1]).square().mean().backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_seed_everything_makes_two_training_runs_bitwise_equal() -> None:
    state = wo.seed_everything(7)
    try:
        first = _train_once()
        wo.seed_everything(7)
        second = _train_once()
    finally:
        state.restore()
    assert torch.equal(first, second)


def test_seed_everything_returns_a_state_that_restores() -> None:
    import random

    torch.manual_seed(123)
    random.seed(123)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(123)
    random.seed(123)
    state = wo.seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    state.restore()
    assert (torch.rand(3).tolist(), random.random()) == (expected[0].tolist(), expected[1])
    assert not torch.are_deterministic_algorithms_enabled()


def test_bias_prior_of_integer_class_counts_is_not_truncated() -> None:
    counts = torch.tensor([70, 20, 10])
    bias = WF.bias_prior(counts, kind="softmax")
    assert bias.dtype == torch.float64
    torch.testing.assert_close(
        torch.softmax(bias, 0), torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    )


def test_init_zeroes_recurrent_biases_too() -> None:
    lstm = nn.LSTM(4, 8)
    with torch.no_grad():
        for p in (lstm.bias_ih_l0, lstm.bias_hh_l0):
            p.fill_(3.0)
    wo.init_(lstm, "xavier_uniform")
    assert float(lstm.bias_ih_l0.detach().abs().max()) == 0.0
    assert float(lstm.bias_hh_l0.detach().abs().max()) == 0.0


def test_init_checks_every_scheme_before_drawing_any() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(2, 2, 1))
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match="std must"):
        wo.init_(net, {nn.Linear: "he_normal", nn.Conv2d: "trunc_normal"}, std=-1.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_init_uses_three_gates_for_a_gru() -> None:
    gru = nn.GRU(10, 20)
    wo.init_(gru, "xavier_uniform", nonlinearity="linear")
    bound = math.sqrt(6 / (10 + 20))  # one (20, 10) gate block, not (60, 10)
    assert float(gru.weight_ih_l0.detach().abs().max()) <= bound
    assert float(gru.weight_ih_l0.detach().abs().max()) > math.sqrt(6 / (10 + 30))


def test_seed_state_restore_puts_back_numpy_flags_and_environment() -> None:
    import os

    np.random.seed(5)  # noqa: NPY002 - the global generator is under test
    expected = np.random.random()  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    environ = {name: os.environ.get(name) for name in ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG")}
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    state = wo.seed_everything(1)
    state.restore()
    assert np.random.random() == expected  # noqa: NPY002
    assert {name: os.environ.get(name) for name in environ} == environ
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == flags


def test_seed_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="seed must"):
        wo.seed_everything(1.0)  # type: ignore[arg-type]
