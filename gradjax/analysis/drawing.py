"""What every figure of the report shares: `Figure` (a PNG with its heading and the text that
says what it shows), `stat_label` (a statistic's label ends in its unit from
`gradjax.spec.STAT_TABLE`, so every figure has one unit convention), number and cell labels,
and the choice of which cells a figure draws when more options vary than it shows.
"""

from __future__ import annotations

import dataclasses
import io
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gradjax.results.columns import option_columns
from gradjax.results.layers import layer_rows
from gradjax.spec import STAT_BY_NAME


def stat_label(stat: str, what: str) -> str:
    """An axis label of statistic `stat`: what is drawn, then the measure `STAT_TABLE` declares
    for it (`Stat.measure`: one unit convention for every figure)."""
    return f"{what} [{STAT_BY_NAME[stat].measure}]"


LARGEST_FIRST = ("depth", "width", "batch", "in_dim")  # fixed options keep their largest value


# Heatmap axes by preference (the first two that vary), then panels (FACET_ORDER first).
AXIS_ORDER = (
    "activation", "init", "norm", "scale", "depth", "width", "bias_scale", "batch", "bias_init",
    "loss", "output_activation", "leaky_slope", "dtype", "in_dim", "out_dim",
)


UNIT_COS_SQ = "grad_unit_cos_sq"  # how alike the units' gradient directions are


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


def varying_among(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    cells = frame.drop_duplicates("cell")
    return [c for c in columns if c in cells and cells[c].nunique(dropna=False) > 1]


def resolve_layer(rows: pd.DataFrame, layer: int) -> pd.DataFrame:
    """Each cell's weight row (`layer_rows`) at `layer` (negative: from the output layer)."""
    w = layer_rows(rows)
    n_layers = w.groupby("cell")["layer"].transform("max")
    want = np.where(layer > 0, layer, n_layers + 1 + layer)
    picked = w[w["layer"] == want]
    if picked.empty:
        raise ValueError(f"--layer {layer}: no cell has that layer (layers 1..{n_layers.max()})")
    return picked


def fmt(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


def _cell_text(row: pd.Series, keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        value = row[key]
        parts.append(f"{key} {fmt(value)}" if isinstance(value, float) else f"{key} {value}")
    return ", ".join(parts)


def short_text(row: pd.Series | dict, keys: Sequence[str]) -> str:
    """Like `_cell_text`, but names (activation, init, ...) stand alone."""
    return ", ".join(str(row[k]) if isinstance(row[k], str) else _cell_text(row, [k])
                     for k in keys)


def cell_title(row: pd.Series) -> str:
    name = row["label"] or f"cell {row['cell']}"
    return (f"{name}: {row['activation']}, {row['in_dim']}-{row['width']}x{row['depth']}-"
            f"{row['out_dim']}, {row['init']} x{row['scale']:g}")


def spans_decades(values: np.ndarray) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return positive.size > 1 and positive.max() / positive.min() > LOG_SPAN


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def ordered(values: Iterable[Any]) -> list[Any]:
    """The distinct values: numbers sorted, names in order of first appearance."""
    unique = list(dict.fromkeys(values))
    return sorted(unique) if all(is_number(v) for v in unique) else unique


def distinct_labels(values: Sequence[Any]) -> list[str]:
    """Labels for an axis's (or legend's) values, so that each can be told apart: names as
    they are, whole numbers in full, other numbers with the fewest significant digits (up to
    6) at which the labels of distinct values are distinct and each is within 1 % of its value.
    1.25, 1.75, 2.25 give "1.25", "1.75", "2.25", not "1.2", "1.8", "2.2"."""
    if not all(is_number(v) for v in values):
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


def determined(cells: pd.DataFrame, option: str, keys: Sequence[str]) -> bool:
    """Whether the values of `keys` fix `option` in every cell (output_activation follows
    activation in the seed's examples, say)."""
    if not keys:
        return cells[option].nunique(dropna=False) <= 1
    counts = cells.groupby(list(keys), dropna=False)[option].nunique(dropna=False)
    return bool((counts <= 1).all())


def fix_other_options(
    frame: pd.DataFrame, keys: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Fix to one value every varying option outside `keys` that `keys` do not determine: the
    largest depth, width or batch (the most telling), else the first cell's. Returns the rows
    left and the notes a figure shows: what was fixed, and which options follow `keys`."""
    notes, follows = [], {}
    for column in varying_among(frame, option_columns(frame)):
        values = frame[column].drop_duplicates()
        if column in keys or len(values) < 2:  # (an earlier choice may have fixed it)
            continue
        cells = frame.drop_duplicates("cell")
        if determined(cells, column, keys):
            leader = next((k for k in keys if determined(cells, column, [k])), None)
            follows.setdefault(leader or " and ".join(keys), []).append(column)
            continue
        chosen = values.max() if column in LARGEST_FIRST else frame[column].iloc[0]
        frame = frame[frame[column] == chosen]
        notes.append(f"{column} = {chosen} only (of {len(values)} values)")
    notes += [f"{' and '.join(c)} follow{'s' if len(c) == 1 else ''} {k}"
              for k, c in follows.items()]
    return frame, notes


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def notes_sentence(notes: Sequence[str]) -> str:
    """One sentence on the options a figure does not show: which are fixed, which follow."""
    return f"Options not shown: {'; '.join(notes)}." if notes else ""


def footer(fig, notes: Sequence[str]) -> None:
    """What the figure fixed or left out, in the image itself, under the plots."""
    if notes:
        width = int(fig.get_figwidth() * 15)
        fig.supxlabel(textwrap.fill(notes_sentence(notes), width), fontsize=8, color="0.25")


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _image_text(fig) -> str:
    """Every visible string drawn in `fig` (after it was saved, so ticks are laid out)."""
    from matplotlib.text import Text

    texts = (t.get_text() for t in fig.findobj(Text) if t.get_visible())
    return "\n".join(t for t in texts if t.strip())


def make_figure(name: str, heading: str, text: str, fig) -> Figure:
    png = _png(fig)
    return Figure(name, heading, text, png, _image_text(fig), fig)
