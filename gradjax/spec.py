"""What a probe is, without JAX: the names of every choice, the statistics' names, and the
`ProbeSpec` that fixes one compiled program.

This is the bottom layer: sweep files are validated, results are read and `gradjax --help`
answers from here without importing JAX (tests/test_imports.py). The modules that implement
the names (`activations`, `initializers`, `losses`, `network`) take their lists from here, and
tests/test_imports.py checks that every name here is implemented.
"""

from __future__ import annotations

import dataclasses

# --------------------------------------------------------------------------- choices

ACTIVATIONS: tuple[str, ...] = (
    "sigmoid", "tanh", "relu", "elu", "selu", "gelu", "silu", "swish", "softplus", "soft_sign",
    "hard_tanh", "linear", "leaky_relu",
)
WEIGHT_INITS: tuple[str, ...] = (
    "normal", "uniform", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
    "lecun_normal", "lecun_uniform", "fan_in_normal", "orthogonal", "constant", "zeros",
)
BIAS_INITS: tuple[str, ...] = ("zeros", "constant", "normal")
LOSSES: tuple[str, ...] = ("mse", "bce", "softmax_cross_entropy")
NORMS: tuple[str, ...] = ("none", "layernorm", "batchnorm")
DTYPES: tuple[str, ...] = ("float32", "float64", "bfloat16")
INPUT_KINDS: tuple[str, ...] = ("fixed", "gaussian")
TARGET_KINDS: tuple[str, ...] = ("fixed", "zeros", "gaussian", "random_labels")
DRAWN_TARGETS: tuple[str, ...] = ("gaussian", "random_labels")  # drawn per init, not fixed
SATURATION = 0.01  # act_frac_saturated: |phi'| below this fraction of sup |phi'|

# --------------------------------------------------------------------------- options


@dataclasses.dataclass(frozen=True)
class Option:
    """One sweep-file option, declared once: validation (`gradjax.sweep`), the result tables'
    column types (`gradjax.storage`), the bucket key (`Cell.spec`), `gradjax run --help` and
    the options table of docs/sweeps.md are derived from `OPTION_TABLE`."""

    name: str
    kind: str  # "int" | "float" | "name" | "bool" | "inputs" | "targets"
    doc: str  # what it does, one line
    default: object = None  # None: required (batch: derived from fixed inputs, else 1)
    low: float | None = None  # the smallest value an int or float option takes
    choices: tuple[str, ...] = ()  # a name option's allowed values
    traced: bool = False  # a value the compiled program takes per point (no recompile)

    @property
    def required(self) -> bool:
        return self.default is None and self.name != "batch"

    def default_text(self) -> str:
        """The default as written in a sweep file, or "required" / "derived"."""
        if self.default is None:
            return "required" if self.required else "derived"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return f'"{self.default}"' if isinstance(self.default, str) else f"{self.default:g}"

    def allowed(self) -> str:
        """What the option accepts, in words."""
        if self.kind in ("int", "float"):
            what = "integer" if self.kind == "int" else "number"
            return what if self.low is None else f"{what} >= {self.low:g}"
        if self.kind == "bool":
            return "true, false"
        if self.kind == "inputs":
            return "rows of in_dim numbers (a fixed batch), gaussian"
        if self.kind == "targets":
            return "rows of out_dim numbers, a number, zeros, gaussian, random_labels"
        return ", ".join(self.choices)


OPTION_TABLE: tuple[Option, ...] = (  # in the order of the result columns
    Option("in_dim", "int", "input dimension", low=1),
    Option("width", "int", "units of every hidden layer", low=1),
    Option("depth", "int", "hidden layers (depth + 1 weight layers)", low=0),
    Option("out_dim", "int", "output dimension", low=1),
    Option("activation", "name", "hidden layers' activation", choices=ACTIVATIONS),
    Option("output_activation", "name", "output layer's activation", "linear",
           choices=ACTIVATIONS),
    Option("leaky_slope", "float", "negative slope of leaky_relu", 0.01),
    Option("init", "name", "weight init (docs/conventions.md: what scale means)", "normal",
           choices=WEIGHT_INITS),
    Option("scale", "float", "multiplies the weight init's standard deviation", 1.0, low=0.0,
           traced=True),
    Option("bias_init", "name", "bias init", "normal", choices=BIAS_INITS),
    Option("bias_scale", "float", "multiplies the bias init's standard deviation", 1.0,
           low=0.0, traced=True),
    Option("loss", "name", "loss (bce needs output_activation sigmoid, softmax_cross_entropy "
           "out_dim >= 2)", "mse", choices=LOSSES),
    Option("norm", "name", "normalization of hidden pre-activations (batchnorm needs "
           "batch >= 2)", "none", choices=NORMS),
    Option("dtype", "name", "the network's float type", "float32", choices=DTYPES),
    Option("inputs", "inputs", "a fixed batch (traced per point), or a fresh N(0, I) batch "
           "per init", "gaussian"),
    Option("targets", "targets", "fixed rows or a number or zeros (traced per point), or "
           "drawn per init", "gaussian"),
    Option("batch", "int", "examples per batch (the rows of fixed inputs, else 1)", low=1),
    Option("structural_zeros", "bool", "tell dead-unit zeros from float underflow (a boolean "
           "replay of backprop)", True),
)
OPTIONS: tuple[str, ...] = tuple(o.name for o in OPTION_TABLE)
OPTION_BY_NAME: dict[str, Option] = {o.name: o for o in OPTION_TABLE}


def options_markdown() -> str:
    """The options table of docs/sweeps.md (tests/test_sweep.py checks the two agree)."""
    rows = ["| option | allowed | default | what it does |", "|---|---|---|---|"]
    for o in OPTION_TABLE:
        traced = " Traced: a grid over it compiles once." if o.traced else ""
        rows.append(f"| `{o.name}` | {o.allowed()} | {o.default_text()} | {o.doc}.{traced} |")
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

# --------------------------------------------------------------------------- the program

MIN_AXIS = 2  # XLA drops an axis of size 1 and then may reduce in another order


def layer_sizes(in_dim: int, width: int, depth: int, out_dim: int) -> tuple[int, ...]:
    """(in_dim, width x depth, out_dim): `depth` hidden layers, depth + 1 weight layers."""
    return (in_dim, *([width] * depth), out_dim)


def _default(name: str):
    return OPTION_BY_NAME[name].default


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """Everything that fixes the compiled program (a shape bucket); hashable. Its fields are
    the options that are not traced (`Cell.spec` builds it from `OPTION_TABLE`, and
    tests/test_sweep.py checks the two agree), with the options' defaults; `inputs` and
    `targets` say only whether the data is fixed (a traced value per point, the default here)
    or drawn per init."""

    sizes: tuple[int, ...]
    activation: str
    output_activation: str = _default("output_activation")
    loss: str = _default("loss")
    norm: str = _default("norm")
    leaky_slope: float = _default("leaky_slope")
    init: str = _default("init")
    bias_init: str = _default("bias_init")
    dtype: str = _default("dtype")
    batch: int = 1
    inputs: str = "fixed"  # "fixed" (traced per point) | "gaussian" (drawn per seed)
    targets: str = "fixed"  # "fixed" | "gaussian" | "random_labels"
    structural_zeros: bool = _default("structural_zeros")

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
