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

from gradjax.nn import keys
from gradjax.nn.activations import get_activation
from gradjax.nn.initializers import draw_bias, draw_weight
from gradjax.nn.losses import check_loss, loss_of_logits
from gradjax.spec import NORMS, default
from gradjax.spec.option import LEAKY_SLOPE

Params = list[dict[str, jax.Array]]
Stacked = list[dict[str, jax.Array]]  # segments of equal-shape layers, see `segment_bounds`
NORM_EPS = 1e-5


def segment_bounds(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Group layers into runs of equal shape: [(start, stop)) of 0-based layer indices.

    Hidden layers of one shape form one segment (unrolled up to `UNROLL_UP_TO` layers, beyond
    that run with `lax.scan`, so compile time does not grow with depth); the output layer is
    always a segment of its own.
    """
    n = len(sizes) - 1
    bounds = []
    for l in range(n):
        same_as_last = (
            bounds and l < n - 1 and (sizes[l], sizes[l + 1]) == (sizes[l - 1], sizes[l])
        )
        if same_as_last:
            bounds[-1] = (bounds[-1][0], l + 1)
        else:
            bounds.append((l, l + 1))
    return bounds


def stack_layers(params: Params) -> Stacked:
    """Params (a list of layers) -> segments {"W": [k, fan_in, fan_out], "b": [k, fan_out]}."""
    sizes = (params[0]["W"].shape[0], *(p["W"].shape[1] for p in params))
    return [
        {name: jnp.stack([p[name] for p in params[a:b]]) for name in ("W", "b")}
        for a, b in segment_bounds(sizes)
    ]


def unstack_layers(stacked: Stacked) -> Params:
    return [
        {"W": seg["W"][j], "b": seg["b"][j]} for seg in stacked for j in range(seg["W"].shape[0])
    ]


def draw_unit_stacked(
    key: jax.Array, sizes: Sequence[int], *, init: str, bias_init: str, dtype=jnp.float32
) -> Stacked:
    """Segments of parameters at scale = bias_scale = 1 from an init's key (`gradjax.nn.keys`).

    Layer l (1-based) always draws from fold_in(., l), whether drawn alone or in a segment.
    """

    def one(layer, fan_in, fan_out):
        return {
            "W": draw_weight(init, keys.weight_key(key, layer), (fan_in, fan_out), dtype),
            "b": draw_bias(bias_init, keys.bias_key(key, layer), fan_out, dtype),
        }

    return [
        jax.vmap(lambda l, a=a: one(l, sizes[a], sizes[a + 1]))(jnp.arange(a + 1, b + 1))
        for a, b in segment_bounds(sizes)
    ]


def draw_unit_params(
    key: jax.Array, sizes: Sequence[int], *, init: str, bias_init: str, dtype=jnp.float32
) -> Params:
    """Parameters at scale = bias_scale = 1 from an init's key (see `gradjax.nn.keys`)."""
    return unstack_layers(
        draw_unit_stacked(key, sizes, init=init, bias_init=bias_init, dtype=dtype)
    )


def scale_params(raw: Params | Stacked, scale, bias_scale) -> Params | Stacked:
    """W * scale and b * bias_scale; `scale` may be traced, so one compile serves a scale grid."""
    return [
        {"W": layer["W"] * jnp.asarray(scale, layer["W"].dtype),
         "b": layer["b"] * jnp.asarray(bias_scale, layer["b"].dtype)}
        for layer in raw
    ]


def scale_layers(stacked: Stacked, layer_scale: jax.Array) -> Stacked:
    """Segments with the weights of layer l (1-based, forward order) times `layer_scale[l-1]`
    (the `layer_scale` option, traced: one compile serves every list of one length)."""
    out, start = [], 0
    for seg in stacked:
        k = seg["W"].shape[0]
        factors = layer_scale[start:start + k].astype(seg["W"].dtype)[:, None, None]
        out.append({**seg, "W": seg["W"] * factors})
        start += k
    return out


def init_mlp(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    init: str = default("init"),
    scale=1.0,
    bias_init: str = default("bias_init"),
    bias_scale=1.0,
    dtype=jnp.float32,
) -> Params:
    """Draw an MLP with layer sizes `sizes` = (in_dim, hidden..., out_dim).

    `scale` multiplies the standard deviation of the weight init (for `constant`, it is the
    weight itself); `bias_scale` does the same for the bias init.
    """
    raw = draw_unit_params(key, sizes, init=init, bias_init=bias_init, dtype=dtype)
    return scale_params(raw, scale, bias_scale)


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
    """What the forward pass saw, per segment: each layer's input h^{l-1} ([k, batch, fan_in]),
    each hidden layer's phi input u ([k, batch, fan_out]; None for the output segment), and the
    output layer's pre-activation."""

    layer_inputs: list[jax.Array]
    phi_inputs: list[jax.Array | None]
    logits: jax.Array


def as_batch(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x[None, :] if x.ndim == 1 else x


# Unrolled, the bench's M net (10 x 128) ran fwd+bwd alone 2.3x faster and L (20 x 512) 1.45x,
# but the whole probe only 0-8% (within noise), for 1-6 s more compile time per bucket
# (docs/performance.md): compile time wins for sweeps of many buckets.
UNROLL_UP_TO = 4


def scan_layers(step, carry, layers, *, reverse: bool = False):
    """`lax.scan` over a segment's leading layer axis, unrolled up to `UNROLL_UP_TO` layers; a
    single layer (whose carry may change shape, e.g. in_dim -> width) is called directly."""
    k = jax.tree.leaves(layers)[0].shape[0]
    if k == 1:
        carry, out = step(carry, jax.tree.map(lambda a: a[0], layers))
        return carry, jax.tree.map(lambda a: a[None], out)
    return jax.lax.scan(step, carry, layers, reverse=reverse, unroll=k <= UNROLL_UP_TO)


def _hidden_segment(seg, h, shifts, phi, norm):
    def step(h, layer):
        w, b, s = layer
        z = h @ w + b[None, :]
        if s is not None:
            z = z + s
        u = normalize(z, norm)
        return phi(u), (h, u)

    return scan_layers(step, h, (seg["W"], seg["b"], shifts))


def forward_stacked(
    stacked: Stacked,
    x: jax.Array,
    *,
    activation: str,
    norm: str = default("norm"),
    leaky_slope: float = LEAKY_SLOPE,
    shifts: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, Trace]:
    """`forward` on segments; `shifts[i]` ([k, batch, fan_out]) is added to segment i's z."""
    phi = get_activation(activation, leaky_slope=leaky_slope)
    h = as_batch(x)
    inputs, phi_inputs = [], []
    for i, seg in enumerate(stacked[:-1]):
        h, (h_in, u) = _hidden_segment(seg, h, None if shifts is None else shifts[i], phi, norm)
        inputs.append(h_in)
        phi_inputs.append(u)
    out = stacked[-1]
    logits = h @ out["W"][0] + out["b"][0][None, :]
    if shifts is not None:
        logits = logits + shifts[-1][0]
    return logits, Trace([*inputs, h[None]], [*phi_inputs, None], logits)


def forward(
    params: Params,
    x: jax.Array,
    *,
    activation: str,
    norm: str = default("norm"),
    leaky_slope: float = LEAKY_SLOPE,
) -> tuple[jax.Array, Trace]:
    """Output-layer pre-activation (the logits) and the trace of the forward pass."""
    return forward_stacked(
        stack_layers(params), x, activation=activation, norm=norm, leaky_slope=leaky_slope
    )


def apply_mlp(
    params: Params,
    x: jax.Array,
    *,
    activation: str,
    output_activation: str = default("output_activation"),
    norm: str = default("norm"),
    leaky_slope: float = LEAKY_SLOPE,
) -> jax.Array:
    """The network's output for a batch x: [batch, in_dim] -> [batch, out_dim]."""
    logits, _ = forward(params, x, activation=activation, norm=norm, leaky_slope=leaky_slope)
    return get_activation(output_activation, leaky_slope=leaky_slope)(logits)


def batch_loss(
    stacked: Stacked,
    x: jax.Array,
    y: jax.Array,
    *,
    activation: str,
    output_activation: str = default("output_activation"),
    loss: str = default("loss"),
    norm: str = default("norm"),
    leaky_slope: float = LEAKY_SLOPE,
    shifts: Sequence[jax.Array] | None = None,
) -> tuple[jax.Array, Trace]:
    """The batch-mean loss (see `gradjax.nn.losses`) of segmented params, and the forward trace."""
    check_loss(loss, output_activation)
    logits, trace = forward_stacked(
        stacked, x, activation=activation, norm=norm, leaky_slope=leaky_slope, shifts=shifts
    )
    value = loss_of_logits(logits, as_batch(y), loss=loss, output_activation=output_activation,
                           leaky_slope=leaky_slope)
    return value, trace


def loss_and_grads(
    params: Params,
    x: jax.Array,
    y: jax.Array,
    *,
    activation: str,
    output_activation: str = default("output_activation"),
    loss: str = default("loss"),
    norm: str = default("norm"),
    leaky_slope: float = LEAKY_SLOPE,
) -> tuple[jax.Array, Params]:
    """(loss, dL/dparams) by `jax.grad`; the gradients have the structure of `params`."""

    def value(p):
        return batch_loss(
            stack_layers(p), x, y, activation=activation, output_activation=output_activation,
            loss=loss, norm=norm, leaky_slope=leaky_slope,
        )[0]

    return jax.value_and_grad(value)(params)
