"""Weight and bias initializers by name, drawn at unit scale and then multiplied by `scale`.

Every weight init is drawn once per seed at scale 1 and multiplied by the (traced) `scale`, so
a sweep over scales reuses the same draws (common random numbers). `scale` multiplies the
standard deviation; in mean-field terms, plain N(0, scale^2) means sigma_w^2 = scale^2 * fan_in,
while `fan_in_normal` is N(0, scale^2 / fan_in), i.e. sigma_w = scale (Poole et al. 2016).

The `glorot_*`, `he_*`, `lecun_*` normals come from `jax.nn.initializers` and are *truncated*
normals (at +-2 std) rescaled so that their variance is the nominal one (e.g. 2 / fan_in for He).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.nn import initializers as jinit

Draw = Callable[[jax.Array, tuple[int, int], jnp.dtype], jax.Array]


def _normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)


def _uniform(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)


def _fan_in_normal(key, shape, dtype):
    return jax.random.normal(key, shape, dtype) / jnp.sqrt(jnp.asarray(shape[0], dtype))


def _ones(key, shape, dtype):
    del key
    return jnp.ones(shape, dtype)


def _zeros(key, shape, dtype):
    del key
    return jnp.zeros(shape, dtype)


def _from_jax(make: Callable[[], jinit.Initializer]) -> Draw:
    initializer = make()
    return lambda key, shape, dtype: initializer(key, shape, dtype)


WEIGHT_DRAWS: dict[str, Draw] = {
    "normal": _normal,
    "uniform": _uniform,
    "glorot_normal": _from_jax(jinit.glorot_normal),
    "glorot_uniform": _from_jax(jinit.glorot_uniform),
    "he_normal": _from_jax(jinit.he_normal),
    "he_uniform": _from_jax(jinit.he_uniform),
    "lecun_normal": _from_jax(jinit.lecun_normal),
    "lecun_uniform": _from_jax(jinit.lecun_uniform),
    "fan_in_normal": _fan_in_normal,
    "orthogonal": _from_jax(jinit.orthogonal),
    "constant": _ones,
    "zeros": _zeros,
}

BIAS_DRAWS: dict[str, Draw] = {"zeros": _zeros, "constant": _ones, "normal": _normal}


def _lookup(table: dict[str, Draw], name: str, what: str) -> Draw:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(table)}") from None


def draw_weight(name: str, key: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    """A [fan_in, fan_out] weight matrix from init `name` at scale 1."""
    return _lookup(WEIGHT_DRAWS, name, "init")(key, shape, dtype)


def draw_bias(name: str, key: jax.Array, size: int, dtype) -> jax.Array:
    """A [fan_out] bias vector from bias init `name` at bias_scale 1."""
    return _lookup(BIAS_DRAWS, name, "bias_init")(key, (size,), dtype)
