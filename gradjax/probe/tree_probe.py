"""The probe for any model family: statistics per parameter leaf and per tap.

Written for one init and vmapped from outside, like `gradjax.probe.mlp_probe` (with the point
loop, chunk moments and points of `gradjax.probe.chunking`); the family comes from
`gradjax.nn.models.resolve`:

    chunk(root_seed, seeds[C], valid[C], points[P]) -> stats[C, P, rows], moments

Rows are the float parameter leaves in `jax.tree_util` order (integer and boolean leaves are
carried along, with no gradient and no row), then the taps in natural order of their names
(layer2 before layer10); their `layer` numbers follow the forward pass, not that order
(`positions`, `gradjax.nn.layer_order`). A leaf row has the gradient statistics (PARAM_STATS) and
NaN activation statistics; a tap row the reverse. Per-leaf `grad_frac_underflow` is NaN: telling
dead-unit zeros from underflow needs the boolean replay of backprop that only the MLP's own
probe does. `grad_unit_cos_sq` of a leaf with ndim >= 2 takes its last axis as the units (the
MLP's [fan_in, fan_out], Flax's [..., in, out]; Equinox stores [out, in], so there it compares
input units). Activation statistics of a tap need the model's `activation` option; without one
only preact_mean and preact_var are defined.

The factory is called inside the traced point function with the point's traced options (JAX
scalars), so a grid over them compiles once; each init is drawn inside it too (a traced option
may enter `init`), the same key giving the same unit-scale draw at every point.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradjax.nn import data, keys
from gradjax.nn.activations import derivative, get_activation, max_abs_derivative
from gradjax.nn.layer_order import layer_numbers
from gradjax.nn.losses import loss_of_logits
from gradjax.nn.models import Family, resolve
from gradjax.nn.models.family import SCALES
from gradjax.nn.tap_shifts import with_tap_shifts
from gradjax.probe import training
from gradjax.probe.kernel import ProbeKernel
from gradjax.probe.stats import (
    activation_stats,
    batch_moments,
    mean_sq_norm,
    tensor_stats,
    to_host,
    unit_cos_sq,
)
from gradjax.spec import (
    EXAMPLE_STATS,
    LAYER_STATS,
    LEAKY_SLOPE,
    LOG2_SCALES,
    PARAM_STATS,
    ProbeSpec,
    default,
)


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
        options.update({n: point[n] for n in SCALES if n in family.params})
    return family.factory(**options)


def is_param(leaf) -> bool:
    """A float leaf: a parameter (integer and boolean leaves are carried along untouched)."""
    return jnp.issubdtype(leaf.dtype, jnp.floating)


def scale_leaves(params, scale, bias_scale):
    """Every float leaf with ndim >= 2 times `scale`, every 1-D float leaf times
    `bias_scale`."""
    def one(leaf):
        if not is_param(leaf):
            return leaf
        factor = scale if leaf.ndim >= 2 else bias_scale if leaf.ndim == 1 else 1
        return leaf * jnp.asarray(factor, leaf.dtype)

    return jax.tree.map(one, params)


def draw_params(spec: ProbeSpec, init, key: jax.Array, point: Mapping[str, Any],
                leaf_layer: Sequence[int] = ()):
    """One init's parameters at the point: `init(key)`, float leaves in the sweep's dtype,
    then scaled (unless the factory takes the scales itself), then each weight leaf (ndim >= 2)
    of layer `leaf_layer[i]` times the point's `layer_scale` of that layer (`leaf_layers`)."""
    dt = jnp.dtype(spec.dtype)
    params = jax.tree.map(lambda a: a.astype(dt) if is_param(a) else a,
                          jax.tree.map(jnp.asarray, init(key)))
    if not family_of(spec).handles_scale:
        params = scale_leaves(params, point["scale"], point["bias_scale"])
    if not spec.scaled_layers:
        return params
    floats, rebuild = split_params(params)
    factors = point["layer_scale"]
    return rebuild([leaf * factors[layer - 1].astype(leaf.dtype) if leaf.ndim >= 2 else leaf
                    for leaf, layer in zip(floats, leaf_layer, strict=True)])


def layer_count(where: Mapping[str, Any]) -> int:
    """The model's number of layers (modules), from its position columns (`positions`:
    layer_from_output = layer - layers - 1)."""
    return int(where["layer"][0] - where["layer_from_output"][0] - 1)


