"""Options a sweep varies that change nothing it measured; results layer, no JAX.

A plug-in may ignore an option gradjax passes it or applies to its leaves: a Flax NNX model
zero-initializes its biases, so `bias_scale` multiplies zeros and every value of it gives the
same numbers. An option is inert here when its values vary between the sweep's cells and,
holding every other option fixed, the cells that differ only in it have identical measured
statistics: every summary column of every parameter row, exactly (the same program on the
same inputs gives the same bits, so identical means unused, not close). The mean-field
columns are predictions from the options, not measurements, and are not compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradjax.spec import AGGREGATES, CELL_STATS, STATS

ROW_KEYS: tuple[str, ...] = ("layer", "param")  # a cell's rows, in a fixed order


def _options(summary: pd.DataFrame) -> list[str]:
    """The option columns of a summary table (between `label` and `layer`)."""
    columns = list(summary.columns)
    return columns[columns.index("label") + 1 : columns.index("layer")]


def _measured(summary: pd.DataFrame) -> list[str]:
    names = [f"{s}_{a}" for s in STATS for a in AGGREGATES] + list(CELL_STATS)
    return [c for c in names if c in summary.columns]


def _same(cells: list[pd.DataFrame], columns: list[str]) -> bool:
    """Cells with the same rows and, row by row, equal statistics (NaN equal to NaN)."""
    first = cells[0]
    for other in cells[1:]:
        if len(other) != len(first) or not (
                other[list(ROW_KEYS)].to_numpy() == first[list(ROW_KEYS)].to_numpy()).all():
            return False
        a = first[columns].to_numpy(np.float64)
        b = other[columns].to_numpy(np.float64)
        if not np.array_equal(a, b, equal_nan=True):
            return False
    return True


def inert_options(summary: pd.DataFrame) -> dict[str, list]:
    """Each inert option (see the module docstring) and its values, in column order. An
    option counts only where some cells differ in it alone."""
    cells = summary.drop_duplicates("cell")
    varying = [c for c in _options(summary) if cells[c].nunique(dropna=False) > 1]
    measured = _measured(summary)
    rows = {cell: frame.sort_values(list(ROW_KEYS)) for cell, frame
            in summary.groupby("cell", sort=True)}
    out = {}
    for option in varying:
        others = [c for c in varying if c != option]
        groups = cells.groupby(others, dropna=False) if others else [((), cells)]
        compared = [g["cell"].tolist() for _, g in groups if g[option].nunique(dropna=False) > 1]
        if compared and all(_same([rows[c] for c in group], measured) for group in compared):
            out[option] = sorted(cells[option].dropna().unique().tolist())
    return out


def _values(values: list) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def inert_lines(summary: pd.DataFrame) -> list[str]:
    """One line naming the inert options (none: no line), for the run log and findings."""
    inert = inert_options(summary)
    if not inert:
        return []
    shown = "; ".join(f"{name} ({_values(values)})" for name, values in inert.items())
    example = (" (biases initialized to 0 stay 0 whatever bias_scale)"
               if "bias_scale" in inert else "")
    return [f"Changes nothing here: {shown}. Cells that differ only in "
            f"{'it' if len(inert) == 1 else 'one of these'} have identical statistics in "
            f"every row: the model does not use it{example}."]
