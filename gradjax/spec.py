"""What a probe is, without JAX: the names of every choice, the statistics' names, and the
`ProbeSpec` that fixes one compiled program.

This is the bottom layer: sweep files are validated, results are read and `gradjax --help`
answers from here without importing JAX (tests/test_imports.py). The modules that implement
the names (`activations`, `initializers`, `losses`, `network`) take their lists from here, and
tests/test_imports.py checks that every name here is implemented.
"""

from __future__ import annotations

import dataclasses

from gradjax.models.family import BUILT_IN, family_module
from gradjax.option import (  # the names of every choice, re-exported ("X as X") here
    ACTIVATIONS,
    DTYPE,
    DTYPES,
    LEAKY_SLOPE,
    LOSSES,
    Option,
)
from gradjax.option import BIAS_INITS as BIAS_INITS
from gradjax.option import NORMS as NORMS
from gradjax.option import WEIGHT_INITS as WEIGHT_INITS

INPUT_KINDS: tuple[str, ...] = ("fixed", "gaussian")
TARGET_KINDS: tuple[str, ...] = ("fixed", "zeros", "gaussian", "random_labels")
DRAWN_TARGETS: tuple[str, ...] = ("gaussian", "random_labels")  # drawn per init, not fixed
SATURATION = 0.01  # act_frac_saturated: |phi'| below this fraction of sup |phi'|

# --------------------------------------------------------------------------- options

# Options every model takes: the data, the loss, the number type and the init's scales. A
# family's own options live in its module (`gradjax.models`).
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("model", "model", "the model family (docs/extending.md)", "mlp", choices=BUILT_IN),
    Option("in_dim", "int", "input dimension", low=1),
    Option("out_dim", "int", "output dimension", low=1),
    Option("output_activation", "name", "output layer's activation", "linear",
           choices=ACTIVATIONS),
    Option("leaky_slope", "float", "negative slope of leaky_relu", LEAKY_SLOPE),
    Option("scale", "float", "multiplies the weight init's standard deviation (plug-ins: "
           "every leaf with ndim >= 2)", 1.0, low=0.0, traced=True),
    Option("bias_scale", "float", "multiplies the bias init's standard deviation (plug-ins: "
           "every 1-D leaf)", 1.0, low=0.0, traced=True),
    Option("loss", "name", "loss (bce needs output_activation sigmoid, softmax_cross_entropy "
           "out_dim >= 2)", "mse", choices=LOSSES),
    Option("dtype", "name", "the network's float type", DTYPE, choices=DTYPES),
    Option("inputs", "inputs", "a fixed batch (traced per point), or a fresh N(0, I) batch "
           "per init", "gaussian"),
    Option("targets", "targets", "fixed rows or a number or zeros (traced per point), or "
           "drawn per init", "gaussian"),
    Option("batch", "int", "examples per batch (the rows of fixed inputs, else 1)", low=1,
           derived=True),
)
COMMON: tuple[str, ...] = tuple(o.name for o in COMMON_OPTIONS)
# the options of each built-in family beyond the common ones, from its module's OPTIONS
FAMILY_OPTIONS: dict[str, tuple[Option, ...]] = {
    name: tuple(family_module(name).OPTIONS) for name in BUILT_IN
}
# the result columns' order for the options it names; any other declared option follows
COLUMN_ORDER: tuple[str, ...] = (
    "model", "in_dim", "width", "depth", "out_dim", "activation", "output_activation",
    "leaky_slope", "init", "scale", "bias_init", "bias_scale", "branch_scale", "loss", "norm",
    "dtype", "inputs", "targets", "batch", "structural_zeros",
)
_DECLARED = {o.name: o for o in COMMON_OPTIONS}
for _options in FAMILY_OPTIONS.values():
    _DECLARED.update({o.name: o for o in _options})
OPTION_TABLE: tuple[Option, ...] = tuple(
    sorted(_DECLARED.values(), key=lambda o: (COLUMN_ORDER + tuple(_DECLARED)).index(o.name)))
OPTIONS: tuple[str, ...] = tuple(o.name for o in OPTION_TABLE)
OPTION_BY_NAME: dict[str, Option] = {o.name: o for o in OPTION_TABLE}