def leaf_layers(spec: ProbeSpec, point: Mapping[str, Any]) -> np.ndarray:
    """The layer (forward order) of each float leaf, for one point's options (`positions`)."""
    points = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1, *jnp.shape(a)), jnp.result_type(a)),
                          dict(point))
    params, _ = shapes(spec, points)
    return positions(spec, points)["layer"][: len(split_params(params)[0])]


def outputs_and_taps(apply, params, x) -> tuple[jax.Array, dict]:
    """`apply`'s logits and taps ({} without); ValueError for any other kind of result."""
    out = apply(params, x)
    if not isinstance(out, tuple):
        return out, {}
    if len(out) != 2 or not isinstance(out[1], Mapping):
        raise ValueError(f"apply returned a tuple of {len(out)} items; it returns the logits, "
                         "or (logits, taps) with taps a dict name -> [batch, ...] array")
    return out[0], dict(out[1])


def split_params(params) -> tuple[list, Any]:
    """(the float leaves, a function of new float leaves -> the whole params pytree)."""
    leaves, treedef = jax.tree.flatten(params)
    mask = [is_param(a) for a in leaves]

    def rebuild(floats):
        it = iter(floats)
        return treedef.unflatten([next(it) if m else a for a, m in zip(leaves, mask, strict=True)])

    return [a for a, m in zip(leaves, mask, strict=True) if m], rebuild


def leaf_stats(g: jax.Array, f) -> dict[str, jax.Array]:
    g = g.astype(f)
    out = tensor_stats(g, computed=True)
    out["grad_frac_underflow"] = jnp.asarray(jnp.nan, f)
    cos = unit_cos_sq(g.reshape(-1, g.shape[-1]), computed=True) if g.ndim >= 2 else jnp.nan
    out["grad_unit_cos_sq"] = jnp.asarray(cos, f)
    out.update({k: jnp.asarray(jnp.nan, f) for k in LAYER_STATS})
    out.update(delta_log2_scale=jnp.int32(0), preact_log2_scale=jnp.int32(0))
    return out


def tap_stats(u: jax.Array, spec: ProbeSpec, f) -> dict[str, jax.Array]:
    """The activation statistics of one tap u [batch, ...]: LAYER_STATS, and `delta_sq_norm`
    NaN until `delta_stats` sets it."""
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


def delta_stats(delta: jax.Array, f) -> dict[str, jax.Array]:
    """`delta_sq_norm` of a tap's dL/dz [batch, ...]: the mean over the batch of |dL/dz_b|^2
    (scaled, with its `delta_log2_scale`), as the MLP's layers have it."""
    norm, k = mean_sq_norm(delta.reshape(delta.shape[0], -1).astype(f), computed=True)
    return {"delta_sq_norm": norm, "delta_log2_scale": k}


def by_shape(fn, arrays: list) -> list[dict]:
    """[fn(a) for a in arrays], computed once per distinct shape and dtype: arrays alike are
    stacked and `fn` vmapped over them, so compile time grows with the number of distinct
    shapes rather than of leaves (a resmlp's chunk program, width 32: depth 8 compiled in
    8.3 s before, 6.5 s after; depth 32 in 29.8 s before, 15.9 s after)."""
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault((a.shape, str(a.dtype)), []).append(i)
    out: list[dict] = [{}] * len(arrays)
    for members in groups.values():
        if len(members) == 1:
            out[members[0]] = fn(arrays[members[0]])
            continue
        stacked = jax.vmap(fn)(jnp.stack([arrays[i] for i in members]))
        for j, i in enumerate(members):
            out[i] = {k: v[j] for k, v in stacked.items()}
    return out


