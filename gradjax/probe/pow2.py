"""Exact power-of-two rescaling of floating-point arrays, subnormals included.

Squares of float32 gradients underflow once entries fall below ~1e-19 (and overflow above
~1e19), so a variance or squared norm computed directly reads 0 (or inf) for a tensor whose
entries are nonzero and clearly differ. Every magnitude statistic is therefore computed on
x * 2**-k, with k the exponent of the tensor's largest |entry|, so the scaled entries lie in
[0, 2), and the exponent travels beside the result until the host undoes the scaling in
float64 (`unscale`).

Multiplying by 2**-k cannot be done with float multiplies on XLA:CPU: denormals are treated as
zero on input (DAZ) and flushed on output (FTZ), 2**k itself is not a finite float32 for
|k| > 127, and XLA folds a product of constant powers of two into one constant that over- or
underflows. `max_exponent` and `times_pow2` are integer arithmetic on the bits (`bitcast`) instead:
exact for every finite entry, from the smallest subnormal to the largest finite value.
`multiply` is the fast path for values the device computed itself (see its docstring). With
`times_pow2`, a result below the smallest normal number is returned as 0 (it is negligible next to
the largest scaled entry, which lies in [1, 2)); a result above the largest finite number is
inf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _layout(dtype) -> tuple:
    """(int dtype of the same width, bit width, mantissa bits, exponent bias) of a float."""
    width = 8 * jnp.dtype(dtype).itemsize
    info = jnp.finfo(dtype)
    ints = {16: jnp.int16, 32: jnp.int32, 64: jnp.int64}[width]
    return ints, width, int(info.nmant), int(info.maxexp) - 1


def _abs_bits(x: jax.Array) -> jax.Array:
    """|x| as an integer whose order is the order of |x| (inf above every finite, NaN above
    inf)."""
    ints, width, _, _ = _layout(x.dtype)
    return jax.lax.bitcast_convert_type(x, ints) & jnp.asarray((1 << (width - 1)) - 1, ints)


def _inf_bits(dtype) -> int:
    """The bits of +inf: every exponent bit set, a zero mantissa."""
    _, width, nmant, _ = _layout(dtype)
    return ((1 << (width - 1 - nmant)) - 1) << nmant


def _exponent_of_bits(bits: jax.Array, dtype) -> jax.Array:
    """floor(log2 v) as int32 for the positive finite float v with these bits (0 for v == 0);
    a subnormal's exponent is read from the leading bit of its mantissa."""
    _, width, nmant, bias = _layout(dtype)
    biased = bits >> nmant
    mantissa = bits & ((1 << nmant) - 1)
    top = (width - 1) - jax.lax.clz(jnp.maximum(mantissa, 1))  # the leading bit of a subnormal
    exponent = jnp.where(biased > 0, biased - bias, (1 - bias - nmant) + top)
    return jnp.where(bits == 0, 0, exponent).astype(jnp.int32)


def max_exponent(x: jax.Array, axis=None) -> jax.Array:
    """floor(log2 max|x|) over `axis`, ignoring non-finite entries; 0 where every finite entry
    is 0 (int32). Exact for subnormal entries, which XLA:CPU would compare as zeros."""
    x = jnp.asarray(x)
    bits = _abs_bits(x)
    finite = bits < _inf_bits(x.dtype)
    return _exponent_of_bits(jnp.max(jnp.where(finite, bits, 0), axis=axis), x.dtype)


