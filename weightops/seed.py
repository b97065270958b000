"""Reproducible runs: seed every random number generator, and restore them."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["SeedState", "seed_everything"]


@dataclass
class SeedState:
    """Everything :func:`seed_everything` changes, as it was; :meth:`restore` puts it back."""

    python: Any
    numpy: Any
    torch_cpu: torch.Tensor
    cuda: list[torch.Tensor] | None
    deterministic_algorithms: bool
    deterministic_warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    environ: dict[str, str | None]

    def restore(self) -> None:
        """Restore the generators, flags and environment variables."""
        random.setstate(self.python)
        np.random.set_state(self.numpy)  # noqa: NPY002 - the global generator is the point
        torch.set_rng_state(self.torch_cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        torch.use_deterministic_algorithms(
            self.deterministic_algorithms, warn_only=self.deterministic_warn_only
        )
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        for name, value in self.environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_ENVIRON = ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG")


def seed_everything(seed: int, deterministic: bool = True) -> SeedState:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) generators.

    With ``deterministic``, also ask torch for deterministic algorithms
    (``torch.use_deterministic_algorithms(True, warn_only=True)``: an op with
    no deterministic implementation warns instead of failing), set cuDNN's
    ``deterministic`` and clear its ``benchmark``, and set
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed for deterministic cuBLAS).
    ``PYTHONHASHSEED`` is set too, which only reaches processes started
    afterwards (data-loader workers, subprocesses): a running interpreter's
    hash seed is fixed at start-up.

    Returns:
        The previous state; ``state.restore()`` puts it back.

    >>> state = seed_everything(0)
    >>> a = torch.rand(2)
    >>> _ = seed_everything(0)
    >>> torch.equal(a, torch.rand(2))
    True
    >>> state.restore()
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed_everything: seed must be an int in [0, 2**32), got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed_everything: seed must be an int in [0, 2**32), got {seed!r}")
    if not isinstance(deterministic, bool):
        raise TypeError(f"seed_everything: deterministic must be a bool, got {deterministic!r}")
    state = SeedState(
        python=random.getstate(),
        numpy=np.random.get_state(),  # noqa: NPY002
        torch_cpu=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn_deterministic=torch.backends.cudnn.deterministic,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        environ={name: os.environ.get(name) for name in _ENVIRON},
    )
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - code using the global NumPy generator
    torch.manual_seed(seed)  # every CUDA device too
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return state
