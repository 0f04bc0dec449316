"""The probe: one init -> gradient statistics, then vmapped over scale points and seeds.

Written for a single init (`grad_stats`, `probe_point`) and vmapped from outside:

    chunk(root_seed, seeds[C], valid[C], points[P]) -> stats[C, P, ...]

One compile per `ProbeSpec` (a shape bucket) and chunk shape: `scale`, `bias_scale` and fixed
data are traced values on the points axis, so a grid of 50 scales compiles once. The weights of
an init are drawn once per seed at unit scale and reused for every point (common random
numbers). The seed axis is a plain leading axis, so it can be chunked or sharded freely, and
per-seed numbers do not depend on the chunk size (see `gradjax.nn.xla` for the flag this needs).

Per init: `backprop` (forward and backward pass) -> `stats_of`. One decision is taken per chunk
rather than per init: how much of the boolean replay of backprop the chunk needs to tell dead
zeros from underflow (`underflow_fractions`); every choice gives the same numbers.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradjax.nn import data, keys
from gradjax.nn.activations import derivative, get_activation, max_abs_derivative
from gradjax.nn.network import (
    Params,
    Trace,
    as_batch,
    batch_loss,
    draw_unit_stacked,
    forward_stacked,
    scale_params,
    scan_layers,
    stack_layers,
)
from gradjax.probe import pow2, training
from gradjax.probe.stats import (
    batch_moments,
    mean_sq_norm,
    scaled,
    shifted_moments,
    tensor_stats,
    to_host,
    unit_cos_sq,
)
from gradjax.spec import EXAMPLE_STATS, LAYER_STATS, MIN_AXIS, SATURATION, ProbeSpec, default
from gradjax.spec.option import LEAKY_SLOPE

# Seconds per parameter tensor per (seed, point) of this probe's chunk program, and seconds per
# parameter tensor of compiling it, on the reference machine (2 cores; `gradjax.run.estimate`):
# its statistics run stacked over layers.
COMPILE_SECONDS_PER_TENSOR = 0.03
SECONDS_PER_TENSOR = 1e-6


def _reach_into_z(reach_u: jax.Array, norm: str) -> jax.Array:
    """Which entries of z can receive gradient, given which entries of u = norm(z) do."""
    if norm == "layernorm":
        return jnp.broadcast_to(jnp.any(reach_u, axis=1, keepdims=True), reach_u.shape)
    if norm == "batchnorm":
        return jnp.broadcast_to(jnp.any(reach_u, axis=0, keepdims=True), reach_u.shape)
    return reach_u


def _live_step(reach, layer, norm, weight_masks, w_has_zeros):
    """One layer of the boolean replay of backprop; reach: [batch, fan_out] of z^l.

    Emits (W_live [fan_in, fan_out], b_live [fan_out]), or with `weight_masks=False`
    (rows_live [fan_in], b_live), which bounds W_live by an outer product. With no zero weight
    (`w_has_zeros=False`) a unit below is reached from example b as soon as any unit above
    is, so the backward step needs no matmul.
    """
    h_in, w, below = layer
    f = h_in.dtype
    b_live = jnp.any(reach, axis=0)
    if weight_masks:
        first = ((h_in != 0).astype(f).T @ reach.astype(f)) > 0
    else:
        first = jnp.any(h_in != 0, axis=0)
    if w_has_zeros:
        back = (reach.astype(f) @ (w != 0).astype(f).T) > 0
    else:
        back = jnp.broadcast_to(jnp.any(reach, axis=1, keepdims=True), h_in.shape)
    return _reach_into_z(back & below, norm), (first, b_live)


def structural_liveness(
    stacked, trace, dphis, d_out, norm: str = "none", *, weight_masks: bool = True,
    w_has_zeros: bool = True,
):
    """Per segment, (W_live [k, fan_in, fan_out], b_live [k, fan_out]): gradient entries that are
    *not* forced to 0 by structure.

    An entry is structurally zero when every path from it to the loss passes through a unit with
    phi'(u) == 0 (a dead ReLU, an exactly-flat saturated unit), a zero weight or a zero input.
    This replays backprop on booleans; an exact zero in a live entry is float underflow (or
    exact cancellation), not a dead unit. `w_has_zeros=False` is a shortcut valid only when no
    weight is exactly 0; `weight_masks=False` returns rows_live [k, fan_in] instead of W_live:
    W_live is then contained in the outer product of rows_live and b_live.
    """
    # below[l]: may z^{l-1}'s units pass gradient back (phi' != 0)? All True for the input.
    first = jnp.ones_like(trace.layer_inputs[0][0], dtype=bool)
    masks = [d != 0 for d in dphis]
    reach, live = d_out != 0, []
    step = functools.partial(
        _live_step, norm=norm, weight_masks=weight_masks, w_has_zeros=w_has_zeros
    )
    for i in range(len(stacked) - 1, -1, -1):
        below = masks[i - 1][-1:] if i > 0 else first[None]
        if i < len(masks) and masks[i].shape[0] > 1:  # then fan_in == fan_out in the segment
            below = jnp.concatenate([below, masks[i][:-1]])
        reach, seg_live = scan_layers(
            step, reach, (trace.layer_inputs[i], stacked[i]["W"], below), reverse=True
        )
        live.append(seg_live)
    return live[::-1]


class Backprop(NamedTuple):
    """One init's forward and backward pass, per segment (see `network.stack_layers`)."""

    params: list  # the scaled, segmented parameters
    loss: jax.Array
    trace: Trace
    grads: list  # dL/dparams, segmented like params
    deltas: list  # dL/dz, [k, batch, fan_out] per segment
    dphis: list  # phi'(u) per hidden segment
    d_out: jax.Array  # d output / d logits (ones for losses computed from the logits)


