"""gradjax: why are my gradients all the same value? Measured over thousands of inits."""

from gradjax._xla import pin_reductions, unroll_threefry_on_cpu

pin_reductions()
UNROLLED_THREEFRY = unroll_threefry_on_cpu()

from gradjax.activations import ACTIVATIONS, get_activation  # noqa: E402
from gradjax.engine import run_sweep  # noqa: E402
from gradjax.initializers import BIAS_INITS, WEIGHT_INITS  # noqa: E402
from gradjax.losses import LOSSES  # noqa: E402
from gradjax.network import (  # noqa: E402
    NORMS,
    apply_mlp,
    init_mlp,
    layer_sizes,
    loss_and_grads,
)
from gradjax.probe import LAYER_STATS, PARAM_STATS, ProbeSpec, grad_stats  # noqa: E402
from gradjax.storage import load, stats_frame  # noqa: E402
from gradjax.sweep import load_sweep  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BIAS_INITS",
    "LAYER_STATS",
    "LOSSES",
    "NORMS",
    "PARAM_STATS",
    "WEIGHT_INITS",
    "ProbeSpec",
    "apply_mlp",
    "get_activation",
    "grad_stats",
    "init_mlp",
    "layer_sizes",
    "load",
    "load_sweep",
    "loss_and_grads",
    "run_sweep",
    "stats_frame",
]
