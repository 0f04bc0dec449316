"""The probe for any model family: statistics per parameter leaf and per tap.

Written for one init and vmapped from outside, like `gradjax.probe` (whose point loop, chunk
moments and points it shares); the family comes from `gradjax.models.resolve`:

    chunk(root_seed, seeds[C], valid[C], points[P]) -> stats[C, P, rows], moments

Rows are the parameter leaves in `jax.tree_util` order, then the taps in natural order of
their names (layer2 before layer10). A leaf row has the gradient statistics (PARAM_STATS) and
NaN activation statistics; a tap row the reverse. Per-leaf `grad_frac_underflow` is NaN: telling
dead-unit zeros from underflow needs the boolean replay of backprop that only the MLP's own
probe does. `grad_unit_cos` of a leaf with ndim >= 2 takes its last axis as the units (the
MLP's [fan_in, fan_out], Flax's [..., in, out]; Equinox stores [out, in], so there it compares
input units). Activation statistics of a tap need the model's `activation` option; without one
only preact_mean and preact_var are defined.

The factory is called inside the traced point function with the point's traced options (JAX
scalars), so a grid over them compiles once; each init is drawn inside it too (a traced option
may enter `init`), the same key giving the same unit-scale draw at every point.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradjax import data, keys
from gradjax.activations import derivative, get_activation, max_abs_derivative
from gradjax.losses import loss_of_logits
from gradjax.models import Family, resolve
from gradjax.probe import activation_stats, chunk_moments, loop_over_points
from gradjax.spec import LAYER_STATS, LOG2_SCALES, PARAM_STATS, ProbeSpec
from gradjax.stats import batch_moments, tensor_stats, unit_cosine

LAYER = re.compile(r"layer(\d+)")


def natural_order(names) -> list[str]:
    """Tap names sorted with their numbers read as numbers (layer2 before layer10)."""
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t
                                         for t in re.split(r"(\d+)", n)])


def family_of(spec: ProbeSpec) -> Family:
    return resolve(spec.model, spec.model_folder)


def build(spec: ProbeSpec, point: Mapping[str, Any]):
    """(init, apply) of the spec's model at one point (its traced options as JAX scalars)."""
    family = family_of(spec)
    options = dict(spec.model_options)
    options.update(point.get("model", {}))
    if family.handles_scale:
        options.update({n: point[n] for n in ("scale", "bias_scale") if n in family.params})
    return family.factory(**options)


def scale_leaves(params, scale, bias_scale):
    """Every leaf with ndim >= 2 times `scale`, every 1-D leaf times `bias_scale`."""
    def one(leaf):
        factor = scale if leaf.ndim >= 2 else bias_scale if leaf.ndim == 1 else 1
        return leaf * jnp.asarray(factor, leaf.dtype)

    return jax.tree.map(one, params)


def draw_params(spec: ProbeSpec, init, key: jax.Array, point: Mapping[str, Any]):
    """One init's parameters at the point: `init(key)` in the sweep's dtype, then scaled
    (unless the factory takes the scales itself)."""
    dt = jnp.dtype(spec.dtype)
    params = jax.tree.map(lambda a: a.astype(dt) if jnp.issubdtype(a.dtype, jnp.floating)
                          else a, init(key))
    if family_of(spec).handles_scale:
        return params
    return scale_leaves(params, point["scale"], point["bias_scale"])


def outputs_and_taps(apply, params, x) -> tuple[jax.Array, dict]:
    out = apply(params, x)
    return out if isinstance(out, tuple) else (out, {})


def leaf_stats(g: jax.Array, f) -> dict[str, jax.Array]:
    g = g.astype(f)
    out = tensor_stats(g, computed=True)
    out["grad_frac_underflow"] = jnp.asarray(jnp.nan, f)
    cos = unit_cosine(g.reshape(-1, g.shape[-1]), computed=True) if g.ndim >= 2 else jnp.nan
    out["grad_unit_cos"] = jnp.asarray(cos, f)
    out.update({k: jnp.asarray(jnp.nan, f) for k in LAYER_STATS})
    out.update(delta_log2_scale=jnp.int32(0), preact_log2_scale=jnp.int32(0))
    return out


def tap_stats(u: jax.Array, spec: ProbeSpec, f) -> dict[str, jax.Array]:
    u = u.reshape(u.shape[0], -1).astype(f)
    nan = jnp.asarray(jnp.nan, f)
    if spec.activation is None:
        mean, var, k = batch_moments(u, computed=True)
        out = {k_: nan for k_ in LAYER_STATS}
        out.update(preact_mean=mean, preact_var=var, preact_log2_scale=k)
    else:
        phi = get_activation(spec.activation, leaky_slope=spec.leaky_slope)
        max_deriv = max_abs_derivative(spec.activation, spec.leaky_slope)
        out = activation_stats(u, derivative(phi, u), max_deriv, f)
        out["delta_sq_norm"] = nan
    out.update({k: nan for k in PARAM_STATS})
    out.update(delta_log2_scale=jnp.int32(0), grad_log2_scale=jnp.int32(0))
    return out