def backprop(stacked, x, y, spec: ProbeSpec) -> Backprop:
    """Loss, gradients and everything the statistics need, for one init."""
    x = as_batch(jnp.asarray(x, jnp.dtype(spec.dtype)))
    shifts = [jnp.zeros((seg["b"].shape[0], x.shape[0], seg["b"].shape[1]), jnp.dtype(spec.dtype))
              for seg in stacked]

    def value(p, s):
        return batch_loss(
            p, x, y, activation=spec.activation, output_activation=spec.output_activation,
            loss=spec.loss, norm=spec.norm, leaky_slope=spec.leaky_slope, shifts=s,
        )

    (loss, trace), (grads, deltas) = jax.value_and_grad(value, argnums=(0, 1), has_aux=True)(
        stacked, shifts
    )
    phi = get_activation(spec.activation, leaky_slope=spec.leaky_slope)
    dphis = [derivative(phi, u) for u in trace.phi_inputs if u is not None]
    if spec.loss in ("bce", "softmax_cross_entropy"):  # the loss sees the logits directly
        d_out = jnp.ones_like(trace.logits)
    else:
        out_fn = get_activation(spec.output_activation, leaky_slope=spec.leaky_slope)
        d_out = derivative(out_fn, trace.logits)
    return Backprop(stacked, loss, trace, grads, deltas, dphis, d_out)


def _frac(mask, f):
    return jnp.mean(mask.reshape(mask.shape[0], -1), axis=1, dtype=f)


def _underflow_exact(bp: Backprop, norm: str, f, w_has_zeros: bool = True):
    """Per segment, (W, b) fractions of entries that are exactly 0 although live."""
    live = structural_liveness(
        bp.params, bp.trace, bp.dphis, bp.d_out, norm, w_has_zeros=w_has_zeros
    )
    return [
        (_frac(pow2.is_zero(g["W"]) & w_live, f), _frac(pow2.is_zero(g["b"]) & b_live, f))
        for g, (w_live, b_live) in zip(bp.grads, live, strict=True)
    ]


