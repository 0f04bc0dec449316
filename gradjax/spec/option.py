"""An option of a sweep file, and the names options choose from; no JAX.

`Option` is the one declaration of a sweep-file option: the sweep parser validates with it, the
result tables take their column types from its `kind`, the bucket key leaves out the `traced`
ones, and `gradjax run --help` and docs/sweeps.md print it. Common options are declared in
`gradjax.spec`, a model family's own options in its module (`gradjax.nn.models`), and a plug-in
model's options come from its factory's signature (`gradjax.nn.models.plugin`).
"""

from __future__ import annotations

import dataclasses

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
OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "adam")  # optax's, see gradjax.probe.training
DTYPE_BYTES: dict[str, int] = {"float32": 4, "float64": 8, "bfloat16": 2}  # bytes per entry
DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)
LEAKY_SLOPE = 0.01  # leaky_relu's negative slope, the `leaky_slope` option's default
DTYPE = "float32"  # the `dtype` option's default
KINDS: tuple[str, ...] = ("int", "float", "name", "text", "bool", "model", "inputs", "targets",
                         "value", "scales")
# kinds whose values other than names (rows, a number, a list) the result tables hold as JSON
JSON_KINDS: tuple[str, ...] = ("inputs", "targets", "scales")


@dataclasses.dataclass(frozen=True)
class Option:
    """One sweep-file option.

    kind: "int" | "float" | "name" (one of `choices`) | "text" (any string) | "bool" |
    "model" | "inputs" | "targets" | "value" (a plug-in parameter with neither annotation nor
    default: a number, string or boolean whose kind the sweep's values settle, never traced) |
    "scales" (a list of positive numbers, one per layer in forward order; [] for none).
    `default` None means required, unless `derived` (batch: from fixed inputs, else 1).
    `traced`: the compiled program takes the value per point, so a grid over it compiles once.
    """

    name: str
    kind: str
    doc: str  # what it does, one line
    default: object = None
    low: float | None = None  # the smallest value an int or float option takes
    choices: tuple[str, ...] = ()
    traced: bool = False
    derived: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Option {self.name}: kind {self.kind!r}; allowed: {KINDS}")

    @property
    def required(self) -> bool:
        return self.default is None and not self.derived

    def default_text(self) -> str:
        """The default as written in a sweep file, or "required" / "derived"."""
        if self.default is None:
            return "derived" if self.derived else "required"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return "[" + ", ".join(f"{v:g}" for v in self.default) + "]"
        return f'"{self.default}"' if isinstance(self.default, str) else f"{self.default:g}"

    def allowed(self) -> str:
        """What the option accepts, in words."""
        if self.kind in ("int", "float"):
            what = "integer" if self.kind == "int" else "number"
            return what if self.low is None else f"{what} >= {self.low:g}"
        return {
            "bool": "true, false",
            "value": "a number, a string or a boolean, of one kind in every cell",
            "text": "a string",
            "model": f"{', '.join(self.choices)}, or \"package.module:factory\"",
            "inputs": "rows of in_dim numbers (a fixed batch), gaussian, digits",
            "targets": "rows of out_dim numbers, a number, zeros, gaussian, random_labels, "
                       "teacher, labels",
            "scales": "a list of numbers > 0, one per layer in forward order, or []",
        }.get(self.kind, ", ".join(self.choices))
