"""One row per layer of every model: the rows the report's profiles, heatmaps and histograms and
`gradjax findings` read, whatever the model.

A results table has one row per parameter tensor and per tap (`gradjax.results.schema`). A
layer's row here is its weight tensor's row:

- "W" where the model's parameters are a list of {"W", "b"} layers (the MLP, resmlp, and any
  plug-in laid out that way);
- otherwise the float leaf with the most entries among the layer's parameter rows (a Linear's
  or a convolution's kernel, not its bias; `layer` numbers a plug-in's modules in forward order).

The layer statistics (LAYER_STATS: dL/dz, pre-activations, dead and saturated units) sit on an
MLP's W row; a plug-in measures them at its taps, so the weight row takes them from the tap of
the same layer where it has none. A layer without a parameter tensor (a tap alone) has no row.
"""

from __future__ import annotations

import pandas as pd

from gradjax.spec import LAYER_STATS


def is_tap(frame: pd.DataFrame) -> pd.Series:
    """Which rows are taps (param "taps['name']") rather than parameter tensors."""
    return frame["param"].astype(str).str.startswith("taps[")


def layer_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The weight row of every (cell, layer) of a summary or per-seed table (per-seed: of
    every (cell, seed, layer)), ordered by cell, then seed, then layer, with the layer's tap
    statistics filled in where the weight row has none. See the module docstring."""
    keys = [k for k in ("cell", "seed", "layer") if k in frame.columns]
    tap = is_tap(frame)
    params, taps = frame[~tap], frame[tap]
    weights = params[params["param"] == "W"]
    rest = params[~params["cell"].isin(weights["cell"])]
    if not rest.empty:
        biggest = rest.sort_values("n", kind="stable").groupby(keys, sort=False).tail(1)
        weights = pd.concat([weights, biggest])
    weights = weights.sort_values(keys, kind="stable")
    return _with_tap_stats(weights, taps.drop_duplicates(keys), keys)


def _with_tap_stats(weights: pd.DataFrame, taps: pd.DataFrame, keys: list[str]
                    ) -> pd.DataFrame:
    columns = [c for c in weights.columns if any(c == s or c.startswith(f"{s}_")
                                                 for s in LAYER_STATS)]
    if taps.empty or not columns:
        return weights
    from_taps = weights[keys].merge(taps[[*keys, *columns]], on=keys, how="left")
    out = weights.copy()
    for column in columns:
        out[column] = out[column].where(out[column].notna(), from_taps[column].to_numpy())
    return out


def weight_name(param: str, layer: int) -> str:
    """A layer's weight in words: "W2" for an MLP-shaped layer, else "layer 2 ['c']['kernel']"."""
    return f"W{layer}" if param == "W" else f"layer {layer} {param}"


def weight_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Every weight row of a table: W where a cell's parameters are {"W", "b"} layers, every
    parameter row (not a tap) of other cells."""
    laid_out = frame["cell"].isin(frame.loc[frame["param"] == "W", "cell"])
    return frame[~is_tap(frame) & (~laid_out | (frame["param"] == "W"))]