def _underflow_cheap(bp: Backprop, norm: str, f):
    """`_underflow_exact` without the weight masks; whether that was valid for this init; and
    whether no weight is exactly 0.

    Valid when no weight is 0, every gradient is finite and each exact zero of dL/dW lies in a
    row with no live input or a column with no live unit. Those rows and columns are then
    exactly 0 and not live, so no live entry of W is 0.
    """
    live = structural_liveness(
        bp.params, bp.trace, bp.dphis, bp.d_out, norm, weight_masks=False, w_has_zeros=False
    )
    out, explained = [], []
    no_zero_weight = jnp.all(jnp.stack([jnp.all(seg["W"] != 0) for seg in bp.params]))
    for g, (rows, cols) in zip(bp.grads, live, strict=True):
        _, fan_in, fan_out = g["W"].shape
        dead_rows = fan_in - jnp.sum(rows, axis=1, dtype=jnp.int32)
        dead_cols = fan_out - jnp.sum(cols, axis=1, dtype=jnp.int32)
        in_dead = dead_rows * fan_out + dead_cols * fan_in - dead_rows * dead_cols
        zeros = jnp.sum(pow2.is_zero(g["W"]).reshape(g["W"].shape[0], -1), axis=1,
                        dtype=jnp.int32)
        finite = jnp.all(jnp.isfinite(g["W"])) & jnp.all(jnp.isfinite(g["b"]))
        explained.append(jnp.all(zeros == in_dead) & finite)
        out.append((jnp.zeros(g["W"].shape[0], f), _frac(pow2.is_zero(g["b"]) & cols, f)))
    return out, jnp.all(jnp.stack(explained)) & no_zero_weight, no_zero_weight


def underflow_fractions(bp: Backprop, norm: str, f, seed_axis: bool = True):
    """`grad_frac_underflow` per segment as (W [k], b [k]), for a chunk of inits (a leading seed
    axis on `bp` and on the result) or, with `seed_axis=False`, for one init.

    The full boolean replay of backprop costs two boolean matmuls per layer. It is cut to what
    the chunk needs, in three tiers decided once per chunk, outside the vmap over seeds (so the
    choice stays a branch and the other sides are not computed); all give identical numbers:
    no weight mask at all when every exact zero of dL/dW lies in a dead row or column (tanh,
    sigmoid, batch-1 relu), one matmul per layer (the weight masks) when no weight is exactly
    0, the full replay otherwise.
    """

    def over_seeds(fn):
        return jax.vmap(fn) if seed_axis else fn

    cheap, explained, no_zero_weight = over_seeds(lambda b: _underflow_cheap(b, norm, f))(bp)
    tier = jnp.where(jnp.all(explained), 0, jnp.where(jnp.all(no_zero_weight), 1, 2))
    return jax.lax.switch(tier, [
        lambda: cheap,
        lambda: over_seeds(lambda b: _underflow_exact(b, norm, f, w_has_zeros=False))(bp),
        lambda: over_seeds(lambda b: _underflow_exact(b, norm, f))(bp),
    ])


def activation_stats(u, dphi, max_deriv, f) -> dict[str, jax.Array]:
    """LAYER_STATS but delta_sq_norm, and preact_log2_scale, of a [batch, units] array of
    pre-activations u and phi'(u)."""
    mean, var, k = batch_moments(u.astype(f), computed=True)
    absd = jnp.abs(dphi).astype(f)
    return {
        "preact_mean": mean,
        "preact_var": var,
        "preact_log2_scale": k,
        "act_frac_dead": jnp.mean(jnp.all(dphi == 0, axis=0), dtype=f),
        "act_frac_saturated": jnp.mean(jnp.all(absd < SATURATION * max_deriv, axis=0), dtype=f),
        "act_deriv_mean": jnp.mean(dphi.astype(f)),
    }


def _param_stats(g, underflow, f, is_weight: bool) -> dict[str, jax.Array]:
    g = g.astype(f)
    out = tensor_stats(g, computed=True)
    out["grad_frac_underflow"] = underflow
    out["grad_unit_cos_sq"] = (unit_cos_sq(g, computed=True) if is_weight
                               else jnp.asarray(jnp.nan, f))
    return out


def _no_hidden_stats(f) -> dict[str, jax.Array]:
    """The activation statistics of the output layer, which has no activation: NaN."""
    nan = jnp.asarray(jnp.nan, f)
    return {**{k: nan for k in LAYER_STATS[1:]}, "preact_log2_scale": jnp.int32(0)}


