"""Distributions over inits: histograms of a per-init statistic for a few cells, and the
small multiples of the seed's examples (size, spread, zeros and alignment of the first and last
layer's weight gradients).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from gradjax.analysis.drawing import (
    UNIT_COS_SQ,
    Figure,
    cell_title,
    fmt,
    make_figure,
    new_figure,
    resolve_layer,
    short_text,
    spans_decades,
    stat_label,
    varying_among,
)
from gradjax.analysis.profiles import LINE_KEYS
from gradjax.results import reading
from gradjax.results.columns import option_columns
from gradjax.results.layers import layer_rows, weight_name

MAX_EXAMPLE_CELLS = 6


MAX_HIST_CELLS = 6


def _default_hist_cells(rows: pd.DataFrame, stat: str) -> list[int]:
    """Up to MAX_HIST_CELLS cells spanning the range of the statistic's median."""
    column = f"{stat}_p50"
    ranked = rows.dropna(subset=[column]).sort_values(column)
    if len(ranked) <= MAX_HIST_CELLS:
        return list(ranked["cell"])
    picks = np.unique(np.linspace(0, len(ranked) - 1, MAX_HIST_CELLS).round().astype(int))
    return list(ranked["cell"].iloc[picks])


def histogram_figure(
    folder: Path, summary: pd.DataFrame, layer: int, stat: str, cells: list[int] | None
) -> Figure | str:
    """One panel per chosen cell: the statistic of W at `layer` across the cell's inits."""
    rows = resolve_layer(summary, layer)
    chosen = cells if cells is not None else _default_hist_cells(rows, stat)
    chosen = [c for c in chosen if c in set(rows["cell"])]
    if not chosen:
        return f"Histograms skipped: {stat} is undefined at layer {layer} in every cell."
    picked = rows[rows["cell"].isin(chosen)]
    varying = varying_among(picked, option_columns(picked))
    keys = [c for c in ("activation", *LINE_KEYS) if c in varying]
    keys = keys[:4] or ["activation", "scale"]
    cols = min(3, len(chosen))
    n_rows = math.ceil(len(chosen) / cols)
    fig = new_figure(4.0 * cols + 0.4, 2.9 * n_rows + 0.9)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    where = (f"layer {layer}'s weight" if layer > 0 else "the output layer's weight"
             if layer == -1 else f"layer {layer}'s weight")
    lines = []
    for k, cell in enumerate(chosen):
        ax = axes[k // cols][k % cols]
        row = rows[rows["cell"] == cell].iloc[0]
        values = reading.load(folder, "per_seed", cell=cell, layer=int(row["layer"]),
                              param=row["param"])[stat].to_numpy(np.float64)
        name = f"{row['label'] or 'cell ' + str(cell)}: {short_text(row, keys)}"
        finite = values[np.isfinite(values)]
        log = spans_decades(finite) and finite.min() >= 0
        shown = finite[finite > 0] if log else finite
        if shown.size == 0:
            ax.text(0.5, 0.5, "undefined for every init", transform=ax.transAxes, ha="center")
        else:
            lo, hi = shown.min(), shown.max()
            bins = (np.geomspace(lo, hi, 40) if log
                    else np.linspace(lo - 0.5, hi + 0.5, 40) if lo == hi else 40)
            ax.hist(shown, bins=bins, color="tab:blue", alpha=0.75,
                    weights=np.full(shown.size, 1.0 / values.size))
            p05, p50, p95 = np.percentile(finite, [5, 50, 95])
            ax.axvline(p50, color="black", ls="--", lw=1, label=f"median {fmt(p50)}")
            ax.axvspan(p05, p95, color="0.5", alpha=0.15, label=f"5-95%: {fmt(p05)}..{fmt(p95)}")
            if log:
                ax.set_xscale("log")
            zeros = np.count_nonzero(finite == 0) if log else 0
            if zeros:
                ax.plot([], [], " ", label=f"{zeros / values.size:.1%} of inits = 0 (not shown)")
            ax.legend(fontsize=7, loc="upper right")
            lines.append(f"{name}: median {fmt(p50)}, 5-95% {fmt(p05)}..{fmt(p95)}"
                         + (f", {values.size - shown.size} of {values.size} inits zero or "
                            "undefined" if values.size > shown.size else ""))
        ax.set_title(name, fontsize=8.5)
        ax.set_xlabel(stat_label(stat, f"{stat} of {where}"))
        ax.set_ylabel("fraction of inits")
    for k in range(len(chosen), n_rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle(f"{stat} of {where} across random inits, one panel per cell: a wide histogram "
                 "means\nthe seed alone decides how much gradient this layer gets", fontsize=10)
    text = (f"Distribution across seeds of {stat} at {where}, with each panel's own axis "
            f"(log where it spans decades); shaded: 5th to 95th percentile. " + "; ".join(lines)
            + ".")
    return make_figure("histograms", f"Histograms of {stat} across inits", text, fig)


def examples_figure(folder: Path, summary: pd.DataFrame) -> Figure | str:
    """One column per cell (the seed's three examples): size, spread, zeros and alignment of the
    weight gradients of the first and last layer."""
    cells = summary.drop_duplicates("cell").sort_values("cell")
    if len(cells) > MAX_EXAMPLE_CELLS:
        return (f"Small multiples skipped: drawn for sweeps of at most {MAX_EXAMPLE_CELLS} cells "
                f"(like the seed's three examples); this sweep has {len(cells)}.")
    per_seed = layer_rows(reading.load(folder, "per_seed"))
    n = len(cells)
    fig = new_figure(3.9 * n + 0.6, 11.0)
    axes = fig.subplots(4, n, squeeze=False)
    from matplotlib import colormaps

    findings = []
    for k, (_, cell) in enumerate(cells.iterrows()):
        data = per_seed[per_seed["cell"] == cell["cell"]]
        n_layers = int(data["layer"].max())
        shown_layers = sorted({1, n_layers})
        colours = colormaps["tab10"]([0, 3])
        for colour, layer in zip(colours, shown_layers, strict=False):
            values = data[data["layer"] == layer]
            mean_abs = values["grad_mean_abs"].to_numpy(np.float64)
            cv = values["grad_cv"].to_numpy(np.float64)
            zeros = values["grad_frac_zero"].to_numpy(np.float64)
            name = weight_name(values["param"].iloc[0], layer)
            _log_hist(axes[0][k], mean_abs, colour, name)
            _log_hist(axes[1][k], cv, colour, name)
            levels, counts = np.unique(np.round(zeros, 4), return_counts=True)
            offset = -0.012 if layer == 1 else 0.012
            axes[2][k].bar(levels + offset, counts / zeros.size, width=0.022, color=colour,
                           label=name)
            cos = values[UNIT_COS_SQ].to_numpy(np.float64)
            if np.isfinite(cos).any():
                levels, counts = np.unique(np.round(cos[np.isfinite(cos)], 2), return_counts=True)
                axes[3][k].bar(levels + offset, counts / cos.size, width=0.022, color=colour,
                               label=name)
            findings.append(
                f"{cell['label'] or 'cell ' + str(cell['cell'])} {name}: median mean|g| "
                f"{fmt(np.nanmedian(mean_abs))}, median cv {fmt(np.nanmedian(cv))}, "
                f"{np.mean(zeros):.1%} of entries exactly 0, "
                f"{np.mean(values['grad_max_abs'].to_numpy() == 0):.1%} of inits all-zero"
                + (f", squared unit cosine takes {_distinct(cos)}" if np.isfinite(cos).any()
                   else ""))
        axes[0][k].set_title(cell_title(cell), fontsize=8.5)
        axes[0][k].set_xlabel(stat_label("grad_mean_abs", "mean |dL/dW| per tensor"))
        axes[1][k].set_xlabel(stat_label("grad_cv", "std / mean |dL/dW| per tensor (grad_cv)"))
        axes[2][k].set_xlabel(stat_label("grad_frac_zero", "the tensor's entries exactly 0"))
        axes[2][k].set_xlim(-0.06, 1.06)
        axes[3][k].set_xlabel(stat_label(UNIT_COS_SQ, "mean squared cosine between units' "
                                                       "gradients"))
        axes[3][k].set_xlim(-0.06, 1.06)
        axes[3][k].text(0.02, 0.97, "(one output unit: no cosine for the last layer)"
                        if n_layers > 1 and cell.get("out_dim") == 1 else "",
                        transform=axes[3][k].transAxes, fontsize=6.5, va="top")
        for row in range(4):
            axes[row][k].set_ylabel("fraction of inits")
            axes[row][k].legend(fontsize=7, loc="upper right")
    fig.suptitle(
        "Why are gradients the same value? Each column is one network over "
        f"{int(cells['seeds'].iloc[0]):,} inits.\nRow 1: how big; row 2: how alike (cv near 0 = "
        "all entries equal); row 3: how many are exactly 0;\nrow 4: how aligned (squared "
        "cosine 1 = every unit's gradient is parallel up to sign, 0 = orthogonal)", fontsize=10)
    text = ("Small multiples of the per-init weight-gradient statistics, one column per cell. "
            + "; ".join(findings) + ".")
    return make_figure("examples", "The sweep's cells side by side", text, fig)


def _distinct(values: np.ndarray) -> str:
    """How many distinct values (to 2 decimals) the finite entries take; the values if few."""
    levels = np.unique(np.round(values[np.isfinite(values)], 2))
    shown = f" ({', '.join(f'{v:g}' for v in levels)})" if len(levels) <= 4 else ""
    return f"{len(levels)} distinct value{'s' if len(levels) != 1 else ''}{shown}"


def _log_hist(ax, values: np.ndarray, colour, name: str) -> None:
    finite = values[np.isfinite(values) & (values > 0)]
    dropped = values.size - finite.size
    if finite.size == 0:
        ax.text(0.5, 0.5, f"{name}: no positive values", transform=ax.transAxes, ha="center")
        return
    lo, hi = finite.min(), finite.max()
    label = name + (f" ({dropped} inits undefined or 0)" if dropped else "")
    ax.set_xscale("log")
    p05, median, p95 = np.percentile(finite, [5, 50, 95])
    if p95 < 1.05 * p05:  # (nearly) one value for every init: a histogram would be a sliver
        spread = max(p95 / median - 1, 1 - p05 / median)
        ax.axvline(median, color=colour, lw=3,
                   label=f"{label}: 90% of inits within {spread:.1%} of {fmt(median)}")
        left, right = ax.get_xlim()
        ax.set_xlim(min(left, median / 3), max(right, median * 3))
        return
    ax.hist(finite, bins=np.geomspace(lo, hi, 50), histtype="stepfilled", alpha=0.55,
            color=colour, label=label, weights=np.full(finite.size, 1.0 / values.size))
