"""The built-in model families' own options, declared beside the common ones; no JAX.

Each family module (`gradjax.nn.models.mlp`, `...resmlp`) takes its `OPTIONS` from here and
provides the `factory` that uses them; a plug-in's options come from its factory's signature.
Declaring them at the bottom layer lets the sweep parser, the result schemas and the docs table
know every built-in option without importing any network code.
"""

from __future__ import annotations

import dataclasses

from gradjax.spec.option import ACTIVATIONS, BIAS_INITS, NORMS, WEIGHT_INITS, Option

WIDTH = Option("width", "int", "units of every hidden layer", low=1)
DEPTH = Option("depth", "int", "hidden layers (mlp: depth + 1 weight layers; resmlp: depth "
               "residual blocks between an input and an output layer)", low=0)
ACTIVATION = Option("activation", "name", "hidden layers' activation", choices=ACTIVATIONS)
INIT = Option("init", "name", "weight init (docs/conventions.md: what scale means)", "normal",
              choices=WEIGHT_INITS)
BIAS_INIT = Option("bias_init", "name", "bias init", "normal", choices=BIAS_INITS)
NORM = Option("norm", "name", "normalization of hidden pre-activations (batchnorm needs "
              "batch >= 2)", "none", choices=NORMS)
STRUCTURAL_ZEROS = Option("structural_zeros", "bool", "tell dead-unit zeros from float "
                          "underflow (a boolean replay of backprop; mlp only)", True)
BRANCH_SCALE = Option("branch_scale", "float", "resmlp: multiplies each residual branch", 1.0,
                      low=0.0, traced=True)

# family name -> its options beyond the common ones; a module gradjax/nn/models/<name>.py each
FAMILY_OPTIONS: dict[str, tuple[Option, ...]] = {
    "mlp": (WIDTH, DEPTH, ACTIVATION, INIT, BIAS_INIT, NORM, STRUCTURAL_ZEROS),
    "resmlp": (WIDTH, DEPTH, ACTIVATION, INIT, BIAS_INIT, NORM, BRANCH_SCALE),
}
BUILT_IN: tuple[str, ...] = tuple(FAMILY_OPTIONS)


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a family's probe answers beyond what every model gets (per-leaf gradient
    statistics, per-tap activation statistics, optimizer steps). Code asks these, never a
    family's name; a plug-in has none of them."""

    # in_dim, width, depth and out_dim fix every tensor's shape: sizes, the memory check and
    # the rows' positions are known without tracing the model (no JAX before the run)
    shapes_from_options: bool = False
    # run by `gradjax.probe.mlp_probe`: equal layers stacked, dL/dz by backprop on every layer
    # (delta_sq_norm), dead-unit zeros told from underflow by a boolean replay
    # (grad_frac_underflow, the structural_zeros option)
    layered_probe: bool = False
    # the mean-field theory columns of `gradjax.nn.theory_columns` describe it
    mean_field: bool = False
    # every function its programs run is gradjax's own code (a plug-in's is the user's), so
    # gradjax's source and the bucket name a compiled program before it is traced
    # (`gradjax.probe.program_store`)
    gradjax_code: bool = False


FAMILY_CAPABILITIES: dict[str, Capabilities] = {
    "mlp": Capabilities(shapes_from_options=True, layered_probe=True, mean_field=True,
                        gradjax_code=True),
    "resmlp": Capabilities(gradjax_code=True),
}


def capabilities(model: str) -> Capabilities:
    """The capabilities of the family named by a sweep's `model` value (a plug-in: none)."""
    return FAMILY_CAPABILITIES.get(model, Capabilities())
