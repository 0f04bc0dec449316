"""Random streams: one init's randomness depends only on (root_seed, seed index).

    init_key   = fold_in(key(root_seed), seed)
    weight key = fold_in(fold_in(init_key, WEIGHTS), layer)
    bias key   = fold_in(fold_in(init_key, BIASES), layer)
    data key   = fold_in(init_key, DATA)        (then INPUTS / TARGETS; step t >= 1 of
                                                 training folds in t, see `gradjax.nn.data`)
    teacher    = fold_in(init_key, TEACHER)     (a teacher network's weights and biases, drawn
                                                 from it as an init's are from init_key)

Cells never enter the derivation, so every cell of the same shape sees the same draws for the
same seed (common random numbers): a scale sweep varies only the scale, and any single
(cell, seed) can be recomputed alone. Layers are numbered from 1 (the first weight layer).
"""

from __future__ import annotations

import jax

from gradjax.nn import xla

UNROLLED_THREEFRY = xla.unroll_threefry_on_cpu()  # before any draw is compiled (same bits)
WEIGHTS, BIASES, DATA, TEACHER = 0, 1, 2, 3
INPUTS, TARGETS = 0, 1


def init_key(root_seed: int | jax.Array, seed: int | jax.Array) -> jax.Array:
    """The typed key of init number `seed` of a sweep with `root_seed`: everything that init
    draws derives from it, so `gradjax.init_mlp(init_key(root_seed, seed), sizes, init=...,
    scale=..., bias_init=..., bias_scale=...)` rebuilds the parameters the sweep used, bit for
    bit (tests/test_probe.py)."""
    return jax.random.fold_in(jax.random.key(root_seed), seed)


def weight_key(key: jax.Array, layer: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(key, WEIGHTS), layer)


def bias_key(key: jax.Array, layer: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(key, BIASES), layer)


def data_key(key: jax.Array, which: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(key, DATA), which)


def teacher_key(key: jax.Array) -> jax.Array:
    return jax.random.fold_in(key, TEACHER)
