"""Layer profiles: per-layer statistics (mean over inits) against the layer, one line per
value of the first varying option, one panel per value of the next ones, with the mean-field
prediction dashed where the family has one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gradjax.analysis.drawing import (
    LARGEST_FIRST,
    Figure,
    determined,
    distinct_labels,
    fix_other_options,
    footer,
    is_number,
    make_figure,
    new_figure,
    notes_sentence,
    ordered,
    short_text,
    spans_decades,
    stat_label,
    varying_among,
)
from gradjax.results.layers import layer_rows
from gradjax.spec import STAT_BY_NAME

# Profile statistics by default: dL/dz shows vanishing gradients that dL/dW can hide (in a
# bias-free net |dL/dW_l|^2 = |dL/dz_l|^2 |a_{l-1}|^2 can stay flat while dL/dz shrinks).
PROFILE_STATS: tuple[str, ...] = ("delta_sq_norm", "grad_sq_norm")


MAX_PANELS = 12  # profile panels (each with one plot per statistic)


# Options that name a profile's lines and panels, when they vary (JSON inputs/targets are too
# long); the first is the lines' colour, the next one or two (after activation) the panels.
LINE_KEYS: tuple[str, ...] = (
    "scale", "bias_scale", "init", "bias_init", "norm", "depth", "width", "batch", "loss",
    "output_activation", "leaky_slope", "dtype",
)


@dataclasses.dataclass(frozen=True)
class ProfileStat:
    symbol: str  # panel titles
    meaning: str  # the title of a figure's only panel
    quantity: str  # the y label, before "mean over inits"


PROFILE_LABELS: dict[str, ProfileStat] = {
    "delta_sq_norm": ProfileStat(r"$\partial L/\partial z_l$", "the backpropagated signal",
                                 r"$|\partial L/\partial z_l|^2$, mean over the batch"),
    "grad_sq_norm": ProfileStat(r"$\partial L/\partial W_l$", "the weight gradient",
                                r"$\|\partial L/\partial W_l\|^2$"),
}


# The rows whose theory_grad_ratio predicts a statistic: E|dL/dz_l|^2 changes per layer as
# E|dL/db_l|^2 does (the bias gradient is dL/dz_l summed over the batch).
THEORY_PARAM: dict[str, str] = {"grad_sq_norm": "W", "delta_sq_norm": "b"}


LOG_ALWAYS = ("grad_sq_norm", "delta_sq_norm", "grad_var")


def _profile_stat(stat: str) -> ProfileStat:
    """A statistic's labels: drawn by hand for the default ones, else from `STAT_TABLE`."""
    return PROFILE_LABELS.get(stat, ProfileStat(stat, STAT_BY_NAME[stat].doc, stat))


@dataclasses.dataclass
class _Profiles:
    """What a profile figure draws: the W rows, the lines' option, the panels and notes."""

    rows: pd.DataFrame
    line: str | None
    panel_keys: list[str]
    panels: list[tuple[Any, ...]]
    notes: list[str]


def _profile_keys(cells: pd.DataFrame) -> tuple[str | None, list[str]]:
    """The lines' option (the first of LINE_KEYS that varies, depth/width/batch last) and up to
    two panel options: activation, then the next option that varies and does not follow the
    others, while there are at most MAX_PANELS panels."""
    varying = varying_among(cells, ("activation", *LINE_KEYS))
    candidates = [c for c in LINE_KEYS if c in varying and c not in LARGEST_FIRST]
    candidates += [c for c in LINE_KEYS if c in varying and c in LARGEST_FIRST]
    line = candidates[0] if candidates else ("activation" if "activation" in varying else None)
    panels = ["activation"] if "activation" in varying and line != "activation" else []
    for column in candidates[1:]:
        if (len(panels) < 2 and not determined(cells, column, [line, *panels])
                and len(cells[[*panels, column]].drop_duplicates()) <= MAX_PANELS):
            panels.append(column)
    return line, panels


def _profile_layout(w: pd.DataFrame) -> _Profiles:
    """The lines and panels of W rows `w`, the second panel option outermost, and the notes on
    what is fixed or left out (more than MAX_PANELS panels)."""
    line, panel_keys = _profile_keys(w.drop_duplicates("cell"))
    rows, notes = fix_other_options(w, [k for k in (line, *panel_keys) if k])
    cells = rows.drop_duplicates("cell")
    ranks = [{v: i for i, v in enumerate(ordered(cells[k]))} for k in panel_keys]
    panels = sorted({tuple(p) for p in cells[panel_keys].itertuples(index=False)},
                    key=lambda p: [r[v] for r, v in reversed(list(zip(ranks, p, strict=True)))])
    if len(panels) > MAX_PANELS:
        notes.append(f"the first {MAX_PANELS} of {len(panels)} {'/'.join(panel_keys)} panels")
        panels = panels[:MAX_PANELS]
        keep = [tuple(p) in set(panels) for p in rows[panel_keys].itertuples(index=False)]
        rows = rows[keep]
    return _Profiles(rows, line, panel_keys, panels or [()], notes)


