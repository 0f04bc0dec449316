"""Reductions of one gradient tensor (or one layer's batch of pre-activations) to scalars.

Every statistic here is taken over the *entries of one tensor for one init*; statistics across
inits (seeds) are computed later, in `gradjax.results.summary`. All functions are written for a
single init and are vmapped from outside.

Magnitudes never underflow or overflow. A statistic with a unit (a mean, a variance, a squared
norm) is computed on the tensor rescaled by an exact power of two, 2**-k with k the exponent of
its largest |entry| (`gradjax.probe.pow2`), and returned in those scaled units beside k (the
`*_log2_scale` outputs named in `SCALED`); `to_host` undoes the scaling in float64. A float32
gradient whose entries are ~1e-23 has squares below float32's range, yet its variance comes out
right to rounding, and `grad_cv` is 0 only when every entry really is the same value. Statistics
without a unit (cv, fractions, cosines) are computed on the scaled tensor and need nothing.

`computed=True` (what the probe passes) scales by float multiplies instead of bit arithmetic;
see `scaled` for why that is exact for values the device computed.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from gradjax.probe import pow2
from gradjax.spec import LOG2_SCALES, SATURATION, SCALED


def scaled(x: jax.Array, axis=None, computed: bool = False) -> tuple[jax.Array, jax.Array]:
    """(x * 2**-k, k) with k = floor(log2 max|x|) over `axis` (kept as a broadcastable axis):
    the largest finite |entry| scales into [1, 2). `computed=True` says x was computed on the
    device (the probe's gradients, dL/dz, pre-activations), so it holds no subnormal the backend
    cannot compute with, and the scaling can be a float multiply (`pow2.multiply`, 2-3x faster
    in a fused reduction than the bit-exact `pow2.times_pow2`, same bits on every normal entry)."""
    k = pow2.max_exponent(x, axis=axis)
    k_b = k if axis is None else jnp.expand_dims(k, axis)
    return (pow2.multiply if computed else pow2.times_pow2)(x, -k_b), k


def shifted_moments(s: jax.Array, weights: jax.Array | None = None, axis: int = 0
                    ) -> tuple[jax.Array, jax.Array]:
    """Mean and sum of squared deviations along `axis` (with 0/1 `weights`, whose first entry
    along the axis is 1), the deviations taken from the first entry (shifted data): entries that
    are all equal give exactly 0, whatever the rounding of the mean. A non-finite first entry
    shifts by 0 instead, so an inf still gives an inf mean rather than NaN."""
    first = jax.lax.index_in_dim(s, 0, axis)
    first = jnp.where(jnp.isfinite(first), first, 0)
    shifted = s - first
    w = jnp.ones_like(s) if weights is None else weights.astype(s.dtype)
    n = jnp.sum(w, axis=axis, keepdims=True)
    shift = jnp.sum(w * shifted, axis=axis, keepdims=True) / n
    m2 = jnp.sum(w * jnp.square(shifted - shift), axis=axis)
    return jnp.squeeze(first + shift, axis), m2


def _mean_var(s: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and population variance of a flat array (`shifted_moments`)."""
    mean, m2 = shifted_moments(s)
    return mean, m2 / s.shape[0]


def tensor_stats(g: jax.Array, computed: bool = False) -> dict[str, jax.Array]:
    """Statistics over the entries of one gradient tensor g (population variance, ddof=0).

    Returns the TENSOR_STATS (the magnitudes scaled, see the module docstring) and
    `grad_log2_scale`. grad_cv = std / mean|g| (NaN when every entry is 0). grad_frac_subnormal
    counts nonzero entries below the dtype's smallest normal number; XLA on CPU flushes
    subnormals to zero, so there underflow shows up as exact zeros (see `grad_frac_underflow`).
    """
    g = g.reshape(-1)
    n = g.size
    s, k = scaled(g, computed=computed)
    abs_s = jnp.abs(s)
    mean, var = _mean_var(s)
    mean_abs = jnp.mean(abs_s)
    zero = pow2.is_zero(g)
    safe_mean_abs = jnp.where(mean_abs > 0, mean_abs, 1)
    return {
        "grad_mean": mean,
        "grad_var": var,
        "grad_sq_norm": jnp.sum(jnp.square(s)),
        "grad_max_abs": jnp.max(abs_s),
        "grad_mean_abs": mean_abs,
        "grad_cv": jnp.where(mean_abs > 0, jnp.sqrt(var) / safe_mean_abs, jnp.nan),
        "grad_frac_zero": jnp.sum(zero, dtype=g.dtype) / n,
        "grad_frac_subnormal": jnp.sum(pow2.is_subnormal(g), dtype=g.dtype) / n,
        "grad_nonfinite": jnp.sum(~jnp.isfinite(g), dtype=g.dtype),
        "grad_log2_scale": k,
    }


def unit_cos_sq(g_w: jax.Array, computed: bool = False) -> jax.Array:
    """Mean over pairs of distinct units of the squared cosine between their gradient vectors.

    g_w is [fan_in, fan_out]; unit j's gradient vector is column j, rescaled by its own power of
    two (a cosine has no unit) so that no column's norm underflows, then normalized to u_j.
    With C = U^T U (cos_jk = C_jk), the sum over ordered pairs j != k of cos_jk^2 is
    |C|_F^2 - sum_j |u_j|^4, and |U^T U|_F = |U U^T|_F, so the Gram matrix is taken on the
    smaller side: min(fan_in, fan_out)^2 * max(fan_in, fan_out) multiply-adds per tensor.
    Squaring makes it blind to sign: it is 1 for any rank-1 gradient (one example gives
    dL/dW = x (outer) delta, every column a multiple of x, of either sign), 0 for mutually
    orthogonal units, and about 1/fan_in for independent random directions. Units whose
    gradient is exactly zero have no direction and are left out; NaN below two live units.
    """
    g_w, _ = scaled(g_w, axis=0, computed=computed)
    norms = jnp.sqrt(jnp.sum(jnp.square(g_w), axis=0))
    alive = norms > 0
    m = jnp.sum(alive, dtype=g_w.dtype)
    u = g_w * jnp.where(alive, 1 / jnp.where(alive, norms, 1), 0)[None, :]
    fan_in, fan_out = u.shape
    gram = u @ u.T if fan_in <= fan_out else u.T @ u
    diagonal = jnp.sum(jnp.square(jnp.sum(jnp.square(u), axis=0)))
    return mean_over_pairs(jnp.sum(jnp.square(gram)) - diagonal, m)


def mean_over_pairs(pairs: jax.Array, m: jax.Array) -> jax.Array:
    """`pairs` (a sum over the m (m - 1) ordered pairs of distinct live units) as a mean,
    clipped to [0, 1] against rounding; NaN below two live units."""
    two = m >= 2
    return jnp.where(two, jnp.clip(pairs / jnp.where(two, m * (m - 1), 1), 0, 1), jnp.nan)


def unit_cos_sq_of_factors(h: jax.Array, delta: jax.Array, alive: jax.Array,
                           computed: bool = False) -> jax.Array:
    """`unit_cos_sq` of a dense layer's g_w = h^T delta, from its factors.

    h is the layer's input [batch, fan_in], delta = dL/dz [batch, fan_out], `alive` [fan_out]
    says which columns of the computed g_w are not all zero (only those have a direction).
    With K = h h^T [batch, batch] and V = delta with each live column scaled so that
    |h^T v_j| = 1 (dead ones zeroed), the units' Gram matrix is C = V^T K V and
    |C|_F^2 = tr(K P K P) with P = V V^T [batch, batch]; the diagonal, sum_j C_jj^2, is read
    from K V. That is batch^2 (fan_in + fan_out) multiply-adds against min(fan_in, fan_out)^2
    max(fan_in, fan_out) for the Gram matrix of g_w: a width-256 layer at batch 4 costs
    1/2,000 of it. h is rescaled by one power of two and each column of delta by its own
    (`scaled`), so no product under- or overflows; the cosines are of the exact product h^T
    delta, which equals the computed g_w to rounding wherever no entry of g_w underflowed.
    """
    h, _ = scaled(h, computed=computed)
    d, _ = scaled(delta, axis=0, computed=computed)
    k = h @ h.T
    kd = k @ d
    sq_norms = jnp.sum(d * kd, axis=0)  # |h^T d_j|^2
    live = alive & (sq_norms > 0)
    inv = jnp.where(live, 1 / jnp.sqrt(jnp.where(live, sq_norms, 1)), 0)
    v, kv = d * inv[None, :], kd * inv[None, :]
    kp = k @ (v @ v.T)
    frobenius = jnp.sum(kp * kp.T)  # tr(K P K P)
    diagonal = jnp.sum(jnp.square(jnp.sum(v * kv, axis=0)))
    return mean_over_pairs(frobenius - diagonal, jnp.sum(live, dtype=h.dtype))


def factors_are_cheaper(batch: int, fan_in: int, fan_out: int) -> bool:
    """Whether `unit_cos_sq_of_factors` takes fewer multiply-adds than `unit_cos_sq` for a
    [fan_in, fan_out] weight gradient of a batch of `batch` examples."""
    small, large = sorted((fan_in, fan_out))
    return batch * batch * (fan_in + fan_out) + batch**3 < small * small * large


def batch_moments(u: jax.Array, computed: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean and population variance over all entries of a [batch, units] array, scaled by
    2**-k, and k (see `scaled`)."""
    s, k = scaled(u, computed=computed)
    return (*_mean_var(s.reshape(-1)), k)


def mean_sq_norm(delta: jax.Array, computed: bool = False) -> tuple[jax.Array, jax.Array]:
    """The mean over the batch of |delta_b|^2 for a [batch, units] array, scaled by 2**-2k,
    and k."""
    s, k = scaled(delta, computed=computed)
    return jnp.mean(jnp.sum(jnp.square(s), axis=-1)), k


def to_host(stats: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
    """Statistics as host numpy arrays, the `SCALED` ones unscaled in float64 and the
    `*_log2_scale` outputs dropped; every other statistic keeps its dtype."""
    out = {}
    for name, value in stats.items():
        if name in LOG2_SCALES:
            continue
        if name in SCALED:
            scale_name, power = SCALED[name]
            out[name] = pow2.unscale(np.asarray(value), np.asarray(stats[scale_name]), power)
        else:
            out[name] = np.asarray(value)
    return out


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
