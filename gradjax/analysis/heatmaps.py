"""Heatmaps: a statistic's median over inits at one layer, on a grid of two options (one panel
per value of a third), each panel on its own colour scale unless asked to share one.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gradjax.analysis.drawing import (
    AXIS_LABELS,
    AXIS_ORDER,
    Figure,
    determined,
    distinct_labels,
    fix_other_options,
    fmt,
    footer,
    make_figure,
    new_figure,
    notes_sentence,
    ordered,
    resolve_layer,
    short_text,
    spans_decades,
    stat_label,
    varying_among,
)
from gradjax.results.columns import option_columns


@dataclasses.dataclass(frozen=True)
class HeatmapStat:
    stat: str  # the statistic (`STAT_TABLE`)
    column: str  # the summary column
    title: str  # what is shown
    what: str  # colour-bar label, before the measure
    look: str  # what to look at
    limits: tuple[float, float] | None = None  # a fixed colour range (else from the values)

    @property
    def caption(self) -> str:
        """The colour bar's label, with what the values measure."""
        return stat_label(self.stat, self.what)


HEATMAP_STATS: dict[str, HeatmapStat] = {
    "grad_var": HeatmapStat(
        "grad_var", "grad_var_p50", "median gradient variance",
        "median over inits of Var(dL/dW entries)", "dark = gradients vanish",
    ),
    "frac_zero": HeatmapStat(
        "grad_frac_zero", "grad_frac_zero_mean", "fraction of gradient entries exactly 0",
        "fraction of dL/dW entries == 0, mean over inits", "bright = many gradients exactly zero",
    ),
    "unit_cos_sq": HeatmapStat(
        "grad_unit_cos_sq", "grad_unit_cos_sq_mean", "squared cosine between units' gradients",
        "mean over unit pairs of cos^2 between their dL/dW columns, mean over inits",
        "1 = every unit's gradient is parallel up to sign, 0 = orthogonal",
        limits=(0.0, 1.0),
    ),
    "saturation": HeatmapStat(
        "act_frac_saturated", "act_frac_saturated_mean", "fraction of saturated units",
        "fraction of units with |phi'| < 1% of its max, mean over inits",
        "bright = saturated units pass almost no gradient",
    ),
}


COLOUR_SCALES: tuple[str, ...] = ("per-panel", "shared")


MAX_FACETS = 4  # heatmap panels


FACET_ORDER = ("depth", "init", "norm", "bias_scale", "width")


def _heatmap_axes(cells: pd.DataFrame, chosen: Sequence[str] | None) -> list[str]:
    """[rows, columns, panels?]: `chosen` (options that must vary), else the first two options
    of AXIS_ORDER that vary and do not follow each other, then a third for the panels."""
    varying = varying_among(cells, option_columns(cells))
    if chosen:
        fixed = [c for c in chosen if c not in varying]
        if fixed:
            verb = "does" if len(fixed) == 1 else "do"
            raise ValueError(f"--heatmap-axes: {', '.join(fixed)} {verb} not vary in this "
                             f"sweep; varying: {', '.join(varying) or 'none'}")
        return list(chosen)
    axes: list[str] = []
    for column in (c for c in AXIS_ORDER if c in varying):
        if len(axes) < 2 and not determined(cells, column, axes):
            axes.append(column)
    for column in (c for c in (*FACET_ORDER, *AXIS_ORDER) if c in varying and c not in axes):
        if len(axes) == 2 and not determined(cells, column, axes):
            axes.append(column)
    return axes


