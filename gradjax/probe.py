"""The probe: one init -> gradient statistics, then vmapped over scale points and seeds.

Written for a single init (`grad_stats`, `probe_one`) and vmapped from outside:

    chunk(root_seed, seeds[C], valid[C], points[P]) -> stats[C, P, ...]

One compile per `ProbeSpec` (a shape bucket) and chunk shape: `scale`, `bias_scale` and fixed
data are traced values on the points axis, so a grid of 50 scales compiles once. The weights of
an init are drawn once per seed at unit scale and reused for every point (common random
numbers). The seed axis is a plain leading axis, so it can be chunked or sharded freely, and
per-seed numbers do not depend on the chunk size (see `gradjax._xla` for the flag this needs).
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gradjax import data, keys
from gradjax.activations import derivative, get_activation, max_abs_derivative
from gradjax.network import Params, as_batch, batch_loss, draw_unit_params, scale_params
from gradjax.stats import TENSOR_STATS, batch_moments, tensor_stats, unit_cosine

PARAM_NAMES: tuple[str, ...] = ("W", "b")
PARAM_STATS: tuple[str, ...] = (*TENSOR_STATS, "grad_frac_underflow", "grad_unit_cos")
LAYER_STATS: tuple[str, ...] = (
    "delta_sq_norm",
    "preact_mean",
    "preact_var",
    "act_frac_dead",
    "act_frac_saturated",
    "act_deriv_mean",
)
SATURATION = 0.01
TRACE_COUNTS: collections.Counter = collections.Counter()


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

    @property
    def depth(self) -> int:
        return len(self.sizes) - 2

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def jnp_dtype(self):
        return jnp.dtype(self.dtype)

    @property
    def stat_dtype(self):
        return jnp.float32 if self.dtype == "bfloat16" else self.jnp_dtype


def _reach_into_z(reach_u: jax.Array, norm: str) -> jax.Array:
    """Which entries of z can receive gradient, given which entries of u = norm(z) do."""
    if norm == "layernorm":
        return jnp.broadcast_to(jnp.any(reach_u, axis=1, keepdims=True), reach_u.shape)
    if norm == "batchnorm":
        return jnp.broadcast_to(jnp.any(reach_u, axis=0, keepdims=True), reach_u.shape)
    return reach_u


def structural_liveness(
    params: Params, trace, dphis, d_out, norm: str = "none"
) -> list[tuple[jax.Array, jax.Array]]:
    """For each layer, (W_live, b_live): entries whose gradient is *not* forced to 0 by structure.

    A gradient entry is structurally zero when every path from it to the loss passes through a
    unit with phi'(u) == 0 (a dead ReLU, an exactly-flat saturated unit), a zero weight or a
    zero input. This is a boolean replay of backprop; an exact zero in a live entry is float
    underflow (or exact cancellation), not a dead unit.
    """
    f = d_out.dtype
    reach = d_out != 0
    live = []
    for l in range(len(params) - 1, -1, -1):
        h_in = trace.layer_inputs[l]
        w_live = ((h_in != 0).astype(f).T @ reach.astype(f)) > 0
        live.append((w_live, jnp.any(reach, axis=0)))
        if l > 0:
            back = (reach.astype(f) @ (params[l]["W"] != 0).astype(f).T) > 0
            reach = _reach_into_z(back & (dphis[l - 1] != 0), norm)
    return live[::-1]


def _grads_and_trace(params, x, y, spec: ProbeSpec):
    x = as_batch(jnp.asarray(x, spec.jnp_dtype))
    shifts = [jnp.zeros((x.shape[0], n), spec.jnp_dtype) for n in spec.sizes[1:]]

    def value(p, s):
        return batch_loss(
            p, x, y, activation=spec.activation, output_activation=spec.output_activation,
            loss=spec.loss, norm=spec.norm, leaky_slope=spec.leaky_slope, shifts=s,
        )

    (loss, trace), (g_params, deltas) = jax.value_and_grad(value, argnums=(0, 1), has_aux=True)(
        params, shifts
    )
    return loss, trace, g_params, deltas


def _liveness(params, trace, spec: ProbeSpec, dphis):
    if spec.loss in ("bce", "softmax_cross_entropy"):  # the loss sees the logits directly
        d_out = jnp.ones_like(trace.logits)
    else:
        out_fn = get_activation(spec.output_activation, leaky_slope=spec.leaky_slope)
        d_out = derivative(out_fn, trace.logits)
    return structural_liveness(params, trace, dphis, d_out, spec.norm)


def _layer_stats(u, dphi, max_deriv, f) -> dict[str, jax.Array]:
    mean, var = batch_moments(u.astype(f))
    absd = jnp.abs(dphi).astype(f)
    return {
        "preact_mean": mean,
        "preact_var": var,
        "act_frac_dead": jnp.mean(jnp.all(dphi == 0, axis=0), dtype=f),
        "act_frac_saturated": jnp.mean(jnp.all(absd < SATURATION * max_deriv, axis=0), dtype=f),
        "act_deriv_mean": jnp.mean(dphi.astype(f)),
    }


def _param_stats(g, live, f, is_weight: bool) -> dict[str, jax.Array]:
    g = g.astype(f)
    out = tensor_stats(g)
    if live is None:
        out["grad_frac_underflow"] = jnp.asarray(jnp.nan, f)
    else:
        out["grad_frac_underflow"] = jnp.mean((g == 0) & live, dtype=f)
    out["grad_unit_cos"] = unit_cosine(g) if is_weight else jnp.asarray(jnp.nan, f)
    return out


def grad_stats_and_grads(params: Params, x, y, spec: ProbeSpec):
    """`grad_stats` plus the raw gradients (for across-seed moments)."""
    f = spec.stat_dtype
    loss, trace, g_params, deltas = _grads_and_trace(params, x, y, spec)
    phi = get_activation(spec.activation, leaky_slope=spec.leaky_slope)
    dphis = [derivative(phi, u) for u in trace.phi_inputs]
    live = (
        _liveness(params, trace, spec, dphis)
        if spec.structural_zeros
        else [(None, None)] * len(params)
    )
    max_deriv = max_abs_derivative(spec.activation, spec.leaky_slope)
    nan = jnp.asarray(jnp.nan, f)
    per_param = {k: [] for k in PARAM_STATS}
    per_layer = {k: [] for k in LAYER_STATS}
    for l, (g, (w_live, b_live)) in enumerate(zip(g_params, live, strict=True)):
        for name, lv in (("W", w_live), ("b", b_live)):
            for k, v in _param_stats(g[name], lv, f, name == "W").items():
                per_param[k].append(v)
        per_layer["delta_sq_norm"].append(jnp.mean(jnp.sum(jnp.square(deltas[l].astype(f)), 1)))
        hidden = (
            _layer_stats(trace.phi_inputs[l], dphis[l], max_deriv, f) if l < spec.depth else {}
        )
        for k in LAYER_STATS[1:]:
            per_layer[k].append(hidden.get(k, nan))
    stats = {k: jnp.stack(v).reshape(spec.n_layers, 2) for k, v in per_param.items()}
    stats.update({k: jnp.stack(v) for k, v in per_layer.items()})
    stats["loss_value"] = loss.astype(f)
    return stats, g_params


def grad_stats(
    params: Params,
    x,
    y,
    *,
    activation: str,
    output_activation: str = "linear",
    loss: str = "mse",
    norm: str = "none",
    leaky_slope: float = 0.01,
    structural_zeros: bool = True,
) -> dict[str, jax.Array]:
    """Gradient statistics of one init on one batch.

    Returns `loss_value` (scalar); for each of PARAM_STATS an array [layers, 2] (columns W, b);
    for each of LAYER_STATS an array [layers]. Layer 1 is the first weight layer, the last is
    the output layer (its activation statistics are NaN). `delta_sq_norm` is the mean over the
    batch of |dL/dz^l|^2, the gradient w.r.t. the layer's pre-activations.
    """
    sizes = (params[0]["W"].shape[0], *(layer["W"].shape[1] for layer in params))
    x = jnp.asarray(x)
    spec = ProbeSpec(
        sizes=tuple(int(s) for s in sizes), activation=activation,
        output_activation=output_activation, loss=loss, norm=norm, leaky_slope=leaky_slope,
        dtype=str(params[0]["W"].dtype), batch=1 if x.ndim == 1 else x.shape[0],
        structural_zeros=structural_zeros,
    )
    return grad_stats_and_grads(params, x, y, spec)[0]


def probe_one(spec: ProbeSpec, seed_key: jax.Array, points: dict[str, jax.Array]):
    """All points (scale, bias_scale[, x, y]) of one init: stats and gradients with a [P] axis."""
    unit = draw_unit_params(
        seed_key, spec.sizes, init=spec.init, bias_init=spec.bias_init, dtype=spec.jnp_dtype
    )
    drawn_x, drawn_y = data.draw_batch(spec, seed_key)

    def at_point(point):
        params = scale_params(unit, point["scale"], point["bias_scale"])
        x = point["x"] if spec.inputs == "fixed" else drawn_x
        y = point["y"] if spec.targets == "fixed" else drawn_y
        return grad_stats_and_grads(params, x, y, spec)

    return jax.vmap(at_point)(points)


def _chunk_moments(grads: Params, valid: jax.Array) -> Params:
    """Per-entry count, mean and sum of squared deviations across the chunk's valid seeds."""
    n = jnp.sum(valid)

    def one(g):
        w = valid.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype)
        mean = jnp.sum(w * g, axis=0) / n.astype(g.dtype)
        m2 = jnp.sum(w * jnp.square(g - mean[None]), axis=0)
        return {"mean": mean, "m2": m2}

    return {"n": n, "moments": jax.tree.map(one, grads)}


