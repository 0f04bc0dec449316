"""The built-in MLP family: its options and its generic `(init, apply)` form.

Sweeps with `model = "mlp"` (the default) run the MLP's own probe (`gradjax.probe.mlp_probe`),
which adds what only a known architecture allows: dL/dz per layer and the boolean replay of backprop
that tells dead-unit zeros from underflow. `factory` gives the same network in the plug-in form
(`gradjax.nn.models`), for your own code and for the tests that check the generic probe against the
MLP's: `init(key)` is `gradjax.nn.network.draw_unit_params` at scale 1 and `apply` returns the
logits and one tap per hidden layer (its normalized pre-activation u, `layer1`, `layer2`, ...).
"""

from __future__ import annotations

from gradjax.spec.families import BIAS_INIT, FAMILY_OPTIONS, INIT, NORM
from gradjax.spec.option import DTYPE, LEAKY_SLOPE, Option

OPTIONS: tuple[Option, ...] = FAMILY_OPTIONS["mlp"]


def factory(
    in_dim: int, out_dim: int, width: int, depth: int, activation: str, init: str = INIT.default,
    bias_init: str = BIAS_INIT.default, norm: str = NORM.default, leaky_slope: float = LEAKY_SLOPE,
    dtype: str = DTYPE,
):
    """The MLP as `(init, apply)`; see the module docstring."""
    # JAX on the first build only: the sweep layer reads this family's signature without it
    import jax.numpy as jnp

    from gradjax.nn import network
    from gradjax.spec import layer_sizes

    sizes = layer_sizes(in_dim, width, depth, out_dim)

    def init_params(key):
        return network.draw_unit_params(key, sizes, init=init, bias_init=bias_init,
                                        dtype=jnp.dtype(dtype))

    def apply(params, x):
        logits, trace = network.forward(params, x, activation=activation, norm=norm,
                                        leaky_slope=leaky_slope)
        hidden = [u[j] for u in trace.phi_inputs if u is not None for j in range(u.shape[0])]
        return logits, {f"layer{l}": u for l, u in enumerate(hidden, 1)}

    return init_params, apply
