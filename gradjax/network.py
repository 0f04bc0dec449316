"""MLPs as pure functions over a plain pytree of parameters.

Parameters are a list of layers, layer l (1-based in every table gradjax writes) being
`{"W": [fan_in, fan_out], "b": [fan_out]}`; a row-vector convention, z = x @ W + b, as in the
seed's `np.dot(x, w1) + b1`. Inputs are [batch, in_dim] (a 1-D input is one example).

Per hidden layer: z = h @ W + b, u = norm(z), h' = phi(u). The output layer has no norm:
output = output_activation(z). `norm` is computed from the current batch with no learned
affine and no running state (batch norm "at init").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradjax import keys
from gradjax.activations import get_activation
from gradjax.initializers import draw_bias, draw_weight
from gradjax.losses import bce_from_logits, check_loss, loss_fn

Params = list[dict[str, jax.Array]]
NORMS: tuple[str, ...] = ("none", "layernorm", "batchnorm")
NORM_EPS = 1e-5


def layer_sizes(in_dim: int, width: int, depth: int, out_dim: int) -> tuple[int, ...]:
    """(in_dim, width x depth, out_dim): `depth` hidden layers, depth + 1 weight layers."""
    return (in_dim, *([width] * depth), out_dim)


def draw_unit_params(
    key: jax.Array, sizes: Sequence[int], *, init: str, bias_init: str, dtype=jnp.float32
) -> Params:
    """Parameters at scale = bias_scale = 1 from an init's key (see `gradjax.keys`)."""
    return [
        {
            "W": draw_weight(init, keys.weight_key(key, l), (fan_in, fan_out), dtype),
            "b": draw_bias(bias_init, keys.bias_key(key, l), fan_out, dtype),
        }
        for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1)
    ]


def scale_params(unit: Params, scale, bias_scale) -> Params:
    """W * scale and b * bias_scale; `scale` may be traced, so one compile serves a scale grid."""
    return [
        {"W": layer["W"] * jnp.asarray(scale, layer["W"].dtype),
         "b": layer["b"] * jnp.asarray(bias_scale, layer["b"].dtype)}
        for layer in unit
    ]


def init_mlp(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    init: str = "normal",
    scale=1.0,
    bias_init: str = "normal",
    bias_scale=1.0,
    dtype=jnp.float32,
) -> Params:
    """Draw an MLP with layer sizes `sizes` = (in_dim, hidden..., out_dim).

    `scale` multiplies the standard deviation of the weight init (for `constant`, it is the
    weight itself); `bias_scale` does the same for the bias init.
    """
    unit = draw_unit_params(key, sizes, init=init, bias_init=bias_init, dtype=dtype)
    return scale_params(unit, scale, bias_scale)


def normalize(z: jax.Array, norm: str) -> jax.Array:
    """Layer norm (over units of one example) or batch norm (over examples of one unit)."""
    if norm == "none":
        return z
    axis = {"layernorm": -1, "batchnorm": 0}.get(norm)
    if axis is None:
        raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
    mean = jnp.mean(z, axis=axis, keepdims=True)
    var = jnp.var(z, axis=axis, keepdims=True)
    return (z - mean) * jax.lax.rsqrt(var + NORM_EPS)


class Trace(NamedTuple):
    """What the forward pass saw: each layer's input h^{l-1}, each hidden layer's phi input,
    and the output layer's pre-activation."""

    layer_inputs: list[jax.Array]
    phi_inputs: list[jax.Array]
    logits: jax.Array | None = None


def as_batch(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x[None, :] if x.ndim == 1 else x


def forward(
    params: Params,
    x: jax.Array,
    *,
    activation: str,
    norm: str = "none",
    leaky_slope: float = 0.01,
    shifts: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, Trace]:
    """Output-layer pre-activation (the logits) and the trace of the forward pass.

    `shifts`, if given, are added to every layer's z; differentiating at shifts = 0 gives dL/dz.
    """
    phi = get_activation(activation, leaky_slope=leaky_slope)
    h = as_batch(x)
    trace = Trace([], [])
    for l, layer in enumerate(params):
        trace.layer_inputs.append(h)
        z = h @ layer["W"] + layer["b"][None, :]
        if shifts is not None:
            z = z + shifts[l]
        if l == len(params) - 1:
            return z, trace._replace(logits=z)
        u = normalize(z, norm)
        trace.phi_inputs.append(u)
        h = phi(u)
    raise ValueError("params must hold at least one layer")


def apply_mlp(
    params: Params,
    x: jax.Array,
    *,
    activation: str,
    output_activation: str = "linear",
    norm: str = "none",
    leaky_slope: float = 0.01,
) -> jax.Array:
    """The network's output for a batch x: [batch, in_dim] -> [batch, out_dim]."""
    logits, _ = forward(params, x, activation=activation, norm=norm, leaky_slope=leaky_slope)
    return get_activation(output_activation, leaky_slope=leaky_slope)(logits)


def batch_loss(
    params: Params,
    x: jax.Array,
    y: jax.Array,
    *,
    activation: str,
    output_activation: str = "linear",
    loss: str = "mse",
    norm: str = "none",
    leaky_slope: float = 0.01,
    shifts: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, Trace]:
    """The batch-mean loss (see `gradjax.losses`) and the forward trace."""
    check_loss(loss, output_activation)
    logits, trace = forward(
        params, x, activation=activation, norm=norm, leaky_slope=leaky_slope, shifts=shifts
    )
    y = as_batch(y)
    if loss == "bce":
        return bce_from_logits(logits, y), trace
    output = get_activation(output_activation, leaky_slope=leaky_slope)(logits)
    return loss_fn(loss)(output, y), trace


def loss_and_grads(
    params: Params,
    x: jax.Array,
    y: jax.Array,
    *,
    activation: str,
    output_activation: str = "linear",
    loss: str = "mse",
    norm: str = "none",
    leaky_slope: float = 0.01,
) -> tuple[jax.Array, Params]:
    """(loss, dL/dparams) by `jax.grad`; the gradients have the structure of `params`."""

    def value(p):
        return batch_loss(
            p, x, y, activation=activation, output_activation=output_activation, loss=loss,
            norm=norm, leaky_slope=leaky_slope,
        )[0]

    return jax.value_and_grad(value)(params)