def _segment_stats(spec, g, underflow, delta, u, dphi, max_deriv):
    """Per-layer statistics of one segment, each with a leading [k] axis (vmapped over k)."""
    f = spec.stat_dtype

    def one(g, w_underflow, b_underflow, delta, u, dphi):
        w = _param_stats(g["W"], w_underflow, f, True)
        b = _param_stats(g["b"], b_underflow, f, False)
        out = {k: jnp.stack([w[k], b[k]]) for k in w}
        out["delta_sq_norm"], out["delta_log2_scale"] = mean_sq_norm(delta.astype(f), computed=True)
        hidden = u is not None
        out.update(activation_stats(u, dphi, max_deriv, f) if hidden else _no_hidden_stats(f))
        return out

    return jax.vmap(one)(g, *underflow, delta, u, dphi)


def stats_of(bp: Backprop, underflow, spec: ProbeSpec) -> dict[str, jax.Array]:
    """The statistics of one init from its `Backprop` and `underflow_fractions` (None: NaN)."""
    f = spec.stat_dtype
    if underflow is None:
        underflow = [(jnp.full(g["W"].shape[0], jnp.nan, f),) * 2 for g in bp.grads]
    max_deriv = max_abs_derivative(spec.activation, spec.leaky_slope)
    per_segment = [
        _segment_stats(spec, g, uf, d, u, dphi, max_deriv)
        for g, uf, d, u, dphi in zip(
            bp.grads, underflow, bp.deltas, bp.trace.phi_inputs, [*bp.dphis, None], strict=True
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
    unit = draw_unit_stacked(
        init_key, spec.sizes, init=spec.init, bias_init=spec.bias_init, dtype=jnp.dtype(spec.dtype)
    )
    return unit, data.draw_batch(spec, init_key)


def probe_point(spec: ProbeSpec, unit, drawn, point: dict[str, jax.Array],
                init_key: jax.Array | None = None) -> tuple[Backprop, dict[str, jax.Array]]:
    """One init at one point (scale, bias_scale[, fixed x, y][, training]): its forward and
    backward pass after the point's optimizer steps, and the per-init statistics that are not
    taken from the `Backprop` (`loss_halved_step`, and `EXAMPLE_STATS` as [layers, 2])."""
    params = scale_params(unit, point["scale"], point["bias_scale"])
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


def chunk_moments(grads, valid: jax.Array, dtype) -> dict:
    """Per entry across the chunk's valid seeds: count, mean and sum of squared deviations,
    computed in `dtype` (float32 for bfloat16 gradients: a bfloat16 sum of squares keeps 3
    digits) on the entry rescaled by 2**-k, k its `log2_scale` (see `gradjax.probe.stats.scaled`),
    so that no square underflows; `gradjax.run.moments.ChunkMoments.from_chunk` unscales on the
    host."""
    def one(g):
        w = valid.reshape((-1,) + (1,) * (g.ndim - 1))
        s, k = scaled(jnp.where(w, g.astype(dtype), 0), axis=0, computed=True)
        mean, m2 = shifted_moments(s, jnp.broadcast_to(w, s.shape))  # seed 0 is always valid
        return {"mean": mean, "m2": m2, "log2_scale": k}

    return {"n": jnp.sum(valid), "moments": jax.tree.map(one, grads)}


def chunk_program(spec: ProbeSpec, with_moments: bool, root_seed, seeds, valid, points,
                  n_points):
    """Draw once per seed; then, point by point (`lax.map`), vmap `probe_point` over seeds.

    Looping over points rather than vmapping them keeps every compiled shape independent of
    how many points share the bucket, so a cell's numbers do not change when a value is added
    to a grid axis (and a lone point costs one evaluation, not a padded two).
    """
    init_keys = jax.vmap(lambda s: keys.init_key(root_seed, s))(seeds)
    unit, drawn = jax.vmap(lambda k: draw_init(spec, k))(init_keys)

    def at_point(point):
        bp, extra = jax.vmap(lambda u, d, k: probe_point(spec, u, d, point, k))(
            unit, drawn, init_keys)
        moments = chunk_moments(bp.grads, valid, spec.stat_dtype) if with_moments else None
        return {**chunk_stats(bp, spec), **extra}, moments

    stats, moments = loop_over_points(at_point, points, n_points)
    if moments is not None:
        moments = {"n": jnp.sum(valid), "moments": moments["moments"]}
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), stats), moments


