"""`gradjax report DIR [--out DIR]`: figures of a results folder, and one HTML page with them,
led by the prescription of the folder's tune where `gradjax tune` wrote one beside it.

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
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gradjax.analysis.distributions import MAX_HIST_CELLS, examples_figure, histogram_figure
from gradjax.analysis.drawing import Figure, fmt, varying_among
from gradjax.analysis.heatmaps import COLOUR_SCALES, HEATMAP_STATS, heatmap_figures
from gradjax.analysis.prescription import prescription_lines, tune_table
from gradjax.analysis.profiles import PROFILE_STATS, profile_figure
from gradjax.analysis.training_figures import training_figures
from gradjax.nn.theory_columns import add_theory_columns
from gradjax.results import reading
from gradjax.results.columns import option_columns
from gradjax.results.layers import layer_rows
from gradjax.spec import STATS, THEORY_COLUMNS


@dataclasses.dataclass
class Report:
    """Everything `render_html` puts on the page."""

    title: str
    intro: str
    figures: list[Figure] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    tables: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    lead: list[str] = dataclasses.field(default_factory=list)  # the tune's prescription


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
        summary = reading.load(folder, "summary")
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
            str(c["batch"]), fmt(c["theory_q_star"]), fmt(c["theory_chi1"]),
            fmt(c["theory_xi_grad"]), fmt(c["theory_fit_chi1"]), fmt(c["measured_chi1"]),
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
    varying = varying_among(summary, option_columns(summary))
    report = Report(
        title=f"gradjax report: {name}",
        intro=(f"{len(first_rows)} cells x {int(first_rows['seeds'].max()):,} random inits each, "
               f"from "
               f"{folder}. Options that vary between cells: {', '.join(varying) or 'none'}."),
    )
    tuned = tune_table(folder)
    if tuned is not None:
        report.lead = [f"gradjax tune, {tuned[0]}:", *prescription_lines(tuned[1])]
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
    if report.lead:
        out.append("<h2 id='prescription'>Prescription</h2><pre>"
                   + html.escape("\n".join(report.lead)) + "</pre>")
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