def init_stats(spec: ProbeSpec, apply, params, x, y):
    """(gradients, statistics as rows) of one init on one batch. dL/dz at the taps comes from
    zero shifts at their roots (`gradjax.nn.tap_shifts`); a tap that cannot be shifted (one
    computed inside a loop) has NaN `delta_sq_norm`."""
    f = spec.stat_dtype
    floats, rebuild = split_params(params)
    names: list[str] = []  # the taps' order, read while with_tap_shifts traces `apply`

    def listed(leaves, xx):
        logits, taps = outputs_and_taps(apply, rebuild(leaves), xx)
        names[:] = natural_order(taps)
        return _listed((logits, taps), names)

    shifted = with_tap_shifts(listed, floats, x)

    def value(leaves, shifts):
        logits, taps = shifted.apply((leaves, x), shifts)
        loss = loss_of_logits(logits, y, loss=spec.loss, output_activation=spec.output_activation,
                              leaky_slope=spec.leaky_slope)
        return loss, taps

    zeros = [jnp.zeros(s.shape, s.dtype) for s in shifted.roots]
    (loss, taps), (grads, root_grads) = jax.value_and_grad(value, argnums=(0, 1),
                                                           has_aux=True)(floats, zeros)
    rows = by_shape(lambda g: leaf_stats(g, f), grads)
    tap_rows = by_shape(lambda u: tap_stats(u, spec, f), taps)
    deltas = shifted.deltas(root_grads)
    shiftable = [i for i, d in enumerate(deltas) if d is not None]
    for i, found in zip(shiftable, by_shape(lambda d: delta_stats(d, f),
                                            [deltas[i] for i in shiftable]), strict=True):
        tap_rows[i] = {**tap_rows[i], **found}
    rows += tap_rows
    stats = {k: jnp.stack([r[k] for r in rows]) for k in (*PARAM_STATS, *LAYER_STATS,
                                                          *LOG2_SCALES)}
    stats["loss_value"] = loss.astype(f)
    return grads, stats


def trained_stats(spec: ProbeSpec, apply, params, point, key, drawn, teacher):
    """`init_stats` after the point's optimizer steps (the float leaves are trained), with
    `loss_halved_step` and `EXAMPLE_STATS` (NaN on tap rows, and unless `per_example`)."""
    floats, rebuild = split_params(params)
    trained = None

    def loss_on(leaves, x, y):
        logits, _ = outputs_and_taps(apply, rebuild(leaves), x)
        return loss_of_logits(logits, y, loss=spec.loss, output_activation=spec.output_activation,
                              leaky_slope=spec.leaky_slope)

    if spec.trains:
        floats, (x, y), trained = training.to_step(
            spec, floats, point, loss_on, lambda t: data.point_batch(spec, key, point, t, teacher))
        params = rebuild(floats)
    else:
        x, y = data.point_batch(spec, key, point, 0, teacher, drawn)
    grads, stats = init_stats(spec, apply, params, x, y)
    stats["loss_halved_step"] = training.halved_step(spec, trained)
    rows = stats["grad_var"].shape[0]
    f = jnp.dtype(spec.stat_dtype)
    for name in EXAMPLE_STATS:
        stats[name] = jnp.full(rows, jnp.nan, f)
    norms = jnp.stack([training.param_sq_norm(p, f) for p in floats])  # the trained leaves
    stats["param_sq_norm"] = stats["param_sq_norm"].at[: len(norms)].set(norms)
    if spec.per_example:
        per_example = jax.vmap(lambda xi, yi: jax.grad(loss_on)(floats, xi[None], yi[None]))(x, y)
        leaf_rows = by_shape(lambda g: training.example_noise(g, f), per_example)
        for name in leaf_rows[0]:
            stats[name] = stats[name].at[: len(leaf_rows)].set(
                jnp.stack([r[name] for r in leaf_rows]))
    return grads, stats


def teacher_of(spec: ProbeSpec, init, apply, key: jax.Array):
    """The init's teacher (targets "teacher"): the family's own init drawn from the init's
    teacher stream, unscaled; x -> its logits. None for other targets."""
    if spec.targets != "teacher":
        return None
    dt = jnp.dtype(spec.dtype)
    params = jax.tree.map(lambda a: a.astype(dt) if is_param(a) else a,
                          jax.tree.map(jnp.asarray, init(keys.teacher_key(key))))
    return lambda x: outputs_and_taps(apply, params, x)[0]


def draw(spec: ProbeSpec, init_key: jax.Array):
    """`ProbeKernel.draw`: the init's data batch (unless fixed). The parameters are drawn at
    each point, since a traced option may enter the factory's `init`."""
    return data.draw_batch(spec, init_key)


def at_point(spec: ProbeSpec, point: dict, drawn, init_keys: jax.Array):
    """`ProbeKernel.at_point` of any model: the factory at the point, then each init drawn,
    trained to the point's step and reduced to its rows, vmapped over the chunk's seeds."""
    init, apply = build(spec, point)
    layers = leaf_layers(spec, point) if spec.scaled_layers else ()

    def one(key, batch):
        params = draw_params(spec, init, key, point, layers)
        return trained_stats(spec, apply, params, point, key, batch,
                             teacher_of(spec, init, apply, key))

    return jax.vmap(one)(init_keys, drawn)


