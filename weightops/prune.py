"""Pruning over time: raise sparsity (:func:`reprune_`), on a schedule
(:func:`prune_gradually`), and iterative magnitude pruning with rewinding
(:class:`IterativePruning`).

All three act on the :class:`~weightops.Prune` transforms a model is
parametrized with (:func:`weightops.parametrize`), and only ever prune
further: a weight pruned once stays pruned (its mask bit stays ``False``),
and the next weights pruned are the smallest *kept* ones, so the counts stay
exact (``round(s · n)``, half to even) at every sparsity ``s``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as P

from weightops._checks import check_real, fail
from weightops._select import Where, frozen, parametrization_list, select, stored_tensors
from weightops.apply import parametrize
from weightops.functional.sparsity import _check_sparsity, global_magnitude_masks, prune_count
from weightops.transforms.base import Compose, Transform
from weightops.transforms.sparsity import Prune, Scope

__all__ = ["IterativePruning", "PruningSchedule", "prune_gradually", "reprune_"]


@dataclass
class _Site:
    """A :class:`Prune` in a model and the tensor it currently receives."""

    name: str
    prune: Prune
    weight: Tensor


def _flat(plist: P.ParametrizationList) -> list[Transform]:
    members: list[Transform] = []
    for t in plist:
        members.extend(t._members() if isinstance(t, Compose) else [cast(Transform, t)])
    return members


def _sites(model: nn.Module, where: Where, op: str) -> list[_Site]:
    """Every Prune on the selected parametrized tensors, each once, with its input."""
    sites: list[_Site] = []
    for target in select(model, "*" if where is None else where, op):
        if not target.parametrized:
            continue
        members = _flat(parametrization_list(*target.owners[0]))
        last = max((i for i, t in enumerate(members) if isinstance(t, Prune)), default=-1)
        with frozen(target), torch.no_grad():
            args: tuple[Tensor, ...] = stored_tensors(parametrization_list(*target.owners[0]))
            for t in members[: last + 1]:
                if isinstance(t, Prune):
                    sites.append(_Site(target.name, t, args[0]))
                args = (t(*args),)
    if not sites:
        raise ValueError(
            f"{op}: where must select weights parametrized with Prune "
            f"(wo.parametrize(model, wo.Prune(...))), got where={where!r}, which selects none"
        )
    return sites


def _raised(op: str, sites: list[_Site], sparsity: float) -> list[Tensor]:
    """New masks for ``sites`` pruned together to ``sparsity``: the old pruned
    weights plus the smallest kept ones, ``round(sparsity · n)`` in all."""
    for site in sites:
        if site.prune.mask is None or site.prune.pattern is not None:
            fail(op, "where", "Prune transforms set up without a pattern", site.name)
    masks = [cast(Tensor, site.prune.mask) for site in sites]
    n = sum(m.numel() for m in masks)
    pruned = int(sum(int((~m).sum()) for m in masks))
    target = prune_count(sparsity, n)
    if target < pruned:
        fail(op, "sparsity", f"at least the current sparsity ({pruned} of {n} pruned)", sparsity)
    kept = [site.weight[m] for site, m in zip(sites, masks, strict=True)]
    n_kept = n - pruned
    more = 0.0 if n_kept == 0 else (target - pruned) / n_kept
    assert prune_count(more, n_kept) == target - pruned
    new = []
    for old, sub in zip(masks, global_magnitude_masks(kept, more), strict=True):
        m = old.clone()
        m[old] = sub
        new.append(m)
    return new


def reprune_(model: nn.Module, sparsity: float, *, where: Where = None) -> list[str]:
    """Raise the sparsity of a model's :class:`~weightops.Prune` transforms to ``sparsity``.

    Layer-scope transforms each prune to ``round(sparsity · n)`` of their own
    ``n`` weights; global-scope ones (all those selected) to ``round(sparsity · N)``
    of their ``N`` together. Weights already pruned stay pruned; the further
    weights pruned are the smallest-magnitude kept ones (ties: lower index
    first, global ones in selection order). Every new mask is computed before
    any is set, so a bad argument changes nothing.

    Args:
        model: a model parametrized with ``Prune`` (no ``pattern``).
        sparsity: the new fraction, in ``[0, 1]``, at least the current one.
        where: which parametrized tensors (default: all).

    Returns:
        The names whose masks were recomputed.

    Raises:
        ValueError: nothing selected carries a ``Prune``, a ``Prune`` has a
            pattern or was never set up, or ``sparsity`` is below the current.

    >>> import weightops as wo
    >>> net = nn.Linear(4, 2)
    >>> _ = wo.parametrize(net, wo.Prune(0.25))
    >>> wo.reprune_(net, 0.5)
    ['weight']
    >>> int((net.weight == 0).sum())
    4
    """
    op = "reprune_"
    s = _check_sparsity(op, sparsity)
    sites = _sites(model, where, op)
    groups = [[site] for site in sites if site.prune.scope == "layer"]
    joint = [site for site in sites if site.prune.scope == "global"]
    groups += [joint] if joint else []
    masks = [_raised(op, group, s) for group in groups]
    for group, new in zip(groups, masks, strict=True):
        for site, m in zip(group, new, strict=True):
            site.prune.mask = m
            site.prune.sparsity = s
    return [site.name for site in sites]


class PruningSchedule:
    """Gradual pruning (Zhu & Gupta, 2017) as an optimizer step post-hook.

    .. math:: s_t = s_f + (s_i - s_f) \\left(1 - \\frac{t - t_0}{T - t_0}\\right)^3

    After step ``t`` (counting optimizer steps from 1), when
    ``t = begin + j · every <= end`` or ``t = end``, the model's
    :class:`~weightops.Prune` transforms are re-pruned to ``s_t``
    (:func:`reprune_`); after ``end`` they stay at ``final_sparsity``. With
    ``begin=0`` the model is pruned to ``initial_sparsity`` at once.
    Made by :func:`prune_gradually`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        final_sparsity: float,
        initial_sparsity: float,
        begin: int,
        end: int,
        every: int,
        where: Where,
    ) -> None:
        self.model = model
        self.final_sparsity = final_sparsity
        self.initial_sparsity = initial_sparsity
        self.begin, self.end, self.every = begin, end, every
        self.where = where
        #: Optimizer steps taken since the schedule was made.
        self.step = 0
        if begin == 0:
            reprune_(model, initial_sparsity, where=where)
        self._handle = optimizer.register_step_post_hook(self._after_step)

    def sparsity_at(self, step: int) -> float:
        """:math:`s_t` for step ``step``: the sparsity pruned to at a pruning step."""
        if step <= self.begin:
            return self.initial_sparsity
        if step >= self.end:
            return self.final_sparsity
        left = 1.0 - (step - self.begin) / (self.end - self.begin)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * left**3

    def prunes_at(self, step: int) -> bool:
        """Whether the schedule re-prunes after step ``step``."""
        return self.begin <= step <= self.end and (
            (step - self.begin) % self.every == 0 or step == self.end
        )

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.step += 1
        if self.prunes_at(self.step):
            reprune_(self.model, self.sparsity_at(self.step), where=self.where)

    def remove(self) -> None:
        """Stop re-pruning (the masks stay as they are)."""
        self._handle.remove()


