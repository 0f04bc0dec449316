"""The MLP's probe (the layered probe): one init -> gradient statistics, then vmapped over scale
points and seeds.

Written for a single init (`grad_stats`, `probe_point`) and vmapped from outside:

    chunk(root_seed, seeds[C], valid[C], points[P]) -> stats[C, P, ...]

One compile per `ProbeSpec` (a shape bucket) and chunk shape: `scale`, `bias_scale` and fixed
data are traced values on the points axis, so a grid of 50 scales compiles once. The weights of
an init are drawn once per seed at unit scale and reused for every point (common random
numbers). The seed axis is a plain leading axis, so it can be chunked or sharded freely, and
per-seed numbers do not depend on the chunk size (see `gradjax.nn.xla` for the flag this needs).

Per init: `gradjax.probe.backprop` (forward and backward pass) -> `stats_of`, with dead zeros
told from underflow by `gradjax.probe.liveness`; the point loop and chunk moments are
`gradjax.probe.chunking`'s, shared with `gradjax.probe.tree_probe`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradjax.nn import data, keys
from gradjax.nn.activations import max_abs_derivative
from gradjax.nn.network import (
    Params,
    batch_loss,
    draw_unit_stacked,
    forward_stacked,
    scale_layers,
    scale_params,
    stack_layers,
)
from gradjax.probe import training
from gradjax.probe.backprop import Backprop, backprop
from gradjax.probe.kernel import ProbeKernel
from gradjax.probe.liveness import underflow_fractions
from gradjax.probe.stats import (
    activation_stats,
    factors_are_cheaper,
    mean_sq_norm,
    tensor_stats,
    to_host,
    unit_cos_sq,
    unit_cos_sq_of_factors,
)
from gradjax.spec import EXAMPLE_STATS, LAYER_STATS, ProbeSpec, default
from gradjax.spec.option import LEAKY_SLOPE


def _param_stats(g, underflow, f, cos) -> dict[str, jax.Array]:
    out = tensor_stats(g.astype(f), computed=True)
    out["grad_frac_underflow"] = underflow
    out["grad_unit_cos_sq"] = jnp.asarray(cos, f)
    return out


def _weight_cos_sq(spec: ProbeSpec, g_w, h, delta):
    """grad_unit_cos_sq of one layer's dL/dW = h^T delta: from the factors where that is
    cheaper (`gradjax.probe.stats.factors_are_cheaper`: a wide layer, a small batch) and the
    gradient has the precision of its factors (not bfloat16, whose rounded dL/dW is what the
    statistic describes), else from dL/dW itself."""
    f = spec.stat_dtype
    g_w = g_w.astype(f)
    if jnp.dtype(spec.dtype) != jnp.bfloat16 and factors_are_cheaper(spec.batch, *g_w.shape):
        return unit_cos_sq_of_factors(h.astype(f), delta.astype(f), jnp.any(g_w != 0, axis=0),
                                      computed=True)
    return unit_cos_sq(g_w, computed=True)


def _no_hidden_stats(f) -> dict[str, jax.Array]:
    """The activation statistics of the output layer, which has no activation: NaN."""
    nan = jnp.asarray(jnp.nan, f)
    return {**{k: nan for k in LAYER_STATS[1:]}, "preact_log2_scale": jnp.int32(0)}


def _segment_stats(spec, g, underflow, h, delta, u, dphi, max_deriv):
    """Per-layer statistics of one segment, each with a leading [k] axis (vmapped over k)."""
    f = spec.stat_dtype

    def one(g, w_underflow, b_underflow, h, delta, u, dphi):
        w = _param_stats(g["W"], w_underflow, f, _weight_cos_sq(spec, g["W"], h, delta))
        b = _param_stats(g["b"], b_underflow, f, jnp.nan)
        out = {k: jnp.stack([w[k], b[k]]) for k in w}
        out["delta_sq_norm"], out["delta_log2_scale"] = mean_sq_norm(delta.astype(f), computed=True)
        hidden = u is not None
        out.update(activation_stats(u, dphi, max_deriv, f) if hidden else _no_hidden_stats(f))
        return out

    return jax.vmap(one)(g, *underflow, h, delta, u, dphi)


def stats_of(bp: Backprop, underflow, spec: ProbeSpec) -> dict[str, jax.Array]:
    """The statistics of one init from its `Backprop` and `underflow_fractions` (None: NaN)."""
    f = spec.stat_dtype
    if underflow is None:
        underflow = [(jnp.full(g["W"].shape[0], jnp.nan, f),) * 2 for g in bp.grads]
    max_deriv = max_abs_derivative(spec.activation, spec.leaky_slope)
    per_segment = [
        _segment_stats(spec, g, uf, h, d, u, dphi, max_deriv)
        for g, uf, h, d, u, dphi in zip(
            bp.grads, underflow, bp.trace.layer_inputs, bp.deltas, bp.trace.phi_inputs,
            [*bp.dphis, None], strict=True,
        )
    ]
    stats = {k: jnp.concatenate([seg[k] for seg in per_segment]) for k in per_segment[0]}
    stats["loss_value"] = bp.loss.astype(f)
    return stats


def chunk_stats(bp: Backprop, spec: ProbeSpec) -> dict[str, jax.Array]:
    """`stats_of` for a chunk of inits: `bp` has a leading seed axis, and so do the stats."""
    underflow = (
        underflow_fractions(bp, spec.norm, spec.stat_dtype) if spec.structural_zeros else None
    )
    return jax.vmap(lambda b, uf: stats_of(b, uf, spec))(bp, underflow)


@functools.partial(
    jax.jit,
    static_argnames=("activation", "output_activation", "loss", "norm", "leaky_slope",
                     "structural_zeros"),
)
def grad_stats_on_device(
    params: Params,
    x,
    y,
    *,
    activation: str,
    output_activation: str = default("output_activation"),
    loss: str = default("loss"),
    norm: str = default("norm"),
    leaky_slope: float = LEAKY_SLOPE,
    structural_zeros: bool = True,
) -> dict[str, jax.Array]:
    """`grad_stats` as device arrays, its magnitudes scaled (see `gradjax.probe.stats`): what to
    vmap or call inside other jitted code; `gradjax.probe.stats.to_host` finishes it."""
    sizes = (params[0]["W"].shape[0], *(layer["W"].shape[1] for layer in params))
    x = jnp.asarray(x)
    spec = ProbeSpec(
        sizes=tuple(int(s) for s in sizes), activation=activation,
        output_activation=output_activation, loss=loss, norm=norm, leaky_slope=leaky_slope,
        dtype=str(params[0]["W"].dtype), batch=1 if x.ndim == 1 else x.shape[0],
        structural_zeros=structural_zeros, inputs="fixed", targets="fixed",
    )
    bp = backprop(stack_layers(params), x, y, spec)
    underflow = (
        underflow_fractions(bp, norm, spec.stat_dtype, seed_axis=False)
        if structural_zeros else None
    )
    return stats_of(bp, underflow, spec)


def grad_stats(params: Params, x, y, *, activation: str, **options) -> dict[str, np.ndarray]:
    """Gradient statistics of one init on one batch, as host numpy arrays.

    Options (defaults as in the sweep options table): output_activation, loss, norm, leaky_slope,
    structural_zeros (True). Returns `loss_value` (scalar); for each of PARAM_STATS an array
    [layers, 2] (columns W, b); for each of LAYER_STATS an array [layers]. Layer 1 is the first
    weight layer, the last is the output layer (its activation statistics are NaN).
    `delta_sq_norm` is the mean over the batch of |dL/dz^l|^2, the gradient w.r.t. the layer's
    pre-activations. Magnitudes (`gradjax.spec.SCALED`) are float64, exact to rounding
    whatever the size of the gradient's entries. `stats_frame` makes it a tidy DataFrame.
    """
    check_mlp_params(params)
    return to_host(grad_stats_on_device(params, x, y, activation=activation, **options))


def check_mlp_params(params: Any) -> None:
    """TypeError, one line, unless `params` is the MLP's: a list of {"W", "b"} layers."""
    if not (isinstance(params, list | tuple) and params and all(
            isinstance(layer, dict) and set(layer) == {"W", "b"} for layer in params)):
        layout = "a list of {'W': [fan_in, fan_out], 'b': [fan_out]} layers"
        raise TypeError(
            f"grad_stats takes the MLP's parameters, {layout} as gradjax.init_mlp returns "
            f"them, not {type(params).__name__} {_summary(params)}; for any other model pass "
            "its (init, apply) pair and params=...")


