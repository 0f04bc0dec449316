"""Reductions of one gradient tensor (or one layer's batch of pre-activations) to scalars.

Every statistic here is taken over the *entries of one tensor for one init*; statistics across
inits (seeds) are computed later, in `gradjax.summary`. All functions are written for a single
init and are vmapped from outside.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

TENSOR_STATS: tuple[str, ...] = (
    "grad_mean",
    "grad_var",
    "grad_sq_norm",
    "grad_max_abs",
    "grad_mean_abs",
    "grad_cv",
    "grad_frac_zero",
    "grad_frac_subnormal",
    "grad_nonfinite",
)


def tensor_stats(g: jax.Array) -> dict[str, jax.Array]:
    """Statistics over the entries of one gradient tensor g (population variance, ddof=0).

    grad_cv = std / mean|g| (NaN when every entry is 0). grad_frac_subnormal counts nonzero
    entries below the dtype's smallest normal number; note that XLA on CPU flushes subnormals
    to zero, so there underflow shows up as exact zeros (see `grad_frac_underflow`).
    """
    g = g.reshape(-1)
    n = g.size
    absg = jnp.abs(g)
    mean = jnp.mean(g)
    var = jnp.mean(jnp.square(g - mean))
    mean_abs = jnp.mean(absg)
    zero = g == 0
    safe_mean_abs = jnp.where(mean_abs > 0, mean_abs, 1)
    tiny = jnp.finfo(g.dtype).tiny
    return {
        "grad_mean": mean,
        "grad_var": var,
        "grad_sq_norm": jnp.sum(jnp.square(g)),
        "grad_max_abs": jnp.max(absg),
        "grad_mean_abs": mean_abs,
        "grad_cv": jnp.where(mean_abs > 0, jnp.sqrt(var) / safe_mean_abs, jnp.nan),
        "grad_frac_zero": jnp.sum(zero, dtype=g.dtype) / n,
        "grad_frac_subnormal": jnp.sum((~zero) & (absg < tiny), dtype=g.dtype) / n,
        "grad_nonfinite": jnp.sum(~jnp.isfinite(g), dtype=g.dtype),
    }


def unit_cosine(g_w: jax.Array) -> jax.Array:
    """Mean pairwise cosine similarity between the gradient vectors of a layer's output units.

    g_w is [fan_in, fan_out]; unit j's gradient vector is column j. With unit vectors u_j,
    sum_{j != k} u_j . u_k = |sum_j u_j|^2 - m, where sum_j u_j = g_w @ (1 / norms) and m is the
    number of units with a nonzero gradient, so the mean over the m(m-1) ordered pairs costs
    one mat-vec, not a Gram matrix. Units whose gradient is exactly zero have no direction and
    are left out; NaN when fewer than two units remain. 1.0 means every unit receives the same
    gradient (the symmetric, `constant` init).
    """
    norms = jnp.sqrt(jnp.sum(jnp.square(g_w), axis=0))
    alive = norms > 0
    m = jnp.sum(alive, dtype=g_w.dtype)
    total = g_w @ jnp.where(alive, 1 / jnp.where(alive, norms, 1), 0)
    pairs = jnp.sum(jnp.square(total)) - m
    return jnp.where(m >= 2, pairs / jnp.where(m >= 2, m * (m - 1), 1), jnp.nan)


def batch_moments(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and population variance over all entries of a [batch, units] array."""
    mean = jnp.mean(u)
    return mean, jnp.mean(jnp.square(u - mean))
