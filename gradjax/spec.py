"""What a probe is, without JAX: the names of every choice, the statistics' names, and the
`ProbeSpec` that fixes one compiled program.

This is the bottom layer: sweep files are validated, results are read and `gradjax --help`
answers from here without importing JAX (tests/test_imports.py). The modules that implement a
name (`activations`, `initializers`, `losses`, `network`, `data`) import their lists from here,
and tests/test_imports.py checks that each implements exactly these names.
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


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
    """Everything that fixes the compiled program (a shape bucket); hashable."""

    sizes: tuple[int, ...]
    activation: str
    output_activation: str = "linear"
    loss: str = "mse"
    norm: str = "none"
    leaky_slope: float = 0.01
    init: str = "normal"
    bias_init: str = "normal"
    dtype: str = "float32"
    batch: int = 1
    inputs: str = "fixed"  # "fixed" (traced per point) | "gaussian" (drawn per seed)
    targets: str = "fixed"  # "fixed" | "gaussian" | "random_labels"
    structural_zeros: bool = True

    def __post_init__(self):
        if self.inputs not in INPUT_KINDS:
            raise ValueError(f"ProbeSpec.inputs {self.inputs!r}; allowed: fixed, gaussian")
        if self.targets not in ("fixed", "gaussian", "random_labels"):
            raise ValueError(
                f"ProbeSpec.targets {self.targets!r}; allowed: fixed, gaussian, random_labels"
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
