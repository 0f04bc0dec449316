"""Gaussian expectations of an activation: the quadrature rule and the moments behind the
mean-field maps of `gradjax.nn.theory`.

`moments` gives E[phi^2], E[phi'^2] and dE[phi^2]/dq at one variance q, `pair_moments` the
two-point E[phi(u_1) phi(u_2)] and E[phi'(u_1) phi'(u_2)] at correlation c. ReLU, leaky ReLU
and linear are positively homogeneous, so everything has a closed form (E[phi(sqrt(q) z)^2] =
q (1 + a^2) / 2 for negative slope a, E[phi'^2] = (1 + a^2) / 2; the arc-cosine kernel of Cho &
Saul 2009 for pairs). Every other activation is integrated numerically with the *activation
gradjax uses* (`gradjax.nn.activations`, phi' by forward mode), on a composite Gauss-Legendre
rule against the Gaussian density (`gaussian_rule`): panels split at u = 0 and at the
activation's kinks, and 0.5 wide in u wherever |u| <= 30. A plain 200-node Gauss-Hermite rule,
the textbook choice, is exact for polynomials but was measured off by 0.1 % for E[tanh'^2] at
q = 10, 58 % at q = 100, and 0.3-10 % at q = 1-4 for the kinked elu, selu, soft_sign and
hard_tanh; the composite rule agrees with the closed forms and with Gauss-Hermite (where that
converges) to ~1e-7, the float32 precision of the activations (tests/test_theory.py).

Reference:
  Y. Cho, L. K. Saul, "Kernel methods for deep learning", NeurIPS 2009 (arc-cosine kernels).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.legendre import leggauss

from gradjax.nn.activations import derivative, get_activation
from gradjax.spec.option import LEAKY_SLOPE

Z_MAX = 10.0  # the rule covers |z| <= 10 standard deviations (tail mass 1.5e-23)
FEATURE = 30.0  # every activation is smooth on the scale of its slope beyond |u| > 30
PANEL = 0.5  # panel width, in u where |u| <= FEATURE and in z elsewhere
BLOCK = 1 << 14  # nodes per call of the compiled activation (`_evaluate`)
_GL_X, _GL_W = leggauss(8)
KINKS: dict[str, tuple[float, ...]] = {"hard_tanh": (-1.0, 1.0)}  # u = 0 is always a breakpoint
HOMOGENEOUS: dict[str, float | None] = {"relu": 0.0, "leaky_relu": None, "linear": 1.0}


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

    Evaluated in blocks of BLOCK nodes (the last zero-padded), so that each activation compiles
    once, whatever the number of nodes: a report's cells ask for a few hundred to a few hundred
    thousand, and compiling each new size was half the time of its theory columns.
    """
    flat = np.asarray(u, np.float64).reshape(-1)
    padded = np.zeros(-(-max(flat.size, 1) // BLOCK) * BLOCK, np.float32)
    padded[: flat.size] = flat
    fn = _phi_and_dphi(activation, float(leaky_slope))
    blocks = [fn(jnp.asarray(block)) for block in padded.reshape(-1, BLOCK)]
    phi, dphi = (np.concatenate([np.asarray(b[i], np.float64) for b in blocks])[: flat.size]
                 for i in (0, 1))
    return phi.reshape(np.shape(u)), dphi.reshape(np.shape(u))


def negative_slope(activation: str, leaky_slope: float) -> float | None:
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
class GaussianMoments:
    """Gaussian moments of phi at variance q (arrays shaped like q)."""

    phi_sq: np.ndarray  # E[phi(sqrt(q) z)^2]
    dphi_sq: np.ndarray  # E[phi'(sqrt(q) z)^2]
    slope: np.ndarray  # d/dq E[phi(sqrt(q) z)^2] = E[z phi phi'] / sqrt(q)


def moments(activation: str, q, *, leaky_slope: float = LEAKY_SLOPE) -> GaussianMoments:
    """E[phi^2], E[phi'^2] and dE[phi^2]/dq at z^l ~ N(0, q), closed form where one exists."""
    q = np.asarray(q, np.float64)
    a = negative_slope(activation, leaky_slope)
    if a is not None:
        m2 = (1 + a * a) / 2
        return GaussianMoments(m2 * q, np.full_like(q, m2), np.full_like(q, m2))
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
    return GaussianMoments(phi_sq.reshape(q.shape), dphi_sq.reshape(q.shape),
                           slope.reshape(q.shape))


def pair_moments(
    activation: str, q: float, c: float, *, leaky_slope: float = LEAKY_SLOPE
) -> tuple[float, float]:
    """(E[phi(u_1) phi(u_2)], E[phi'(u_1) phi'(u_2)]) for (u_1, u_2) ~ N(0, q [[1, c], [c, 1]]).

    Closed form (arc-cosine kernels) for the homogeneous activations; otherwise the outer
    expectation over u_1 and, for each u_1 node, the conditional one over
    u_2 | u_1 ~ N(c u_1, q (1 - c^2)), both on `gaussian_rule`.
    """
    a = negative_slope(activation, leaky_slope)
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
