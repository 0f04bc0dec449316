"""`gradjax report DIR [--out DIR]`: figures of a results folder, and one HTML page with them.

Writes PNG files (matplotlib, Agg, no pyplot state) and `report.html`, which embeds every
figure as a base64 data URI, so the page is a single self-contained file. Figures:

  heatmap-<stat>.png  activation x scale at one layer (`--layer`): median gradient variance,
                      exact-zero fraction, unit cosine, saturation (`--heatmap-stats`)
  profiles.png        E|grad W_l|^2 against layer on a log axis, one line per scale (one panel
                      per activation), mean-field predictions dashed where they apply
  histograms.png      a statistic (`--hist-stat`) across seeds for a few cells (`--cells`)
  examples.png        small multiples for sweeps of at most six cells (the seed's examples)

A figure the sweep cannot support (no activation x scale grid, say) is skipped with a note on
the page instead. matplotlib is the `plot` extra; it is imported only here.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gradjax import storage
from gradjax.sweep import OPTIONS
from gradjax.theory import THEORY_COLUMNS, add_theory_columns


@dataclasses.dataclass(frozen=True)
class HeatmapStat:
    column: str  # the summary column
    title: str  # what is shown
    unit: str  # colour-bar label
    look: str  # what to look at


HEATMAP_STATS: dict[str, HeatmapStat] = {
    "grad_var": HeatmapStat(
        "grad_var_p50", "median gradient variance",
        "median over inits of Var(dL/dW entries) [loss^2]", "dark = gradients vanish",
    ),
    "frac_zero": HeatmapStat(
        "grad_frac_zero_mean", "fraction of gradient entries exactly 0",
        "fraction of dL/dW entries == 0, mean over inits", "bright = many gradients exactly zero",
    ),
    "unit_cos": HeatmapStat(
        "grad_unit_cos_mean", "cosine between units' gradients",
        "mean pairwise cosine of units' dL/dW columns (-1..1)",
        "near 1 = every unit gets the same gradient direction",
    ),
    "saturation": HeatmapStat(
        "act_frac_saturated_mean", "fraction of saturated units",
        "fraction of units with |phi'| < 1% of its max, mean over inits",
        "bright = saturated units pass almost no gradient",
    ),
}
MAX_LINES = 8  # lines per profile panel
MAX_FACETS = 4  # heatmap panels
LARGEST_FIRST = ("depth", "width", "batch", "in_dim")  # _restrict keeps their largest value
FACET_ORDER = ("depth", "init", "norm", "bias_scale", "width")  # heatmap panels, by preference
MAX_PANELS = 8
MAX_EXAMPLE_CELLS = 6
MAX_HIST_CELLS = 6
LOG_SPAN = 100.0  # use a log colour/axis scale when positive values span more than this


@dataclasses.dataclass
class Figure:
    """One figure of the report: its file name, heading, text and PNG bytes."""

    name: str
    heading: str
    text: str
    png: bytes


@dataclasses.dataclass
class Report:
    """Everything `render_html` puts on the page."""

    title: str
    intro: str
    figures: list[Figure] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    tables: list[tuple[str, str]] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradjax report`."""
    parser.add_argument("dir", help="a results folder written by `gradjax run`")
    parser.add_argument("--out", help="where to write the figures and report.html "
                        "(default: DIR/report)")
    parser.add_argument("--layer", type=int, default=1,
                        help="weight layer for the heatmaps and histograms; 1 is the first, "
                        "negative counts from the output (-1 = output layer); default 1")
    parser.add_argument("--heatmap-stats", default=",".join(HEATMAP_STATS),
                        help=f"comma-separated heatmaps to draw, of {', '.join(HEATMAP_STATS)}")
    parser.add_argument("--hist-stat", default="grad_sq_norm",
                        help="per-seed statistic for the histograms (default grad_sq_norm)")
    parser.add_argument("--cells", default=None,
                        help="comma-separated cell numbers or labels for the histograms "
                        f"(default: up to {MAX_HIST_CELLS} spanning the statistic's range)")


