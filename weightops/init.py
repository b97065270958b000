"""Model level: initialise a model's weights, and an output bias from class frequencies."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from weightops._checks import check_real
from weightops._select import TRANSPOSED_LAYERS, Target, Where, select
from weightops.functional import init as I

__all__ = ["SCHEMES", "init_", "init_bias_prior_"]

#: The schemes :func:`init_` knows, by name.
SCHEMES: dict[str, Callable[..., Tensor]] = {
    "xavier_uniform": I.xavier_uniform_,
    "xavier_normal": I.xavier_normal_,
    "he_uniform": I.he_uniform_,
    "he_normal": I.he_normal_,
    "lecun_normal": I.lecun_normal_,
    "orthogonal": I.orthogonal_,
    "trunc_normal": I.trunc_normal_,
}

_GATES = ((nn.LSTM, 4), (nn.LSTMCell, 4), (nn.GRU, 3), (nn.GRUCell, 3))


def layout_of(module: nn.Module, attr: str) -> dict[str, Any]:
    """The ``layout``, ``groups`` and ``gates`` of ``module.<attr>`` for :func:`fans`."""
    if isinstance(module, TRANSPOSED_LAYERS):
        return {"layout": "io", "groups": module.groups, "gates": 1}
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"layout": "oi", "groups": module.groups, "gates": 1}
    for kind, gates in _GATES:
        if (
            isinstance(module, kind)
            and attr.startswith("weight_")
            and not attr.startswith("weight_hr")
        ):
            return {"layout": "oi", "groups": 1, "gates": gates}
    return {"layout": "oi", "groups": 1, "gates": 1}


def _options(
    scheme: str, module: nn.Module, attr: str, nonlinearity: str, param: float | None, std: float
) -> dict[str, Any]:
    shape = layout_of(module, attr)
    if scheme in ("he_uniform", "he_normal"):
        return {**shape, "nonlinearity": nonlinearity, "param": param}
    if scheme in ("xavier_uniform", "xavier_normal"):
        return {**shape, "gain": I.gain(nonlinearity, param)}
    if scheme == "orthogonal":
        return {"gates": shape["gates"], "gain": I.gain(nonlinearity, param)}
    if scheme == "trunc_normal":
        return {"std": std}
    return shape


def init_(
    model: nn.Module,
    scheme: str | Mapping[type[nn.Module], str],
    where: Where = None,
    *,
    nonlinearity: str = "relu",
    param: float | None = None,
    std: float = 0.02,
    bias: float | None = 0.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Initialise the selected weights in place, with fans read from each layer.

    ``scheme`` is one of :data:`SCHEMES` for every selected weight, or a
    mapping from layer types to schemes (the first ``isinstance`` match wins;
    weights of other layers are left alone). Fans follow the layer: ConvTranspose
    weights are ``(in, out/groups, ...)``, grouped convolutions count their
    groups, LSTM/GRU weights are initialised gate by gate (see
    :func:`weightops.functional.fans`). Xavier and orthogonal use
    ``gain(nonlinearity, param)``; He uses the nonlinearity directly;
    ``trunc_normal`` draws N(0, std²) cut at ±2 std. The biases of the layers
    whose weights were initialised are set to ``bias`` (None: left alone).
    A tied weight is initialised once. Every argument is checked first.

    Returns:
        The names of the weights initialised.

    >>> import weightops as wo
    >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> wo.init_(net, "he_normal")
    ['0.weight', '2.weight']
    >>> float(net[0].bias.detach().abs().max())
    0.0
    """
    op = "init_"
    if bias is not None and (isinstance(bias, bool) or not isinstance(bias, (int, float))):
        raise TypeError(f"{op}: bias must be a number or None, got {type(bias).__name__}")
    if not isinstance(scheme, (str, Mapping)):
        kind = type(scheme).__name__
        raise TypeError(f"{op}: scheme must be a name or a mapping from layer types, got {kind}")
    plan: list[tuple[Target, Callable[..., Tensor], dict[str, Any]]] = []
    for target in select(model, where, op):
        if target.parametrized:
            got = f"{target.name!r}, which is parametrized"
            raise ValueError(f"{op}: where must select plain parameters, got {got}")
        module, attr = target.owners[0]
        name = scheme if isinstance(scheme, str) else _scheme_for(module, scheme)
        if name is None:
            continue
        if name not in SCHEMES:
            raise ValueError(f"{op}: scheme must be one of {sorted(SCHEMES)}, got {name!r}")
        options = _options(name, module, attr, nonlinearity, param, std)
        # Fans, gain and std are checked here, before any weight is drawn.
        I.gain(nonlinearity, param)
        if name == "trunc_normal":
            check_real(op, "std", std, low=0.0, low_open=True)
        if "layout" in options:
            I.fans(
                target.value,
                layout=options["layout"],
                groups=options["groups"],
                gates=options["gates"],
            )
        plan.append((target, SCHEMES[name], options))
    for target, draw, options in plan:
        draw(target.value, generator=generator, **options)
        if bias is not None:
            for owner, attr in target.owners:
                owner_bias = getattr(owner, _bias_name(attr), None)
                if isinstance(owner_bias, Tensor):
                    with torch.no_grad():
                        owner_bias.fill_(bias)
    return [name for target, _, _ in plan for name in target.names]


def _bias_name(weight_name: str) -> str:
    """The bias that goes with a weight: ``bias`` for ``weight``, ``bias_ih_l0``
    for a recurrent layer's ``weight_ih_l0``."""
    return "bias" + weight_name.removeprefix("weight")


def _scheme_for(module: nn.Module, schemes: Mapping[type[nn.Module], str]) -> str | None:
    return next((s for kind, s in schemes.items() if isinstance(module, kind)), None)


def init_bias_prior_(
    layer: nn.Module, p: Tensor | float | list[float], *, kind: str = "sigmoid"
) -> Tensor:
    """Set ``layer.bias`` to :func:`weightops.functional.bias_prior` of ``p``.

    Binary or multi-label outputs (``kind="sigmoid"``): log(p/(1−p)) per
    output; softmax outputs: log p_k, centred. ``p`` broadcasts to the bias
    (a single frequency fills every output).

    >>> import weightops as wo
    >>> head = nn.Linear(8, 1)
    >>> wo.init_bias_prior_(head, 0.01)
    Parameter containing:
    tensor([-4.5951], requires_grad=True)
    """
    bias = getattr(layer, "bias", None)
    if not isinstance(bias, Tensor):
        got = f"{type(layer).__name__} without one"
        raise ValueError(f"init_bias_prior_: layer must have a bias tensor, got {got}")
    value = I.bias_prior(p, kind=cast(Any, kind))
    fits = value.ndim <= bias.ndim and all(
        a in (1, b) for a, b in zip(reversed(value.shape), reversed(bias.shape), strict=False)
    )
    if not fits:
        accepted = f"broadcastable to the bias' shape {tuple(bias.shape)}"
        raise ValueError(f"init_bias_prior_: p must be {accepted}, got shape {tuple(value.shape)}")
    with torch.no_grad():
        bias.copy_(value.expand_as(bias))
    return bias