# its statistics run leaf by leaf and tap by tap: costlier per tensor than the layered kernel's
KERNEL = ProbeKernel(draw=draw, at_point=at_point, compile_seconds_per_tensor=0.25,
                     seconds_per_tensor=2.5e-5)


def _one_abstract_point(points: Mapping[str, Any]) -> dict:
    """The shapes of one point of `points` (their leading axis dropped)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), dict(points))


_SHAPES: dict[ProbeSpec, tuple[Any, dict]] = {}  # shapes depend on the spec alone


def shapes(spec: ProbeSpec, points: Mapping[str, Any]) -> tuple[Any, dict]:
    """The shapes of one init's parameters and taps (`jax.eval_shape`, nothing computed;
    once per spec: the checks, the planner and each pack's row positions ask); ValueError
    when `apply`'s logits are not [batch, out_dim] or a tap has no batch axis."""
    if spec not in _SHAPES:
        _SHAPES[spec] = _checked_shapes(spec, points)
    return _SHAPES[spec]


def _checked_shapes(spec: ProbeSpec, points: Mapping[str, Any]) -> tuple[Any, dict]:
    def run(point):
        init, apply = build(spec, point)
        # shapes do not depend on layer_scale, and the layers it is indexed by come from them
        params = draw_params(dataclasses.replace(spec, scaled_layers=0), init,
                             keys.init_key(0, 0), point)
        x = jnp.zeros((spec.batch, spec.sizes[0]), jnp.dtype(spec.dtype))
        logits, taps = outputs_and_taps(apply, params, x)
        return params, logits, taps

    params, logits, taps = jax.eval_shape(run, _one_abstract_point(points))
    want = (spec.batch, spec.sizes[-1])
    if tuple(logits.shape) != want:
        raise ValueError(f"apply returned logits of shape {tuple(logits.shape)}; expected "
                         f"(batch, out_dim) = {want}")
    for name, tap in taps.items():
        if not hasattr(tap, "shape") or tap.ndim < 1 or tap.shape[0] != spec.batch:
            raise ValueError(f"tap {name!r} is not an array [batch = {spec.batch}, ...]")
    return params, taps


def positions(spec: ProbeSpec, points: Mapping[str, Any]) -> dict[str, Any]:
    """The position columns of one init's rows: layer, layer_from_output, param and n.

    Rows are the float leaves, then the taps (`natural_order`). `layer` numbers the model's
    modules in forward order and a tap takes the layer of the leaves that produce it
    (`gradjax.nn.layer_order`); `layer_from_output` is -1 on the output layer (the last module)
    for every model. `param` is a leaf's `jax.tree_util.keystr` path, or just "W" / "b" for
    parameters laid out as a list of {"W", "b"} layers (the built-in families'), and
    "taps['name']" for a tap.
    """
    if spec not in _POSITIONS:
        _POSITIONS[spec] = _positions(spec, points)
    return _POSITIONS[spec]


_POSITIONS: dict[ProbeSpec, dict[str, Any]] = {}  # positions depend on the spec alone


def _positions(spec: ProbeSpec, points: Mapping[str, Any]) -> dict[str, Any]:
    params, taps = shapes(spec, points)
    x = jax.ShapeDtypeStruct((spec.batch, spec.sizes[0]), jnp.dtype(spec.dtype))
    return model_positions(lambda p, xx, point: build(spec, point)[1](p, xx), params, taps, x,
                           _one_abstract_point(points))