def main(args: argparse.Namespace) -> int:
    """Run `gradjax report`; 0 on success, 2 (with one `error:` line) for bad input."""
    folder = Path(args.dir)
    out = Path(args.out) if args.out else folder / "report"
    stats = [s.strip() for s in args.heatmap_stats.split(",") if s.strip()]
    unknown = [s for s in stats if s not in HEATMAP_STATS]
    if unknown:
        return _error(f"--heatmap-stats: unknown {', '.join(unknown)}; "
                      f"allowed: {', '.join(HEATMAP_STATS)}")
    if args.hist_stat not in storage.STATS:
        return _error(f"--hist-stat: unknown statistic {args.hist_stat!r}; "
                      f"allowed: {', '.join(storage.STATS)}")
    try:
        summary = storage.load(folder, "summary")
    except (FileNotFoundError, ValueError, OSError) as err:
        return _error(f"{folder}: no readable summary table ({err})")
    if summary.empty:
        return _error(f"{folder}: the summary table has no rows")
    try:
        cells = _parse_cells(args.cells, summary)
        report = build_report(folder, summary, layer=args.layer, heatmap_stats=stats,
                              hist_stat=args.hist_stat, cells=cells)
    except ValueError as err:
        return _error(str(err))
    path = write_report(report, out)
    print(f"wrote {len(report.figures)} figures and {path}")
    return 0


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _parse_cells(text: str | None, summary: pd.DataFrame) -> list[int] | None:
    if not text:
        return None
    by_label = summary.drop_duplicates("cell").set_index("label")["cell"]
    cells = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.lstrip("-").isdigit() and int(item) in set(summary["cell"]):
            cells.append(int(item))
        elif item in by_label.index and item:
            cells.append(int(by_label[item]))
        else:
            raise ValueError(f"--cells: no cell {item!r}; allowed: cell numbers "
                             f"{summary['cell'].min()}..{summary['cell'].max()} or labels "
                             f"{', '.join(repr(v) for v in by_label.index if v)}")
    return cells


# --------------------------------------------------------------------------- helpers


def _varying(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    cells = frame.drop_duplicates("cell")
    return [c for c in columns if c in cells and cells[c].nunique(dropna=False) > 1]


def _option_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in OPTIONS if c in frame.columns]


def _resolve_layer(rows: pd.DataFrame, layer: int) -> pd.DataFrame:
    """W rows at `layer` of each cell (negative: from the output layer)."""
    w = rows[rows["param"] == "W"]
    n_layers = w["depth"] + 1
    want = np.where(layer > 0, layer, n_layers + 1 + layer)
    picked = w[w["layer"] == want]
    if picked.empty:
        raise ValueError(f"--layer {layer}: no cell has that layer (layers 1..{n_layers.max()})")
    return picked


