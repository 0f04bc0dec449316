"""gradjax: why are my gradients all the same value? Measured over thousands of inits.

`import gradjax` loads no JAX: reading results (`load`), sweep files (`load_sweep`) and the
names of every choice and statistic need only numpy, pandas and pyarrow. The compute parts
(`grad_stats`, `init_mlp`, `run_sweep`, ...) are imported on first use (`__getattr__`). The
one import-time effect is `gradjax.nn.xla.pin_reductions`, which must run before JAX picks a
backend.
"""

import importlib

from gradjax.nn import xla
from gradjax.version import VERSION

xla.pin_reductions()

from gradjax.results.layout import ResultsError  # noqa: E402
from gradjax.results.reading import load  # noqa: E402
from gradjax.results.schema import stats_frame  # noqa: E402
from gradjax.spec import (  # noqa: E402
    ACTIVATIONS,
    BIAS_INITS,
    LAYER_STATS,
    LOSSES,
    NORMS,
    PARAM_STATS,
    WEIGHT_INITS,
    ProbeSpec,
    layer_sizes,
)
from gradjax.sweep import load_sweep, sweep_from_dict  # noqa: E402

__version__ = VERSION

# name -> the module (which imports JAX) that defines it
_COMPUTE: dict[str, str] = {
    "UNROLLED_THREEFRY": "gradjax.nn.keys",
    "init_key": "gradjax.nn.keys",
    "apply_mlp": "gradjax.nn.network",
    "init_mlp": "gradjax.nn.network",
    "loss_and_grads": "gradjax.nn.network",
    "get_activation": "gradjax.nn.activations",
    "grad_stats": "gradjax.probe.api",
    "run_sweep": "gradjax.run.library",
    "tune": "gradjax.prescribe.tuning",
    "rescale": "gradjax.prescribe.rescale",
}


def __getattr__(name: str):
    if name in _COMPUTE:
        return getattr(importlib.import_module(_COMPUTE[name]), name)
    raise AttributeError(f"module 'gradjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_COMPUTE})


__all__ = [
    "ACTIVATIONS",
    "BIAS_INITS",
    "LAYER_STATS",
    "LOSSES",
    "NORMS",
    "PARAM_STATS",
    "WEIGHT_INITS",
    "ProbeSpec",
    "ResultsError",
    "apply_mlp",
    "get_activation",
    "grad_stats",
    "init_key",
    "init_mlp",
    "layer_sizes",
    "load",
    "load_sweep",
    "loss_and_grads",
    "rescale",
    "run_sweep",
    "stats_frame",
    "sweep_from_dict",
    "tune",
]
