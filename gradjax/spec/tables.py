"""What a probe is, without JAX: the names of every choice, the statistics' names, and the
`ProbeSpec` that fixes one compiled program.

This is the bottom layer: sweep files are validated, results are read and `gradjax --help`
answers from here without importing JAX (tests/test_imports.py). The modules that implement
the names (`activations`, `initializers`, `losses`, `network`) take their lists from here, and
tests/test_imports.py checks that every name here is implemented.
"""

from __future__ import annotations

import dataclasses

from gradjax.spec.families import BUILT_IN, FAMILY_OPTIONS
from gradjax.spec.option import (  # the names of every choice, re-exported ("X as X") here
    ACTIVATIONS,
    DTYPE,
    DTYPES,
    LEAKY_SLOPE,
    LOSSES,
    OPTIMIZERS,
    Option,
)
from gradjax.spec.option import BIAS_INITS as BIAS_INITS
from gradjax.spec.option import NORMS as NORMS
from gradjax.spec.option import WEIGHT_INITS as WEIGHT_INITS

INPUT_KINDS: tuple[str, ...] = ("fixed", "gaussian", "digits")
DRAWN_INPUTS: tuple[str, ...] = ("gaussian", "digits")  # drawn per init (and step), not fixed
TARGET_KINDS: tuple[str, ...] = ("fixed", "zeros", "gaussian", "random_labels", "teacher",
                                 "labels")
# drawn per init (and step), not fixed; "teacher" is a random network of the same family,
# "labels" the dataset's own (with inputs "digits")
DRAWN_TARGETS: tuple[str, ...] = ("gaussian", "random_labels", "teacher", "labels")
DIGITS_SHAPE = (64, 10)  # scikit-learn's digits: 8 x 8 images, 10 classes
SATURATION = 0.01  # act_frac_saturated: |phi'| below this fraction of sup |phi'|

# --------------------------------------------------------------------------- options

