"""NumPy references: a twin of every :mod:`weightops.functional` op, same name.

Nothing here imports torch. References compute in float64 and return float64;
the tests round them to the op's dtype before comparing.
"""

from weightops.reference.clip import clip, clip_, max_norm, max_norm_
from weightops.reference.clustering import kmeans
from weightops.reference.decay import l1_prox_, l2_grad_, weight_decay_
from weightops.reference.gradients import (
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_value_,
    grad_stats,
)
from weightops.reference.init import (
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
from weightops.reference.normalization import (
    batch_norm,
    layer_norm,
    power_iteration,
    spectral_norm,
    standardize,
    weight_norm,
)
from weightops.reference.quantization import (
    dequantize,
    fake_quantize,
    fake_quantize_,
    quantize,
    quantize_params,
)
from weightops.reference.sparsity import (
    magnitude_mask,
    nm_mask,
    sparsify,
    sparsify_,
    threshold_mask,
)
from weightops.reference.stats import (
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