def _fmt(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


def _cell_text(row: pd.Series, keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        value = row[key]
        parts.append(f"{key} {_fmt(value)}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


def _short_text(row: pd.Series, keys: Sequence[str]) -> str:
    """Like `_cell_text`, but names (activation, init, ...) stand alone."""
    return ", ".join(str(row[k]) if isinstance(row[k], str) else _cell_text(row, [k])
                     for k in keys)


def _cell_title(row: pd.Series) -> str:
    name = row["label"] or f"cell {row['cell']}"
    return (f"{name}: {row['activation']}, {row['in_dim']}-{row['width']}x{row['depth']}-"
            f"{row['out_dim']}, {row['init']} x{row['scale']:g}")


def _log_span(values: np.ndarray) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and positive.max() / positive.min() > LOG_SPAN


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --------------------------------------------------------------------------- heatmaps


def _restrict(frame: pd.DataFrame, keep: Sequence[str | None]) -> tuple[pd.DataFrame, list[str]]:
    """Fix every varying option outside `keep` to one value: the largest depth, width or batch
    (the most telling), else the first cell's. Returns the rows left and a note per option."""
    notes = []
    for column in _varying(frame, _option_columns(frame)):
        values = frame[column].drop_duplicates()
        if column in keep or len(values) < 2:  # (an earlier choice may have fixed it)
            continue
        chosen = values.max() if column in LARGEST_FIRST else frame[column].iloc[0]
        frame = frame[frame[column] == chosen]
        notes.append(f"{column} = {chosen} only (of {len(values)} values)")
    return frame, notes


def heatmap_figures(summary: pd.DataFrame, layer: int, stats: Sequence[str]) -> list[Figure | str]:
    """One heatmap figure per statistic (one panel per value of a third varying option, e.g.
    depth), or one note (str) when the sweep has no complete activation x scale grid."""
    rows = _resolve_layer(summary, layer)
    others = [c for c in _varying(rows, _option_columns(rows)) if c not in ("activation", "scale")]
    facet = min(others, key=lambda c: FACET_ORDER.index(c) if c in FACET_ORDER else 99,
                default=None)
    rows, notes = _restrict(rows, ("activation", "scale", facet))
    facets = sorted(rows[facet].unique()) if facet else [None]
    if len(facets) > MAX_FACETS:
        notes.append(f"{facet}: the first {MAX_FACETS} of {len(facets)} values")
        facets = facets[:MAX_FACETS]
        rows = rows[rows[facet].isin(facets)]
    activations = rows["activation"].nunique()
    scales = rows["scale"].nunique()
    pairs = len(rows.drop_duplicates(["activation", "scale", *([facet] if facet else [])]))
    if activations < 2 or scales < 2 or pairs < activations * scales * len(facets):
        return [f"Heatmaps ({', '.join(stats)}) skipped: the sweep has no complete activation x "
                f"scale grid ({activations} activation(s), {scales} scale(s), {pairs} of the "
                f"{activations * scales * len(facets)} cells)."]
    return [heatmap_figure(rows, layer, stat, facet, notes) for stat in stats]


def heatmap_figure(
    rows: pd.DataFrame, layer: int, stat: str, facet: str | None = None,
    notes: Sequence[str] = (),
) -> Figure | str:
    """Activation x scale of one statistic from the W rows of one layer (a complete grid), one
    panel per value of `facet`, all on one colour scale."""
    info = HEATMAP_STATS[stat]
    activations = list(dict.fromkeys(rows["activation"]))
    scales = np.sort(rows["scale"].unique())
    facets = sorted(rows[facet].unique()) if facet else [None]
    grids = [
        (rows if f is None else rows[rows[facet] == f]).pivot_table(
            index="activation", columns="scale", values=info.column, aggfunc="mean",
            dropna=False).reindex(index=activations, columns=scales).to_numpy(np.float64)
        for f in facets
    ]
    every = np.stack(grids)
    if not np.isfinite(every).any():
        return (f"Heatmap '{stat}' skipped: {info.column} is undefined at layer {layer} in "
                "every cell.")
    from matplotlib import colormaps

    norm, log = _colour_norm(every, signed=stat == "unit_cos")
    cmap = colormaps["viridis"].with_extremes(bad="0.85")
    panel_h = 1.0 + 0.36 * len(activations)
    fig = _new_figure(max(6.5, 2.4 + 0.62 * len(scales)), 1.2 + panel_h * len(facets))
    axes = fig.subplots(len(facets), 1, squeeze=False)[:, 0]
    where = "output layer" if layer == -1 else f"layer {layer}"
    for ax, f, values in zip(axes, facets, grids, strict=True):
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(range(len(scales)), [f"{s:.2g}" for s in scales], rotation=45)
        ax.set_yticks(range(len(activations)), activations)
        ax.set_ylabel("activation")
        if f is not None:
            ax.set_title(f"{facet} {f}", fontsize=9)
        if values.size <= 200:
            _annotate(ax, values, norm, log)
    axes[-1].set_xlabel(f"weight scale (multiplies the init's std; init {_inits(rows)}) "
                        "[unitless]")
    fig.suptitle(f"{where}: {info.title}\n{info.look}{' (log colour scale)' if log else ''}",
                 fontsize=10)
    bar = fig.colorbar(image, ax=list(axes))
    bar.set_label(info.unit, fontsize=8)
    k_min, i_min, j_min = np.unravel_index(np.nanargmin(every), every.shape)
    k_max, i_max, j_max = np.unravel_index(np.nanargmax(every), every.shape)

    def cell(k, i, j):
        return (f"{activations[i]}, scale {scales[j]:.3g}"
                + (f", {facet} {facets[k]}" if facet else ""))

    text = (f"{info.unit} at {where}, per activation and weight scale"
            + (f", one panel per {facet}" if facet else "") + ". Lowest "
            f"{_fmt(every[k_min, i_min, j_min])} ({cell(k_min, i_min, j_min)}); highest "
            f"{_fmt(every[k_max, i_max, j_max])} ({cell(k_max, i_max, j_max)}). Grey (n/a): no "
            "value, e.g. overflow to inf or NaN in every init.")
    if notes:
        text += " Drawn: " + "; ".join(notes) + "."
    return Figure(f"heatmap-{stat}", f"Heatmap: {stat} at {where}", text, _png(fig))


def _annotate(ax, values: np.ndarray, norm, log: bool) -> None:
    """Each cell's value, dark text on light colours."""
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=6.5)
                continue
            ax.text(j, i, f"{v:.1g}" if log else f"{v:.2f}", ha="center", va="center",
                    fontsize=6.5, color="black" if norm(v) > 0.6 else "white")


def _colour_norm(values: np.ndarray, *, signed: bool):
    """(matplotlib norm, is_log): -1..1 for cosines; log where positive values span decades,
    symmetric-log (linear below the smallest positive value) when zeros sit among them."""
    from matplotlib.colors import LogNorm, Normalize, SymLogNorm

    finite = values[np.isfinite(values)]
    if signed:
        return Normalize(-1.0, 1.0), False
    if _log_span(finite) and finite.min() >= 0:
        positive = finite[finite > 0]
        if finite.min() == 0:
            return SymLogNorm(positive.min(), linscale=1.0, vmin=0.0, vmax=positive.max()), True
        return LogNorm(positive.min(), positive.max()), True
    return Normalize(min(0.0, finite.min()), max(finite.max(), 1e-12)), False


def _inits(rows: pd.DataFrame) -> str:
    return "/".join(dict.fromkeys(rows["init"]))


# --------------------------------------------------------------------------- layer profiles


# Options named in a profile line's legend, when they vary (JSON inputs/targets are too long).
LINE_KEYS: tuple[str, ...] = (
    "scale", "bias_scale", "init", "bias_init", "norm", "depth", "width", "batch", "loss",
    "output_activation", "leaky_slope", "dtype",
)


GRAD_SQ_LABEL = r"$E\,\|\partial L/\partial W_l\|^2$ over inits [loss$^2$]"


def _legend_name(cell: pd.Series, keys: Sequence[str]) -> str:
    """The line's values of `keys` (the legend's title names them); sigma_w^2 for fan_in_normal."""
    name = ", ".join(_fmt(cell[k]) if isinstance(cell[k], float) else str(cell[k]) for k in keys)
    if keys == ["scale"] and cell["init"] == "fan_in_normal":
        name += rf" ($\sigma_w^2$ = {cell['scale'] ** 2:.3g})"
    return name


def _line_name(cell: pd.Series, keys: Sequence[str]) -> str:
    parts = [cell["label"]] if cell["label"] else []
    parts += [_cell_text(cell, [key]) for key in keys]
    return ", ".join(parts) or f"cell {cell['cell']}"


def _theory_line(cell_w: pd.DataFrame) -> np.ndarray | None:
    """Predicted E|grad W_l|^2 from theory_grad_ratio, anchored at the measured output layer."""
    ratios = cell_w["theory_grad_ratio"].to_numpy(np.float64)[:-1]
    measured = cell_w["grad_sq_norm_mean"].to_numpy(np.float64)
    if not np.isfinite(ratios).any() or not np.isfinite(ratios[1:]).all() or not measured[-1] > 0:
        return None
    logs = np.log(ratios)
    line = np.exp(np.log(measured[-1]) + np.concatenate([np.cumsum(logs[::-1])[::-1], [0.0]]))
    return line  # NaN at layer 1 where the input's norm is unknown


def profile_figure(summary: pd.DataFrame) -> Figure:
    """E|grad W_l|^2 against layer; panels per activation when something else varies too."""
    w = summary[summary["param"] == "W"].sort_values(["cell", "layer"])
    varying = _varying(w, ("activation", *LINE_KEYS))
    line_keys = [c for c in LINE_KEYS if c in varying and c not in LARGEST_FIRST][:2]
    line_keys = line_keys or [c for c in LINE_KEYS if c in varying][:1]
    panel_key = "activation" if "activation" in varying and line_keys else None
    if panel_key is None and "activation" in varying:
        line_keys = ["activation"]
    w, notes = _restrict(w, ("activation", *line_keys))
    cells = w.drop_duplicates("cell")
    combos = cells[line_keys].drop_duplicates().sort_values(line_keys) if line_keys else None
    max_lines = MAX_LINES * len(line_keys)
    if combos is not None and len(combos) > max_lines:
        keep = np.unique(np.linspace(0, len(combos) - 1, max_lines).round().astype(int))
        notes.append(f"{len(keep)} of {len(combos)} {'/'.join(line_keys)} values")
        combos = combos.iloc[keep]
    panels = list(dict.fromkeys(cells[panel_key])) if panel_key else [None]
    if len(panels) > MAX_PANELS:  # more activations than panels
        notes.append(f"the first {MAX_PANELS} of {len(panels)} activations")
        panels = panels[:MAX_PANELS]
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    # colour by the first line key, marker by the second
    firsts = [None] if combos is None else list(dict.fromkeys(combos[line_keys[0]]))
    colours = dict(zip(firsts, colormaps["viridis"](np.linspace(0, 0.92, len(firsts))),
                       strict=True))
    seconds = [None] if combos is None or len(line_keys) < 2 else list(
        dict.fromkeys(combos[line_keys[1]]))
    markers = dict(zip(seconds, "osD^vP*X" * 2, strict=False))
    cols = min(4 if len(panels) > 6 else 3, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig = _new_figure(max(8.5, 3.9 * cols + 2.4), 3.2 * rows_n + 1.0)
    axes = fig.subplots(rows_n, cols, squeeze=False)
    handles: dict[str, Line2D] = {}
    edges: dict[str, bool] = {}
    any_theory = False
    for k, panel in enumerate(panels):
        ax = axes[k // cols][k % cols]
        sub = w if panel is None else w[w[panel_key] == panel]
        for _, cell in sub.drop_duplicates("cell").iterrows():
            marker = "o"
            if combos is None:
                colour, name = colours[None], cell["label"] or f"cell {cell['cell']}"
            else:
                if not (combos == cell[line_keys].to_numpy()).all(axis=1).any():
                    continue
                colour, name = colours[cell[line_keys[0]]], _legend_name(cell, line_keys)
                marker = markers.get(cell[line_keys[1]], "o") if len(line_keys) > 1 else "o"
            rows = sub[sub["cell"] == cell["cell"]]
            x, y = rows["layer"].to_numpy(), rows["grad_sq_norm_mean"].to_numpy(np.float64)
            handles[name], = ax.plot(x, np.where(y > 0, y, np.nan), "-", marker=marker,
                                     color=colour, ms=3.5, lw=2.0, alpha=0.85, label=name)
            for mask, edge, marker in ((y == 0, 0.0, "v"), (~np.isfinite(y), 1.0, "^")):
                if mask.any():  # off a log axis: mark them on its edge
                    edges[marker] = True
                    ax.plot(x[mask], np.full(mask.sum(), edge), marker, color=colour, ms=5,
                            transform=ax.get_xaxis_transform(), clip_on=False, ls="none")
            line = _theory_line(rows)
            if line is not None:
                any_theory = True
                ax.plot(rows["layer"], line, "--", color="black", lw=0.9, zorder=5)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("weight layer l (1 = next to the input)")
        ax.set_ylabel(GRAD_SQ_LABEL)
        ax.set_title(panel if panel else "", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    for k in range(len(panels), rows_n * cols):
        axes[k // cols][k % cols].set_visible(False)
    legend = list(handles.items())
    if any_theory:
        legend.append(("mean-field theory", Line2D([], [], ls="--", color="black", lw=0.9)))
    for marker, what in (("v", "mean exactly 0 (underflow)"), ("^", "mean inf or NaN (overflow)")):
        if marker in edges:
            legend.append((what, Line2D([], [], marker=marker, ls="none", color="0.3")))
    fig.legend([h for _, h in legend], [n for n, _ in legend], loc="outside right center",
               fontsize=8, title=", ".join(line_keys) if line_keys else None)
    fig.suptitle("Gradient size by layer\nfalling toward layer 1 = vanishing, rising = exploding"
                 + ("; dashed = mean-field theory" if any_theory else ""), fontsize=11)
    text = ("Mean squared gradient norm of each layer's weights, averaged over inits; a straight "
            "stretch on this log axis is a constant factor per layer (chi1 in mean-field theory).")
    if edges:
        text += (" Triangles on the bottom (top) edge: layers whose mean is exactly 0 (inf or "
                 "NaN), the float32 underflow (overflow) of vanishing (exploding) gradients.")
    if any_theory:
        text += (" Dashed: the mean-field prediction (gradjax.theory), the product of the "
                 "predicted per-layer ratios from the output layer down; the table below "
                 "compares the fitted factors.")
    else:
        text += " No cell is in the mean-field model (fan_in_normal, no norm), so no theory."
    if notes:
        text += " Drawn: " + "; ".join(notes) + "."
    return Figure("profiles", "Layer profiles", text, _png(fig))


# --------------------------------------------------------------------------- histograms


def _default_hist_cells(rows: pd.DataFrame, stat: str) -> list[int]:
    """Up to MAX_HIST_CELLS cells spanning the range of the statistic's median."""
    column = f"{stat}_p50"
    ranked = rows.dropna(subset=[column]).sort_values(column)
    if len(ranked) <= MAX_HIST_CELLS:
        return list(ranked["cell"])
    picks = np.unique(np.linspace(0, len(ranked) - 1, MAX_HIST_CELLS).round().astype(int))
    return list(ranked["cell"].iloc[picks])


def _unit(stat: str) -> str:
    """The unit of a per-seed statistic, for axis labels."""
    if stat.startswith(("grad_frac", "act_frac")):
        return "fraction"
    return {
        "grad_sq_norm": "loss^2", "grad_var": "loss^2", "delta_sq_norm": "loss^2",
        "grad_mean": "loss", "grad_max_abs": "loss", "grad_mean_abs": "loss",
        "loss_value": "loss", "grad_cv": "unitless", "grad_unit_cos": "cosine",
        "grad_nonfinite": "count", "act_deriv_mean": "unitless",
    }.get(stat, "pre-activation units" if stat.startswith("preact") else "unitless")


def histogram_figure(
    folder: Path, summary: pd.DataFrame, layer: int, stat: str, cells: list[int] | None
) -> Figure | str:
    """One panel per chosen cell: the statistic of W at `layer` across the cell's inits."""
    rows = _resolve_layer(summary, layer)
    chosen = cells if cells is not None else _default_hist_cells(rows, stat)
    chosen = [c for c in chosen if c in set(rows["cell"])]
    if not chosen:
        return f"Histograms skipped: {stat} is undefined at layer {layer} in every cell."
    picked = rows[rows["cell"].isin(chosen)]
    keys = [c for c in ("activation", *LINE_KEYS) if c in _varying(picked, _option_columns(picked))]
    keys = keys[:4] or ["activation", "scale"]
    cols = min(3, len(chosen))
    n_rows = math.ceil(len(chosen) / cols)
    fig = _new_figure(4.0 * cols + 0.4, 2.9 * n_rows + 0.9)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    where = f"W_{layer}" if layer > 0 else "the output layer's W" if layer == -1 else f"W_{layer}"
    lines = []
    for k, cell in enumerate(chosen):
        ax = axes[k // cols][k % cols]
        row = rows[rows["cell"] == cell].iloc[0]
        values = storage.load(folder, "per_seed", cell=cell, layer=int(row["layer"]),
                              param="W")[stat].to_numpy(np.float64)
        name = f"{row['label'] or 'cell ' + str(cell)}: {_short_text(row, keys)}"
        finite = values[np.isfinite(values)]
        log = _log_span(finite) and finite.min() >= 0
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
            ax.axvline(p50, color="black", ls="--", lw=1, label=f"median {_fmt(p50)}")
            ax.axvspan(p05, p95, color="0.5", alpha=0.15, label=f"5-95%: {_fmt(p05)}..{_fmt(p95)}")
            if log:
                ax.set_xscale("log")
            zeros = np.count_nonzero(finite == 0) if log else 0
            if zeros:
                ax.plot([], [], " ", label=f"{zeros / values.size:.1%} of inits = 0 (not shown)")
            ax.legend(fontsize=7)
            lines.append(f"{name}: median {_fmt(p50)}, 5-95% {_fmt(p05)}..{_fmt(p95)}"
                         + (f", {values.size - shown.size} of {values.size} inits zero or "
                            "undefined" if values.size > shown.size else ""))
        ax.set_title(name, fontsize=8.5)
        ax.set_xlabel(f"{stat} of {where} [{_unit(stat)}]")
        ax.set_ylabel("fraction of inits")
    for k in range(len(chosen), n_rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle(f"{stat} of {where} across random inits, one panel per cell: a wide histogram "
                 "means\nthe seed alone decides how much gradient this layer gets", fontsize=10)
    text = (f"Distribution across seeds of {stat} at {where}, with each panel's own axis "
            f"(log where it spans decades); shaded: 5th to 95th percentile. " + "; ".join(lines)
            + ".")
    return Figure("histograms", f"Histograms of {stat} across inits", text, _png(fig))


# --------------------------------------------------------------------------- small multiples


def examples_figure(folder: Path, summary: pd.DataFrame) -> Figure | str:
    """One column per cell (the seed's three examples): size, spread, zeros and alignment of the
    weight gradients of the first and last layer."""
    cells = summary.drop_duplicates("cell").sort_values("cell")
    if len(cells) > MAX_EXAMPLE_CELLS:
        return (f"Small multiples skipped: drawn for sweeps of at most {MAX_EXAMPLE_CELLS} cells "
                f"(like the seed's three examples); this sweep has {len(cells)}.")
    per_seed = storage.load(folder, "per_seed", param="W")
    n = len(cells)
    fig = _new_figure(3.9 * n + 0.6, 11.0)
    axes = fig.subplots(4, n, squeeze=False)
    from matplotlib import colormaps

    findings = []
    for k, (_, cell) in enumerate(cells.iterrows()):
        data = per_seed[per_seed["cell"] == cell["cell"]]
        n_layers = int(cell["depth"]) + 1
        shown_layers = sorted({1, n_layers})
        colours = colormaps["tab10"]([0, 3])
        for colour, layer in zip(colours, shown_layers, strict=False):
            values = data[data["layer"] == layer]
            mean_abs = values["grad_mean_abs"].to_numpy(np.float64)
            cv = values["grad_cv"].to_numpy(np.float64)
            zeros = values["grad_frac_zero"].to_numpy(np.float64)
            name = f"W{layer}"
            _log_hist(axes[0][k], mean_abs, colour, name)
            _log_hist(axes[1][k], cv, colour, name)
            levels, counts = np.unique(np.round(zeros, 4), return_counts=True)
            offset = -0.012 if layer == 1 else 0.012
            axes[2][k].bar(levels + offset, counts / zeros.size, width=0.022, color=colour,
                           label=name)
            cos = values["grad_unit_cos"].to_numpy(np.float64)
            if np.isfinite(cos).any():
                levels, counts = np.unique(np.round(cos[np.isfinite(cos)], 2), return_counts=True)
                axes[3][k].bar(levels + offset, counts / cos.size, width=0.022, color=colour,
                               label=name)
            findings.append(
                f"{cell['label'] or 'cell ' + str(cell['cell'])} {name}: median mean|g| "
                f"{_fmt(np.nanmedian(mean_abs))}, median cv {_fmt(np.nanmedian(cv))}, "
                f"{np.mean(zeros):.1%} of entries exactly 0, "
                f"{np.mean(values['grad_max_abs'].to_numpy() == 0):.1%} of inits all-zero"
                + (f", unit cosine takes {_distinct(cos)}" if np.isfinite(cos).any() else ""))
        axes[0][k].set_title(_cell_title(cell), fontsize=8.5)
        axes[0][k].set_xlabel("mean |dL/dW| per tensor [loss]")
        axes[1][k].set_xlabel("std / mean |dL/dW| per tensor (grad_cv) [unitless]")
        axes[2][k].set_xlabel("fraction of the tensor's entries exactly 0")
        axes[2][k].set_xlim(-0.06, 1.06)
        axes[3][k].set_xlabel("mean cosine between units' gradients [-1..1]")
        axes[3][k].set_xlim(-1.08, 1.08)
        axes[3][k].text(0.02, 0.97, "(one output unit: no cosine for the last layer)"
                        if n_layers > 1 and cell["out_dim"] == 1 else "",
                        transform=axes[3][k].transAxes, fontsize=6.5, va="top")
        for row in range(4):
            axes[row][k].set_ylabel("fraction of inits")
            axes[row][k].legend(fontsize=7)
    fig.suptitle(
        "Why are gradients the same value? Each column is one network over "
        f"{int(cells['seeds'].iloc[0]):,} inits.\nRow 1: how big; row 2: how alike (cv near 0 = "
        "all entries equal); row 3: how many are exactly 0;\nrow 4: how aligned (a few discrete "
        "cosines such as 1, -1/3, -1 = every unit's gradient is parallel)", fontsize=10)
    text = ("Small multiples of the per-init weight-gradient statistics, one column per cell. "
            + "; ".join(findings) + ".")
    return Figure("examples", "The sweep's cells side by side", text, _png(fig))


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
                   label=f"{label}: 90% of inits within {spread:.1%} of {_fmt(median)}")
        left, right = ax.get_xlim()
        ax.set_xlim(min(left, median / 3), max(right, median * 3))
        return
    ax.hist(finite, bins=np.geomspace(lo, hi, 50), histtype="stepfilled", alpha=0.55,
            color=colour, label=label, weights=np.full(finite.size, 1.0 / values.size))


# --------------------------------------------------------------------------- theory table


def with_theory(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with `gradjax.theory`'s columns, computed per cell where any is missing (a
    folder written before a column existed)."""
    if all(c in summary.columns for c in THEORY_COLUMNS):
        return summary
    base = summary.drop(columns=[c for c in THEORY_COLUMNS if c in summary.columns])
    return pd.concat([add_theory_columns(g) for _, g in base.groupby("cell", sort=True)],
                     ignore_index=True)


def theory_table(summary: pd.DataFrame) -> str | None:
    """HTML table of the fitted per-layer factor, measured against predicted, for the cells
    that have a theory."""
    cells = summary[summary["param"] == "W"].drop_duplicates("cell")
    cells = cells[np.isfinite(cells["theory_fit_chi1"])]
    if cells.empty:
        return None
    head = "".join(f"<th>{h}</th>" for h in (
        "cell", "activation", "sigma_w^2", "sigma_b^2", "depth x width", "batch", "q*",
        "chi1", "xi_grad (layers)", "predicted fit", "measured fit", "measured / predicted"))
    rows = []
    for _, c in cells.iterrows():
        sb2 = 0.0 if c["bias_init"] == "zeros" else c["bias_scale"] ** 2
        ratio = c["measured_chi1"] / c["theory_fit_chi1"] - 1
        values = (
            html.escape(str(c["label"] or c["cell"])), html.escape(c["activation"]),
            f"{c['scale'] ** 2:.3g}", f"{sb2:.3g}", f"{c['depth']} x {c['width']}",
            str(c["batch"]), _fmt(c["theory_q_star"]), _fmt(c["theory_chi1"]),
            _fmt(c["theory_xi_grad"]), _fmt(c["theory_fit_chi1"]), _fmt(c["measured_chi1"]),
            "n/a" if not np.isfinite(ratio) else f"{ratio:+.1%}",
        )
        rows.append("<tr>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


THEORY_NOTE = (
    "The fitted factor is exp(-slope) of ln E|grad W_l|^2 against l over the middle half of the "
    "layers (gradjax.theory.fit_chi1); 'predicted fit' applies the same fit to the mean-field "
    "profile, input transient included, and equals chi1 once those layers sit at q*. The "
    "prediction is per example: with batch > 1, cross-example terms that it leaves out can "
    "move the measured factor (by ~11 % for exploding ReLU at batch 4)."
)


# --------------------------------------------------------------------------- assembly


def build_report(
    folder: str | Path,
    summary: pd.DataFrame,
    *,
    layer: int = 1,
    heatmap_stats: Sequence[str] = tuple(HEATMAP_STATS),
    hist_stat: str = "grad_sq_norm",
    cells: list[int] | None = None,
) -> Report:
    """Every figure the sweep supports, and a note for each one it does not."""
    folder = Path(folder)
    summary = with_theory(summary)
    name = str(summary["sweep"].iloc[0])
    first_rows = summary.drop_duplicates("cell")
    varying = _varying(summary, _option_columns(summary))
    report = Report(
        title=f"gradjax report: {name}",
        intro=(f"{len(first_rows)} cells x {int(first_rows['seeds'].max()):,} random inits each, "
               f"from "
               f"{folder}. Options that vary between cells: {', '.join(varying) or 'none'}."),
    )
    parts = heatmap_figures(summary, layer, heatmap_stats)
    parts += [
        profile_figure(summary),
        histogram_figure(folder, summary, layer, hist_stat, cells),
        examples_figure(folder, summary),
    ]
    for part in parts:
        (report.notes.append if isinstance(part, str) else report.figures.append)(part)
    table = theory_table(summary)
    if table is not None:
        report.tables.append(("Mean-field check: per-layer gradient factor",
                               f"<p>{html.escape(THEORY_NOTE)}</p>{table}"))
    return report


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}img{max-width:100%;border:1px solid #ddd}figure{margin:2em 0}
figcaption{margin-top:.5em;line-height:1.4}table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}.note{color:#666}"""


def render_html(report: Report) -> str:
    """The self-contained page: every PNG inline as a data URI."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>"
           f"{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{html.escape(report.title)}</h1><p>{html.escape(report.intro)}</p>"]
    for fig in report.figures:
        data = base64.b64encode(fig.png).decode("ascii")
        out.append(f"<figure id='{fig.name}'><h2>{html.escape(fig.heading)}</h2>"
                   f"<img alt='{html.escape(fig.heading)}' src='data:image/png;base64,{data}'>"
                   f"<figcaption>{html.escape(fig.text)}</figcaption></figure>")
    for heading, table in report.tables:
        out.append(f"<h2>{html.escape(heading)}</h2>{table}")
    if report.notes:
        out.append("<h2>Not drawn</h2><ul>" + "".join(
            f"<li class='note'>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(report: Report, out: str | Path) -> Path:
    """The PNGs and report.html under `out`; returns the HTML path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for fig in report.figures:
        (out / f"{fig.name}.png").write_bytes(fig.png)
    path = out / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path
