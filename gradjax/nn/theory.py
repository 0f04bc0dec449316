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

Gaussian expectations: ReLU, leaky ReLU and linear are positively homogeneous, so everything has
a closed form (E[phi(sqrt(q) z)^2] = q (1 + a^2) / 2 for negative slope a, chi = sigma_w^2
(1 + a^2) / 2; the arc-cosine kernel of Cho & Saul 2009 for pairs). Every other activation is
integrated numerically with the *activation gradjax uses* (`gradjax.nn.activations`, phi' by forward
mode), on a composite Gauss-Legendre rule against the Gaussian density (`gaussian_rule`): panels
split at u = 0 and at the activation's kinks, and 0.5 wide in u wherever |u| <= 30. A plain
200-node Gauss-Hermite rule, the textbook choice, is exact for polynomials but was measured off by
0.1 % for E[tanh'^2] at q = 10, 58 % at q = 100, and 0.3-10 % at q = 1-4 for the kinked elu, selu,
soft_sign and hard_tanh; the composite rule agrees with the closed forms and with Gauss-Hermite
(where that converges) to ~1e-7, the float32 precision of the activations (tests/test_theory.py).

References:
  B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, "Exponential expressivity in deep
    neural networks through transient chaos", NeurIPS 2016, arXiv:1606.05340.
  S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, "Deep information propagation",
    ICLR 2017, arXiv:1611.01232.
  Y. Cho, L. K. Saul, "Kernel methods for deep learning", NeurIPS 2009 (arc-cosine kernels).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpy.polynomial.legendre import leggauss

from gradjax.nn.activations import derivative, get_activation
from gradjax.spec import THEORY_COLUMNS, capabilities
from gradjax.spec.option import LEAKY_SLOPE

Z_MAX = 10.0  # the rule covers |z| <= 10 standard deviations (tail mass 1.5e-23)
FEATURE = 30.0  # every activation is smooth on the scale of its slope beyond |u| > 30
PANEL = 0.5  # panel width, in u where |u| <= FEATURE and in z elsewhere
_GL_X, _GL_W = leggauss(8)
KINKS: dict[str, tuple[float, ...]] = {"hard_tanh": (-1.0, 1.0)}  # u = 0 is always a breakpoint
HOMOGENEOUS: dict[str, float | None] = {"relu": 0.0, "leaky_relu": None, "linear": 1.0}
Q_MAX = 1e12  # beyond this the length map counts as diverging
FIXED_RTOL = 1e-9  # a map moving q by less than this, relatively, leaves it fixed
C_TOL = 1e-7  # Newton steps for c* stop here, the float32 precision of the activations



# --------------------------------------------------------------------------- quadrature


def gaussian_rule(
    mean: float, std: float, kinks: Sequence[float] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u and weights w with sum_i w_i f(u_i) ~= E[f(u)], u ~ N(mean, std^2).

    Composite 8-point Gauss-Legendre in z = (u - mean) / std over |z| <= Z_MAX, with panel edges
    at u = 0 and at `kinks` (where f or f' may jump, so each panel sees a smooth integrand), and
    panels no wider than PANEL in u where |u| <= FEATURE (so tanh' of width ~1 in u is resolved
    even when std is 100) and PANEL in z elsewhere. At most ~170 panels whatever std is.
    """
    if std <= 0:
        return np.array([float(mean)]), np.array([1.0])
    edges = [np.arange(-Z_MAX, Z_MAX + PANEL / 2, PANEL)]
    lo, hi = max(-Z_MAX, (-FEATURE - mean) / std), min(Z_MAX, (FEATURE - mean) / std)
    if lo < hi:
        step = min(PANEL, PANEL / std)
        edges.append(np.linspace(lo, hi, int(math.ceil((hi - lo) / step)) + 1))
    breaks = (np.array([0.0, *kinks]) - mean) / std
    edges.append(breaks[np.abs(breaks) < Z_MAX])
    edges = np.unique(np.concatenate(edges))
    left, right = edges[:-1], edges[1:]
    keep = right - left > 1e-12
    half, mid = (right - left)[keep] / 2, (right + left)[keep] / 2
    z = (mid[:, None] + half[:, None] * _GL_X[None, :]).reshape(-1)
    w = (half[:, None] * _GL_W[None, :]).reshape(-1) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return mean + std * z, w


@functools.cache
def _phi_and_dphi(activation: str, leaky_slope: float):
    fn = get_activation(activation, leaky_slope=leaky_slope)
    return jax.jit(lambda u: (fn(u), derivative(fn, u)))


def _evaluate(activation: str, leaky_slope: float, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """phi(u) and phi'(u) as float64 numpy arrays, from gradjax's own (float32) activation.

    Inputs are padded to a power of two so that the jitted function compiles for few shapes.
    """
    flat = np.asarray(u, np.float64).reshape(-1)
    size = max(64, 1 << (flat.size - 1).bit_length())
    padded = np.zeros(size, np.float32)
    padded[: flat.size] = flat
    phi, dphi = _phi_and_dphi(activation, float(leaky_slope))(jnp.asarray(padded))
    take = slice(0, flat.size)
    return (
        np.asarray(phi, np.float64)[take].reshape(np.shape(u)),
        np.asarray(dphi, np.float64)[take].reshape(np.shape(u)),
    )


def _negative_slope(activation: str, leaky_slope: float) -> float | None:
    """a for the positively homogeneous phi(u) = max(u, 0) + a min(u, 0); None otherwise."""
    if activation not in HOMOGENEOUS:
        return None
    slope = HOMOGENEOUS[activation]
    return float(leaky_slope) if slope is None else slope


def _stacked_rules(
    means: np.ndarray, stds: np.ndarray, kinks: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Rules for N(mean_k, std_k^2), zero-padded (weight 0) into [K, n] arrays."""
    rules = [gaussian_rule(float(m), float(s), kinks) for m, s in zip(means, stds, strict=True)]
    n = max((len(u) for u, _ in rules), default=0)
    u_all, w_all = np.zeros((len(rules), n)), np.zeros((len(rules), n))
    for k, (u, w) in enumerate(rules):
        u_all[k, : len(u)], w_all[k, : len(w)] = u, w
    return u_all, w_all


@dataclasses.dataclass(frozen=True)
class Moments:
    """Gaussian moments of phi at variance q (arrays shaped like q)."""

    phi_sq: np.ndarray  # E[phi(sqrt(q) z)^2]
    dphi_sq: np.ndarray  # E[phi'(sqrt(q) z)^2]
    slope: np.ndarray  # d/dq E[phi(sqrt(q) z)^2] = E[z phi phi'] / sqrt(q)


def moments(activation: str, q, *, leaky_slope: float = LEAKY_SLOPE) -> Moments:
    """E[phi^2], E[phi'^2] and dE[phi^2]/dq at z^l ~ N(0, q), closed form where one exists."""
    q = np.asarray(q, np.float64)
    a = _negative_slope(activation, leaky_slope)
    if a is not None:
        m2 = (1 + a * a) / 2
        return Moments(m2 * q, np.full_like(q, m2), np.full_like(q, m2))
    flat = q.reshape(-1)
    u, w = _stacked_rules(np.zeros_like(flat), np.sqrt(flat), KINKS.get(activation, ()))
    phi, dphi = _evaluate(activation, leaky_slope, u)
    std = np.sqrt(flat)[:, None]
    z = np.divide(u, std, out=np.zeros_like(u), where=std > 0)
    slope = np.sum(w * z * phi * dphi, axis=1) / np.where(flat > 0, np.sqrt(flat), 1.0)
    dphi_sq = np.sum(w * dphi**2, axis=1)
    # At q = 0 the slope is phi'(0)^2 + phi(0) phi''(0); phi'(0)^2 is exact where phi(0) = 0,
    # the only case in which q* = 0 can be a fixed point (then sigma_w^2 phi(0)^2 = 0).
    slope = np.where(flat > 0, slope, dphi_sq)
    phi_sq = np.sum(w * phi**2, axis=1)
    return Moments(phi_sq.reshape(q.shape), dphi_sq.reshape(q.shape), slope.reshape(q.shape))


def pair_moments(
    activation: str, q: float, c: float, *, leaky_slope: float = LEAKY_SLOPE
) -> tuple[float, float]:
    """(E[phi(u_1) phi(u_2)], E[phi'(u_1) phi'(u_2)]) for (u_1, u_2) ~ N(0, q [[1, c], [c, 1]]).

    Closed form (arc-cosine kernels) for the homogeneous activations; otherwise the outer
    expectation over u_1 and, for each u_1 node, the conditional one over
    u_2 | u_1 ~ N(c u_1, q (1 - c^2)), both on `gaussian_rule`.
    """
    a = _negative_slope(activation, leaky_slope)
    if a is not None:
        theta = math.acos(min(1.0, max(-1.0, c)))
        relu_pair = q / (2 * math.pi) * (math.sqrt(max(0.0, 1 - c * c)) + (math.pi - theta) * c)
        step_pair = (math.pi - theta) / (2 * math.pi)
        # phi = a u + (1 - a) relu(u); E[u_1 relu(u_2)] = q c / 2.
        phi_pair = a * a * q * c + a * (1 - a) * q * c + (1 - a) ** 2 * relu_pair
        dphi_pair = a * a + a * (1 - a) + (1 - a) ** 2 * step_pair
        return phi_pair, dphi_pair
    kinks = KINKS.get(activation, ())
    u1, w1 = gaussian_rule(0.0, math.sqrt(q), kinks)
    cond_std = math.sqrt(q * max(0.0, 1 - c * c))
    u2, w2 = _stacked_rules(c * u1, np.full_like(u1, cond_std), kinks)
    phi1, dphi1 = _evaluate(activation, leaky_slope, u1)
    phi2, dphi2 = _evaluate(activation, leaky_slope, u2)
    phi_pair = float(np.sum(w1 * phi1 * np.sum(w2 * phi2, axis=1)))
    dphi_pair = float(np.sum(w1 * dphi1 * np.sum(w2 * dphi2, axis=1)))
    return phi_pair, dphi_pair


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
    that needs two-dimensional integrals.
    """
    q_star = fixed_point_q(activation, sigma_w2, sigma_b2, q0=q0, leaky_slope=leaky_slope)
    homogeneous = _negative_slope(activation, leaky_slope) is not None
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


# --------------------------------------------------------------------------- summary columns


def _cell_value(summary: pd.DataFrame, column: str, default=None):
    if column not in summary.columns:
        return default
    values = summary[column].dropna().unique()
    if len(values) > 1:
        raise ValueError(f"add_theory_columns expects one cell; column {column!r} varies")
    return values[0] if len(values) else default


def _input_sq_mean(summary: pd.DataFrame) -> float | None:
    """E|x|^2 / n_0: 1 for Gaussian inputs, the mean square of fixed inputs (the sweep's JSON
    rows), None where the column is absent or unreadable."""
    inputs = _cell_value(summary, "inputs")
    if inputs == "gaussian":
        return 1.0
    try:
        x = np.asarray(json.loads(inputs), np.float64)
    except (TypeError, ValueError):
        return None
    return float(np.mean(x * x)) if x.size else None


def _sigma_b2(summary: pd.DataFrame) -> float | None:
    bias_init = _cell_value(summary, "bias_init", "normal")
    if bias_init == "zeros":
        return 0.0
    if bias_init == "normal":
        return float(_cell_value(summary, "bias_scale", 0.0)) ** 2
    return None  # a constant bias is not the mean-field model's N(0, sigma_b^2)


def add_theory_columns(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of ONE cell, with the mean-field columns added (a copy).

    Columns (the same value on every row unless noted):
      theory_q_star, theory_chi1, theory_xi_q, theory_xi_c, theory_xi_grad: `mean_field` at
        sigma_w = scale, sigma_b = bias_scale (0 for bias_init "zeros"), iterated from q^1;
      theory_grad_ratio (per row): the predicted E|grad P^l|^2 / E|grad P^{l+1}|^2 for the row's
        param P (W or b) from `layer_profile`; NaN on the output layer;
      theory_fit_chi1: `fit_chi1` of the predicted profile (the product of the W ratios), i.e.
        what measured_chi1 should read, input transient included; it equals theory_chi1 once
        the fit window sits at the fixed point, and stays finite where q* diverges;
      measured_chi1: `fit_chi1` of the W rows' grad_sq_norm_mean (the mean over seeds).
    Every column is NaN for a model other than the MLP. The theory columns are NaN unless
    step is 0 (the init), init is "fan_in_normal", norm is "none" and the bias is
    Gaussian or zero: mean-field theory here is for exactly that model. measured_chi1 is a
    measurement and is filled for every cell that has grad_sq_norm_mean.
    Depth 0 (the output layer only): q*, chi_1 and the depth scales are properties of
    (activation, sigma_w, sigma_b), not of the depth, so they are filled as for any depth;
    theory_grad_ratio (the output layer's, NaN at every depth) and theory_fit_chi1 (fewer than 3
    layers, NaN already below depth 2) are NaN.

    The ratios are per example: with batch > 1 the batch-mean gradient also has cross-example
    terms (h_a . h_b)(delta_a . delta_b), which the prediction leaves out. They change the
    measured ratios where examples stay correlated through the backward pass, e.g. by ~11 %
    per layer for exploding ReLU at batch 4 (measured 0.89 against 1.00; 1.00 at batch 1).
    """
    out = summary.copy()
    for column in THEORY_COLUMNS:
        out[column] = math.nan
    if out.empty or not capabilities(_cell_value(out, "model", "mlp")).mean_field:
        return out
    if "grad_sq_norm_mean" in out.columns:
        weights = out[out["param"] == "W"]
        out["measured_chi1"] = fit_chi1(
            weights["layer"].to_numpy(), weights["grad_sq_norm_mean"].to_numpy()
        )
    sigma_b2 = _sigma_b2(out)
    if (
        _cell_value(out, "step", 0) not in (0, None)  # theory is of the init, not after training
        or _cell_value(out, "init") != "fan_in_normal"
        or _cell_value(out, "norm", "none") != "none"
        or sigma_b2 is None
    ):
        return out
    activation = str(_cell_value(out, "activation"))
    leaky_slope = float(_cell_value(out, "leaky_slope", LEAKY_SLOPE))
    sigma_w2 = float(_cell_value(out, "scale")) ** 2
    depth, width = int(_cell_value(out, "depth")), int(_cell_value(out, "width"))
    sizes = (int(_cell_value(out, "in_dim")), *([width] * depth), int(_cell_value(out, "out_dim")))
    input_sq_mean = _input_sq_mean(out)
    q1 = sigma_w2 * (1.0 if input_sq_mean is None else input_sq_mean) + sigma_b2
    mf = mean_field(activation, sigma_w2, sigma_b2, q0=q1, leaky_slope=leaky_slope)
    out["theory_q_star"] = mf.q_star
    out["theory_chi1"] = mf.chi1
    out["theory_xi_q"] = mf.xi_q
    out["theory_xi_c"] = mf.xi_c
    out["theory_xi_grad"] = mf.xi_grad
    profile = layer_profile(
        activation, sigma_w2, sigma_b2, sizes, input_sq_mean=input_sq_mean, leaky_slope=leaky_slope
    )
    index = out["layer"].to_numpy(np.int64) - 1
    valid = (index >= 0) & (index < len(sizes) - 1)
    ratio = np.full(len(out), math.nan)
    is_w = out["param"].to_numpy() == "W"
    ratio[valid & is_w] = profile.weight_ratio[index[valid & is_w]]
    ratio[valid & ~is_w] = profile.bias_ratio[index[valid & ~is_w]]
    out["theory_grad_ratio"] = ratio
    layers = np.arange(1, len(sizes))
    out["theory_fit_chi1"] = fit_chi1(layers, predicted_profile(profile.weight_ratio))
    return out