def heatmap_figures(
    summary: pd.DataFrame,
    layer: int,
    stats: Sequence[str],
    axes: Sequence[str] | None = None,
    colour_scale: str = "per-panel",
) -> list[Figure | str]:
    """One heatmap figure per statistic: two options at `layer` (`axes`, or the first two
    that vary), one panel per value of a third, or one note (str) when the sweep has no
    complete grid of them."""
    rows = resolve_layer(summary, layer)
    chosen = _heatmap_axes(rows.drop_duplicates("cell"), axes)
    if len(chosen) < 2:
        return [f"Heatmaps ({', '.join(stats)}) skipped: they need two options that vary; "
                f"this sweep varies {', '.join(chosen) or 'none'}."]
    row_key, col_key, facet = (*chosen, None)[:3]
    rows, notes = fix_other_options(rows, chosen)
    facets = ordered(rows[facet]) if facet else [None]
    if len(facets) > MAX_FACETS:
        notes.append(f"{facet}: the first {MAX_FACETS} of {len(facets)} values")
        facets = facets[:MAX_FACETS]
        rows = rows[rows[facet].isin(facets)]
    n_rows, n_cols = rows[row_key].nunique(), rows[col_key].nunique()
    pairs = len(rows.drop_duplicates(chosen))
    if n_rows < 2 or n_cols < 2 or pairs < n_rows * n_cols * len(facets):
        return [f"Heatmaps ({', '.join(stats)}) skipped: the sweep has no complete {row_key} x "
                f"{col_key} grid ({n_rows} {row_key}(s), {n_cols} {col_key}(s), {pairs} of the "
                f"{n_rows * n_cols * len(facets)} cells)."]
    return [heatmap_figure(rows, layer, stat, axes=(row_key, col_key), facet=facet, notes=notes,
                           colour_scale=colour_scale) for stat in stats]


@dataclasses.dataclass
class _Grid:
    """One statistic on a complete grid: values[panel, row, column] and the axes' values."""

    row_key: str
    col_key: str
    facet: str | None
    row_values: list[Any]
    col_values: list[Any]
    facets: list[Any]
    values: np.ndarray

    @classmethod
    def of(cls, rows: pd.DataFrame, column: str, axes: Sequence[str], facet: str | None):
        row_key, col_key = axes
        row_values, col_values = ordered(rows[row_key]), ordered(rows[col_key])
        facets = ordered(rows[facet]) if facet else [None]
        grids = [
            (rows if f is None else rows[rows[facet] == f]).pivot_table(
                index=row_key, columns=col_key, values=column, aggfunc="mean", dropna=False,
            ).reindex(index=row_values, columns=col_values).to_numpy(np.float64)
            for f in facets
        ]
        return cls(row_key, col_key, facet, row_values, col_values, facets, np.stack(grids))

    def point(self, k: int, i: int, j: int) -> str:
        """The options of one value, names alone: "tanh, scale 2, depth 4"."""
        keys = [self.row_key, self.col_key, *([self.facet] if self.facet else [])]
        values = dict(zip(keys, (self.row_values[i], self.col_values[j], self.facets[k]),
                          strict=False))
        return short_text(values, keys)


def heatmap_figure(
    rows: pd.DataFrame,
    layer: int,
    stat: str,
    *,
    axes: Sequence[str] = ("activation", "scale"),
    facet: str | None = None,
    notes: Sequence[str] = (),
    colour_scale: str = "per-panel",
) -> Figure | str:
    """`axes` (rows, columns) of one statistic from the W rows of one layer (a complete grid),
    one panel per value of `facet`, each on its own colour scale or on one `shared` scale."""
    info = HEATMAP_STATS[stat]
    grid = _Grid.of(rows, info.column, axes, facet)
    if not np.isfinite(grid.values).any():
        return (f"Heatmap '{stat}' skipped: {info.column} is undefined at layer {layer} in "
                "every cell.")
    shared = colour_scale == "shared"
    fig = new_figure(max(6.5, 2.4 + 0.62 * len(grid.col_values)) + (0 if shared else 0.8),
                      1.4 + (1.0 + 0.36 * len(grid.row_values)) * len(grid.facets))
    where = "output layer" if layer == -1 else f"layer {layer}"
    schemes = list(dict.fromkeys(rows["init"].dropna())) if "init" in rows else []
    inits = None if "init" in (*axes, facet) or not schemes else "/".join(map(str, schemes))
    _draw_heatmap_panels(fig, grid, limits=info.limits, shared=shared, caption=info.caption,
                         inits=inits)
    scales = ("one colour scale for all panels" if shared or len(grid.facets) == 1
              else "each panel has its own colour scale")
    fig.suptitle(f"{where}: {info.title}\n{info.look}; {scales}", fontsize=10)
    footer(fig, notes)
    every = grid.values
    low = np.unravel_index(np.nanargmin(every), every.shape)
    high = np.unravel_index(np.nanargmax(every), every.shape)
    text = (f"{info.caption} at {where}, per {axes[0]} and {axes[1]}"
            + (f", one panel per {facet}" if facet else "") + f"; {scales}. Lowest "
            f"{fmt(every[low])} ({grid.point(*low)}); highest {fmt(every[high])} "
            f"({grid.point(*high)}). Grey (n/a): no value, e.g. overflow to inf or NaN in every "
            "init.")
    if notes:
        text += " " + notes_sentence(notes)
    return make_figure(f"heatmap-{stat}", f"Heatmap: {stat} at {where}", text, fig)


