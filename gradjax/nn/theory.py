"""Mean-field signal propagation in deep random MLPs, beside what gradjax measures.

Conventions (those of Poole et al. 2016 and Schoenholz et al. 2017, and of gradjax's
`fan_in_normal` init with sigma_w = scale, sigma_b = bias_scale):
W^l_ij ~ N(0, sigma_w^2 / n_{l-1}), b^l_i ~ N(0, sigma_b^2), z^l = h^{l-1} W^l + b^l,
h^l = phi(z^l), h^0 = x. In the wide limit each pre-activation z^l_i is N(0, q^l) over inits,
and with z ~ N(0, 1):

  length map     q^l = sigma_w^2 E[phi(sqrt(q^{l-1}) z)^2] + sigma_b^2,   q^1 = sigma_w^2 |x|^2/n_0
                                                                                + sigma_b^2
  fixed point    q* = lim q^l (the limit of that iteration, see `fixed_point_q`)
  chi_1          sigma_w^2 E[phi'(sqrt(q*) z)^2]            (Poole et al. eq. 7, Schoenholz eq. 4)
  xi_q           -1 / ln(dq^l/dq^{l-1} at q*),  dq^l/dq^{l-1} = chi_1 + sigma_w^2 E[phi'' phi]
                 (Schoenholz eq. 5; computed as sigma_w^2 E[z phi phi'] / sqrt(q*), the same by
                 Gaussian integration by parts, which stays valid for kinked phi)
  c map          c^l = (sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2) / q*, (u_1, u_2) ~ N(0, q* [[1,
                 c^{l-1}], [c^{l-1}, 1]]), fixed point c* (= 1 in the ordered phase chi_1 < 1)
  chi_c          sigma_w^2 E[phi'(u_1) phi'(u_2)] at c*, equal to chi_1 when c* = 1
  xi_c           -1 / ln chi_c                                                 (Schoenholz eq. 9)
  xi_grad        -1 / ln chi_1, the depth scale of E|dL/dz^l|^2                (Schoenholz eq. 15)

Backward (Schoenholz sec. 5, with the gradient-independence assumption), per example,
E|delta^l|^2 = sigma_w^2 E[phi'(z^l)^2] E|delta^{l+1}|^2 whatever the widths, and
dL/dW^l = h^{l-1} (x) delta^l, so E|grad W^l|^2 = E|h^{l-1}|^2 E|delta^l|^2 with
E|h^l|^2 = n_l E[phi(sqrt(q^l) z)^2]. Hence the predicted ratio of consecutive layers

  E|grad W^l|^2 / E|grad W^{l+1}|^2 = chi(q^l) E|h^{l-1}|^2 / E|h^l|^2,
  chi(q) = sigma_w^2 E[phi'(sqrt(q) z)^2],

which is chi_1 at the fixed point between equal-width layers (and chi(q^l) for the biases).

Gaussian expectations come from `gradjax.nn.gaussian` (closed forms for ReLU, leaky ReLU and
linear, a composite quadrature rule on gradjax's own activations otherwise), and the summary
columns built from these predictions from `gradjax.nn.theory_columns`.

References:
  B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, "Exponential expressivity in deep
    neural networks through transient chaos", NeurIPS 2016, arXiv:1606.05340.
  S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, "Deep information propagation",
    ICLR 2017, arXiv:1611.01232.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from gradjax.nn.gaussian import moments, negative_slope, pair_moments
from gradjax.spec.option import LEAKY_SLOPE

Q_MAX = 1e12  # beyond this the length map counts as diverging
FIXED_RTOL = 1e-9  # a map moving q by less than this, relatively, leaves it fixed
C_TOL = 1e-7  # Newton steps for c* stop here, the float32 precision of the activations


# --------------------------------------------------------------------------- maps


def length_map(q, activation: str, sigma_w2: float, sigma_b2: float, *, leaky_slope=LEAKY_SLOPE):
    """q^l = sigma_w^2 E[phi(sqrt(q^{l-1}) z)^2] + sigma_b^2 (Poole et al. 2016, eq. 3)."""
    return sigma_w2 * moments(activation, q, leaky_slope=leaky_slope).phi_sq + sigma_b2


def chi(q, activation: str, sigma_w2: float, *, leaky_slope=LEAKY_SLOPE):
    """sigma_w^2 E[phi'(sqrt(q) z)^2]: the per-layer factor of E|dL/dz|^2; chi_1 at q = q*."""
    return sigma_w2 * moments(activation, q, leaky_slope=leaky_slope).dphi_sq


def fixed_point_q(
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    *,
    q0: float = 1.0,
    leaky_slope: float = LEAKY_SLOPE,
) -> float:
    """q* = lim_l q^l for the length map iterated from q^1 = q0; inf if it diverges.

    The length map is increasing in q (its slope sigma_w^2 E[phi'^2 + phi phi''] is positive for
    every gradjax activation on the range that matters), so the iteration moves monotonically
    to the first fixed point in the direction of q^2 - q^1. That point is found by a geometric
    scan and bisection, not by iterating, so it costs the same near criticality (where the
    iteration converges like 1/l). For ReLU this gives q* = sigma_b^2 / (1 - sigma_w^2 / 2) when
    sigma_w^2 < 2, inf above (and q0 itself at sigma_w^2 = 2, sigma_b = 0, where every q is
    fixed). The limit depends on q0 only there and where q* = 0 is unstable (sigma_b = 0).
    """

    def gap(q):
        return length_map(q, activation, sigma_w2, sigma_b2, leaky_slope=leaky_slope) - q

    q0 = float(q0)
    g0 = float(gap(q0))
    if abs(g0) <= FIXED_RTOL * max(q0, q0 + g0, 1e-300):
        return q0
    if g0 > 0:  # rising: the first q above q0 where the map stops rising, else divergence
        grid = np.concatenate([[q0], np.geomspace(max(q0, 1e-12), Q_MAX, 400)])
        gaps = gap(grid)
        crossed = np.flatnonzero(gaps <= 0)
        if crossed.size == 0:
            return math.inf
        k = int(crossed[0])
        return _bisect(gap, grid[k - 1], grid[k])
    # falling: the first q below q0 where the map stops falling; gap(0) = E[phi(0)^2] >= 0
    grid = np.concatenate([np.geomspace(q0, 1e-12, 400), [0.0]])
    gaps = gap(grid)
    k = int(np.flatnonzero(gaps >= 0)[0])
    if grid[k] == 0 and gaps[k] == 0:  # phi(0) = 0, sigma_b = 0: q -> 0
        return 0.0
    return _bisect(gap, grid[k], grid[k - 1])


def _bisect(fn, pos: float, neg: float, steps: int = 80) -> float:
    """A root of fn between pos (fn >= 0 there) and neg (fn <= 0 there), by bisection."""
    for _ in range(steps):
        mid = 0.5 * (pos + neg)
        if mid in (pos, neg):
            break
        if float(fn(mid)) > 0:
            pos = mid
        else:
            neg = mid
    return 0.5 * (pos + neg)


def correlation_map(
    c: float, q_star: float, activation: str, sigma_w2: float, sigma_b2: float, *,
    leaky_slope=LEAKY_SLOPE,
) -> tuple[float, float]:
    """(c^l, dc^l/dc^{l-1}) at correlation c^{l-1} = c between two inputs, both at q*.

    c^l = (sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2) / q* (Poole et al. 2016, eq. 5); its
    slope is sigma_w^2 E[phi'(u_1) phi'(u_2)] (Price's theorem), chi_c at c = c*.
    """
    phi_pair, dphi_pair = pair_moments(activation, q_star, c, leaky_slope=leaky_slope)
    return (sigma_w2 * phi_pair + sigma_b2) / q_star, sigma_w2 * dphi_pair


def fixed_point_c(
    q_star: float, activation: str, sigma_w2: float, sigma_b2: float, *, leaky_slope=LEAKY_SLOPE
) -> tuple[float, float]:
    """(c*, chi_c): the stable fixed point of the correlation map and its slope there.

    c = 1 is always fixed, with slope chi_1; it is stable in the ordered phase (chi_1 <= 1),
    where c* = 1 and chi_c = chi_1. In the chaotic phase (chi_1 > 1) the map, convex on [0, 1]
    (its derivatives are Hermite sums with c^k >= 0), has one more fixed point c* < 1, found by
    Newton's method from c = 0, which converges monotonically for a convex map.
    """
    chi1 = float(chi(q_star, activation, sigma_w2, leaky_slope=leaky_slope))
    if not math.isfinite(q_star) or q_star <= 0:
        return (1.0, chi1) if chi1 <= 1 else (math.nan, math.nan)
    if chi1 <= 1:
        return 1.0, chi1
    c = 0.0
    for _ in range(100):
        value, slope = correlation_map(
            c, q_star, activation, sigma_w2, sigma_b2, leaky_slope=leaky_slope
        )
        if slope >= 1:  # cannot happen left of c* for a convex map; stop rather than jump
            break
        step = (value - c) / (1 - slope)
        c = min(c + step, 1.0)
        if abs(step) <= C_TOL:
            break
    return c, correlation_map(c, q_star, activation, sigma_w2, sigma_b2, leaky_slope=leaky_slope)[1]


def _depth_scale(rate: float) -> float:
    """-1 / ln(rate): inf at rate 1, negative for rate > 1 (growth), NaN if undefined."""
    if not math.isfinite(rate) or rate <= 0:
        return math.nan
    if rate == 1:
        return math.inf
    return -1.0 / math.log(rate)


@dataclasses.dataclass(frozen=True)
class MeanField:
    """Mean-field quantities of one (activation, sigma_w^2, sigma_b^2); see the module doc."""

    q_star: float
    chi1: float
    c_star: float
    chi_c: float
    xi_q: float
    xi_c: float
    xi_grad: float


@functools.lru_cache(maxsize=4096)  # a sweep's cells of other depths or widths share it
def mean_field(
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    *,
    q0: float = 1.0,
    leaky_slope: float = LEAKY_SLOPE,
    with_correlations: bool = True,
) -> MeanField:
    """q*, chi_1, c*, chi_c and the depth scales xi_q, xi_c, xi_grad (Schoenholz et al. 2017).

    chi_1 is NaN where q* = inf, except for the homogeneous activations, whose chi_1 does not
    depend on q. xi_grad < 0 in the chaotic phase: gradients grow by e every |xi_grad| layers
    towards the input. `with_correlations=False` skips c*, chi_c and xi_c (NaN), the only part
    that needs two-dimensional integrals. Results are kept per arguments (the function is
    pure): a report's cells of other depths and widths share them.
    """
    q_star = fixed_point_q(activation, sigma_w2, sigma_b2, q0=q0, leaky_slope=leaky_slope)
    homogeneous = negative_slope(activation, leaky_slope) is not None
    if math.isfinite(q_star) or homogeneous:
        at = q_star if math.isfinite(q_star) else 1.0
        m = moments(activation, at, leaky_slope=leaky_slope)
        chi1 = float(sigma_w2 * m.dphi_sq)
        xi_q = _depth_scale(float(sigma_w2 * m.slope)) if math.isfinite(q_star) else math.nan
    else:
        chi1 = xi_q = math.nan
    c_star = chi_c = math.nan
    if with_correlations and math.isfinite(chi1):
        c_star, chi_c = fixed_point_c(
            q_star, activation, sigma_w2, sigma_b2, leaky_slope=leaky_slope
        )
    return MeanField(
        q_star=q_star,
        chi1=chi1,
        c_star=c_star,
        chi_c=chi_c,
        xi_q=xi_q,
        xi_c=_depth_scale(chi_c),
        xi_grad=_depth_scale(chi1),
    )


def critical_sigma_w2(activation: str, sigma_b2: float, *, q0: float = 1.0,
                      leaky_slope: float = LEAKY_SLOPE, low: float = 0.1,
                      high: float = 16.0) -> float:
    """The sigma_w^2 at which chi_1 = 1 (the order-to-chaos boundary) for this sigma_b^2.

    chi_1 (`mean_field`) rises with sigma_w^2 across the boundary, so the root is found by
    bisection on [low, high]; NaN when chi_1 - 1 does not change sign there. For ReLU it is 2
    at any sigma_b^2 (chi_1 = sigma_w^2 / 2); for tanh it tends to 1 as sigma_b^2 -> 0.
    """
    def excess(sigma_w2: float) -> float:
        return mean_field(activation, sigma_w2, sigma_b2, q0=q0, leaky_slope=leaky_slope,
                          with_correlations=False).chi1 - 1.0

    above, below = excess(high), excess(low)
    if not (above > 0 > below):
        return math.nan
    return _bisect(excess, high, low, steps=40)  # to ~1e-11 of [low, high]: past float32


# --------------------------------------------------------------------------- layer profiles


@dataclasses.dataclass(frozen=True)
class LayerProfile:
    """Per weight layer l = 1..L+1 (index l - 1): predictions for one network."""

    q: np.ndarray  # pre-activation variance q^l of hidden layers (NaN for the output layer)
    weight_ratio: np.ndarray  # E|grad W^l|^2 / E|grad W^{l+1}|^2 (NaN for the output layer)
    bias_ratio: np.ndarray  # E|grad b^l|^2 / E|grad b^{l+1}|^2 (NaN for the output layer)


def layer_profile(
    activation: str,
    sigma_w2: float,
    sigma_b2: float,
    sizes: Sequence[int],
    *,
    input_sq_mean: float | None,
    leaky_slope: float = LEAKY_SLOPE,
) -> LayerProfile:
    """Mean-field layer-to-layer gradient ratios of an MLP with layer sizes `sizes`.

    q^1 = sigma_w^2 input_sq_mean + sigma_b^2 with input_sq_mean = E|x|^2 / n_0 (1 for
    `inputs = "gaussian"`; for a fixed batch, its mean square, which treats the examples as one
    of average norm), then the length map layer by layer, so the transient from q^1 to q* is
    in the prediction. With input_sq_mean None every hidden layer is put at q* and the first
    layer's weight ratio, which needs |x|^2, is NaN. Depth 0 (sizes (n_0, n_out), the output
    layer only) has no hidden layer, so no q^l and no ratio: one NaN entry in each array.
    """
    depth = len(sizes) - 2
    if depth < 1:
        nan = np.full(1, math.nan)
        return LayerProfile(nan, nan.copy(), nan.copy())
    if input_sq_mean is None:
        q_star = fixed_point_q(activation, sigma_w2, sigma_b2, leaky_slope=leaky_slope)
        q = np.full(depth, q_star if math.isfinite(q_star) else math.nan)
    else:
        q = np.empty(depth)
        q[0] = sigma_w2 * input_sq_mean + sigma_b2
        for l in range(1, depth):
            q[l] = length_map(q[l - 1], activation, sigma_w2, sigma_b2, leaky_slope=leaky_slope)
    finite = np.isfinite(q)
    m = moments(activation, np.where(finite, q, 1.0), leaky_slope=leaky_slope)
    phi_sq, dphi_sq = np.where(finite, m.phi_sq, math.nan), np.where(finite, m.dphi_sq, math.nan)
    widths = np.asarray(sizes, np.float64)
    h_sq = widths[1:-1] * phi_sq  # E|h^l|^2, l = 1..L
    h_in = math.nan if input_sq_mean is None else widths[0] * input_sq_mean
    h_prev = np.concatenate([[h_in], h_sq[:-1]])
    bias_ratio = sigma_w2 * dphi_sq
    with np.errstate(divide="ignore", invalid="ignore"):
        weight_ratio = bias_ratio * h_prev / h_sq
    nan = np.array([math.nan])
    return LayerProfile(
        np.concatenate([q, nan]),
        np.concatenate([weight_ratio, nan]),
        np.concatenate([bias_ratio, nan]),
    )


def middle_layers(n_layers: int) -> np.ndarray:
    """The weight layers `measured_chi1` is fitted on: all but the first and last quarter.

    For 31 weight layers (depth 30) that is layers 8..24; the quarter at the input holds the
    transient of q^l towards q*, the quarter at the output the loss's imprint on delta^l.
    """
    cut = n_layers // 4
    return np.arange(1 + cut, n_layers - cut + 1)


def predicted_profile(weight_ratio: np.ndarray) -> np.ndarray:
    """E|grad W^l|^2 / E|grad W^{L+1}|^2 from the per-layer ratios (1 on the output layer)."""
    ratios = np.asarray(weight_ratio, np.float64)[:-1]
    return np.concatenate([np.cumprod(ratios[::-1])[::-1], [1.0]])


def fit_chi1(layers: np.ndarray, grad_sq_norm: np.ndarray) -> float:
    """exp(-slope) of the least-squares line through ln E|grad W^l|^2 against l.

    The fit uses `middle_layers` only; NaN when fewer than 3 of them have a finite, positive
    value. E|grad W^l|^2 ~ chi_1^{-l} gives exp(-slope) = chi_1.
    """
    layers = np.asarray(layers, np.float64)
    values = np.asarray(grad_sq_norm, np.float64)
    if layers.size == 0:
        return math.nan
    window = np.isin(layers, middle_layers(int(np.max(layers))))
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(values)
    ok = window & np.isfinite(logs)
    if np.count_nonzero(ok) < 3:
        return math.nan
    slope = np.polyfit(layers[ok], logs[ok], 1)[0]
    return float(np.exp(-slope))
