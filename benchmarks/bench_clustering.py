"""Benchmark suite: kmeans (1-D k-means of the weight's values) against scipy's kmeans2.

Run with ``weightops bench benchmarks/bench_clustering.py`` from the
repository root. The weight is 1000 x 1000 float32 (1M values) whatever
``--size`` (smaller only under ``--quick``): scipy takes seconds on it, about
9 s a call at k = 256, and the floor is timed at least once per round.

The floor is ``scipy.cluster.vq.kmeans2`` from the same initial centroids
(``linspace(min, max, k)``, ``minit="matrix"``) for the same 30 Lloyd steps,
on a host copy of the weight made outside the timing; the op runs with
``tol=0`` (it stops early only at a fixed point, where kmeans2's further steps
change nothing). Target: at least 20x faster (op/floor <= 0.05). Each row's
name carries the inertia of the op's result over that of kmeans2's codebook
with every value at its nearest centroid (kmeans2's best case), measured once
when the suite is built.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.cluster.vq import kmeans2, vq
from torch import Tensor

import weightops.functional as WF
import weightops.reference as WR
from weightops.bench import Case

SIDE = 1000
ITERS = 30
KS = (16, 256)


def _inertia(values: np.ndarray, codebook: np.ndarray, indices: np.ndarray) -> float:
    return float(np.sum((values - codebook[indices]) ** 2))


def cases(size: int, device: torch.device) -> list[Case]:
    """The rows of this suite: kmeans at k = 16 and 256 on a min(size, 1000)² weight."""
    side = min(size, SIDE)
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(side, side, device=device, generator=g)
    host = w.cpu().numpy().ravel()
    values = host.astype(np.float64)
    rows = []
    for k in KS:
        k = min(k, host.size)
        start = np.linspace(host.min(), host.max(), k, dtype=np.float32)
        init = torch.from_numpy(start).to(device)

        def op(t: Tensor, k: int = k, init: Tensor = init) -> object:
            return WF.kmeans(t, k, init=init, iters=ITERS, tol=0.0)

        def floor(t: Tensor, start: np.ndarray = start) -> object:
            # On the host copy made above: the floor is scipy's clustering alone.
            # Its empty clusters keep their centroids, as ours do; it warns of them.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return kmeans2(host, start.copy(), iter=ITERS, minit="matrix", missing="warn")

        def reference(a: np.ndarray, k: int = k, start: np.ndarray = start) -> object:
            return WR.kmeans(a, k, init=start.astype(np.float64), iters=ITERS, tol=0.0)

        codebook, indices = op(w)
        theirs, _ = floor(w)
        mine = _inertia(values, codebook.double().cpu().numpy(), indices.cpu().numpy().ravel())
        best = _inertia(values, theirs.astype(np.float64), vq(host, theirs)[0])
        rows.append(
            Case(
                f"kmeans k={k} (inertia {mine / best:.4f}x kmeans2's)",
                "out-of-place",
                w,
                op,
                reference=reference,
                target=0.05,
                floor_fn=floor,
                floor_name=f"scipy kmeans2, same init, {ITERS} steps",
            )
        )
    return rows
