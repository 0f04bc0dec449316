"""Exact power-of-two rescaling of floating-point arrays, subnormals included.

Squares of float32 gradients underflow once entries fall below ~1e-19 (and overflow above
~1e19), so a variance or squared norm computed directly reads 0 (or inf) for a tensor whose
entries are nonzero and clearly differ. Every magnitude statistic is therefore computed on
x * 2**-k, with k the exponent of the tensor's largest |entry|, so the scaled entries lie in
[0, 2), and the exponent travels beside the result until the host undoes the scaling in
float64 (`unscale`).

Multiplying by 2**-k is exact, but on XLA:CPU a plain multiply cannot be used for it:
denormals are treated as zero on input (DAZ) and flushed on output (FTZ), and 2**k itself is
not a finite float32 for |k| > 127. Both functions here read the bits instead (`bitcast`), so
they are exact for every finite entry, from the smallest subnormal to the largest finite value;
a scaled entry that would itself be subnormal (below 2**-126 after scaling, i.e. negligible
against the largest entry, which scales to [1, 2)) may be flushed to 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _layout(dtype) -> tuple:
    """(unsigned-width int dtype, mantissa bits, exponent bias) of a float dtype."""
    info = jnp.finfo(dtype)
    ints = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[jnp.dtype(dtype).itemsize]
    return ints, int(info.nmant), int(info.maxexp) - 1


def _abs_bits(x: jax.Array) -> jax.Array:
    """|x| as an integer whose order is the order of |x| (NaN above inf)."""
    ints, nmant, bias = _layout(x.dtype)
    sign_off = (1 << (8 * jnp.dtype(x.dtype).itemsize - 1)) - 1
    return jax.lax.bitcast_convert_type(x, ints) & jnp.asarray(sign_off, ints)


def _exponent_of_bits(bits: jax.Array, dtype) -> jax.Array:
    """floor(log2 v) for the positive finite float v with these bits; 0 for v == 0."""
    ints, nmant, bias = _layout(dtype)
    biased = bits >> nmant
    mantissa = bits & ((1 << nmant) - 1)
    width = 8 * jnp.dtype(dtype).itemsize
    top_bit = (width - 1) - jax.lax.clz(jnp.maximum(mantissa, 1))  # of a subnormal's mantissa
    subnormal = (1 - bias - nmant) + top_bit
    exponent = jnp.where(biased > 0, biased - bias, subnormal)
    return jnp.where(bits == 0, 0, exponent).astype(jnp.int32)


def max_exponent(x: jax.Array, axis=None) -> jax.Array:
    """floor(log2 max|x|) over `axis`, ignoring non-finite entries; 0 where every finite entry
    is 0 (int32). Exact for subnormal entries, which XLA:CPU would compare as zeros."""
    bits = _abs_bits(x)
    ints, nmant, bias = _layout(x.dtype)
    finite = bits < jnp.asarray(((1 << (8 * jnp.dtype(x.dtype).itemsize - 1 - nmant)) - 1)
                                << nmant, ints)
    largest = jnp.max(jnp.where(finite, bits, 0), axis=axis)
    return _exponent_of_bits(largest, x.dtype)


def _pow2(k: jax.Array, dtype) -> jax.Array:
    """2**k as a normal float of `dtype`, for k clipped to the normal range."""
    ints, nmant, bias = _layout(dtype)
    k = jnp.clip(k, 1 - bias, bias).astype(ints)
    return jax.lax.bitcast_convert_type((k + bias) << nmant, dtype)


def scale(x: jax.Array, k: jax.Array) -> jax.Array:
    """x * 2**k for integer k (broadcast against x), exact for every finite x, subnormal x
    included; non-finite entries stay non-finite. Results below the smallest normal number
    may be flushed to 0 where the backend flushes subnormals."""
    ints, nmant, bias = _layout(x.dtype)
    k = jnp.asarray(k, jnp.int32)
    bits = _abs_bits(x)
    # A normal x: two multiplies by normal powers of two (2**k alone may not be finite).
    half = k // 2
    normal = x * _pow2(half, x.dtype) * _pow2(k - half, x.dtype)
    # A subnormal x is m * 2**(1 - bias - nmant) for its integer mantissa m < 2**nmant, exact
    # as a float; it is read from the bits since DAZ would turn x itself into 0.
    negative = jax.lax.bitcast_convert_type(x, ints) < 0
    magnitude = (bits & ((1 << nmant) - 1)).astype(x.dtype)
    mantissa = jnp.where(negative, -magnitude, magnitude)
    shift = k + (1 - bias - nmant)
    third = shift // 3
    subnormal = (mantissa * _pow2(third, x.dtype) * _pow2(third, x.dtype)
                 * _pow2(shift - 2 * third, x.dtype))
    return jnp.where((bits >> nmant) == 0, subnormal, normal)


def unscale(value: np.ndarray, exponent: np.ndarray, power: int) -> np.ndarray:
    """value * 2**(power * exponent) on the host, in float64: the magnitude statistic of the
    unscaled tensor from its scaled value (power 1 for means, 2 for variances and squared
    norms). Under- or overflows only where the true value is outside float64's range."""
    value = np.asarray(value, np.float64)
    return np.ldexp(value, power * np.asarray(exponent, np.int64).astype(np.int32))


def is_zero(x: jax.Array) -> jax.Array:
    """x == 0 read from the bits: a subnormal is not zero even where the backend compares
    denormals as zero."""
    return _abs_bits(x) == 0


def is_subnormal(x: jax.Array) -> jax.Array:
    """Nonzero entries below the dtype's smallest normal number, read from the bits."""
    _, nmant, _ = _layout(x.dtype)
    bits = _abs_bits(x)
    return (bits != 0) & ((bits >> nmant) == 0)