def model_positions(apply: Callable, params: Any, taps: Mapping[str, Any], x: Any,
                    extra: Any = ()) -> dict[str, Any]:
    """The position columns (`positions`) of a model's rows, from `apply(params, x, extra)`
    (logits, or (logits, taps)) and the shapes of its params, taps and batch x."""
    flat = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]
    leaves = [(path, leaf) for path, leaf in flat if is_param(leaf)]
    names = natural_order(taps)
    concrete = [jnp.zeros(leaf.shape, leaf.dtype) for _, leaf in flat]
    treedef = jax.tree.structure(params)

    def apply_leaves(floats, xx, point):
        it = iter(floats)
        whole = [next(it) if is_param(c) else c for c in concrete]
        return outputs_and_taps(lambda p, b: apply(p, b, point), treedef.unflatten(whole), xx)

    leaf_layer, tap_layer, n_layers = layer_numbers(
        apply_leaves, [jax.ShapeDtypeStruct(a.shape, a.dtype) for _, a in leaves], x,
        [path for path, _ in leaves], names, extra)
    layered = isinstance(params, list) and all(
        isinstance(p, dict) and set(p) <= {"W", "b"} for p in params)
    param = [jax.tree_util.keystr(path[1:] if layered else path) for path, _ in leaves]
    if layered:
        param = [p.strip("[]'\"") for p in param]
    layer = np.concatenate([leaf_layer, tap_layer]).astype(np.int64)
    n = [int(np.prod(leaf.shape)) for _, leaf in leaves]
    n += [int(np.prod(taps[name].shape[1:])) for name in names]
    # for `gradjax.results.schema.not_applicable` only (no table stores it): a leaf's units
    # (its last axis, as grad_unit_cos_sq takes them), 0 for a 1-D leaf and a tap
    units = [leaf.shape[-1] if len(leaf.shape) >= 2 else 0 for _, leaf in leaves]
    # and whether a tap has dL/dz (a zero shift reaches every use of it)
    abstract = [jax.ShapeDtypeStruct(a.shape, a.dtype) for _, a in leaves]
    dz = with_tap_shifts(lambda ls, xx, point: _listed(apply_leaves(ls, xx, point), names),
                         abstract, x, extra).shiftable
    return {"layer": layer, "layer_from_output": layer - n_layers - 1,
            "param": param + [f"taps[{name!r}]" for name in names],
            "n": np.asarray(n, np.int64), "units": np.asarray(units + [0] * len(names)),
            "dz": np.asarray([False] * len(leaves) + dz, bool)}


def _listed(out: tuple[Any, dict], names: list[str]) -> tuple[Any, list]:
    """(logits, taps in the order of `names`) from `outputs_and_taps`' (logits, dict)."""
    return out[0], [out[1][name] for name in names]


def model_grad_stats(model: tuple[Callable, Callable], x, y, *, params: Any = None,
                     key: jax.Array | None = None, activation: str | None = None,
                     loss: str = default("loss"),
                     output_activation: str = default("output_activation"),
                     leaky_slope: float = LEAKY_SLOPE) -> dict[str, Any]:
    """`gradjax.grad_stats` of any `(init, apply)` model: one init's statistics per float
    parameter leaf and per tap, as host numpy arrays [rows], beside the rows' position columns
    (`layer` in forward order, `layer_from_output`, `param`, `n`); `loss_value` a scalar.

    `params` are the model's parameters (e.g. `init(key)` scaled as you like); without them
    `init(key)` is drawn. `activation` names the activation of its taps (their act_* statistics;
    None: only preact_mean and preact_var). Rows follow the sweep's per-seed table of a plug-in
    cell, so `gradjax.stats_frame` makes them the same frame.
    """
    init, apply = model
    if params is None:
        if key is None:
            raise TypeError("grad_stats of an (init, apply) model takes params=... or key=... "
                            "(to draw init(key))")
        params = init(key)
    x, y = jnp.asarray(x), jnp.asarray(y)
    floats, _ = split_params(params)
    logits, taps = jax.eval_shape(lambda p, b: outputs_and_taps(apply, p, b), params, x)
    spec = ProbeSpec(sizes=(int(x.shape[-1]), int(logits.shape[-1])), activation=activation,
                     output_activation=output_activation, loss=loss, leaky_slope=leaky_slope,
                     dtype=str(floats[0].dtype), batch=int(x.shape[0]), inputs="fixed",
                     targets="fixed", model="(init, apply)")
    stats = jax.jit(lambda p, b, t: init_stats(spec, apply, p, b, t)[1])(params, x, y)
    positions = model_positions(lambda p, b, _: apply(p, b), params, taps,
                                jax.ShapeDtypeStruct(x.shape, x.dtype))
    return {**positions, **to_host(stats)}


def param_count(spec: ProbeSpec, points: Mapping[str, Any]) -> int:
    """Entries of one init's parameters."""
    params, _ = shapes(spec, points)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params) if is_param(leaf))


def param_tensors(spec: ProbeSpec, points: Mapping[str, Any]) -> int:
    """Float leaves (parameter tensors) of one init."""
    params, _ = shapes(spec, points)
    return sum(1 for leaf in jax.tree.leaves(params) if is_param(leaf))
