"""The mean-field columns of a sweep's summary: `add_theory_columns` puts the predictions of
`gradjax.nn.theory` (q*, chi_1, the depth scales, the per-layer gradient ratios and the fit of
their profile) and the measured chi_1 beside the measurements of one cell.

It reads the cell's options from the summary rows (activation, scale, bias, depth, width,
inputs) and decides where the theory applies: at the init of the fan_in_normal MLP with no
norm and a Gaussian or zero bias; other cells get NaN in the theory columns.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from gradjax.nn.theory import fit_chi1, layer_profile, mean_field, predicted_profile
from gradjax.spec import THEORY_COLUMNS, capabilities
from gradjax.spec.option import LEAKY_SLOPE


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