def _summary(params: Any) -> str:
    """A short description of what was passed instead: its top-level keys or length."""
    if isinstance(params, dict):
        return "with keys " + ", ".join(map(repr, list(params)[:4]))
    return f"of length {len(params)}" if isinstance(params, list | tuple) else ""


def draw_init(spec: ProbeSpec, init_key: jax.Array):
    """What one init draws: unit-scale segmented params and, if not fixed, its data batch."""
    raw = draw_unit_stacked(
        init_key, spec.sizes, init=spec.init, bias_init=spec.bias_init, dtype=jnp.dtype(spec.dtype)
    )
    return raw, data.draw_batch(spec, init_key)


def probe_point(spec: ProbeSpec, raw, drawn, point: dict[str, jax.Array],
                init_key: jax.Array | None = None) -> tuple[Backprop, dict[str, jax.Array]]:
    """One init at one point (scale, bias_scale[, fixed x, y][, training]): its forward and
    backward pass after the point's optimizer steps, and the per-init statistics that are not
    taken from the `Backprop` (`loss_halved_step`, and `EXAMPLE_STATS` as [layers, 2])."""
    params = scale_params(raw, point["scale"], point["bias_scale"])
    if spec.scaled_layers:
        params = scale_layers(params, point["layer_scale"])
    teacher = teacher_of(spec, init_key) if spec.targets == "teacher" else None
    trained = None
    if spec.trains:
        params, (x, y), trained = training.to_step(
            spec, params, point, functools.partial(plain_loss, spec),
            lambda t: data.point_batch(spec, init_key, point, t, teacher))
    else:
        x, y = data.point_batch(spec, init_key, point, 0, teacher, drawn)
    bp = backprop(params, x, y, spec)
    extra = {"loss_halved_step": training.halved_step(spec, trained)}
    extra.update(example_stats(spec, params, x, y))
    return bp, extra