def loop_over_points(fn, points, n_points):
    """[fn(point) for point in points], stacked, as a loop whose trip count is a runtime value.

    XLA would inline a loop of known length 1 and fuse its body differently; with `n_points`
    traced, one point runs exactly the code that many points do.
    """
    p = jax.tree.leaves(points)[0].shape[0]
    shapes = jax.eval_shape(fn, jax.tree.map(lambda a: a[0], points))
    init = jax.tree.map(lambda s: jnp.zeros((p, *s.shape), s.dtype), shapes)

    def body(i, acc):
        out = fn(jax.tree.map(lambda a: a[i], points))
        return jax.tree.map(lambda a, o: a.at[i].set(o), acc, out)

    return jax.lax.fori_loop(0, n_points, body, init)


def make_points(spec: ProbeSpec, scales, bias_scales, xs=None, ys=None, model=None,
                train=None) -> dict[str, jax.Array]:
    """The traced per-point values; fixed inputs/targets are [P, batch, dim] arrays, a
    model's own traced options (`model`, name -> [P]) go under "model", a training bucket's
    step (int32) and optimizer settings (`train`, name -> [P]) under "train"."""
    dt = jnp.dtype(spec.dtype)
    points = {
        "scale": jnp.asarray(np.asarray(scales, np.float64), dt),
        "bias_scale": jnp.asarray(np.asarray(bias_scales, np.float64), dt),
    }
    if model:  # in the statistics' dtype: a bfloat16 network keeps gain = 1.01 as 1.01
        points["model"] = {k: jnp.asarray(np.asarray(v, np.float64), jnp.dtype(spec.stat_dtype))
                           for k, v in model.items()}
    if train:  # hyper-parameters in the statistics' dtype, like the model's own
        points["train"] = {k: jnp.asarray(np.asarray(v), jnp.int32 if k == "step"
                                          else jnp.dtype(spec.stat_dtype))
                           for k, v in train.items()}
    n = points["scale"].shape[0]
    if spec.inputs == "fixed":
        points["x"] = jnp.broadcast_to(jnp.asarray(xs, dt).reshape(-1, spec.batch, spec.sizes[0]),
                                       (n, spec.batch, spec.sizes[0]))
    if spec.targets == "fixed":
        points["y"] = jnp.broadcast_to(jnp.asarray(ys, dt).reshape(-1, spec.batch, spec.sizes[-1]),
                                       (n, spec.batch, spec.sizes[-1]))
    return points



def pad_points(points: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], int]:
    """Points padded to at least MIN_AXIS slots by repeating the last; returns (padded, real P).

    The padding is never computed (the point loop runs over the real points only); it keeps
    the points axis from having size 1, which XLA would simplify away, compiling the per-point
    code differently.
    """
    n = jax.tree.leaves(points)[0].shape[0]
    if n >= MIN_AXIS:
        return points, n
    return jax.tree.map(lambda a: jnp.concatenate([a] + [a[-1:]] * (MIN_AXIS - n)), points), n


def moments_to_host(moments: dict | None) -> dict | None:
    """A chunk's device moments ({"n", "moments"}) on the host: each entry's {"mean", "m2"}
    unscaled into float64 (their `log2_scale` applied and dropped)."""
    if moments is None:
        return None
    moments = jax.device_get(moments)

    def unscaled(node: dict) -> dict:
        k = node["log2_scale"]
        return {"mean": pow2.unscale(node["mean"], k, 1), "m2": pow2.unscale(node["m2"], k, 2)}

    tree = jax.tree.map(unscaled, moments["moments"], is_leaf=is_scaled_moments)
    return {"n": int(moments["n"]), "moments": tree}


def is_scaled_moments(node: Any) -> bool:
    """A node of the probe's chunk moments: one tensor's {"mean", "m2", "log2_scale"}."""
    return isinstance(node, dict) and "log2_scale" in node


def moments_by_layer(moments: dict | None, n_points: int) -> dict | None:
    """Host moments per segment [P, k, ...] -> a list with one entry per layer."""
    if moments is None:
        return None
    layers = []
    for seg in moments["moments"]:
        k = seg["W"]["mean"].shape[1]
        layers += [jax.tree.map(lambda a, j=j: a[:n_points, j], seg) for j in range(k)]
    return {"n": int(moments["n"]), "moments": layers}
