"""The built-in residual MLP family (`model = "resmlp"`).

    h_1     = x W_1 + b_1                                   (in_dim -> width, no activation)
    h_{l+1} = h_l + branch_scale * phi(norm(h_l) W_l + b_l)   for the depth blocks, l = 2..depth+1
    logits  = h W_L + b_L                                   (L = depth + 2, width -> out_dim)

Parameters are a list of layers {"W", "b"} as in the MLP, drawn from the same per-layer streams
(`gradjax.nn.keys`), so layer l of a resmlp and of an mlp of the same shapes start from the same
unit draws. `branch_scale` is traced: a grid over it compiles once. The taps are each block's
pre-activation z_l (`layer2`, ...). The blocks run as one `lax.scan`, so compile time does not
grow with depth. With branch_scale = 0 the network is linear (x W_1 W_L + ...): the test of
this module checks that, and the residual form at depth 1, against numpy.
"""

from __future__ import annotations

from gradjax.spec.families import BIAS_INIT, BRANCH_SCALE, FAMILY_OPTIONS, INIT, NORM
from gradjax.spec.option import DTYPE, LEAKY_SLOPE, Option

OPTIONS: tuple[Option, ...] = FAMILY_OPTIONS["resmlp"]


def factory(
    in_dim: int, out_dim: int, width: int, depth: int, activation: str, init: str = INIT.default,
    bias_init: str = BIAS_INIT.default, norm: str = NORM.default, leaky_slope: float = LEAKY_SLOPE,
    branch_scale: float = BRANCH_SCALE.default, dtype: str = DTYPE,
):
    """The residual MLP as `(init, apply)`; see the module docstring."""
    # JAX on the first build only: the sweep layer reads this family's signature without it
    import jax
    import jax.numpy as jnp

    from gradjax.nn import network
    from gradjax.nn.activations import get_activation

    sizes = (in_dim, *([width] * (depth + 1)), out_dim)
    phi = get_activation(activation, leaky_slope=leaky_slope)

    def init_params(key):
        return network.draw_unit_params(key, sizes, init=init, bias_init=bias_init,
                                        dtype=jnp.dtype(dtype))

    def block(h, layer):
        w, b = layer
        z = network.normalize(h, norm) @ w + b[None, :]
        return h + jnp.asarray(branch_scale, h.dtype) * phi(z), z

    def apply(params, x):
        first, blocks, last = params[0], params[1:-1], params[-1]
        h = network.as_batch(x) @ first["W"] + first["b"][None, :]
        taps = {}
        if blocks:
            stacked = (jnp.stack([p["W"] for p in blocks]), jnp.stack([p["b"] for p in blocks]))
            h, zs = jax.lax.scan(block, h, stacked)
            taps = {f"layer{l}": zs[l - 2] for l in range(2, depth + 2)}
        return h @ last["W"] + last["b"][None, :], taps

    return init_params, apply