def times_pow2(x: jax.Array, k: jax.Array) -> jax.Array:
    """x * 2**k for integer k (broadcast against x), exact for every finite x, subnormal x
    included. Results below the smallest normal number are 0 and above the largest finite
    number inf; zeros, infs and NaNs stay as they are.

    k is added to the exponent field of the bits. A subnormal x is first rewritten as its
    integer mantissa m (a normal float, exactly) times 2**(1 - bias - nmant).
    """
    x = jnp.asarray(x)
    ints, width, nmant, bias = _layout(x.dtype)
    k = jnp.asarray(k, ints)
    raw = jax.lax.bitcast_convert_type(x, ints)
    bits = _abs_bits(x)
    subnormal = (bits >> nmant) == 0
    as_integer = jax.lax.bitcast_convert_type(bits.astype(x.dtype), ints)  # m, exactly
    source = jnp.where(subnormal, as_integer, bits)
    shift = jnp.where(subnormal, k + (1 - bias - nmant), k)
    biased = (source >> nmant) + shift
    magnitude = jnp.where(biased >= 2 * bias + 1, _inf_bits(x.dtype),
                          jnp.where(biased <= 0, 0, source + (shift << nmant)))
    sign = raw & jnp.asarray(-(1 << (width - 1)), ints)
    scaled = jax.lax.bitcast_convert_type(sign | magnitude, x.dtype)
    return jnp.where((bits == 0) | (bits >= _inf_bits(x.dtype)), x, scaled)


def multiply(x: jax.Array, k: jax.Array) -> jax.Array:
    """x * 2**k for integer k (broadcast against x, data-dependent, |k| <= 252) by two float
    multiplies: exact for normal x and normal results, and 2-3x faster than `times_pow2` inside a
    fused reduction. Where the backend treats denormal inputs as zero (XLA:CPU), a subnormal x
    reads as 0; that is also where arithmetic never produces one (results are flushed), so for
    values computed on the device it is exact. Results below the smallest normal number may be
    0 (flushed) or subnormal, depending on the backend."""
    x = jnp.asarray(x)
    k = jnp.asarray(k, jnp.int32)
    half = k // 2
    return x * _power_of_two(half, x.dtype) * _power_of_two(k - half, x.dtype)


def _power_of_two(k: jax.Array, dtype) -> jax.Array:
    """2**k as a float of `dtype`, k clipped to the normal exponents."""
    ints, _, nmant, bias = _layout(dtype)
    return jax.lax.bitcast_convert_type((jnp.clip(k, 1 - bias, bias).astype(ints) + bias)
                                        << nmant, dtype)


def unscale(value: np.ndarray, exponent: np.ndarray, power: int) -> np.ndarray:
    """value * 2**(power * exponent) on the host, in float64: the magnitude statistic of the
    unscaled tensor from its scaled value (power 1 for means, 2 for variances and squared
    norms). Under- or overflows only where the true value is outside float64's range. Always
    a new, writeable array: a run merges the next chunk's moments into it in place."""
    value, exponent = np.asarray(value), np.asarray(exponent)
    low, high = (int(exponent.min()), int(exponent.max())) if exponent.size else (0, 0)
    if low == high == 0:  # a chunk computed without rescaling
        return value.astype(np.float64)
    if max(-low, high) * power <= 1022:  # any float32 statistic: one exact multiply (ldexp 10x)
        # 2**(power * exponent) as float64 bits, built in place: a chunk's moments are as large
        # as the network, and each pass over them counts (docs/performance.md)
        bits = np.multiply(exponent, power, dtype=np.int64)
        bits += 1023
        bits <<= 52
        return np.multiply(value, bits.view(np.float64), dtype=np.float64)
    return np.ldexp(value.astype(np.float64), power * exponent.astype(np.int32))


def is_zero(x: jax.Array) -> jax.Array:
    """x == 0 read from the bits: a subnormal is not zero even where the backend compares
    denormals as zero."""
    return _abs_bits(jnp.asarray(x)) == 0


def is_subnormal(x: jax.Array) -> jax.Array:
    """Nonzero entries below the dtype's smallest normal number, read from the bits."""
    x = jnp.asarray(x)
    _, _, nmant, _ = _layout(x.dtype)
    bits = _abs_bits(x)
    return (bits != 0) & ((bits >> nmant) == 0)