def _line_styles(layout: _Profiles) -> dict[Any, tuple[Any, str]]:
    """Line value -> (colour, legend label): viridis for numbers, tab10 for names."""
    from matplotlib import colormaps

    cells = layout.rows.drop_duplicates("cell")
    if layout.line is None:
        return {None: (colormaps["viridis"](0.3), cells["label"].iloc[0] or
                       f"cell {cells['cell'].iloc[0]}")}
    values = ordered(cells[layout.line])
    if all(is_number(v) for v in values):
        colours = colormaps["viridis"](np.linspace(0, 0.92, len(values)))
    else:
        colours = colormaps["tab10" if len(values) <= 10 else "tab20"](np.arange(len(values)))
    labels = distinct_labels(values)
    if layout.line == "scale" and (cells["init"] == "fan_in_normal").all():
        labels = [rf"{t} ($\sigma_w^2$ = {v ** 2:.3g})" for t, v in zip(labels, values,
                                                                           strict=True)]
    return {v: (c, t) for v, c, t in zip(values, colours, labels, strict=True)}


def _theory_line(cell_w: pd.DataFrame, column: str = "grad_sq_norm_mean") -> np.ndarray | None:
    """Predicted `column` from theory_grad_ratio, anchored at the measured output layer."""
    ratios = cell_w["theory_grad_ratio"].to_numpy(np.float64)[:-1]
    measured = cell_w[column].to_numpy(np.float64)
    if not np.isfinite(ratios).any() or not np.isfinite(ratios[1:]).all() or not measured[-1] > 0:
        return None
    logs = np.log(ratios)
    line = np.exp(np.log(measured[-1]) + np.concatenate([np.cumsum(logs[::-1])[::-1], [0.0]]))
    return line  # NaN at layer 1 where the input's norm is unknown


def _theory_rows(summary: pd.DataFrame, cell_w: pd.DataFrame, stat: str) -> pd.DataFrame | None:
    """The cell's layers with the measured `stat` and the ratios that predict it, if any."""
    param = THEORY_PARAM.get(stat)
    if param is None or "theory_grad_ratio" not in summary.columns:
        return None
    ratios = summary[(summary["cell"] == cell_w["cell"].iloc[0]) & (summary["param"] == param)]
    return cell_w[["layer", f"{stat}_mean"]].merge(
        ratios[["layer", "theory_grad_ratio"]], on="layer").sort_values("layer")


def _profile_log(rows: pd.DataFrame, stat: str) -> bool:
    values = rows[f"{stat}_mean"].to_numpy(np.float64)
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() >= 0 and (stat in LOG_ALWAYS or spans_decades(finite))


def _draw_profile_panel(ax, summary, rows, stat, styles, line, log) -> tuple[set[str], bool]:
    """One statistic of the panel's cells against layer; (edge markers used, theory drawn)."""
    edges, theory = set(), False
    for _, cell_w in rows.groupby("cell", sort=True):
        colour, _ = styles[cell_w[line].iloc[0] if line else None]
        x, y = cell_w["layer"].to_numpy(), cell_w[f"{stat}_mean"].to_numpy(np.float64)
        ax.plot(x, np.where(y > 0, y, np.nan) if log else y, "-o", color=colour, ms=3.5, lw=2.0,
                alpha=0.85)
        # off the axis: mark them on its edge (a gradient's NaN is overflow; act_*'s is not)
        overflow = ~np.isfinite(y) if stat.startswith(("grad_", "delta_")) else np.isinf(y)
        for mask, edge, marker in ((y == 0, 0.0, "v"), (overflow, 1.0, "^")):
            if mask.any() and (log or marker == "^"):
                edges.add(marker)
                ax.plot(x[mask], np.full(mask.sum(), edge), marker, color=colour, ms=5,
                        transform=ax.get_xaxis_transform(), clip_on=False, ls="none")
        frame = _theory_rows(summary, cell_w, stat)
        predicted = None if frame is None else _theory_line(frame, f"{stat}_mean")
        if predicted is not None:
            theory = True
            ax.plot(frame["layer"], predicted, "--", color="black", lw=0.9, zorder=5)
    if log:
        ax.set_yscale("log")
    ax.set_xlim(0.5, rows["layer"].max() + 0.5)  # every layer, even where one value is finite
    return edges, theory


