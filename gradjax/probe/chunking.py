"""The chunk program's plumbing that every probe shares: the traced per-point values
(`make_points`, `pad_points`), the loop over points (`loop_over_points`), and the per-entry
moments across a chunk's seeds (`chunk_moments`) with their way back to the host."""

from __future__ import annotations

from typing import Any

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

from gradjax.nn import keys
from gradjax.probe import pow2
from gradjax.probe.kernel import ProbeKernel
from gradjax.probe.stats import (
    scaled,
    shifted_moments,
)
from gradjax.spec import MIN_ARRAY_AXIS, ProbeSpec


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


def loop_over_points(fn, points, n_points):
    """[fn(point) for point in points], stacked, as a loop whose trip count is a runtime value.

    XLA would inline a loop of known length 1 and fuse its body differently; with `n_points`
    traced, one point runs exactly the code that many points do.

    `fn` is traced once: the loop body evaluates that jaxpr (the buffers of the results need
    its output shapes before the body exists, and tracing a probe is a large part of its
    compile).
    """
    p = jax.tree.leaves(points)[0].shape[0]
    one_point = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), points)
    traced, shapes = jax.make_jaxpr(fn, return_shape=True)(one_point)
    apply = jax.extend.core.jaxpr_as_fun(traced)
    out_tree = jax.tree.structure(shapes)
    init = jax.tree.map(lambda s: jnp.zeros((p, *s.shape), s.dtype), shapes)

    def body(i, acc):
        out = apply(*jax.tree.leaves(jax.tree.map(lambda a: a[i], points)))
        out = jax.tree.unflatten(out_tree, out)
        return jax.tree.map(lambda a, o: a.at[i].set(o), acc, out)

    return jax.lax.fori_loop(0, n_points, body, init)


def make_points(spec: ProbeSpec, scales, bias_scales, xs=None, ys=None, model=None,
                train=None, layer_scales=None) -> dict[str, jax.Array]:
    """The traced per-point values; `layer_scale` [P, layers] where given; fixed
    inputs/targets are [P, batch, dim] arrays, a
    model's own traced options (`model`, name -> [P]) go under "model", a training bucket's
    step (int32) and optimizer settings (`train`, name -> [P]) under "train"."""
    dt = jnp.dtype(spec.dtype)
    points = {
        "scale": jnp.asarray(np.asarray(scales, np.float64), dt),
        "bias_scale": jnp.asarray(np.asarray(bias_scales, np.float64), dt),
    }
    if layer_scales is not None:
        points["layer_scale"] = jnp.asarray(np.asarray(layer_scales, np.float64), dt)
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
    """Points padded to at least MIN_ARRAY_AXIS slots by repeating the last; returns (padded,
    real P).

    The padding is never computed (the point loop runs over the real points only); it keeps
    the points axis from having size 1, which XLA would simplify away, compiling the per-point
    code differently.
    """
    n = jax.tree.leaves(points)[0].shape[0]
    if n >= MIN_ARRAY_AXIS:
        return points, n
    return jax.tree.map(lambda a: jnp.concatenate([a] + [a[-1:]] * (MIN_ARRAY_AXIS - n)), points), n


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


def chunk_program(kernel: ProbeKernel, spec: ProbeSpec, with_moments: bool, root_seed, seeds,
                  valid, points, n_points):
    """The one chunk program of every model: (root_seed, seeds [C], valid [C], points [P], P)
    -> (stats [C, P, ...], moments or None).

    Each seed's init key and what it draws (`kernel.draw`) are taken once; then, point by point
    (`loop_over_points`), `kernel.at_point` takes the chunk of inits to gradients and
    statistics, and `chunk_moments` reduces the gradients across the valid seeds.
    """
    init_keys = jax.vmap(lambda s: keys.init_key(root_seed, s))(seeds)
    drawn = jax.vmap(lambda k: kernel.draw(spec, k))(init_keys)

    def at_point(point):
        grads, stats = kernel.at_point(spec, point, drawn, init_keys)
        moments = chunk_moments(grads, valid, spec.stat_dtype) if with_moments else None
        return stats, moments

    stats, moments = loop_over_points(at_point, points, n_points)
    if moments is not None:
        moments = {"n": jnp.sum(valid), "moments": moments["moments"]}
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), stats), moments