def _draw_heatmap_panels(
    fig, grid: _Grid, *, limits: tuple[float, float] | None, shared: bool, caption: str,
    inits: str | None
) -> None:
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    axes = fig.subplots(len(grid.facets), 1, squeeze=False)[:, 0]
    common = _colour_norm(grid.values, limits=limits)
    for ax, f, values in zip(axes, grid.facets, grid.values, strict=True):
        norm, log = common if shared else _colour_norm(values, limits=limits)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
        columns = distinct_labels(grid.col_values)
        ax.set_xticks(range(len(columns)), columns,
                      rotation=45 if max(map(len, columns)) > 3 else 0)
        ax.set_yticks(range(len(grid.row_values)), distinct_labels(grid.row_values))
        ax.set_ylabel(textwrap.fill(AXIS_LABELS.get(grid.row_key, grid.row_key), 18),
                      fontsize=8.5)
        if f is not None:
            ax.set_title(f"{grid.facet} {distinct_labels([f])[0]}", fontsize=9)
        if values.size <= 200:
            _annotate(ax, values, norm, log)
        if not shared:
            bar = fig.colorbar(image, ax=ax)
            bar.set_label(textwrap.fill(caption + (" (log)" if log else ""), 34), fontsize=7)
    axes[-1].set_xlabel(_column_label(grid.col_key, inits))
    if shared:
        bar = fig.colorbar(image, ax=list(axes))
        bar.set_label(caption + (" (log)" if common[1] else ""), fontsize=8)


def _column_label(col_key: str, inits: str | None) -> str:
    if col_key == "scale":
        return ("weight scale (multiplies the init's std"
                + (f"; init {inits}" if inits else "") + ")")
    return AXIS_LABELS.get(col_key, col_key)


def _annotate(ax, values: np.ndarray, norm, log: bool) -> None:
    """Each cell's value, dark text on light colours."""
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=6.5)
                continue
            ax.text(j, i, f"{v:.1g}" if log else f"{v:.2g}", ha="center", va="center",
                    fontsize=6.5, color="black" if norm(v) > 0.6 else "white")


def _colour_norm(values: np.ndarray, *, limits: tuple[float, float] | None = None):
    """(matplotlib norm, is_log): `limits` where the statistic has a fixed range (a squared
    cosine's 0..1); else log where positive values span decades, symmetric-log (linear below
    the smallest positive value) when zeros sit among them."""
    from matplotlib.colors import LogNorm, Normalize, SymLogNorm

    finite = values[np.isfinite(values)]
    if limits is not None:
        return Normalize(*limits), False
    if finite.size == 0:
        return Normalize(0.0, 1.0), False
    if spans_decades(finite) and finite.min() >= 0:
        positive = finite[finite > 0]
        if finite.min() == 0:
            return SymLogNorm(positive.min(), linscale=1.0, vmin=0.0, vmax=positive.max()), True
        return LogNorm(positive.min(), positive.max()), True
    return Normalize(min(0.0, finite.min()), max(finite.max(), 1e-12)), False