def init_stats(spec: ProbeSpec, apply, params, x, y):
    """(gradients, statistics as rows) of one init on one batch."""
    f = spec.stat_dtype

    def value(p):
        logits, taps = outputs_and_taps(apply, p, x)
        loss = loss_of_logits(logits, y, loss=spec.loss, output_activation=spec.output_activation,
                              leaky_slope=spec.leaky_slope)
        return loss, taps

    (loss, taps), grads = jax.value_and_grad(value, has_aux=True)(params)
    rows = [leaf_stats(g, f) for g in jax.tree.leaves(grads)]
    rows += [tap_stats(taps[name], spec, f) for name in natural_order(taps)]
    stats = {k: jnp.stack([r[k] for r in rows]) for k in (*PARAM_STATS, *LAYER_STATS,
                                                          *LOG2_SCALES)}
    stats["loss_value"] = loss.astype(f)
    return grads, stats


def chunk_program(spec: ProbeSpec, with_moments: bool, root_seed, seeds, valid, points,
                  n_points):
    """`gradjax.probe.chunk_program` for any model: the data drawn once per seed, then point
    by point the factory, the inits, and the statistics vmapped over seeds."""
    init_keys = jax.vmap(lambda s: keys.init_key(root_seed, s))(seeds)
    drawn = jax.vmap(lambda k: data.draw_batch(spec, k))(init_keys)
    x_dt = jnp.dtype(spec.dtype)

    def at_point(point):
        init, apply = build(spec, point)

        def one(key, batch):
            params = draw_params(spec, init, key, point)
            x = point["x"] if spec.inputs == "fixed" else batch[0]
            y = point["y"] if spec.targets == "fixed" else batch[1]
            return init_stats(spec, apply, params, jnp.asarray(x, x_dt), y)

        grads, stats = jax.vmap(one)(init_keys, drawn)
        moments = chunk_moments(grads, valid, spec.stat_dtype) if with_moments else None
        return stats, moments

    stats, moments = loop_over_points(at_point, points, n_points)
    if moments is not None:
        moments = {"n": jnp.sum(valid), "moments": moments["moments"]}
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), stats), moments


def _abstract_point(spec: ProbeSpec, points: Mapping[str, Any]) -> dict:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), dict(points))


def shapes(spec: ProbeSpec, points: Mapping[str, Any]) -> tuple[Any, dict]:
    """The shapes of one init's parameters and taps (`jax.eval_shape`, nothing computed)."""
    def run(point):
        init, apply = build(spec, point)
        params = draw_params(spec, init, keys.init_key(0, 0), point)
        x = jnp.zeros((spec.batch, spec.sizes[0]), jnp.dtype(spec.dtype))
        return params, outputs_and_taps(apply, params, x)[1]

    return jax.eval_shape(run, _abstract_point(spec, points))


def positions(spec: ProbeSpec, points: Mapping[str, Any]) -> dict[str, Any]:
    """The position columns of one init's rows: layer, layer_from_output, param and n.

    A model whose parameters are a list of {"name": array} layers (the MLP's form) gets
    layer = list index + 1 and param = the name; any other leaf gets layer = its position
    among the leaves and param = `jax.tree_util.keystr` of its path. Tap rows have
    param = "taps['name']" and layer = l for a tap called layer<l>, else its position among
    the taps.
    """
    params, taps = shapes(spec, points)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    layered = isinstance(params, list) and all(isinstance(p, dict) for p in params)
    layer, param, n = [], [], []
    for i, (path, leaf) in enumerate(leaves, 1):
        if layered:
            layer.append(path[0].idx + 1)
            param.append(jax.tree_util.keystr(path[1:]).strip("[]'\""))
        else:
            layer.append(i)
            param.append(jax.tree_util.keystr(path))
        n.append(int(np.prod(leaf.shape)))
    last_leaf = max(layer, default=0)
    names = natural_order(taps)
    for i, name in enumerate(names, 1):
        match = LAYER.fullmatch(name)
        layer.append(int(match.group(1)) if match else i)
        param.append(f"taps[{name!r}]")
        n.append(int(np.prod(taps[name].shape[1:])))
    layer = np.asarray(layer, np.int64)
    count = np.where(np.arange(len(layer)) < len(leaves), last_leaf, len(names))
    if names and all(LAYER.fullmatch(t) for t in names):
        count[len(leaves):] = last_leaf
    return {"layer": layer, "layer_from_output": layer - count - 1, "param": param,
            "n": np.asarray(n, np.int64)}



def param_count(spec: ProbeSpec, points: Mapping[str, Any]) -> int:
    """Entries of one init's parameters."""
    params, _ = shapes(spec, points)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