# Options every model takes: the data, the loss, the number type and the init's scales. A
# family's own options are declared in `gradjax.spec.families`.
COMMON_OPTIONS: tuple[Option, ...] = (
    Option("model", "model", "the model family (docs/extending.md)", "mlp", choices=BUILT_IN),
    Option("in_dim", "int", "input dimension", low=1),
    Option("out_dim", "int", "output dimension", low=1),
    Option("output_activation", "name", "output layer's activation", "linear",
           choices=ACTIVATIONS),
    Option("leaky_slope", "float", "negative slope of leaky_relu", LEAKY_SLOPE),
    Option("scale", "float", "multiplies the weight init's standard deviation (plug-ins: "
           "every leaf with ndim >= 2)", 1.0, low=0.0, traced=True),
    Option("layer_scale", "scales", "multiplies each layer's weights (plug-ins: its leaves with "
           "ndim >= 2), on top of `scale`: the l-th number the weights of layer l in forward "
           "order (the `layer` column); [] leaves every layer as it is. `gradjax tune`'s "
           "per-layer criteria prescribe it", (), traced=True),
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
    Option("step", "int", "optimizer updates before the statistics are taken (0: the init); "
           "set by the top-level `steps` list", 0, low=0, traced=True),
    Option("optimizer", "name", "optax optimizer of the updates (at step 0 it does nothing)",
           "sgd", choices=OPTIMIZERS),
    Option("learning_rate", "float", "the optimizer's step size", 0.01, low=0.0, traced=True),
    Option("weight_decay", "float", "L2 decay lambda: sgd and momentum add lambda * w to the "
           "gradient, adam decays decoupled (AdamW)", 0.0, low=0.0, traced=True),
    Option("momentum", "float", "the momentum optimizer's decay (optax.sgd's momentum)", 0.9,
           low=0.0, traced=True),
    Option("per_example", "bool", "also compute the per-example gradients of the batch "
           "(grad_noise_var, gsnr; memory x batch)", False),
)
TRAINING_OPTIONS: tuple[str, ...] = ("optimizer", "learning_rate", "weight_decay", "momentum")
COMMON: tuple[str, ...] = tuple(o.name for o in COMMON_OPTIONS)
# the result columns' order for the options it names; any other declared option follows
COLUMN_ORDER: tuple[str, ...] = (
    "model", "in_dim", "width", "depth", "out_dim", "activation", "output_activation",
    "leaky_slope", "init", "scale", "layer_scale", "bias_init", "bias_scale", "branch_scale",
    "loss", "norm",
    "dtype", "inputs", "targets", "batch", "structural_zeros", "per_example", "step",
    "optimizer", "learning_rate", "weight_decay", "momentum",
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


@dataclasses.dataclass(frozen=True)
class Stat:
    """One statistic, declared once: the probe's outputs, the storage schemas, the summary's
    columns, the report's labels and the statistics tables of docs/conventions.md come from
    `STAT_TABLE`.

    level: "tensor" (per init and parameter tensor, over the tensor's entries), "layer" (per
    init and layer, over the batch's examples and the layer's units), "init" (one per init)
    or "cell" (per cell and tensor, across the cell's inits). `log2_scale`: (the output holding
    its log2 scale k, power p) for a magnitude computed on the tensor times 2**-k, whose value is
    the output times 2**(p k) (`gradjax.probe.stats`); float64 in the tables. Every per-init
    statistic aggregates across inits as `AGGREGATES` (NaN left out).
    """

    name: str
    level: str
    measure: str  # what its values measure, in the loss's or the pre-activation's units
    doc: str  # one line
    log2_scale: tuple[str, int] | None = None
    reduction: bool = True  # a plain reduction of one tensor (`gradjax.probe.stats.tensor_stats`)
    # a `Capabilities` field its family must have (null for other models), e.g. "layered_probe"
    capability: str = ""
    # what it needs, null without: "per_example" / "structural_zeros" (that option on),
    # "steps" (step > 0: an update), "activation" (on a tap: a model with an `activation`
    # option), "tap_shift" (on a tap: one a zero shift reaches, `gradjax.nn.tap_shifts`);
    # "params": of the parameters themselves, not of their gradient (computed beside
    # the gradient statistics)
    needs: str = ""
    # the rows it has a value on, null on the others: "params" (a parameter tensor's: every
    # MLP row, a plug-in's leaves, not its taps), "layers" (a layer's activations: every MLP
    # row and the taps, not a plug-in's leaves), "hidden" ("layers" but the MLP's output
    # layer, which has no activation) or "all"; "" takes it from `level` (`on`)
    rows: str = ""
    min_n: int = 0  # null for a tensor of fewer entries: a spread of one value is undefined
    min_units: int = 0  # null for a tensor of fewer units (last axis; a 1-D tensor has none)

    @property
    def on(self) -> str:
        """The rows it has a value on (`rows`, or its level's: tensor "params", layer
        "layers", init and cell "all")."""
        return self.rows or {"tensor": "params", "layer": "layers"}.get(self.level, "all")


_G, _D, _U = ("grad_log2_scale", 1), ("delta_log2_scale", 1), ("preact_log2_scale", 1)


def _sq(scale: tuple[str, int]) -> tuple[str, int]:
    return scale[0], 2


STAT_TABLE: tuple[Stat, ...] = (
    Stat("grad_mean", "tensor", "loss / parameter", "mean of the gradient's entries", _G),
    Stat("grad_var", "tensor", "(loss / parameter)^2", "population variance (ddof = 0) of the "
         "gradient's entries", _sq(_G), min_n=2),
    Stat("grad_sq_norm", "tensor", "(loss / parameter)^2", "sum of squares, |dL/dW|_F^2",
         _sq(_G)),
    Stat("grad_max_abs", "tensor", "loss / parameter", "max of |g|", _G),
    Stat("grad_mean_abs", "tensor", "loss / parameter", "mean of |g|", _G),
    Stat("grad_cv", "tensor", "ratio", "std / mean|g|; NaN when every entry is 0. Near 0 means "
         "\"all entries the same value\"", min_n=2),
    Stat("grad_frac_zero", "tensor", "fraction", "fraction of entries exactly 0"),
    Stat("grad_frac_subnormal", "tensor", "fraction", "nonzero entries below the dtype's "
         "smallest normal number"),
    Stat("grad_nonfinite", "tensor", "count", "count of inf/NaN entries"),
    Stat("grad_frac_underflow", "tensor", "fraction", "fraction of entries exactly 0 that are "
         "**not** structurally zero (see below)", reduction=False, capability="layered_probe",
         needs="structural_zeros"),
    Stat("grad_unit_cos_sq", "tensor", "cosine^2", "mean over pairs of distinct units of the "
         "squared cosine between their gradient vectors (columns of dL/dW), leaving out units "
         "whose gradient is exactly 0: 1 when every unit's gradient is parallel up to sign (any "
         "rank-1 gradient), 0 when they are orthogonal, about 1/fan_in for random directions; "
         "NaN below two live units", reduction=False, min_units=2),
    Stat("param_sq_norm", "tensor", "parameter^2", "sum of squares of the parameter tensor "
         "itself, |W|_F^2 (after `step` updates: how far weight decay or growth took it)",
         reduction=False, needs="params"),
    Stat("grad_noise_var", "tensor", "(loss / parameter)^2", "per entry, the population "
         "variance across the batch's examples of the per-example gradient (each example's own "
         "loss; their mean is the batch gradient); then the mean over the tensor's entries",
         reduction=False, needs="per_example"),
    Stat("gsnr", "tensor", "ratio", "per entry, (mean over examples)^2 / (variance over "
         "examples) of the per-example gradient, averaged over the entries with nonzero "
         "variance; NaN if none has any (Liu et al. 2020)", reduction=False,
         needs="per_example"),
    Stat("delta_sq_norm", "layer", "(loss / pre-activation)^2", "mean over examples of "
         "|dL/dz^l|^2, the gradient w.r.t. the layer's pre-activations z (before any norm), "
         "or w.r.t. a plug-in's tap", _sq(_D), needs="tap_shift"),
    Stat("preact_mean", "layer", "pre-activation", "mean over examples x units of u = norm(z), "
         "the activation's input", _U, rows="hidden"),
    Stat("preact_var", "layer", "pre-activation^2", "population variance over examples x "
         "units of u", _sq(_U), rows="hidden"),
    Stat("act_frac_dead", "layer", "fraction", "fraction of units with phi'(u) == 0 for "
         "**every** example", rows="hidden", needs="activation"),
    Stat("act_frac_saturated", "layer", "fraction", "fraction of units with |phi'(u)| < 1% of "
         "sup|phi'| for every example", rows="hidden", needs="activation"),
    Stat("act_deriv_mean", "layer", "slope", "mean of phi'(u) over examples x units",
         rows="hidden", needs="activation"),
    Stat("loss_value", "init", "loss", "the batch-mean loss at the init (after `step` updates: "
         "at those parameters, on that step's batch)"),
    Stat("loss_halved_step", "init", "step", "the first t <= step at which the loss on the "
         "init's step-0 batch fell below half its value at the init; NaN if none did",
         needs="steps"),
    Stat("grad_var_across_seeds", "cell", "(loss / parameter)^2", "per entry, the population "
         "variance across the cell's inits; then the mean over the tensor's entries",
         rows="params"),
    Stat("frac_seeds_all_zero", "cell", "fraction", "fraction of inits whose gradient tensor "
         "is exactly 0 everywhere (born dead)", rows="params"),
    Stat("frac_loss_halved", "cell", "fraction", "fraction of inits whose loss fell below half "
         "its step-0 value by `step` (the median step at which it did: "
         "loss_halved_step_p50); 0 at step 0, before any update"),
)
STAT_BY_NAME: dict[str, Stat] = {s.name: s for s in STAT_TABLE}
TENSOR_STATS: tuple[str, ...] = tuple(s.name for s in STAT_TABLE
                                      if s.level == "tensor" and s.reduction)
# per tensor at every init; EXAMPLE_STATS need the per-example gradients (`per_example`)
PARAM_STATS: tuple[str, ...] = tuple(s.name for s in STAT_TABLE if s.level == "tensor"
                                     and s.needs not in ("params", "per_example"))
# per tensor, beside the gradient's: of the parameters, and of the per-example gradients
EXAMPLE_STATS: tuple[str, ...] = tuple(s.name for s in STAT_TABLE
                                       if s.needs in ("params", "per_example"))
INIT_STATS: tuple[str, ...] = tuple(s.name for s in STAT_TABLE if s.level == "init")
LAYER_STATS: tuple[str, ...] = tuple(s.name for s in STAT_TABLE if s.level == "layer")
STATS: tuple[str, ...] = tuple(s.name for s in STAT_TABLE if s.level != "cell")  # per init
CELL_STATS: tuple[str, ...] = tuple(s.name for s in STAT_TABLE if s.level == "cell")
# statistic -> (the output holding its log2 scale k, power p): its value is scaled * 2**(p k)
SCALED: dict[str, tuple[str, int]] = {s.name: s.log2_scale for s in STAT_TABLE if s.log2_scale}
LOG2_SCALES: tuple[str, ...] = tuple(dict.fromkeys(k for k, _ in SCALED.values()))
# across a cell's inits: `<stat>_<aggregate>` summary columns; p<q> is numpy's percentile q
AGGREGATES: tuple[str, ...] = ("mean", "std", "p05", "p50", "p95")
PERCENTILES: dict[str, float] = {a: float(a[1:]) for a in AGGREGATES if a.startswith("p")}
THEORY_COLUMNS: tuple[str, ...] = (
    "theory_q_star", "theory_chi1", "theory_xi_q", "theory_xi_c", "theory_xi_grad",
    "theory_grad_ratio", "theory_fit_chi1", "measured_chi1",
)
# columns of the result tables that are not options: a plug-in option may not take these names
RESERVED_COLUMNS: frozenset[str] = frozenset({
    "sweep", "cell", "label", "seed", "seeds", "layer", "layer_from_output", "param", "n",
    *STATS, *CELL_STATS, *LOG2_SCALES, *THEORY_COLUMNS,
    *(f"{s}_{a}" for s in STATS for a in AGGREGATES),
})
LEVELS: dict[str, str] = {  # what a level's statistics are taken over
    "tensor": "Per init, per parameter tensor (W and b, or a plug-in's leaf): over the "
              "entries of that one tensor.",
    "layer": "Per init, per layer (or tap): over the examples of the batch (and units).",
    "init": "Per init.",
    "cell": "Per cell and tensor: across the cell's inits (summary table only).",
}


_NULL_ON = {"params": "taps", "layers": "a plug-in's leaves",
            "hidden": "the MLP's output layer, a plug-in's leaves", "all": ""}
_NULL_WITHOUT = {"per_example": "`per_example = false`",
                 "structural_zeros": "`structural_zeros = false`", "steps": "step 0",
                 "activation": "taps of a model with no `activation` option",
                 "tap_shift": "taps that a `scan` stacks from its iterations (no shift reaches "
                              "their uses inside the loop)"}


_WITHOUT_CAPABILITY = {"layered_probe": "models without the layered probe (all but the MLP)"}


def null_on(stat: Stat) -> str:
    """The rows on which `stat` does not apply (null in the tables), in words; "" for none."""
    parts = [_NULL_ON[stat.on], _NULL_WITHOUT.get(stat.needs, ""),
             _WITHOUT_CAPABILITY[stat.capability] if stat.capability else "",
             f"tensors of fewer than {stat.min_n} entries" if stat.min_n else "",
             f"tensors of fewer than {stat.min_units} units (1-D tensors)"
             if stat.min_units else ""]
    return "; ".join(p for p in parts if p)


def stats_markdown() -> str:
    """The statistics tables of docs/conventions.md, one per level (tests/test_sweep.py
    checks the two agree)."""
    out = []
    for level, over in LEVELS.items():
        out += [f"**{over}**", "", "| statistic | unit | definition | null on |",
                "|---|---|---|---|"]
        for s in STAT_TABLE:
            if s.level == level:
                out.append(f"| `{s.name}` | {s.measure} | {s.doc.replace('|', chr(92) + '|')} | "
                           f"{null_on(s) or '-'} |")
        out.append("")
    columns = ", ".join(f"`<stat>_{a}`" for a in AGGREGATES)
    out.append(
        "**Null and NaN.** A statistic is null (missing) in the Parquet tables on the rows where "
        "it does not apply (\"null on\" above): DuckDB's avg() and count() and polars skip "
        "those rows. NaN is a value that was computed and is undefined (grad_cv of an all-zero "
        "gradient, gsnr with no example variance): avg() over a NaN is NaN. pandas reads both "
        "as NaN (`gradjax.load`); `gradjax.stats_frame` keeps null as <NA>.")
    out.append("")
    out.append(f"Across a cell's inits every per-init statistic becomes the summary columns "
               f"{columns} (numpy's population std and linear percentiles; an init whose value "
               "is NaN, e.g. grad_cv of an all-zero tensor, is left out; NaN where every init's "
               "is). On the rows where a statistic does not apply its aggregates are null.")
    return "\n".join(out)


# --------------------------------------------------------------------------- the program

MIN_ARRAY_AXIS = 2  # XLA drops an axis of size 1 and then may reduce in another order


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
    per_example: bool = default("per_example")
    # the optimizer of a training bucket (cells with step > 0); "" for the init-only program
    optimizer: str = ""
    model: str = "mlp"
    # a model other than the MLP: the factory's options that fix the program, (name, value)
    # sorted by name, and the sweep file's folder, which plug-in modules are imported from
    model_options: tuple[tuple[str, object], ...] = ()
    model_folder: str = ""
    # the length of the cells' traced `layer_scale` (one per layer; 0: the option is [])
    scaled_layers: int = 0

    def __post_init__(self):
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"ProbeSpec.inputs {self.inputs!r}; allowed: "
                             f"{', '.join(INPUT_KINDS)}")
        if self.optimizer not in ("", *OPTIMIZERS):
            raise ValueError(f"ProbeSpec.optimizer {self.optimizer!r}; allowed: \"\" (no "
                             f"training), {', '.join(OPTIMIZERS)}")
        if self.targets not in ("fixed", *DRAWN_TARGETS):
            raise ValueError(
                f"ProbeSpec.targets {self.targets!r}; allowed: fixed, {', '.join(DRAWN_TARGETS)}"
                " (zeros and numbers are fixed targets)"
            )

    @property
    def trains(self) -> bool:
        return self.optimizer != ""

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
