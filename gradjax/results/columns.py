"""The columns of a results table that are options: gradjax's and any plug-in's sit between
`label` and `layer` (`gradjax.results.schema`), so a reader finds them without
knowing the models."""

from __future__ import annotations

import pandas as pd


def option_columns(frame: pd.DataFrame) -> list[str]:
    """The option columns of a results table, in the table's order."""
    columns = list(frame.columns)
    return columns[columns.index("label") + 1 : columns.index("layer")]


def varying_options(frame: pd.DataFrame) -> list[str]:
    """The option columns (and label) that differ between the cells of a results table."""
    cells = frame.drop_duplicates("cell")
    options = [c for c in option_columns(frame) if c != "seed"]
    return [c for c in ("label", *options) if cells[c].nunique(dropna=False) > 1]
