"""`gradjax report DIR [--out DIR]`: figures of a results folder, and one HTML page with them.

Writes PNG files (matplotlib, Agg, no pyplot state) and `report.html`, which embeds every
figure as a base64 data URI, so the page is a single self-contained file. Figures:

  heatmap-<stat>.png  two varying options (default: activation x scale, else the first two
                      that vary; `--heatmap-axes ROWS,COLUMNS[,PANELS]`) at one layer
                      (`--layer`), one panel per value of a third option, each panel on its
                      own colour scale (`--colour-scale shared` for one): median gradient
                      variance, exact-zero fraction, squared unit cosine, saturation
                      (`--heatmap-stats`)
  profiles.png        per-layer statistics (`--stat`; default |dL/dz_l|^2 beside |dL/dW_l|^2),
                      mean over inits on a log axis: one line per value of the first varying
                      option, one panel per value of the next one or two (activation first),
                      mean-field predictions dashed where they apply
  histograms.png      a statistic (`--hist-stat`) across seeds for a few cells (`--cells`)
  examples.png        small multiples for sweeps of at most six cells (the seed's examples)

Every label of a statistic ends in its unit from `gradjax.spec.STAT_TABLE` (`stat_label`), so
the figures share one unit convention. A figure the sweep cannot support (no complete grid of
two options, say) is skipped with a note on the page instead. Options that vary besides the
ones a figure shows are fixed to one value unless they follow the shown ones (output_activation
follows activation in the seed's examples); the figure itself says so, as it says which cells
or panels it leaves out.
matplotlib is the `plot` extra; it is imported only here, and `main` checks for it first.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import importlib
import io
import math
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradjax.nn.theory import add_theory_columns
from gradjax.results import storage
from gradjax.results.columns import option_columns
from gradjax.results.layers import layer_rows, weight_name
from gradjax.spec import STAT_BY_NAME, STATS, THEORY_COLUMNS


def stat_label(stat: str, what: str) -> str:
    """An axis label of statistic `stat`: what is drawn, then the unit `STAT_TABLE` declares
    for it (one unit convention for every figure)."""
    return f"{what} [{STAT_BY_NAME[stat].unit}]"


@dataclasses.dataclass(frozen=True)
class HeatmapStat:
    stat: str  # the statistic (`STAT_TABLE`)
    column: str  # the summary column
    title: str  # what is shown
    what: str  # colour-bar label, before the unit
    look: str  # what to look at
    limits: tuple[float, float] | None = None  # a fixed colour range (else from the values)

    @property
    def unit(self) -> str:
        """The colour bar's label, unit included."""
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
# Profile statistics by default: dL/dz shows vanishing gradients that dL/dW can hide (in a
# bias-free net |dL/dW_l|^2 = |dL/dz_l|^2 |a_{l-1}|^2 can stay flat while dL/dz shrinks).
PROFILE_STATS: tuple[str, ...] = ("delta_sq_norm", "grad_sq_norm")
MAX_FACETS = 4  # heatmap panels
LARGEST_FIRST = ("depth", "width", "batch", "in_dim")  # fixed options keep their largest value
# Heatmap axes by preference (the first two that vary), then panels (FACET_ORDER first).
AXIS_ORDER = (
    "activation", "init", "norm", "scale", "depth", "width", "bias_scale", "batch", "bias_init",
    "loss", "output_activation", "leaky_slope", "dtype", "in_dim", "out_dim",
)
FACET_ORDER = ("depth", "init", "norm", "bias_scale", "width")
MAX_PANELS = 12  # profile panels (each with one plot per statistic)
MAX_EXAMPLE_CELLS = 6
UNIT_COS_SQ = "grad_unit_cos_sq"  # how alike the units' gradient directions are
MAX_HIST_CELLS = 6
LOG_SPAN = 100.0  # use a log colour/axis scale when positive values span more than this
LABEL_TOLERANCE = 0.01  # an axis label is within 1 % of its value
MAX_LABEL_DIGITS = 6
AXIS_LABELS: dict[str, str] = {
    "activation": "activation", "init": "weight init", "norm": "normalisation",
    "depth": "depth (hidden layers)", "width": "width (units per hidden layer)",
    "bias_scale": "bias scale (std of the bias init)", "batch": "batch (examples per init)",
    "leaky_slope": "leaky ReLU slope", "in_dim": "input dimension", "bias_init": "bias init",
}


