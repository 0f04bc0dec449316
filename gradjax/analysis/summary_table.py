"""`gradjax summary DIR`: the summary table in a terminal, one row per combination of the
options asked for (`--by`), medians over the cells pooled into a row only when asked
(`--pool`), restricted by `--where OPTION=VALUE`. Weight rows of every model
(`gradjax.results.layers.weight_rows`): W for MLP-shaped layers, every parameter of other
models."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradjax.results.columns import option_columns, varying_options
from gradjax.results.layers import weight_rows
from gradjax.spec import OPTIONS

# the default columns of `gradjax summary`: summary column -> short header
SUMMARY_COLUMNS: dict[str, str] = {
    "grad_sq_norm_p50": "sq_norm",
    "delta_sq_norm_p50": "dz_sq_norm",
    "grad_frac_zero_mean": "frac_zero",
    "frac_seeds_all_zero": "born_dead",
    "grad_cv_p50": "cv",
    "grad_unit_cos_sq_mean": "unit_cos_sq",
    "grad_var_across_seeds": "var_seeds",
}


def summary_columns(frame: pd.DataFrame, stats: Sequence[str] | None) -> dict[str, str]:
    """Summary column -> header: SUMMARY_COLUMNS, or the chosen columns (a statistic's bare name
    means its median over inits, `<stat>_p50`)."""
    if not stats:  # (a folder written before a statistic existed lacks its column)
        return {c: short for c, short in SUMMARY_COLUMNS.items() if c in frame.columns}
    chosen = {}
    for name in stats:
        column = name if name in frame.columns else f"{name}_p50"
        if column not in frame.columns or column in OPTIONS or frame[column].dtype == object:
            allowed = ", ".join(c for c in frame.columns
                                if c.endswith(("_p50", "_mean")) or c in SUMMARY_COLUMNS)
            raise ValueError(f"--stat: unknown statistic {name!r}; allowed: {allowed}")
        chosen[column] = column
    return chosen


MAX_SHOWN_VALUES = 6  # an error line names at most this many of an option's values


def _values_text(values: Sequence) -> str:
    shown = [f"{v:g}" if isinstance(v, float) else str(v) if v != "" else '""'
             for v in values[:MAX_SHOWN_VALUES]]
    return ", ".join(shown) + (", ..." if len(values) > MAX_SHOWN_VALUES else "")


def _distinct(column: pd.Series) -> list:
    values = list(column.drop_duplicates())
    try:
        return sorted(values)
    except TypeError:  # (mixed types, e.g. None beside strings)
        return values


def where_rows(frame: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """The rows whose option equals the value of each `OPTION=VALUE` (numbers compared as
    numbers, 8 = 8.0); a filter that names no option or matches no row is a ValueError."""
    allowed = ["label", *option_columns(frame)]
    for item in where:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or key not in allowed:
            raise ValueError(f"--where {item!r}: not OPTION=VALUE with an option of "
                             f"{', '.join(allowed)}")
        column = frame[key]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            match = column.astype(str).str.lower() == text.lower()
        else:
            try:
                match = pd.Series(np.isclose(column.to_numpy(np.float64), float(text)),
                                  index=frame.index)
            except ValueError:
                match = pd.Series(False, index=frame.index)
        if not match.any():
            raise ValueError(f"--where {key}={text}: matches no row; values present: "
                             f"{_values_text(_distinct(column))}")
        frame = frame[match]
    return frame


def pooled_options(frame: pd.DataFrame, by: Sequence[str]) -> dict[str, list]:
    """The options (and label) outside `by` that take more than one value among the cells of
    one group of `by`: what a median over a group's cells would pool, with their values."""
    if "cell" in by:
        return {}
    cells = frame.drop_duplicates("cell")
    pooled = {}
    for column in varying_options(frame):
        if column in by:
            continue
        spread = cells.groupby(list(by), dropna=False)[column].nunique(dropna=False)
        if spread.max() > 1:
            pooled[column] = _distinct(cells[column])
    return pooled


def _pool_error(pooled: dict[str, list]) -> str:
    """One line: which options would be pooled, and the three ways out."""
    if len(pooled) == 1:
        ((column, values),) = pooled.items()
        return (f"{column} varies ({_values_text(values)}) and is not in --by: add it to --by, "
                f"fix it with --where {column}=VALUE, or pass --pool to pool over it")
    named = [f"{c} ({_values_text(v)})" for c, v in pooled.items()]
    what = ", ".join(named[:-1]) + f" and {named[-1]}"
    return (f"{what} vary and are not in --by: add them to --by, fix them with --where "
            "OPTION=VALUE, or pass --pool to pool over them")


def summary_text(frame: pd.DataFrame, by: Sequence[str] | None, layer: int | None,
                 stats: Sequence[str] | None = None, *, pool: bool = False,
                 where: Sequence[str] = ()) -> str:
    """A compact table of the W rows: per group of `by` values and layer, the median over the
    group's cells of a few summary columns. `layer` < 0 counts from the output layer. A group
    pools cells that differ in an option outside `by` only with `pool` (else ValueError naming
    the options): a median over depths 2 and 8 reads as one depth's value."""
    frame = where_rows(frame, where)
    by = list(by) if by else (varying_options(frame) or ["cell"])
    unknown = [c for c in by if c not in frame.columns]
    if unknown:
        raise ValueError(f"--by: unknown column(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(['cell', 'label', *option_columns(frame)])}")
    pooled = pooled_options(frame, by)
    if pooled and not pool:
        raise ValueError(_pool_error(pooled))
    columns = summary_columns(frame, stats)
    rows = weight_rows(frame)
    keys = [*by, "layer"] + (["param"] if rows["param"].nunique() > 1 else [])
    if layer is not None:
        rows = rows[rows["layer" if layer > 0 else "layer_from_output"] == layer]
        if rows.empty:
            raise ValueError(f"--layer {layer}: no such layer in these cells")
    table = rows.groupby(keys, sort=True, dropna=False).agg(
        cells=("cell", "nunique"), seeds=("seeds", "median"),
        **{short: (col, "median") for col, short in columns.items()},
    ).reset_index()
    table["seeds"] = table["seeds"].round().astype("int64")
    if (table["cells"] == 1).all():
        table = table.drop(columns="cells")
        how = "one cell per row"
    else:
        over = "; ".join(f"{c} {_values_text(v)}" for c, v in pooled.items())
        how = ("each row is the median over its `cells`"
               + (f" (--pool: pooled over {over})" if over else " (the same options)"))
    text = table.to_string(index=False, float_format=lambda v: f"{v:.3g}")
    legend = ", ".join(f"{short} = {col}" for col, short in columns.items() if short != col)
    what = "W rows" if (rows["param"] == "W").all() else "Parameter rows (W for the MLP)"
    return (f"{what} by {', '.join(keys[:-1])} and {keys[-1]}; {how}.\n{text}\n"
            + (f"{legend}. " if legend else "")
            + "_p50: median over inits; load() gives every column.")
