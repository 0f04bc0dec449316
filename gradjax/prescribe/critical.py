"""The `critical` criterion: the global weight scale at which dL/dz keeps its size with depth.

At the mean-field order-to-chaos boundary (Poole et al. 2016, "Exponential expressivity in deep
neural networks through transient chaos"; Schoenholz et al. 2017, "Deep information
propagation") the backward pass multiplies E|dL/dz_l|^2 by chi_1 = sigma_w^2 E[phi'(z)^2] per
layer, and chi_1 = 1 is the scale at which gradients neither vanish nor explode with depth.
Here chi is *measured*, on any model with taps: exp of minus the slope of ln |dL/dz_l|^2
against the layer over the middle layers (`gradjax.nn.theory.middle_layers`, the window
`measured_chi1` uses), or over every layer but the output's for a network too shallow to have
three middle layers (fewer than 5 layers with dL/dz), and the critical scale is where ln chi
crosses 0 on a grid of scales, interpolated linearly in ln scale.

Two estimates come from the same runs:
- `critical_scale`: the crossing of chi fitted to the mean over inits of |dL/dz_l|^2 (what
  mean-field theory predicts, and what `measured_chi1` reads);
- the per-init crossings, from each init's own profile, whose 5th and 95th percentiles give the
  interval across inits. A per-init chi is the ratio of one network's gradients, the mean of
  whose logarithm is below the logarithm of the mean by the spread of ln |dL/dz|^2 (O(1/width)
  per layer), so the per-init crossings sit above the mean's.
"""

from __future__ import annotations

import math

import numpy as np

from gradjax.nn.theory import middle_layers

MIN_LAYERS = 3  # layers with dL/dz: two to fit beside the output layer, which is left out


def fit_window(n_layers: int) -> np.ndarray:
    """The layers chi is fitted on: the middle ones (`middle_layers`) when there are at least
    three, else every layer but the output's (whose dL/dz is the loss's own)."""
    middle = middle_layers(n_layers)
    return middle if middle.size >= 3 else np.arange(1, n_layers)


def chi_of_profile(layers: np.ndarray, delta_sq_norm: np.ndarray) -> float:
    """chi measured on one profile of |dL/dz_l|^2 over `layers` (1 = the input side, the last
    the output): exp(-slope) of the least-squares line through ln |dL/dz_l|^2 against l over
    `fit_window`; NaN when fewer than two of those values are finite and positive (dead or
    underflowed gradients) or the network has fewer than 3 layers with dL/dz."""
    layers = np.asarray(layers, np.float64)
    if layers.size == 0:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.asarray(delta_sq_norm, np.float64))
    ok = np.isin(layers, fit_window(int(layers.max()))) & np.isfinite(logs)
    if np.count_nonzero(ok) < 2:
        return math.nan
    return float(np.exp(-np.polyfit(layers[ok], logs[ok], 1)[0]))


def crossing(scales: np.ndarray, log_chi: np.ndarray) -> float:
    """The scale at which ln chi crosses 0, interpolated linearly in ln scale between the two
    grid points around it; NaN when no two neighbouring finite points bracket 0.

    Args:
      scales: the grid of weight scales, positive (any order).
      log_chi: ln chi at each scale (NaN where it was not measured).

    Returns:
      The crossing nearest to where ln chi is smallest in magnitude, if several exist.
    """
    scales, log_chi = np.asarray(scales, np.float64), np.asarray(log_chi, np.float64)
    order = np.argsort(scales)
    ln_s, y = np.log(scales[order]), log_chi[order]
    ok = np.isfinite(y)
    ln_s, y = ln_s[ok], y[ok]
    if y.size and np.any(y == 0):
        return float(np.exp(ln_s[np.argmin(np.abs(y))]))
    brackets = np.flatnonzero(np.sign(y[:-1]) * np.sign(y[1:]) < 0)
    if brackets.size == 0:
        return math.nan
    i = brackets[np.argmin(np.minimum(np.abs(y[brackets]), np.abs(y[brackets + 1])))]
    t = y[i] / (y[i] - y[i + 1])
    return float(np.exp(ln_s[i] + t * (ln_s[i + 1] - ln_s[i])))


def zoomed_grid(scales: np.ndarray, centre: float, spread: tuple[float, float],
                points: int) -> np.ndarray:
    """The next grid: `points` scales evenly spaced in ln scale over the grid cell around
    `centre` (its two neighbours on the current grid), widened to cover `spread` (the 5-95 %
    range of the per-init crossings) so that the interval across inits stays on the grid."""
    grid = np.sort(np.asarray(scales, np.float64))
    above = min(int(np.searchsorted(grid, centre)), grid.size - 1)
    low, high = grid[max(above - 1, 0)], grid[above]
    finite = [s for s in spread if math.isfinite(s)]
    low, high = min([low, *finite]), max([high, *finite])
    return np.exp(np.linspace(math.log(low), math.log(high), points))


def percentiles(values: np.ndarray) -> tuple[float, float, float]:
    """(5th, 50th, 95th) percentiles of the finite values; NaNs when there are none."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    p05, p50, p95 = np.percentile(values, [5, 50, 95])
    return float(p05), float(p50), float(p95)
