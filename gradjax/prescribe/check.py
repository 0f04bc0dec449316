"""The check round's reading: the same inits before and after a prescription, from the
round's results folder (per-seed rows), as the tune table's `*_before`, `*_after` and
`improved` columns. Never hidden: a tuned init that does not balance the gradients says so."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gradjax.results import reading

BETTER = 1.25  # `improved`: the tuned grad_spread is nearer 1 than the default's by this factor


def balance(folder: Path, by: str = "scale",
            layers: Sequence[int] | None = None) -> pd.DataFrame:
    """For every (`by`, seed) of a finished round's folder, at step 0: `grad_ratio`, the first
    layer's over the last layer's |dL/dW_l|^2 (W: the layer's largest parameter, its weight
    matrix or kernel), `dz_ratio`, the same of |dL/dz_l|^2, and `grad_spread`, the largest
    over the smallest |dL/dW_l|^2 of all layers, or of `layers` (those with a weight leaf:
    a LayerNorm's layer has none)."""
    rows = reading.load(folder, "per_seed", step=0)
    weights = rows[rows["grad_sq_norm"].notna()]
    if layers is not None:
        weights = weights[weights["layer"].isin(layers)]
    weights = weights[weights["n"] == weights.groupby("layer")["n"].transform("max")]
    taps = rows[rows["delta_sq_norm"].notna()]
    found = {}
    for name, kept, stat in (("grad", weights, "grad_sq_norm"), ("dz", taps, "delta_sq_norm")):
        by_layer = kept.groupby([by, "seed", "layer"])[stat].first().unstack("layer")
        found[f"{name}_ratio"] = by_layer[by_layer.columns.min()] / by_layer[
            by_layer.columns.max()]
        if name == "grad":
            found["grad_spread"] = by_layer.max(axis=1) / by_layer.min(axis=1)
    return pd.DataFrame(found).reset_index()


def halved(folder: Path, step: int, by: str = "scale") -> pd.Series:
    """Per value of `by`, the fraction of inits whose loss fell below half its step-0 value
    within `step` optimizer steps (`loss_halved_step`)."""
    rows = reading.load(folder, "per_seed", step=step)
    per_init = rows.groupby([by, "seed"])["loss_halved_step"].first()
    return per_init.notna().groupby(by).mean()


def compared(folder: Path, by: str, ends: Mapping[str, Callable[[pd.Index], int]],
             train_steps: int, layers: Sequence[int] | None = None) -> dict[str, Any]:
    """The check round's columns from its finished folder: for each end ("before", "after",
    picked among the values of `by` by `ends[when]`), the medians over inits of `balance`'s
    ratios and `frac_loss_halved`, and `improved`: whether the tuned weight-gradient spread is
    nearer 1 by a factor BETTER. Never hidden: a tuned init that does not balance the
    gradients says False."""
    medians = balance(folder, by, layers).groupby(by).median().drop(columns="seed")
    medians["frac_loss_halved"] = halved(folder, train_steps, by) if train_steps > 0 else math.nan
    found = {f"{r}_{when}": float(medians.iloc[pick(medians.index)][r])
             for when, pick in ends.items() for r in medians.columns}
    before, after = found["grad_spread_before"], found["grad_spread_after"]
    improved = before > 0 and after > 0 and (
        abs(math.log(after)) + math.log(BETTER) < abs(math.log(before)))
    return {**found, "improved": bool(improved)}


def check_nan() -> dict[str, Any]:
    """The check round's columns when there is nothing to check."""
    return {**{f"{r}_{when}": math.nan
               for r in ("grad_ratio", "grad_spread", "dz_ratio", "frac_loss_halved")
               for when in ("before", "after")}, "improved": False}