def options_markdown() -> str:
    """The options table of docs/sweeps.md (tests/test_sweep.py checks the two agree)."""
    rows = ["| option | models | allowed | default | what it does |", "|---|---|---|---|---|"]
    for o in OPTION_TABLE:
        models = "all" if o.name in COMMON else ", ".join(
            f for f, options in FAMILY_OPTIONS.items() if o in options)
        traced = " Traced: a grid over it compiles once." if o.traced else ""
        rows.append(f"| `{o.name}` | {models} | {o.allowed()} | {o.default_text()} | "
                    f"{o.doc}.{traced} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- statistics

TENSOR_STATS: tuple[str, ...] = (
    "grad_mean", "grad_var", "grad_sq_norm", "grad_max_abs", "grad_mean_abs", "grad_cv",
    "grad_frac_zero", "grad_frac_subnormal", "grad_nonfinite",
)
PARAM_STATS: tuple[str, ...] = (*TENSOR_STATS, "grad_frac_underflow", "grad_unit_cos")
LAYER_STATS: tuple[str, ...] = (
    "delta_sq_norm", "preact_mean", "preact_var", "act_frac_dead", "act_frac_saturated",
    "act_deriv_mean",
)
STATS: tuple[str, ...] = (*PARAM_STATS, *LAYER_STATS, "loss_value")
# statistic -> (the output holding its log2 scale k, power p): its value is scaled * 2**(p k)
SCALED: dict[str, tuple[str, int]] = {
    "grad_mean": ("grad_log2_scale", 1),
    "grad_var": ("grad_log2_scale", 2),
    "grad_sq_norm": ("grad_log2_scale", 2),
    "grad_max_abs": ("grad_log2_scale", 1),
    "grad_mean_abs": ("grad_log2_scale", 1),
    "delta_sq_norm": ("delta_log2_scale", 2),
    "preact_mean": ("preact_log2_scale", 1),
    "preact_var": ("preact_log2_scale", 2),
}
LOG2_SCALES: tuple[str, ...] = tuple(dict.fromkeys(k for k, _ in SCALED.values()))
THEORY_COLUMNS: tuple[str, ...] = (
    "theory_q_star", "theory_chi1", "theory_xi_q", "theory_xi_c", "theory_xi_grad",
    "theory_grad_ratio", "theory_fit_chi1", "measured_chi1",
)
# columns of the result tables that are not options: a plug-in option may not take these names
RESERVED_COLUMNS: frozenset[str] = frozenset({
    "sweep", "cell", "label", "seed", "seeds", "layer", "layer_from_output", "param", "n",
    "grad_var_across_seeds", "frac_seeds_all_zero", *STATS, *LOG2_SCALES, *THEORY_COLUMNS,
})

# --------------------------------------------------------------------------- the program

MIN_AXIS = 2  # XLA drops an axis of size 1 and then may reduce in another order


def layer_sizes(in_dim: int, width: int, depth: int, out_dim: int) -> tuple[int, ...]:
    """(in_dim, width x depth, out_dim): `depth` hidden layers, depth + 1 weight layers."""
    return (in_dim, *([width] * depth), out_dim)


def default(name: str):
    """The declared default of option `name` (`OPTION_TABLE`)."""
    return OPTION_BY_NAME[name].default


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """Everything that fixes the compiled program (a shape bucket); hashable. Its fields are
    the options that are not traced (`Cell.spec` builds it from `OPTION_TABLE`, and
    tests/test_sweep.py checks the two agree), with the options' defaults; `inputs` and
    `targets` say only whether the data is fixed (a traced value per point) or drawn per init
    (the default, as in a sweep file)."""

    sizes: tuple[int, ...]  # the MLP's layer sizes; (in_dim, out_dim) for other models
    activation: str | None  # None: the model has no activation option (its taps get no
    # activation statistics)
    output_activation: str = default("output_activation")
    loss: str = default("loss")
    norm: str = default("norm")
    leaky_slope: float = default("leaky_slope")
    init: str = default("init")
    bias_init: str = default("bias_init")
    dtype: str = default("dtype")
    batch: int = 1
    inputs: str = default("inputs")  # "fixed" (traced per point) | "gaussian" (per seed)
    targets: str = default("targets")  # "fixed" | "gaussian" | "random_labels"
    structural_zeros: bool = default("structural_zeros")
    model: str = "mlp"
    # a model other than the MLP: the factory's options that fix the program, (name, value)
    # sorted by name, and the sweep file's folder, which plug-in modules are imported from
    model_options: tuple[tuple[str, object], ...] = ()
    model_folder: str = ""

    def __post_init__(self):
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"ProbeSpec.inputs {self.inputs!r}; allowed: fixed, gaussian")
        if self.targets not in ("fixed", *DRAWN_TARGETS):
            raise ValueError(
                f"ProbeSpec.targets {self.targets!r}; allowed: fixed, {', '.join(DRAWN_TARGETS)}"
                " (zeros and numbers are fixed targets)"
            )

    @property
    def depth(self) -> int:
        return len(self.sizes) - 2

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def stat_dtype(self) -> str:
        """The dtype statistics are computed in: float32 for bfloat16 networks."""
        return "float32" if self.dtype == "bfloat16" else self.dtype
