"""The per-layer criteria, `unit-variance` and `equal-gradients`: one multiplier per layer for
its weight leaves (ndim >= 2), found for every init of a cell in one compiled call.

Both are written for one init and vmapped over the cell's seeds. An init is the one the sweep
runs (the same key, data batch and scales, `gradjax.probe.tree_probe.draw_params`), in the
generic `(init, apply)` form of its family, so every model is tuned the same way. Layers are
numbered in forward order (`gradjax.nn.layer_order`), as the `layer` column numbers them.

- `unit_variance` is LSUV's procedure (Mishkin & Matas 2015, "All you need is a good init"):
  layer by layer in forward order, its weights are divided by the standard deviation of its
  pre-activations (its tap's values over the batch's examples x units) until that variance is
  1; `UNIT_VARIANCE_PASSES` passes per layer, where the paper stops at |var - 1| < 0.1 (one
  pass is exact for a layer without a bias; a bias needs more). Layers without a tap are left
  at 1.
- `equal_gradients` balances |dL/dW_l|^2 (W: the layer's largest weight leaf): each pass
  multiplies every layer's weights by (|dL/dW_l|^2 / g)^(EQUAL_STEP), g the geometric mean
  over the layers. In a network that is positively homogeneous in each layer's weights
  (linear, ReLU without bias) |dL/dW_l| is proportional to the product of the *other* layers'
  multipliers, so a step of 1/2 would equalize them in one pass; the step of 1/4 halves the
  imbalance in ln |dL/dW_l|^2 each pass there, and keeps a saturating network (tanh), where a
  full step overshoots, from oscillating. An init stops when its largest |dL/dW_l|^2 is within
  EQUAL_SETTLED of its smallest, or after EQUAL_GRADIENT_PASSES passes. Either way the
  geometric mean of the multipliers stays 1, so a homogeneous network computes the same
  function. This is the balance GradInit (Zhu et al. 2021) learns, solved here from the
  gradients.

A layer whose measured value is 0 or not finite (dead units, underflow) keeps its multiplier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradjax.nn import data, keys
from gradjax.nn.losses import loss_of_logits
from gradjax.probe import tree_probe
from gradjax.probe.chunking import make_points
from gradjax.spec import ProbeSpec, capabilities
from gradjax.sweep import Cell, Sweep

UNIT_VARIANCE_PASSES = 4  # per layer; LSUV's own stopping rule is |var - 1| < UNIT_TOLERANCE
UNIT_TOLERANCE = 0.1
EQUAL_GRADIENT_PASSES = 200  # at most; an init stops once its spread is EQUAL_SETTLED
EQUAL_SETTLED = 1.1  # largest over smallest |dL/dW_l|^2
EQUAL_STEP = 0.25  # of ln(|dL/dW_l|^2 / g) per pass; 0.5 is exact for homogeneous networks
EQUAL_FACTOR = 2.0  # the criterion holds when max over min of |dL/dW_l|^2 is at most this


@dataclasses.dataclass(frozen=True)
class CellModel:
    """One cell's model in the generic form, with where its leaves and taps sit.

    `leaf_layer[i]` is the layer of float leaf i and `leaf_path[i]` its
    `jax.tree_util.keystr` path in the params pytree that `init(key)` returns, `leaf_size[i]`
    its entries; `weights` the leaves with ndim >= 2; `tap_of_layer` maps a layer to the first
    tap (in `tap_names`' order) that it produces; `n_layers` counts the model's modules."""

    spec: ProbeSpec
    point: dict[str, Any]
    leaf_layer: np.ndarray
    leaf_path: tuple[str, ...]
    leaf_size: np.ndarray
    weights: np.ndarray
    tap_names: tuple[str, ...]
    tap_of_layer: dict[int, int]
    n_layers: int

    def weight_layers(self) -> np.ndarray:
        """The layers that have a weight leaf, in forward order."""
        return np.unique(self.leaf_layer[self.weights])


def generic_spec(cell: Cell) -> ProbeSpec:
    """The cell's program spec in the `(init, apply)` form every family has: a family whose
    probe reads its shapes from the options (the MLP's) gets its factory's options too."""
    spec = cell.spec
    if not capabilities(spec.model).shapes_from_options:
        return spec
    return dataclasses.replace(spec, model_options=cell.model_options(),
                               model_folder=cell.folder)


def cell_model(sweep: Sweep) -> CellModel:
    """The model of a one-cell sweep (its first cell), at that cell's point."""
    bucket = sweep.buckets()[0]
    cell = bucket.cells[0]
    points = make_points(bucket.spec, **bucket.points([cell]))
    spec = generic_spec(cell)
    params, taps = tree_probe.shapes(spec, points)
    where = tree_probe.positions(spec, points)
    paths = [jax.tree_util.keystr(path) for path, leaf
             in jax.tree_util.tree_flatten_with_path(params)[0] if tree_probe.is_param(leaf)]
    floats, _ = tree_probe.split_params(params)
    n_leaves = len(floats)
    tap_names = tuple(tree_probe.natural_order(taps))
    tap_layer = where["layer"][n_leaves:]
    tap_of_layer: dict[int, int] = {}
    for i, layer in enumerate(tap_layer):
        tap_of_layer.setdefault(int(layer), i)
    return CellModel(spec, jax.tree.map(lambda a: a[0], points), where["layer"][:n_leaves],
                     tuple(paths), where["n"][:n_leaves],
                     np.asarray([leaf.ndim >= 2 for leaf in floats]), tap_names, tap_of_layer,
                     tree_probe.layer_count(where))


def init_problem(model: CellModel, key: jax.Array):
    """(float leaves, rebuild, apply, x, y) of one init: the sweep's own draw of it."""
    spec, point = model.spec, model.point
    init, apply = tree_probe.build(spec, point)
    params = tree_probe.draw_params(spec, init, key, point, model.leaf_layer)
    teacher = tree_probe.teacher_of(spec, init, apply, key)
    x, y = data.point_batch(spec, key, point, 0, teacher, data.draw_batch(spec, key))
    floats, rebuild = tree_probe.split_params(params)
    return floats, rebuild, apply, x, y


def scaled(model: CellModel, floats: list, multipliers: jax.Array) -> list:
    """The float leaves with each weight leaf times its layer's multiplier."""
    return [leaf * multipliers[layer - 1].astype(leaf.dtype) if weight else leaf
            for leaf, layer, weight in zip(floats, model.leaf_layer, model.weights, strict=True)]


def unit_variance(model: CellModel, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(multipliers [n_layers], whether every tapped layer whose variance is measured ends
    within UNIT_TOLERANCE of variance 1) of one init, by LSUV's layer-by-layer procedure
    (module docstring)."""
    floats, rebuild, apply, x, _ = init_problem(model, key)
    layers = [layer for layer in model.weight_layers() if int(layer) in model.tap_of_layer]
    taps = [model.tap_names[model.tap_of_layer[int(layer)]] for layer in layers]

    def variances(m):
        _, out = tree_probe.outputs_and_taps(apply, rebuild(scaled(model, floats, m)), x)
        return jnp.stack([jnp.var(out[name].reshape(out[name].shape[0], -1).astype(jnp.float32))
                          for name in taps])

    order = jnp.asarray(np.asarray(layers, np.int32) - 1)

    def one_pass(i, m):
        j = i // UNIT_VARIANCE_PASSES
        v = variances(m)[j]
        ok = jnp.isfinite(v) & (v > 0)
        return m.at[order[j]].multiply(jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, v, 1.0)), 1.0))

    m = jnp.ones(model.n_layers, jnp.float32)
    if not layers:
        return m, jnp.asarray(False)
    m = jax.lax.fori_loop(0, len(layers) * UNIT_VARIANCE_PASSES, one_pass, m)
    v = variances(m)
    measured = jnp.isfinite(v) & (v > 0)  # a variance over one value is 0: not measured
    return m, jnp.any(measured) & jnp.all(~measured | (jnp.abs(v - 1) < UNIT_TOLERANCE))


def largest_weights(model: CellModel) -> list[int]:
    """For each layer with a weight leaf, the index of its largest one (most entries, the
    first of equals): the layer's W, as the check round's `balance` reads it."""
    chosen: dict[int, int] = {}
    for i, (layer, weight) in enumerate(zip(model.leaf_layer, model.weights, strict=True)):
        best = chosen.get(int(layer))
        if weight and (best is None or model.leaf_size[i] > model.leaf_size[best]):
            chosen[int(layer)] = i
    return [chosen[layer] for layer in sorted(chosen)]


def layer_grad_sq(model: CellModel, floats: list, rebuild: Callable, apply: Callable, x, y,
                  m: jax.Array) -> jax.Array:
    """|dL/dW_l|^2 per layer [n_layers] at the multipliers `m`, W the layer's largest weight
    leaf (`largest_weights`; 0 for a layer without one)."""
    spec = model.spec

    def loss(leaves):
        logits, _ = tree_probe.outputs_and_taps(apply, rebuild(leaves), x)
        return loss_of_logits(logits, y, loss=spec.loss,
                              output_activation=spec.output_activation,
                              leaky_slope=spec.leaky_slope)

    grads = jax.grad(loss)(scaled(model, floats, m))
    chosen = largest_weights(model)
    sq = jnp.stack([jnp.sum(jnp.square(grads[i].astype(jnp.float32))) for i in chosen])
    layers = jnp.asarray(model.leaf_layer[chosen] - 1)
    return jnp.zeros(model.n_layers, jnp.float32).at[layers].set(sq)


def equal_gradients(model: CellModel, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(multipliers [n_layers], whether max over min of |dL/dW_l|^2 ends at most
    EQUAL_FACTOR) of one init, by the balancing passes of the module docstring."""
    floats, rebuild, apply, x, y = init_problem(model, key)
    has_weights = np.zeros(model.n_layers, bool)
    has_weights[model.weight_layers() - 1] = True
    has_weights = jnp.asarray(has_weights)

    def measured(m):
        g = layer_grad_sq(model, floats, rebuild, apply, x, y, m)
        return g, has_weights & jnp.isfinite(g) & (g > 0)

    def spread(g, ok):
        return jnp.max(jnp.where(ok, g, 0.0)) / jnp.min(jnp.where(ok, g, jnp.inf))

    def unsettled(state):
        passes, _, g, ok = state
        return (passes < EQUAL_GRADIENT_PASSES) & (spread(g, ok) > EQUAL_SETTLED)

    def one_pass(state):
        passes, m, g, ok = state
        logs = jnp.log(jnp.where(ok, g, 1.0))
        centred = logs - jnp.sum(jnp.where(ok, logs, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
        m = m * jnp.exp(EQUAL_STEP * jnp.where(ok, centred, 0.0))
        return (passes + 1, m, *measured(m))

    m = jnp.ones(model.n_layers, jnp.float32)
    _, m, g, ok = jax.lax.while_loop(unsettled, one_pass, (0, m, *measured(m)))
    return m, jnp.all(ok == has_weights) & (spread(g, ok) <= EQUAL_FACTOR)


PROCEDURES: dict[str, Callable[[CellModel, jax.Array], tuple[jax.Array, jax.Array]]] = {
    "unit-variance": unit_variance,
    "equal-gradients": equal_gradients,
}


def multipliers(criterion: str, model: CellModel, root_seed: int,
                seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Every init's multipliers [seeds, n_layers] and whether its own criterion holds at them
    [seeds]: one compiled call, vmapped over the seeds."""
    procedure = PROCEDURES[criterion]

    @jax.jit
    def run(ids):
        init_keys = jax.vmap(lambda s: keys.init_key(root_seed, s))(ids)
        return jax.vmap(lambda k: procedure(model, k))(init_keys)

    m, held = run(jnp.arange(seeds, dtype=jnp.uint32))
    return np.asarray(m, np.float64), np.asarray(held, bool)
