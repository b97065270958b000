"""Functional ops: pure torch, tensors in and out, no module state.

Every op here has a NumPy twin of the same name in :mod:`weightops.reference`.
Ops whose name ends in ``_`` work in place and return their argument.
"""

from weightops.functional.clip import clip, clip_, max_norm, max_norm_
from weightops.functional.clustering import kmeans
from weightops.functional.decay import l1_prox_, l2_grad_, weight_decay_
from weightops.functional.gradients import (
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_value_,
    grad_stats,
)
from weightops.functional.init import (
    bias_prior,
    fans,
    gain,
    he_normal,
    he_normal_,
    he_uniform,
    he_uniform_,
    lecun_normal,
    lecun_normal_,
    orthogonal,
    orthogonal_,
    trunc_normal,
    trunc_normal_,
    xavier_normal,
    xavier_normal_,
    xavier_uniform,
    xavier_uniform_,
)
from weightops.functional.normalization import (
    batch_norm,
    layer_norm,
    power_iteration,
    spectral_norm,
    standardize,
    weight_norm,
)
from weightops.functional.quantization import (
    dequantize,
    fake_quantize,
    fake_quantize_,
    quantize,
    quantize_params,
)
from weightops.functional.sparsity import (
    magnitude_mask,
    nm_mask,
    sparsify,
    sparsify_,
    threshold_mask,
)
from weightops.functional.stats import (
    max_cosine,
    power_law_alpha,
    sigma_max,
    singular_values,
    stable_rank,
    weight_stats,
)

__all__ = [
    "adaptive_clip_grad_",
    "batch_norm",
    "bias_prior",
    "clip",
    "clip_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "dequantize",
    "fake_quantize",
    "fake_quantize_",
    "fans",
    "gain",
    "grad_stats",
    "he_normal",
    "he_normal_",
    "he_uniform",
    "he_uniform_",
    "kmeans",
    "l1_prox_",
    "l2_grad_",
    "layer_norm",
    "lecun_normal",
    "lecun_normal_",
    "magnitude_mask",
    "max_cosine",
    "max_norm",
    "max_norm_",
    "nm_mask",
    "orthogonal",
    "orthogonal_",
    "power_iteration",
    "power_law_alpha",
    "quantize",
    "quantize_params",
    "sigma_max",
    "singular_values",
    "sparsify",
    "sparsify_",
    "spectral_norm",
    "stable_rank",
    "standardize",
    "threshold_mask",
    "trunc_normal",
    "trunc_normal_",
    "weight_decay_",
    "weight_norm",
    "weight_stats",
    "xavier_normal",
    "xavier_normal_",
    "xavier_uniform",
    "xavier_uniform_",
]
