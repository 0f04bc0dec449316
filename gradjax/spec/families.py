"""The built-in model families' own options, declared beside the common ones; no JAX.

Each family module (`gradjax.nn.models.mlp`, `...resmlp`) takes its `OPTIONS` from here and
provides the `factory` that uses them; a plug-in's options come from its factory's signature.
Declaring them at the bottom layer lets the sweep parser, the result schemas and the docs table
know every built-in option without importing any network code.
"""

from __future__ import annotations

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