@dataclasses.dataclass
class Figure:
    """One figure of the report: its file name, heading, text and PNG bytes; `image_text` is
    every string drawn in the image (titles, labels, ticks, legend, notes), one per line."""

    name: str
    heading: str
    text: str
    png: bytes
    image_text: str = ""
    artist: Any = dataclasses.field(default=None, repr=False, compare=False)  # matplotlib's


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
    parser.add_argument("--heatmap-axes", default=None, metavar="ROWS,COLUMNS[,PANELS]",
                        help="the options on the heatmaps' rows and columns, and optionally "
                        "one panel per value of a third, e.g. init,scale,depth (default: "
                        "activation x scale, else the first two options that vary)")
    parser.add_argument("--colour-scale", choices=COLOUR_SCALES, default="per-panel",
                        help="heatmap colours: one scale per panel (default), or one shared "
                        "by all panels")
    parser.add_argument("--stat", default=",".join(PROFILE_STATS),
                        help="comma-separated per-seed statistics for the layer profiles, "
                        "drawn side by side (default delta_sq_norm,grad_sq_norm: |dL/dz_l|^2 "
                        "beside |dL/dW_l|^2)")
    parser.add_argument("--hist-stat", default="grad_sq_norm",
                        help="per-seed statistic for the histograms (default grad_sq_norm)")
    parser.add_argument("--cells", default=None,
                        help="comma-separated cell numbers or labels for the histograms "
                        f"(default: up to {MAX_HIST_CELLS} spanning the statistic's range)")


def main(args: argparse.Namespace) -> int:
    """Run `gradjax report`; 0 on success, 2 (with one `error:` line) for bad input or when
    matplotlib is missing."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return _error("gradjax report needs matplotlib: pip install 'gradjax[plot]'")
    folder = Path(args.dir)
    out = Path(args.out) if args.out else folder / "report"
    try:
        stats = _parse_names(args.heatmap_stats, HEATMAP_STATS, "--heatmap-stats")
        profile_stats = _parse_names(args.stat, STATS, "--stat")
    except ValueError as err:
        return _error(str(err))
    if args.hist_stat not in STATS:
        return _error(f"--hist-stat: unknown statistic {args.hist_stat!r}; "
                      f"allowed: {', '.join(STATS)}")
    try:
        summary = storage.load(folder, "summary")
    except (FileNotFoundError, ValueError, OSError) as err:
        return _error(f"{folder}: no readable summary table ({err})")
    if summary.empty:
        return _error(f"{folder}: the summary table has no rows")
    try:
        axes = _parse_axes(args.heatmap_axes, summary)
        cells = _parse_cells(args.cells, summary)
        report = build_report(folder, summary, layer=args.layer, heatmap_stats=stats,
                              heatmap_axes=axes, colour_scale=args.colour_scale,
                              profile_stats=profile_stats, hist_stat=args.hist_stat, cells=cells)
    except ValueError as err:
        return _error(str(err))
    except (FileNotFoundError, KeyError) as err:  # e.g. a sweep with per_seed = false
        return _error(f"{folder}: {err}")
    path = write_report(report, out)
    print(f"wrote {len(report.figures)} figures and {path}")
    return 0


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _parse_names(text: str, allowed: Iterable[str], option: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in allowed]
    if unknown or not names:
        raise ValueError(f"{option}: unknown {', '.join(unknown) or '(empty)'}; "
                         f"allowed: {', '.join(allowed)}")
    return names


def _parse_axes(text: str | None, summary: pd.DataFrame) -> list[str] | None:
    """`--heatmap-axes`: two or three of the folder's options (gradjax's and a plug-in's)."""
    if text is None:
        return None
    axes = _parse_names(text, option_columns(summary), "--heatmap-axes")
    if len(axes) not in (2, 3) or len(set(axes)) != len(axes):
        raise ValueError(f"--heatmap-axes: {text!r} is not two or three different options; "
                         "allowed: ROWS,COLUMNS[,PANELS], e.g. init,scale,depth")
    return axes


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