def _check_step(op: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(op, name, f"an int >= {low}", value, TypeError)
    if value < low:
        fail(op, name, f"an int >= {low}", value)
    return int(value)


def prune_gradually(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    final_sparsity: float,
    *,
    end: int,
    begin: int = 0,
    every: int = 100,
    initial_sparsity: float = 0.0,
    where: Where = None,
) -> PruningSchedule:
    """Prune ``model`` gradually to ``final_sparsity`` by step ``end``: a :class:`PruningSchedule`.

    ``model`` must be parametrized with :class:`~weightops.Prune` (say
    ``Prune(0.0)``, or ``Prune(0.0, scope="global")``); the schedule raises
    its sparsity every ``every`` steps from ``begin``, along Zhu & Gupta's
    cubic, reaching ``final_sparsity`` exactly after step ``end``. Pruned
    weights get no gradient (``Prune``'s forward), so fine-tuning between
    pruning steps adapts the kept ones.

    Args:
        optimizer: its ``step()`` drives the schedule.
        model: the parametrized model.
        final_sparsity: the sparsity after step ``end``, in ``[0, 1]``.
        end: the last pruning step, > ``begin``.
        begin: the first pruning step, >= 0.
        every: steps between pruning steps, >= 1.
        initial_sparsity: the sparsity at ``begin``, at most ``final_sparsity``.
        where: which parametrized tensors (default: all carrying a ``Prune``).

    Returns:
        The schedule; ``remove()`` it to stop.

    >>> import weightops as wo
    >>> net = nn.Linear(10, 10)
    >>> _ = wo.parametrize(net, wo.Prune(0.0))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> schedule = wo.prune_gradually(opt, net, 0.9, end=4, every=2)
    >>> for _ in range(4):
    ...     opt.step()
    >>> int((net.weight == 0).sum())
    90
    """
    op = "prune_gradually"
    if not isinstance(optimizer, torch.optim.Optimizer):
        fail(op, "optimizer", "a torch.optim.Optimizer", type(optimizer).__name__, TypeError)
    final = cast(float, check_real(op, "final_sparsity", final_sparsity, low=0.0, high=1.0))
    initial = check_real(op, "initial_sparsity", initial_sparsity, low=0.0, high=final)
    b = _check_step(op, "begin", begin, 0)
    e = _check_step(op, "end", end, b + 1)
    k = _check_step(op, "every", every, 1)
    _sites(model, where, op)
    return PruningSchedule(optimizer, model, final, cast(float, initial), b, e, k, where)


class IterativePruning:
    """Iterative magnitude pruning with rewinding: the lottery-ticket procedure.

    Frankle & Carbin (2019): train, prune the smallest ``rate`` of the weights
    still kept, rewind the kept weights to their values at initialization (or
    at an early step: "late rewinding", Frankle et al. 2020), train again.
    This helper parametrizes the selected weights with
    ``Prune(0.0, scope)`` and keeps the saved values::

        imp = wo.IterativePruning(model)      # saves the weights now
        for round in range(rounds):
            train(model)
            imp.prune(0.2)                    # 20% of the kept weights
            imp.rewind()                      # kept weights back to the saved values

    :meth:`rewind` restores the stored tensors of every selected
    parametrization (all positions; the pruned ones stay masked) and leaves the
    masks alone. Optimizer state (momentum) is not rewound: make a fresh
    optimizer for each round, as the papers do.

    Args:
        model: the model to prune.
        where: which weights (default: weights of Linear, Conv*, Embedding
            and RNN layers).
        scope: ``"global"`` (one threshold across all, the papers' choice for
            convolutional networks) or ``"layer"``.
    """

    def __init__(self, model: nn.Module, where: Where = None, *, scope: Scope = "global") -> None:
        self.model = model
        #: The Prune instance of each selected name.
        self.prunes: dict[str, Transform] = parametrize(model, Prune(0.0, scope), where)
        self._names = set(self.prunes)
        self._saved: list[list[Tensor]] = []
        self.save()

    def _where(self, name: str, module: nn.Module, param: Tensor) -> bool:
        return name in self._names

    def _stored(self) -> Iterator[list[Tensor]]:
        for target in select(self.model, self._where, "IterativePruning"):
            yield list(stored_tensors(parametrization_list(*target.owners[0])))

    def save(self) -> None:
        """Save the current stored values of the selected weights as the rewind point."""
        with torch.no_grad():
            self._saved = [[t.clone() for t in ts] for ts in self._stored()]

    def rewind(self) -> None:
        """Restore the saved values; the masks stay as they are."""
        with torch.no_grad():
            for ts, saved in zip(self._stored(), self._saved, strict=True):
                for t, s in zip(ts, saved, strict=True):
                    t.copy_(s)

    def prune(self, rate: float = 0.2) -> float:
        """Prune ``rate`` of the weights still kept; return the new sparsity
        ``1 - (1 - s)(1 - rate)``."""
        r = check_real("IterativePruning.prune", "rate", rate, low=0.0, high=1.0)
        s = 1.0 - (1.0 - self.sparsity) * (1.0 - cast(float, r))
        reprune_(self.model, min(s, 1.0), where=self._where)
        return self.sparsity

    @property
    def sparsity(self) -> float:
        """The fraction of the selected weights pruned (a tied tensor counted once)."""
        masks = self.masks.values()
        n = sum(m.numel() for m in masks)
        return float(sum(int((~m).sum()) for m in masks) / n) if n else 0.0

    @property
    def masks(self) -> dict[str, Tensor]:
        """The mask of each selected tensor (first name of a tied one), ``True`` = kept."""
        return {
            site.name: cast(Tensor, site.prune.mask)
            for site in _sites(self.model, self._where, "IterativePruning")
        }