def _chunk(spec: ProbeSpec, with_moments: bool, root_seed, seeds, valid, points):
    TRACE_COUNTS[spec] += 1
    seed_keys = jax.vmap(lambda s: keys.seed_key(root_seed, s))(seeds)
    stats, grads = jax.vmap(lambda k: probe_one(spec, k, points))(seed_keys)
    if not with_moments:
        return stats, None
    return stats, _chunk_moments(grads, valid)


@functools.cache
def compiled_chunk(spec: ProbeSpec, with_moments: bool = False):
    """The jitted chunk function of a bucket: (root_seed, seeds[C], valid[C], points) ->
    (stats [C, P, ...], moments or None). jit re-traces only for a new chunk or point count."""
    return jax.jit(functools.partial(_chunk, spec, with_moments))


def make_points(spec: ProbeSpec, scales, bias_scales, xs=None, ys=None) -> dict[str, jax.Array]:
    """The traced per-point values; fixed inputs/targets are [P, batch, dim] arrays."""
    dt = spec.jnp_dtype
    points = {
        "scale": jnp.asarray(np.asarray(scales, np.float64), dt),
        "bias_scale": jnp.asarray(np.asarray(bias_scales, np.float64), dt),
    }
    n = points["scale"].shape[0]
    if spec.inputs == "fixed":
        points["x"] = jnp.broadcast_to(jnp.asarray(xs, dt).reshape(-1, spec.batch, spec.sizes[0]),
                                       (n, spec.batch, spec.sizes[0]))
    if spec.targets == "fixed":
        points["y"] = jnp.broadcast_to(jnp.asarray(ys, dt).reshape(-1, spec.batch, spec.sizes[-1]),
                                       (n, spec.batch, spec.sizes[-1]))
    return points


def run_seeds(
    spec: ProbeSpec,
    points: dict[str, jax.Array],
    seeds: np.ndarray,
    *,
    root_seed: int = 0,
    chunk: int = 256,
    with_moments: bool = False,
):
    """Yield (seed_slice, stats as numpy [c, P, ...], moments) chunk by chunk.

    Every chunk is compiled at the same shape [chunk]; the last one is padded with masked
    seeds, so a run compiles once whatever the number of seeds.
    """
    fn = compiled_chunk(spec, with_moments)
    seeds = np.asarray(seeds, np.int32)
    for start in range(0, len(seeds), chunk):
        part = seeds[start : start + chunk]
        valid = np.zeros(chunk, bool)
        valid[: len(part)] = True
        padded = np.zeros(chunk, np.int32)
        padded[: len(part)] = part
        stats, moments = fn(np.uint32(root_seed), padded, valid, points)
        stats = jax.tree.map(lambda a, k=len(part): np.asarray(a)[:k], stats)
        yield slice(start, start + len(part)), stats, moments