def _resolve_layer(rows: pd.DataFrame, layer: int) -> pd.DataFrame:
    """Each cell's weight row (`layer_rows`) at `layer` (negative: from the output layer)."""
    w = layer_rows(rows)
    n_layers = w.groupby("cell")["layer"].transform("max")
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


def _short_text(row: pd.Series | dict, keys: Sequence[str]) -> str:
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _ordered(values: Iterable[Any]) -> list[Any]:
    """The distinct values: numbers sorted, names in order of first appearance."""
    unique = list(dict.fromkeys(values))
    return sorted(unique) if all(_is_number(v) for v in unique) else unique


def distinct_labels(values: Sequence[Any]) -> list[str]:
    """Labels for an axis's (or legend's) values, so that each can be told apart: names as
    they are, whole numbers in full, other numbers with the fewest significant digits (up to
    6) at which the labels of distinct values are distinct and each is within 1 % of its value.
    1.25, 1.75, 2.25 give "1.25", "1.75", "2.25", not "1.2", "1.8", "2.2"."""
    if not all(_is_number(v) for v in values):
        return [str(v) for v in values]
    numbers = np.asarray(values, np.float64)
    finite = numbers[np.isfinite(numbers)]
    if np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 1e15):
        return [str(int(v)) if np.isfinite(v) else str(v) for v in numbers]
    distinct = len(np.unique(numbers))
    for digits in range(1, MAX_LABEL_DIGITS + 1):
        labels = [f"{v:.{digits}g}" for v in numbers]
        close = np.isclose([float(t) for t in labels], numbers, rtol=LABEL_TOLERANCE, atol=0)
        if len(set(labels)) == distinct and np.all(close | ~np.isfinite(numbers)):
            break
    return labels


def _determined(cells: pd.DataFrame, option: str, keys: Sequence[str]) -> bool:
    """Whether the values of `keys` fix `option` in every cell (output_activation follows
    activation in the seed's examples, say)."""
    if not keys:
        return cells[option].nunique(dropna=False) <= 1
    counts = cells.groupby(list(keys), dropna=False)[option].nunique(dropna=False)
    return bool((counts <= 1).all())


