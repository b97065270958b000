"""Weight sharing by clustering: :class:`Cluster`."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from weightops import functional as F
from weightops._checks import fail
from weightops.storage import ClusteredTensor
from weightops.transforms.base import Transform

__all__ = ["Cluster"]

Init = Literal["linear", "quantile", "kmeans++"]


class Cluster(Transform):
    """k-means weight sharing (Deep Compression): ``w = codebook[indices]``.

    ``setup`` clusters the weight's values with :func:`weightops.functional.kmeans`
    (per tensor, or per channel along ``axis``) into a trainable ``codebook``
    parameter (``(k,)`` or ``(C, k)``) and an ``indices`` buffer (int32, the
    weight's shape; per channel, indices into the flattened codebook, channel
    ``c``'s entries starting at ``c · k``). ``forward`` returns ``codebook[indices]``: every weight
    takes one of ``k`` values (per channel), and the codebook's gradient is
    the sum of its members' gradients, as in Han et al. (2016). The input
    weight only fixes the shape: the stored tensor of a parametrization gets
    no gradient, and the assignments stay fixed until :meth:`recluster`.

    ``preserve_zero=True`` keeps one centroid at exactly 0 (never trained,
    exact zeros assigned to it), so pruned weights stay pruned:
    ``Prune(0.9) >> Cluster(16, preserve_zero=True) >> FakeQuantize(8)`` is
    Deep Compression's pipeline. :meth:`compress` gives the compact form,
    indices packed at ``ceil(log2 k)`` bits plus the codebook.

    Args:
        k: number of shared values, 1 to 65536.
        axis: cluster each slice along this dimension separately (0: a
            layer's output units), or ``None`` for one codebook.
        init: ``"linear"`` (Deep Compression's choice), ``"quantile"`` or
            ``"kmeans++"``.
        iters: Lloyd iterations at most.
        preserve_zero: keep a centroid fixed at exactly 0.

    >>> c = Cluster(2)
    >>> c.setup(torch.tensor([0.1, 0.2, 0.9, 1.1]))
    >>> c(torch.zeros(4))
    tensor([0.1500, 0.1500, 1.0000, 1.0000], grad_fn=<ViewBackward0>)
    """

    hyperparameters = ("k", "axis", "init", "preserve_zero")
    passes_gradient: ClassVar[bool] = False
    codebook: nn.Parameter | None
    indices: Tensor | None
    fixed: Tensor | None

    def __init__(
        self,
        k: int,
        axis: int | None = None,
        init: Init = "linear",
        iters: int = 30,
        preserve_zero: bool = False,
    ) -> None:
        super().__init__()
        op = "Cluster"
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1 << 16:
            fail(op, "k", "an int in [1, 65536]", k)
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
            fail(op, "axis", "None or an int", axis, TypeError)
        if init not in ("linear", "quantile", "kmeans++"):
            fail(op, "init", "'linear', 'quantile' or 'kmeans++'", init)
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            fail(op, "iters", "an int >= 1", iters)
        if not isinstance(preserve_zero, bool):
            fail(op, "preserve_zero", "a bool", preserve_zero, TypeError)
        self.k, self.axis, self.init, self.iters = k, axis, init, iters
        self.preserve_zero = preserve_zero
        self.codebook = None
        self.register_buffer("indices", None)
        self.register_buffer("fixed", None)

    @property
    def min_ndim(self) -> int:
        if self.axis is None:
            return 0
        return self.axis + 1 if self.axis >= 0 else -self.axis

    def setup(self, weight: Tensor, module: nn.Module | None = None) -> None:
        self.recluster(weight)

    @torch.no_grad()
    def recluster(self, weight: Tensor) -> None:
        """Cluster ``weight`` afresh: new assignments, and the codebook set in
        place (the same ``Parameter``, so optimizers keep it)."""
        codebook, indices = F.kmeans(
            weight.detach(),
            self.k,
            axis=self.axis,
            init=self.init,
            iters=self.iters,
            preserve_zero=self.preserve_zero,
        )
        if self.codebook is None or self.codebook.shape != codebook.shape:
            self.codebook = nn.Parameter(codebook)
        else:
            self.codebook.copy_(codebook)
        # Stored as indices into the flattened codebook, so that forward
        # needs no temporary to add the channel offsets.
        self.indices = indices.to(torch.int32)
        self.indices += self._offsets()
        if self.preserve_zero:
            # kmeans fixes one centroid at 0; a free centroid landing on 0 stays free.
            zero = codebook == 0
            self.fixed = zero & (zero.cumsum(-1) == 1)
        else:
            self.fixed = None

    def _offsets(self) -> Tensor | int:
        """What separates the flat indices of the ``indices`` buffer from the
        per-channel ones: channel ``c`` starts at ``c · k`` of the flattened
        codebook (0 per tensor), broadcast along ``axis``."""
        assert self.indices is not None and self.codebook is not None
        if self.axis is None:
            return 0
        shape = [1] * self.indices.ndim
        shape[self.axis % self.indices.ndim] = self.codebook.shape[0]
        total = self.codebook.numel()
        step = torch.arange(0, total, self.k, dtype=torch.int32, device=self.indices.device)
        return step.view(shape)

    def _values(self) -> Tensor:
        codebook = self._codebook()
        assert self.indices is not None
        index = self.indices
        return codebook.reshape(-1).index_select(0, index.reshape(-1)).view(index.shape)

    def forward(self, weight: Tensor) -> Tensor:
        if self.indices is not None and self.indices.shape != weight.shape:
            raise ValueError(
                f"Cluster: weight must have the shape it was clustered with "
                f"{tuple(self.indices.shape)}, got {tuple(weight.shape)}"
            )
        return self._values().to(weight.dtype)

    def reference(self, weight: np.ndarray) -> np.ndarray:
        codebook: np.ndarray = self._codebook().detach().double().cpu().numpy()
        assert self.indices is not None
        index = self.indices.cpu().numpy()
        return np.asarray(codebook.reshape(-1)[index], dtype=np.float64)

    def compress(self) -> ClusteredTensor:
        """The compact form: indices packed at ``ceil(log2 k)`` bits and the codebook."""
        assert self.indices is not None
        local = self.indices - self._offsets()
        return ClusteredTensor(local, self._codebook().detach(), self.k, axis=self.axis)

    def _codebook(self) -> Tensor:
        if self.codebook is None or self.indices is None:
            raise RuntimeError("Cluster: call setup(weight) first; the codebook is state")
        if self.fixed is None:
            return self.codebook
        # The zero centroid stays exactly 0 and gets no gradient.
        return torch.where(self.fixed, 0, self.codebook)
