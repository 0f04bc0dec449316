"""Activation functions by name, all taken from `jax.nn`.

Conventions worth knowing:
  * `relu` is `jax.nn.relu`, whose derivative at exactly 0 is 0 (so a unit with z == 0 is dead).
  * `gelu` is the exact, erf-based GELU (`jax.nn.gelu(x, approximate=False)`), as in PyTorch's
    default; Hendrycks & Gimpel (2016).
  * `leaky_relu` has slope 0.01 for x < 0 unless `leaky_slope` is given.
  * `linear` is the identity.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradjax.spec import ACTIVATIONS
from gradjax.spec.option import LEAKY_SLOPE

Activation = Callable[[jax.Array], jax.Array]

_FIXED: dict[str, Activation] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jax.nn.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "silu": jax.nn.silu,
    "swish": jax.nn.swish,
    "softplus": jax.nn.softplus,
    "soft_sign": jax.nn.soft_sign,
    "hard_tanh": jax.nn.hard_tanh,
    "linear": jax.nn.identity,
}


def get_activation(name: str, *, leaky_slope: float = LEAKY_SLOPE) -> Activation:
    """The elementwise function called `name`; raises ValueError listing the allowed names."""
    if name == "leaky_relu":
        return functools.partial(jax.nn.leaky_relu, negative_slope=leaky_slope)
    try:
        return _FIXED[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}"
        ) from None


def derivative(fn: Activation, x: jax.Array) -> jax.Array:
    """Elementwise derivative phi'(x) by one forward-mode pass (exact, not a finite difference)."""
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))[1]


@functools.cache
def max_abs_derivative(name: str, leaky_slope: float = LEAKY_SLOPE) -> float:
    """sup_x |phi'(x)|, the reference for "saturated" (|phi'| < 1% of it).

    Found on a dense grid over [-30, 30] in float64 numpy-equivalent precision; the suprema of
    every listed activation are attained inside that range (e.g. 0.25 for sigmoid, 1 for tanh,
    lambda * alpha ~ 1.7581 for selu as x -> 0-).
    """
    fn = get_activation(name, leaky_slope=leaky_slope)
    grid = np.concatenate([np.linspace(-30.0, 30.0, 600_001), [-1e-7, 1e-7]]).astype(np.float32)
    with jax.ensure_compile_time_eval():  # may be first called while tracing the probe
        return float(jnp.max(jnp.abs(derivative(fn, jnp.asarray(grid)))))
