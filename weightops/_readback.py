"""Device statistics gathered and read back to the host with one transfer."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

import torch
from torch import Tensor

K = TypeVar("K", bound=Hashable)


class Readback(Generic[K]):
    """Collect device tensors under keys; :meth:`read` returns them as Python
    floats with a single device-to-host copy (the one host sync).

    >>> batch = Readback[str]()
    >>> batch.add("a", torch.tensor([1.0, 2.0]))
    >>> batch.add("b", torch.tensor(3))
    >>> batch.read()
    {'a': [1.0, 2.0], 'b': [3.0]}
    """

    def __init__(self) -> None:
        self.parts: list[tuple[K, Tensor]] = []

    def add(self, key: K, value: Tensor) -> None:
        """Queue ``value`` (any shape, flattened, as float64) under ``key``."""
        self.parts.append((key, value.detach().reshape(-1).to(torch.float64)))

    def read(self) -> dict[K, list[float]]:
        """Every queued value, by key, read to the host at once."""
        if not self.parts:
            return {}
        device = self.parts[0][1].device
        flat = torch.cat([t.to(device) for _, t in self.parts]).tolist()
        out: dict[K, list[float]] = {}
        at = 0
        for key, t in self.parts:
            out[key] = flat[at : at + t.numel()]
            at += t.numel()
        return out