def plain_loss(spec: ProbeSpec, stacked, x, y) -> jax.Array:
    """The batch loss of segmented params (no taps): what the optimizer descends."""
    return batch_loss(stacked, x, y, activation=spec.activation,
                      output_activation=spec.output_activation, loss=spec.loss,
                      norm=spec.norm, leaky_slope=spec.leaky_slope)[0]


def teacher_of(spec: ProbeSpec, init_key: jax.Array):
    """The init's teacher: a network of the same sizes, activation and init at scale 1,
    drawn from the init's teacher stream; x -> its logits."""
    params = draw_unit_stacked(keys.teacher_key(init_key), spec.sizes, init=spec.init,
                               bias_init=spec.bias_init, dtype=jnp.dtype(spec.dtype))
    return lambda x: forward_stacked(params, x, activation=spec.activation, norm=spec.norm,
                                     leaky_slope=spec.leaky_slope)[0]


def example_stats(spec: ProbeSpec, stacked, x, y) -> dict[str, jax.Array]:
    """`EXAMPLE_STATS` [layers, 2] (W, b): param_sq_norm of the parameters, and the
    statistics of the per-example gradients of the batch (NaN unless `spec.per_example`)."""
    f = jnp.dtype(spec.stat_dtype)
    out = {n: jnp.full((spec.n_layers, 2), jnp.nan, f) for n in EXAMPLE_STATS}
    out["param_sq_norm"] = _per_layer(lambda p: training.param_sq_norm(p, f), stacked, 0)
    if spec.per_example:
        per_example = jax.vmap(
            lambda xi, yi: jax.grad(plain_loss, argnums=1)(spec, stacked, xi[None], yi[None])
        )(x, y)
        # each leaf [batch, k, ...]: the layers of a segment on axis 1
        noise = _per_layer(lambda g: training.example_noise(g, f), per_example, 1)
        out.update(noise)
    return out


def _per_layer(fn, segments, axis: int):
    """fn of each layer's W and of its b, as [layers, 2]: a dict of them if fn gives one."""
    rows = []
    for seg in segments:
        w, b = (jax.vmap(fn, in_axes=axis)(seg[p]) for p in ("W", "b"))
        rows.append(jax.tree.map(lambda a, c: jnp.stack([a, c], axis=-1), w, b))
    return jax.tree.map(lambda *a: jnp.concatenate(a), *rows)


def at_point(spec: ProbeSpec, point: dict, drawn, init_keys: jax.Array):
    """`ProbeKernel.at_point` of the layered probe: `probe_point` vmapped over the chunk's
    seeds, then `chunk_stats`, whose replay of backprop is cut once for the whole chunk."""
    raw, batches = drawn
    bp, extra = jax.vmap(lambda u, d, k: probe_point(spec, u, d, point, k))(
        raw, batches, init_keys)
    return bp.grads, {**chunk_stats(bp, spec), **extra}


# its statistics run stacked over layers: cheap per tensor to compile and to run
KERNEL = ProbeKernel(draw=draw_init, at_point=at_point, compile_seconds_per_tensor=0.03,
                     seconds_per_tensor=1e-6)


