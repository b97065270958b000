"""Benchmark suite: fake_quantize and fake_quantize_ (weightops.functional.quantization).

Run with ``weightops bench benchmarks/bench_quantization.py`` from the
repository root. 8-bit asymmetric min-max fake quantization, per tensor and
per channel (``axis=0``), with the scale and zero point computed from the
weight on every call. Targets (op/floor, median, same run): the out-of-place
forms within 1.5x of ``w.clone()``, the in-place forms within 2x of
``dst.copy_(w)``.

PyTorch's equivalents compute the same parameters from ``torch.aminmax``
(per tensor) or ``amin``/``amax`` (per channel) and call
``torch.fake_quantize_per_tensor_affine`` / ``per_channel_affine``; their
in-place rows copy that result into the weight.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from weightops.bench import Case, op_cases

BITS = 8
Q_MIN, Q_MAX = 0, 2**BITS - 1
EPS = torch.finfo(torch.float32).eps


def _params(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """torch's MinMaxObserver (per-tensor / per-channel affine) from min and max."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp((hi - lo) / float(Q_MAX - Q_MIN), min=EPS)
    zero_point = torch.clamp(Q_MIN - torch.round(lo / scale), Q_MIN, Q_MAX).to(torch.int32)
    return scale, zero_point


def per_tensor(t: Tensor) -> Tensor:
    scale, zero_point = _params(*torch.aminmax(t))
    return torch.fake_quantize_per_tensor_affine(t, scale, zero_point, Q_MIN, Q_MAX)


def per_channel(t: Tensor) -> Tensor:
    scale, zero_point = _params(torch.amin(t, dim=1), torch.amax(t, dim=1))
    return torch.fake_quantize_per_channel_affine(t, scale, zero_point, 0, Q_MIN, Q_MAX)


def per_tensor_(t: Tensor) -> Tensor:
    return t.copy_(per_tensor(t))


def per_channel_(t: Tensor) -> Tensor:
    return t.copy_(per_channel(t))


def cases(size: int, device: torch.device) -> list[Case]:
    """The rows of this suite on ``size`` x ``size`` float32 weights on ``device``."""
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(size, size, device=device, generator=g)
    channel = op_cases(
        "fake_quantize",
        w,
        BITS,
        axis=0,
        torch_equivalents=(
            ("amin/amax + fake_quantize_per_channel_affine", per_channel),
            ("same, copied into w", per_channel_),
        ),
        targets=(1.5, 2.0),
    )
    return [
        *op_cases(
            "fake_quantize",
            w,
            BITS,
            torch_equivalents=(
                ("aminmax + fake_quantize_per_tensor_affine", per_tensor),
                ("same, copied into w", per_tensor_),
            ),
            targets=(1.5, 2.0),
        ),
        *(dataclasses.replace(c, op=f"{c.op} (axis=0)") for c in channel),
    ]
