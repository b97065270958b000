"""weightops: composable, GPU-capable weight transforms for PyTorch.

Every transform exists in four forms with one definition of the math: a NumPy
reference (:mod:`weightops.reference`), a torch functional op
(:mod:`weightops.functional`), a transform module (:class:`Transform`), and
model-level application (:func:`parametrize`, :func:`apply_`,
:func:`constrain`).
"""

from weightops._select import shared_parameters
from weightops.apply import Constraint, apply_, constrain, parametrize, unparametrize
from weightops.clip_grads import GradClipping, clip_grads
from weightops.compress import load_compressed
from weightops.decay import Decay, decay, param_groups
from weightops.fold import fold_batch_norm
from weightops.functional.gradients import GradStats
from weightops.init import init_, init_bias_prior_
from weightops.inspection import Report, Thresholds, inspect
from weightops.monitor import WeightMonitor
from weightops.prune import IterativePruning, PruningSchedule, prune_gradually, reprune_
from weightops.seed import SeedState, seed_everything
from weightops.storage import (
    ClusteredTensor,
    QuantizedTensor,
    load_quantized,
    pack_bits,
    save_quantized,
    unpack_bits,
)
from weightops.tie import tie, untie
from weightops.transforms import (
    Clip,
    Cluster,
    Compose,
    FakeQuantize,
    MaxNorm,
    Prune,
    Sparsify,
    SpectralNorm,
    Standardize,
    Transform,
    WeightNorm,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "Clip",
    "Cluster",
    "ClusteredTensor",
    "Compose",
    "Constraint",
    "Decay",
    "FakeQuantize",
    "GradClipping",
    "GradStats",
    "IterativePruning",
    "MaxNorm",
    "Prune",
    "PruningSchedule",
    "QuantizedTensor",
    "Report",
    "SeedState",
    "Sparsify",
    "SpectralNorm",
    "Standardize",
    "Thresholds",
    "Transform",
    "WeightMonitor",
    "WeightNorm",
    "__version__",
    "apply_",
    "clip_grads",
    "constrain",
    "decay",
    "fold_batch_norm",
    "init_",
    "init_bias_prior_",
    "inspect",
    "load_compressed",
    "load_quantized",
    "pack_bits",
    "param_groups",
    "parametrize",
    "prune_gradually",
    "reprune_",
    "save_quantized",
    "seed_everything",
    "shared_parameters",
    "tie",
    "unpack_bits",
    "unparametrize",
    "untie",
]