def _fix_other_options(
    frame: pd.DataFrame, keys: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Fix to one value every varying option outside `keys` that `keys` do not determine: the
    largest depth, width or batch (the most telling), else the first cell's. Returns the rows
    left and the notes a figure shows: what was fixed, and which options follow `keys`."""
    notes, follows = [], {}
    for column in _varying(frame, option_columns(frame)):
        values = frame[column].drop_duplicates()
        if column in keys or len(values) < 2:  # (an earlier choice may have fixed it)
            continue
        cells = frame.drop_duplicates("cell")
        if _determined(cells, column, keys):
            leader = next((k for k in keys if _determined(cells, column, [k])), None)
            follows.setdefault(leader or " and ".join(keys), []).append(column)
            continue
        chosen = values.max() if column in LARGEST_FIRST else frame[column].iloc[0]
        frame = frame[frame[column] == chosen]
        notes.append(f"{column} = {chosen} only (of {len(values)} values)")
    notes += [f"{' and '.join(c)} follow{'s' if len(c) == 1 else ''} {k}"
              for k, c in follows.items()]
    return frame, notes


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _notes_sentence(notes: Sequence[str]) -> str:
    """One sentence on the options a figure does not show: which are fixed, which follow."""
    return f"Options not shown: {'; '.join(notes)}." if notes else ""


def _footer(fig, notes: Sequence[str]) -> None:
    """What the figure fixed or left out, in the image itself, under the plots."""
    if notes:
        width = int(fig.get_figwidth() * 15)
        fig.supxlabel(textwrap.fill(_notes_sentence(notes), width), fontsize=8, color="0.25")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _image_text(fig) -> str:
    """Every visible string drawn in `fig` (after it was saved, so ticks are laid out)."""
    from matplotlib.text import Text

    texts = (t.get_text() for t in fig.findobj(Text) if t.get_visible())
    return "\n".join(t for t in texts if t.strip())


def _figure(name: str, heading: str, text: str, fig) -> Figure:
    png = _png(fig)
    return Figure(name, heading, text, png, _image_text(fig), fig)


# --------------------------------------------------------------------------- training

TRAINING_PANELS = 18  # at most this many configurations (panels) per training figure
STEP_MARKER = 4.0  # marker size at the recorded steps


def _training_configs(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(the options that tell configurations apart: panels, the scale-like line option)."""
    varying = [c for c in _varying(rows, option_columns(rows)) if c != "step"]
    line = "scale" if "scale" in varying else None
    panels = [c for c in varying if c != line and c != "cell"]
    if "label" in rows and rows["label"].nunique() > 1:
        panels = ["label", *panels]
    return panels, [line] if line else []


def training_figures(summary: pd.DataFrame) -> list[Figure | str]:
    """Loss, first/last-layer |dL/dW| and gsnr against the optimizer step, one panel per
    configuration, one line per scale: what a training sweep (`steps`) shows."""
    if "step" not in summary or summary["step"].nunique() < 2:
        return []
    w = layer_rows(summary)
    w = w.assign(last_layer=w.groupby("cell")["layer"].transform("max"))
    panels, line = _training_configs(w)
    groups = list(w.groupby(panels, sort=False, dropna=False)) if panels else [((), w)]
    shown, left = groups[:TRAINING_PANELS], len(groups) - TRAINING_PANELS
    note = [f"{left} more configurations not drawn"] if left > 0 else []
    out: list[Figure | str] = [
        _training_figure("training_loss", "Loss against optimizer step", shown, panels, line,
                         note, _loss_lines),
        _training_figure("training_grad_norm", "|dL/dW|^2 of the first and last layer "
                         "against step", shown, panels, line, note, _grad_norm_lines),
    ]
    with_gsnr = [(k, r) for k, r in shown if r["gsnr_p50"].notna().any()]
    if with_gsnr:
        out.append(_training_figure("training_gsnr", "Gradient signal-to-noise ratio against "
                                    "step (configurations with per_example = true)", with_gsnr,
                                    panels, line, note, _gsnr_lines))
    else:
        out.append("No gsnr figure: the sweep did not ask for per_example = true.")
    return out


def _panel_titles(groups, panels: list[str]) -> list[str]:
    """A title per configuration: its label (or "grid"), then only the options that tell it
    apart from the other configurations of the same label."""
    keys = [dict(zip(panels, k if isinstance(k, tuple) else (k,), strict=True))
            for k, _ in groups]
    label_of = [str(k.get("label") or "grid") for k in keys]
    titles = []
    for key, label in zip(keys, label_of, strict=True):
        same = [k for k, lab in zip(keys, label_of, strict=True) if lab == label]
        differ = [p for p in panels if p != "label" and len({str(k[p]) for k in same}) > 1]
        parts = [f"{p} {_fmt(key[p]) if isinstance(key[p], float) else key[p]}" for p in differ]
        titles.append(", ".join([label, *parts]))
    return titles


def _training_figure(name, heading, groups, panels, line, notes, draw) -> Figure:
    """One panel per configuration, all on one y axis (the panels are there to be compared),
    a marker at every recorded step (the lines between them are no measurement)."""
    cols = min(3, len(groups))
    rows_n = math.ceil(len(groups) / cols)
    fig = _new_figure(4.2 * cols, 2.9 * rows_n + 0.6)
    axes = np.atleast_1d(fig.subplots(rows_n, cols, squeeze=False, sharey=True)).ravel()
    colours = {}
    for ax, (_, rows), title in zip(axes, groups, _panel_titles(groups, panels), strict=False):
        ax.set_title(textwrap.fill(title, 45), fontsize=9)
        for level, part in (rows.groupby(line[0], sort=True) if line else [(None, rows)]):
            colour = colours.setdefault(level, f"C{len(colours) % 10}")
            label = f"{line[0]} {_fmt(level)}" if line else None
            draw(ax, part.sort_values("step"), colour, label)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, rows["step"].max())
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
    for k, ax in enumerate(axes):
        ax.tick_params(labelleft=True)  # (sharey hides the inner panels' tick labels)
        if k % cols:
            ax.set_ylabel("")  # (the first panel of a row names the statistic)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes[: len(groups)]:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside upper right", fontsize=8)
    _footer(fig, notes)
    text = (f"{heading}. One panel per configuration (its label, then what tells it apart "
            f"from the others of that label), one colour per "
            f"{line[0] if line else 'cell'}, all panels on one y axis; a marker at each "
            "recorded step (the lines between them only join them); step 0 is the init. "
            + _notes_sentence(notes))
    return _figure(name, heading, text, fig)


