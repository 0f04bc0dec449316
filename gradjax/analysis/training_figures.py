"""Figures of a training sweep: the loss, the first and last layer's |dL/dW|^2 and the gradient
signal-to-noise ratio against the optimizer step, one panel per configuration, one line per
scale, markers at the recorded steps, one y axis shared by the panels.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd

from gradjax.analysis.drawing import (
    Figure,
    fmt,
    footer,
    make_figure,
    new_figure,
    notes_sentence,
    stat_label,
    varying_among,
)
from gradjax.results.columns import option_columns
from gradjax.results.layers import layer_rows

TRAINING_PANELS = 18  # at most this many configurations (panels) per training figure


STEP_MARKER = 4.0  # marker size at the recorded steps


def _training_configs(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(the options that tell configurations apart: panels, the scale-like line option)."""
    varying = [c for c in varying_among(rows, option_columns(rows)) if c != "step"]
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
        parts = [f"{p} {fmt(key[p]) if isinstance(key[p], float) else key[p]}" for p in differ]
        titles.append(", ".join([label, *parts]))
    return titles


def _training_figure(name, heading, groups, panels, line, notes, draw) -> Figure:
    """One panel per configuration, all on one y axis (the panels are there to be compared),
    a marker at every recorded step (the lines between them are no measurement)."""
    cols = min(3, len(groups))
    rows_n = math.ceil(len(groups) / cols)
    fig = new_figure(4.2 * cols, 2.9 * rows_n + 0.6)
    axes = np.atleast_1d(fig.subplots(rows_n, cols, squeeze=False, sharey=True)).ravel()
    colours = {}
    for ax, (_, rows), title in zip(axes, groups, _panel_titles(groups, panels), strict=False):
        ax.set_title(textwrap.fill(title, 45), fontsize=9)
        for level, part in (rows.groupby(line[0], sort=True) if line else [(None, rows)]):
            colour = colours.setdefault(level, f"C{len(colours) % 10}")
            label = f"{line[0]} {fmt(level)}" if line else None
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
    footer(fig, notes)
    text = (f"{heading}. One panel per configuration (its label, then what tells it apart "
            f"from the others of that label), one colour per "
            f"{line[0] if line else 'cell'}, all panels on one y axis; a marker at each "
            "recorded step (the lines between them only join them); step 0 is the init. "
            + notes_sentence(notes))
    return make_figure(name, heading, text, fig)


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