def _profile_grid(fig, n_panels: int, layout: _Profiles, n_stats: int):
    """Axes [panel][stat]: a panel's statistics side by side; panels wrap, one row per value of
    the second panel option when the row fits."""
    first = len({p[0] for p in layout.panels}) if layout.panel_keys else 1
    if len(layout.panel_keys) == 2 and first * n_stats <= 8:
        per_row = first
    elif n_stats == 1:
        per_row = min(n_panels, 4 if n_panels > 6 else 3)
    else:
        per_row = max(1, min(n_panels, 4 // n_stats))
    n_rows = math.ceil(n_panels / per_row)
    axis_width = 3.5 if per_row * n_stats <= 4 else 2.8
    fig.set_size_inches(max(8.5, axis_width * per_row * n_stats + 2.6), 3.0 * n_rows + 1.3)
    axes = fig.subplots(n_rows, per_row * n_stats, squeeze=False)
    grid = [[axes[k // per_row][(k % per_row) * n_stats + s] for s in range(n_stats)]
            for k in range(n_panels)]
    for k in range(n_panels * n_stats, n_rows * per_row * n_stats):
        axes[k // (per_row * n_stats)][k % (per_row * n_stats)].set_visible(False)
    return grid, per_row


def profile_figure(summary: pd.DataFrame, stats: Sequence[str] = PROFILE_STATS) -> Figure:
    """`stats` (mean over inits) against layer, side by side: one line per value of the first
    varying option, one panel per value of the next one or two; every cell is drawn, or the
    figure says which options it fixed."""
    w = layer_rows(summary)
    layout = _profile_layout(w)
    styles = _line_styles(layout)
    fig = new_figure(8.5, 4.0)
    grid, per_row = _profile_grid(fig, len(layout.panels), layout, len(stats))
    for s in range(len(stats)):  # one y axis per statistic: the panels are there to be compared
        for axes in grid[1:]:
            axes[s].sharey(grid[0][s])
    logs = {stat: _profile_log(layout.rows, stat) for stat in stats}
    edges, theory = set(), False
    for k, (panel, axes) in enumerate(zip(layout.panels, grid, strict=True)):
        match = np.ones(len(layout.rows), bool)
        for key, value in zip(layout.panel_keys, panel, strict=True):
            match &= (layout.rows[key] == value).to_numpy()
        name = short_text(dict(zip(layout.panel_keys, panel, strict=True)), layout.panel_keys)
        for ax, stat in zip(axes, stats, strict=True):
            used, drawn = _draw_profile_panel(ax, summary, layout.rows[match], stat, styles,
                                              layout.line, logs[stat])
            edges |= used
            theory |= drawn
            _label_profile_axes(ax, stat, name, y_label=k % per_row == 0)
    _profile_legend(fig, styles, layout.line, theory, edges)
    sizes = set(stats) <= set(LOG_ALWAYS)
    look = ["falling toward layer 1 = vanishing, rising = exploding"] if sizes else []
    look += ["dashed = mean-field theory"] if theory else []
    fig.suptitle(f"{'Gradient size' if sizes else ', '.join(stats)} by layer, mean over inits"
                 + ("\n" + "; ".join(look) if look else ""), fontsize=11)
    footer(fig, layout.notes)
    return make_figure("profiles", "Layer profiles",
                   _profile_text(w, layout, stats, edges, theory), fig)


def _label_profile_axes(ax, stat: str, panel_name: str, *, y_label: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    info = _profile_stat(stat)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("weight layer l (1 = next to the input)", fontsize=8.5)
    if y_label:  # (the first panel of a row; the others' titles name the statistic)
        ax.set_ylabel(stat_label(stat, f"{info.quantity}\nmean over inits"), fontsize=8.5)
    ax.set_title(f"{panel_name}: {info.symbol}" if panel_name else
                 f"{info.symbol}: {info.meaning}", fontsize=9.5)
    ax.grid(True, which="major", alpha=0.3)


def _profile_legend(fig, styles, line: str | None, theory: bool, edges: set[str]) -> None:
    from matplotlib.lines import Line2D

    entries = [(label, Line2D([], [], color=colour, marker="o", ms=3.5, lw=2.0))
               for colour, label in styles.values()]
    if theory:
        entries.append(("mean-field theory", Line2D([], [], ls="--", color="black", lw=0.9)))
    for marker, what in (("v", "mean exactly 0 (underflow)"), ("^", "mean inf or NaN (overflow)")):
        if marker in edges:
            entries.append((what, Line2D([], [], marker=marker, ls="none", color="0.3")))
    fig.legend([h for _, h in entries], [n for n, _ in entries], loc="outside right center",
               fontsize=8, title=line)


def _profile_text(w, layout: _Profiles, stats, edges: set[str], theory: bool) -> str:
    n_cells, drawn = w["cell"].nunique(), layout.rows["cell"].nunique()
    text = (f"{' and '.join(stats)} of each layer, mean over inits, one line per "
            f"{layout.line or 'cell'}" + (f", one panel per {' and '.join(layout.panel_keys)}"
                                          if layout.panel_keys else "") + "; "
            + (f"all {n_cells} cells are drawn" if drawn == n_cells
               else f"{drawn} of the {n_cells} cells are drawn")
            + "; the panels share each statistic's y axis. A straight stretch on a log axis "
            "is a constant factor per layer (chi1 in mean-field theory).")
    if edges:
        text += (" Triangles on the bottom (top) edge: layers whose mean is exactly 0 (inf or "
                 "NaN), the float32 underflow (overflow) of vanishing (exploding) gradients.")
    if theory:
        text += (" Dashed: the mean-field prediction (gradjax.nn.theory), the product of the "
                 "predicted per-layer ratios from the output layer down; the table below "
                 "compares the fitted factors.")
    elif any(s in THEORY_PARAM for s in stats):
        text += " No cell is in the mean-field model (fan_in_normal, no norm), so no theory."
    if layout.notes:
        text += " " + notes_sentence(layout.notes)
    return text