def _loss_lines(ax, rows, colour, label) -> None:
    first = rows[rows["layer"] == 1].drop_duplicates("step")
    ax.plot(first["step"], first["loss_value_p50"], "o-", ms=STEP_MARKER, color=colour,
            label=label)
    ax.fill_between(first["step"], first["loss_value_p05"], first["loss_value_p95"],
                    color=colour, alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.set_ylabel(stat_label("loss_value", "loss: median, 5-95% of inits"))


def _grad_norm_lines(ax, rows, colour, label) -> None:
    last = rows["layer"] == rows["last_layer"]
    for part, style, suffix in ((rows[rows["layer"] == 1], "o-", "first"),
                                (rows[last], "s--", "last")):
        part = part.drop_duplicates("step")
        ax.plot(part["step"], part["grad_sq_norm_p50"], style, ms=STEP_MARKER, color=colour,
                label=f"{label}, {suffix}" if label else suffix)
    ax.set_yscale("log")
    ax.set_ylabel(stat_label("grad_sq_norm", "median |dL/dW|^2"))


def _gsnr_lines(ax, rows, colour, label) -> None:
    first = rows[rows["layer"] == 1].drop_duplicates("step")
    ax.plot(first["step"], first["gsnr_p50"], "o-", ms=STEP_MARKER, color=colour, label=label)
    ax.set_yscale("log")
    ax.set_ylabel(stat_label("gsnr", "median gsnr, first layer W"))


# --------------------------------------------------------------------------- heatmaps


def _heatmap_axes(cells: pd.DataFrame, chosen: Sequence[str] | None) -> list[str]:
    """[rows, columns, panels?]: `chosen` (options that must vary), else the first two options
    of AXIS_ORDER that vary and do not follow each other, then a third for the panels."""
    varying = _varying(cells, option_columns(cells))
    if chosen:
        fixed = [c for c in chosen if c not in varying]
        if fixed:
            verb = "does" if len(fixed) == 1 else "do"
            raise ValueError(f"--heatmap-axes: {', '.join(fixed)} {verb} not vary in this "
                             f"sweep; varying: {', '.join(varying) or 'none'}")
        return list(chosen)
    axes: list[str] = []
    for column in (c for c in AXIS_ORDER if c in varying):
        if len(axes) < 2 and not _determined(cells, column, axes):
            axes.append(column)
    for column in (c for c in (*FACET_ORDER, *AXIS_ORDER) if c in varying and c not in axes):
        if len(axes) == 2 and not _determined(cells, column, axes):
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
    rows = _resolve_layer(summary, layer)
    chosen = _heatmap_axes(rows.drop_duplicates("cell"), axes)
    if len(chosen) < 2:
        return [f"Heatmaps ({', '.join(stats)}) skipped: they need two options that vary; "
                f"this sweep varies {', '.join(chosen) or 'none'}."]
    row_key, col_key, facet = (*chosen, None)[:3]
    rows, notes = _fix_other_options(rows, chosen)
    facets = _ordered(rows[facet]) if facet else [None]
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
        row_values, col_values = _ordered(rows[row_key]), _ordered(rows[col_key])
        facets = _ordered(rows[facet]) if facet else [None]
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
        return _short_text(values, keys)


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
    fig = _new_figure(max(6.5, 2.4 + 0.62 * len(grid.col_values)) + (0 if shared else 0.8),
                      1.4 + (1.0 + 0.36 * len(grid.row_values)) * len(grid.facets))
    where = "output layer" if layer == -1 else f"layer {layer}"
    inits = None if "init" in (*axes, facet) else "/".join(dict.fromkeys(rows["init"]))
    _draw_heatmap_panels(fig, grid, limits=info.limits, shared=shared, unit=info.unit,
                         inits=inits)
    scales = ("one colour scale for all panels" if shared or len(grid.facets) == 1
              else "each panel has its own colour scale")
    fig.suptitle(f"{where}: {info.title}\n{info.look}; {scales}", fontsize=10)
    _footer(fig, notes)
    every = grid.values
    low = np.unravel_index(np.nanargmin(every), every.shape)
    high = np.unravel_index(np.nanargmax(every), every.shape)
    text = (f"{info.unit} at {where}, per {axes[0]} and {axes[1]}"
            + (f", one panel per {facet}" if facet else "") + f"; {scales}. Lowest "
            f"{_fmt(every[low])} ({grid.point(*low)}); highest {_fmt(every[high])} "
            f"({grid.point(*high)}). Grey (n/a): no value, e.g. overflow to inf or NaN in every "
            "init.")
    if notes:
        text += " " + _notes_sentence(notes)
    return _figure(f"heatmap-{stat}", f"Heatmap: {stat} at {where}", text, fig)


def _draw_heatmap_panels(
    fig, grid: _Grid, *, limits: tuple[float, float] | None, shared: bool, unit: str,
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
            bar.set_label(textwrap.fill(unit + (" (log)" if log else ""), 34), fontsize=7)
    axes[-1].set_xlabel(_column_label(grid.col_key, inits))
    if shared:
        bar = fig.colorbar(image, ax=list(axes))
        bar.set_label(unit + (" (log)" if common[1] else ""), fontsize=8)


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
    if _log_span(finite) and finite.min() >= 0:
        positive = finite[finite > 0]
        if finite.min() == 0:
            return SymLogNorm(positive.min(), linscale=1.0, vmin=0.0, vmax=positive.max()), True
        return LogNorm(positive.min(), positive.max()), True
    return Normalize(min(0.0, finite.min()), max(finite.max(), 1e-12)), False


# --------------------------------------------------------------------------- layer profiles


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
    varying = _varying(cells, ("activation", *LINE_KEYS))
    candidates = [c for c in LINE_KEYS if c in varying and c not in LARGEST_FIRST]
    candidates += [c for c in LINE_KEYS if c in varying and c in LARGEST_FIRST]
    line = candidates[0] if candidates else ("activation" if "activation" in varying else None)
    panels = ["activation"] if "activation" in varying and line != "activation" else []
    for column in candidates[1:]:
        if (len(panels) < 2 and not _determined(cells, column, [line, *panels])
                and len(cells[[*panels, column]].drop_duplicates()) <= MAX_PANELS):
            panels.append(column)
    return line, panels


def _profile_layout(w: pd.DataFrame) -> _Profiles:
    """The lines and panels of W rows `w`, the second panel option outermost, and the notes on
    what is fixed or left out (more than MAX_PANELS panels)."""
    line, panel_keys = _profile_keys(w.drop_duplicates("cell"))
    rows, notes = _fix_other_options(w, [k for k in (line, *panel_keys) if k])
    cells = rows.drop_duplicates("cell")
    ranks = [{v: i for i, v in enumerate(_ordered(cells[k]))} for k in panel_keys]
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
    values = _ordered(cells[layout.line])
    if all(_is_number(v) for v in values):
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
    return finite.size > 0 and finite.min() >= 0 and (stat in LOG_ALWAYS or _log_span(finite))


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
    fig = _new_figure(8.5, 4.0)
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
        name = _short_text(dict(zip(layout.panel_keys, panel, strict=True)), layout.panel_keys)
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
    _footer(fig, layout.notes)
    return _figure("profiles", "Layer profiles",
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
        text += " " + _notes_sentence(layout.notes)
    return text


# --------------------------------------------------------------------------- histograms


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
    rows = _resolve_layer(summary, layer)
    chosen = cells if cells is not None else _default_hist_cells(rows, stat)
    chosen = [c for c in chosen if c in set(rows["cell"])]
    if not chosen:
        return f"Histograms skipped: {stat} is undefined at layer {layer} in every cell."
    picked = rows[rows["cell"].isin(chosen)]
    keys = [c for c in ("activation", *LINE_KEYS) if c in _varying(picked, option_columns(picked))]
    keys = keys[:4] or ["activation", "scale"]
    cols = min(3, len(chosen))
    n_rows = math.ceil(len(chosen) / cols)
    fig = _new_figure(4.0 * cols + 0.4, 2.9 * n_rows + 0.9)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    where = (f"layer {layer}'s weight" if layer > 0 else "the output layer's weight"
             if layer == -1 else f"layer {layer}'s weight")
    lines = []
    for k, cell in enumerate(chosen):
        ax = axes[k // cols][k % cols]
        row = rows[rows["cell"] == cell].iloc[0]
        values = storage.load(folder, "per_seed", cell=cell, layer=int(row["layer"]),
                              param=row["param"])[stat].to_numpy(np.float64)
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
            ax.legend(fontsize=7, loc="upper right")
            lines.append(f"{name}: median {_fmt(p50)}, 5-95% {_fmt(p05)}..{_fmt(p95)}"
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
    return _figure("histograms", f"Histograms of {stat} across inits", text, fig)


# --------------------------------------------------------------------------- small multiples


def examples_figure(folder: Path, summary: pd.DataFrame) -> Figure | str:
    """One column per cell (the seed's three examples): size, spread, zeros and alignment of the
    weight gradients of the first and last layer."""
    cells = summary.drop_duplicates("cell").sort_values("cell")
    if len(cells) > MAX_EXAMPLE_CELLS:
        return (f"Small multiples skipped: drawn for sweeps of at most {MAX_EXAMPLE_CELLS} cells "
                f"(like the seed's three examples); this sweep has {len(cells)}.")
    per_seed = layer_rows(storage.load(folder, "per_seed"))
    n = len(cells)
    fig = _new_figure(3.9 * n + 0.6, 11.0)
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
                f"{_fmt(np.nanmedian(mean_abs))}, median cv {_fmt(np.nanmedian(cv))}, "
                f"{np.mean(zeros):.1%} of entries exactly 0, "
                f"{np.mean(values['grad_max_abs'].to_numpy() == 0):.1%} of inits all-zero"
                + (f", squared unit cosine takes {_distinct(cos)}" if np.isfinite(cos).any()
                   else ""))
        axes[0][k].set_title(_cell_title(cell), fontsize=8.5)
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
    return _figure("examples", "The sweep's cells side by side", text, fig)


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
    """The summary with `gradjax.nn.theory`'s columns, computed per cell where any is missing (a
    folder written before a column existed)."""
    if all(c in summary.columns for c in THEORY_COLUMNS):
        return summary
    base = summary.drop(columns=[c for c in THEORY_COLUMNS if c in summary.columns])
    return pd.concat([add_theory_columns(g) for _, g in base.groupby("cell", sort=True)],
                     ignore_index=True)


def theory_table(summary: pd.DataFrame) -> str | None:
    """HTML table of the fitted per-layer factor, measured against predicted, for the cells
    that have a theory."""
    cells = layer_rows(summary).drop_duplicates("cell")
    cells = cells[np.isfinite(cells["theory_fit_chi1"].astype(np.float64))]
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
    "layers (gradjax.nn.theory.fit_chi1); 'predicted fit' applies the same fit to the mean-field "
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
    heatmap_axes: Sequence[str] | None = None,
    colour_scale: str = "per-panel",
    profile_stats: Sequence[str] = PROFILE_STATS,
    hist_stat: str = "grad_sq_norm",
    cells: list[int] | None = None,
) -> Report:
    """Every figure the sweep supports, and a note for each one it does not."""
    folder = Path(folder)
    summary = with_theory(summary)
    name = str(summary["sweep"].iloc[0])
    first_rows = summary.drop_duplicates("cell")
    varying = _varying(summary, option_columns(summary))
    report = Report(
        title=f"gradjax report: {name}",
        intro=(f"{len(first_rows)} cells x {int(first_rows['seeds'].max()):,} random inits each, "
               f"from "
               f"{folder}. Options that vary between cells: {', '.join(varying) or 'none'}."),
    )
    missing = [s for s in profile_stats if f"{s}_mean" not in summary.columns]
    if missing:
        raise ValueError(f"--stat: {', '.join(missing)} not in this folder's summary table")
    parts = training_figures(summary)
    parts += heatmap_figures(summary, layer, heatmap_stats, heatmap_axes, colour_scale)
    parts += [
        profile_figure(summary, profile_stats),
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
