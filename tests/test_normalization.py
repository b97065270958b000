"""Normalization transforms: properties with closed forms, torch agreement, PyTorch fit."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st
from ops import HALF_ITERATIONS, NON_NEGATIVE
from torch import nn
from torch.nn.utils import parametrizations as TP
from toys import fit

import weightops as wo
import weightops.functional as WF
from weightops.functional.normalization import matrix_view
from weightops.testing import check_transform, shapes, tensors

LAYERS = {
    "linear": lambda: nn.Linear(12, 7),
    "conv2d": lambda: nn.Conv2d(3, 5, 3),
    "conv_transpose2d": lambda: nn.ConvTranspose2d(4, 6, 3),
}


# --- the transforms against their references --------------------------------


@pytest.mark.parametrize("dim", [0, 1, -1, None])
def test_weight_norm_passes_check_transform(dim: int | None, device: str) -> None:
    check_transform(
        wo.WeightNorm(dim=dim), devices=[device], overrides={torch.float32: (3e-5, 1e-5)}
    )


@pytest.mark.parametrize("dim", [0, 1, None])
def test_standardize_passes_check_transform(dim: int | None, device: str) -> None:
    # eps = 1e-3 bounds how much a constant unit amplifies rounding (see tests/ops.py).
    check_transform(
        wo.Standardize(dim=dim, eps=1e-3),
        devices=[device],
        elements=st.floats(-10, 10, width=32),
        overrides={
            torch.float16: (4e-3, 3e-3),
            torch.bfloat16: (3e-2, 3e-2),
            torch.float32: (3e-5, 3e-4),
        },
    )


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dim", [None, 1])
def test_spectral_norm_passes_check_transform(mode: str, dim: int | None, device: str) -> None:
    t = wo.SpectralNorm(dim=dim).train(mode == "train")
    check_transform(t, devices=[device], elements=NON_NEGATIVE, overrides=HALF_ITERATIONS)


# --- closed forms ------------------------------------------------------------


@given(data=st.data())
def test_every_weight_norm_unit_has_norm_abs_g(data: st.DataObject) -> None:
    v = data.draw(tensors(torch.float64, shape=shapes(min_dims=2)))
    dim = data.draw(st.integers(0, v.ndim - 1))
    g = data.draw(
        tensors(
            torch.float64, shape=st.just(tuple(n if i == dim else 1 for i, n in enumerate(v.shape)))
        )
    )
    w = WF.weight_norm(v, g, dim=dim)
    norms = torch.linalg.vector_norm(w.movedim(dim, 0).flatten(1), dim=1)
    # Below eps (1e-12) a unit is divided by eps instead: zero stays zero.
    live = torch.linalg.vector_norm(v.movedim(dim, 0).flatten(1), dim=1) >= 1e-12
    torch.testing.assert_close(norms[live], g.flatten()[live].abs())


@pytest.mark.parametrize("layer", LAYERS, ids=str)
def test_spectral_norm_output_has_largest_singular_value_one(layer: str) -> None:
    torch.manual_seed(0)
    module = LAYERS[layer]()
    wo.parametrize(module, wo.SpectralNorm(tol=1e-9))
    t = module.parametrizations.weight[0]
    weight = module.weight.detach().double().numpy()
    matrix = matrix_view(torch.from_numpy(weight), t._matrix_dim).numpy()
    assert abs(scipy.linalg.svdvals(matrix)[0] - 1.0) < 1e-3


@given(w=tensors(torch.float64, shape=shapes(min_dims=2, max_dims=2)), n=st.integers(1, 20))
def test_power_iteration_never_overestimates_sigma(w: torch.Tensor, n: int) -> None:
    # After one iteration σ̂ = ‖Wᵀu‖ with ‖u‖ = 1: a lower bound of σ.
    rows, cols = w.shape
    r = WF.power_iteration(
        w, torch.ones(rows, dtype=w.dtype), torch.ones(cols, dtype=w.dtype), n_power_iterations=n
    )
    true = scipy.linalg.svdvals(w.numpy())[0] if w.numel() else 0.0
    assert float(r.sigma) <= true * (1 + 1e-12) + 1e-12


def test_power_iteration_with_tol_converges_in_bounded_iterations() -> None:
    torch.manual_seed(0)
    w = torch.randn(30, 20, dtype=torch.float64)
    r = WF.power_iteration(
        w, torch.randn(30, dtype=w.dtype), torch.randn(20, dtype=w.dtype), tol=1e-10
    )
    assert r.iterations < 100
    assert abs(float(r.sigma) - scipy.linalg.svdvals(w.numpy())[0]) < 1e-6
    capped = WF.power_iteration(
        w,
        torch.ones(30, dtype=w.dtype),
        torch.ones(20, dtype=w.dtype),
        tol=1e-300,
        max_iterations=7,
    )
    assert capped.iterations == 7


def test_spectral_norm_exposes_sigma() -> None:
    torch.manual_seed(0)
    module = nn.Linear(8, 6)
    t = wo.parametrize(module, wo.SpectralNorm(tol=1e-9))["weight"]
    true = torch.linalg.matrix_norm(module.parametrizations.weight.original.detach(), 2)
    assert isinstance(t, wo.SpectralNorm)
    torch.testing.assert_close(t.sigma, true, rtol=1e-5, atol=0)


# --- agreement with torch ----------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS, ids=str)
def test_spectral_norm_matches_torch_given_the_same_initial_state(layer: str) -> None:
    torch.manual_seed(0)
    ours, theirs = LAYERS[layer](), None
    theirs = copy.deepcopy(ours)
    torch.manual_seed(1)
    TP.spectral_norm(theirs)
    torch.manual_seed(1)
    wo.parametrize(ours, wo.SpectralNorm(), scale_outputs=False)
    x = torch.randn(2, *((12,) if layer == "linear" else (3 if layer == "conv2d" else 4, 6, 6)))
    for mode in ("train", "train", "eval", "train"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


def test_weight_norm_matches_torch_and_registering_changes_nothing() -> None:
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 5, 3)
    ours, theirs = copy.deepcopy(plain), copy.deepcopy(plain)
    TP.weight_norm(theirs)
    wo.parametrize(ours, wo.WeightNorm())
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(ours(x), plain(x))
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours.state_dict().keys() == theirs.state_dict().keys()


# --- the output-scaling path ------------------------------------------------


FACTORED = {
    "linear": (lambda: nn.Linear(12, 7), (4, 12)),
    "linear-3d-input": (lambda: nn.Linear(12, 7), (2, 3, 12)),
    "linear-no-bias": (lambda: nn.Linear(12, 7, bias=False), (4, 12)),
    "conv1d": (lambda: nn.Conv1d(3, 5, 3), (2, 3, 9)),
    "conv2d": (lambda: nn.Conv2d(3, 5, 3, padding=1), (2, 3, 6, 6)),
    "conv3d": (lambda: nn.Conv3d(2, 3, 2), (2, 2, 4, 4, 4)),
}


@pytest.mark.parametrize(
    "transform", [wo.SpectralNorm(), wo.WeightNorm(), wo.WeightNorm(dim=None)], ids=repr
)
@pytest.mark.parametrize("layer", FACTORED, ids=str)
def test_scaled_outputs_give_the_same_outputs_and_gradients(
    layer: str, transform: wo.Transform
) -> None:
    make, shape = FACTORED[layer]
    torch.manual_seed(0)
    plain = make().double()
    x = torch.randn(shape, dtype=torch.float64)
    results = []
    for scale_outputs in (False, True):
        module = copy.deepcopy(plain)
        torch.manual_seed(1)
        wo.parametrize(module, transform, scale_outputs=scale_outputs)
        steps = []
        for mode in ("train", "eval", "train"):
            module.train(mode == "train")
            module.zero_grad()
            y = module(x)
            (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
            steps.append((y.detach(), [p.grad.clone() for p in module.parameters()]))
        results.append(steps)
    for (y0, g0), (y1, g1) in zip(*results, strict=True):
        torch.testing.assert_close(y1, y0)
        for a, b in zip(g1, g0, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("transform", [wo.SpectralNorm(), wo.WeightNorm()], ids=repr)
def test_scaled_conv_takes_unbatched_input(transform: wo.Transform) -> None:
    conv = nn.Conv2d(2, 3, 3)
    wo.parametrize(conv, transform)
    conv.eval()  # so that the calls compared share one σ̂
    x = torch.randn(2, 5, 5)
    torch.testing.assert_close(conv(x), conv(x.unsqueeze(0))[0])
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias))


def test_a_layer_subclass_keeps_its_own_forward() -> None:
    class Doubled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    layer = Doubled(3, 3)
    x = torch.randn(2, 3)
    before = layer(x)
    wo.parametrize(layer, wo.WeightNorm())
    torch.testing.assert_close(layer(x), before)


def test_scaled_outputs_are_used_where_they_apply() -> None:
    linear, transposed = nn.Linear(4, 3), nn.ConvTranspose2d(2, 3, 2)
    wo.parametrize(linear, wo.SpectralNorm())
    wo.parametrize(transposed, wo.SpectralNorm())
    assert type(linear).forward.__name__ == "_scaled_forward"
    assert type(transposed).forward is nn.ConvTranspose2d.forward
    wo.unparametrize(linear)
    assert type(linear) is nn.Linear


# --- zero, constant, one element ------------------------------------------


EDGE_WEIGHTS = {
    "zero": torch.zeros(4, 3),
    "constant": torch.full((4, 3), 0.5),
    "one element": torch.full((1, 1), 2.0),
    "zero 1-D": torch.zeros(3),
}


@pytest.mark.parametrize(
    "transform", [wo.WeightNorm(), wo.SpectralNorm(), wo.Standardize()], ids=repr
)
@pytest.mark.parametrize("name", EDGE_WEIGHTS, ids=str)
@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str
)
def test_edge_weights_give_finite_results(
    transform: wo.Transform, name: str, dtype: torch.dtype
) -> None:
    weight = EDGE_WEIGHTS[name].to(dtype)
    t = copy.deepcopy(transform)
    t.setup(weight)
    from weightops.transforms.base import stored

    leaves = [x.detach().clone().requires_grad_(True) for x in stored(t, weight)]
    out = t(*leaves)
    assert bool(torch.isfinite(out).all())
    if dtype in (torch.float32, torch.float64):
        out.sum().backward()
        assert all(bool(torch.isfinite(leaf.grad).all()) for leaf in leaves)  # type: ignore[arg-type]
    if name.startswith("zero"):
        assert bool((out == 0).all())


# --- PyTorch fit -------------------------------------------------------------


class Critic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.up = nn.ConvTranspose2d(4, 2, 3)
        self.fc = nn.Linear(2 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.up(torch.relu(self.conv(x)))).flatten(1))


@pytest.mark.parametrize("transform", [wo.SpectralNorm(), wo.WeightNorm()], ids=repr)
def test_normalized_model_survives_state_dict_deepcopy_and_compile(transform: wo.Transform) -> None:
    torch.manual_seed(0)
    net = Critic()
    wo.parametrize(net, transform)
    x = torch.randn(2, 1, 8, 8)
    net(x).sum().backward()
    net.eval()
    y = net(x)

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    fresh = Critic()
    wo.parametrize(fresh, transform)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    fresh.eval()
    assert torch.equal(fresh(x), y)

    twin = copy.deepcopy(net)
    assert torch.equal(twin(x), y)

    compiled = torch.compile(net, fullgraph=True)
    torch.testing.assert_close(compiled(x), y)


@pytest.mark.parametrize(
    "transform", [wo.SpectralNorm(), wo.WeightNorm(), wo.Standardize()], ids=repr
)
def test_normalized_model_trains(transform: wo.Transform) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    wo.parametrize(net, transform, where="0.weight")
    x = torch.randn(128, 8)
    y = x[:, :1] * 2 - x[:, 1:2]
    losses = fit(net, x, y, 60)
    assert losses[-1] < 0.2 * losses[0]


def test_eval_forward_before_any_training_forward_is_normalized() -> None:
    torch.manual_seed(0)
    module = nn.Linear(20, 10).eval()
    wo.parametrize(module, wo.SpectralNorm())
    sigma = scipy.linalg.svdvals(module.weight.detach().double().numpy())[0]
    assert abs(sigma - 1.0) < 1e-2


def test_conv_transpose_defaults_to_dim_one() -> None:
    module = nn.ConvTranspose2d(4, 6, 3)
    t = wo.parametrize(module, wo.SpectralNorm())["weight"]
    assert t._matrix_dim == 1  # type: ignore[union-attr]
    assert t._u.shape == (6,)  # type: ignore[union-attr]


# --- batch norm against nn.BatchNorm ----------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
def test_functional_batch_norm_tracks_like_the_module(momentum: float | None) -> None:
    torch.manual_seed(0)
    module = nn.BatchNorm2d(3, momentum=momentum)
    state = (
        module.running_mean.clone(),
        module.running_var.clone(),
        module.num_batches_tracked.clone(),
    )
    for training in (True, True, True, False):
        module.train(training)
        x = torch.randn(4, 3, 5, 5) * 3 + 1
        result = WF.batch_norm(
            x,
            state[0],
            state[1],
            module.weight,
            module.bias,
            training=training,
            momentum=momentum,
            eps=module.eps,
            num_batches_tracked=state[2],
        )
        torch.testing.assert_close(result.output, module(x))
        state = (result.running_mean, result.running_var, result.num_batches_tracked)
        torch.testing.assert_close(state[0], module.running_mean)
        torch.testing.assert_close(state[1], module.running_var)
        assert int(state[2]) == int(module.num_batches_tracked)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: wo.SpectralNorm(n_power_iterations=0), "n_power_iterations"),
        (lambda: wo.SpectralNorm(tol=0.0), "tol"),
        (lambda: wo.WeightNorm(eps=-1.0), "eps"),
        (lambda: wo.Standardize(dim=1.5), "dim"),
        (lambda: WF.weight_norm(torch.ones(3, 2), torch.ones(2, 1)), "g"),
        (lambda: WF.batch_norm(torch.ones(1, 3)), "input"),
        (lambda: WF.batch_norm(torch.ones(4, 3), torch.zeros(2), torch.ones(2)), "running_mean"),
        (lambda: WF.layer_norm(torch.ones(4, 3), (4,)), "normalized_shape"),
        (lambda: WF.power_iteration(torch.ones(3, 2), torch.ones(2), torch.ones(2)), "u"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b must"):
        call()


def test_half_precision_zero_vector_power_iteration_is_finite() -> None:
    r = WF.power_iteration(
        torch.zeros(3, 2, dtype=torch.float16),
        torch.ones(3, dtype=torch.float16),
        torch.ones(2, dtype=torch.float16),
    )
    assert all(bool(torch.isfinite(t).all()) for t in (r.u, r.v, r.sigma))
    np.testing.assert_array_equal(r.u.numpy(), 0)


def test_spectral_norm_in_eval_mode_leaves_u_and_v_alone() -> None:
    for scale_outputs in (True, False):
        module = nn.Linear(6, 5)
        t = wo.parametrize(module, wo.SpectralNorm(), scale_outputs=scale_outputs)["weight"]
        module.eval()
        u, v = t._u.clone(), t._v.clone()  # type: ignore[union-attr]
        module(torch.randn(2, 6))
        _ = module.weight
        assert torch.equal(t._u, u) and torch.equal(t._v, v)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "layer",
    [nn.Conv1d(2, 3, 3), nn.Conv2d(2, 3, 3), nn.Conv3d(2, 3, 3)],
    ids=lambda m: type(m).__name__,
)
def test_scaled_outputs_are_used_on_convolutions(layer: nn.Module) -> None:
    wo.parametrize(layer, wo.WeightNorm())
    assert type(layer).forward.__name__ == "_scaled_forward"
