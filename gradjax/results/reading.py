"""`load`: a results table as a pandas frame, from a folder, a table's folder or an
object-store URI, with filters that name the values present when they match nothing. Cells are
ordinary columns, not hive partitions, so pandas, pyarrow.dataset, DuckDB and polars all read the
same typed columns with no extra flags."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from gradjax.results.files import VERIFIED, unreadable
from gradjax.results.layout import RUN_FILE, TABLES, TUNE, ResultsError


def _remote_files(uri: str, table: str) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem of a URI and the Parquet files of `table` in the folder it names."""
    fs, root = pafs.FileSystem.from_uri(uri)
    root = root.rstrip("/")
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri}: no such results folder")
    folder = root if root.rsplit("/", 1)[-1] == table else f"{root}/{table}"
    selector = pafs.FileSelector(folder, allow_not_found=True)
    files = sorted(i.path for i in fs.get_file_info(selector) if i.path.endswith(".parquet")
                   and not i.base_name.startswith("."))
    if not files:
        raise FileNotFoundError(f"{uri}: no Parquet files in {table}/ (no finished cell yet)")
    return fs, files


def table_files(path: str | Path, table: str) -> list[Path]:
    """The Parquet files of `table` in a results folder, or in `path` itself when it is that
    table's folder (results/x/per_seed)."""
    if table not in (*TABLES, TUNE):
        raise ValueError(f"unknown table {table!r}; allowed: {', '.join((*TABLES, TUNE))}")
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such results folder" if not path.exists() else
                                f"{path}: not a folder (a results folder or its {table}/)")
    folder = path if path.name == table and not (path / table).is_dir() else path / table
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no Parquet files ({_why_none(folder, table)})")
    return files


def _why_none(folder: Path, table: str) -> str:
    """Why a table's folder has no files: no cell finished, or the sweep keeps no per-seed
    table (`per_seed = false`, recorded in the results folder's RUN_FILE)."""
    run_file = folder.parent / RUN_FILE
    if table == "per_seed" and run_file.exists():
        with contextlib.suppress(ValueError, KeyError):
            if not json.loads(run_file.read_text())["per_seed"]:
                return "its sweep has per_seed = false: use the summary table"
    return "no finished cell yet"


def _table_of(path: str | Path, table: str | None) -> str:
    """`table`, or the one `path` names when it is a per_seed/ or summary/ folder."""
    name = Path(path).name
    if table is None:
        return name if name in TABLES and not (Path(path) / name).is_dir() else "summary"
    return table


def _equals(column: str, value: Any) -> pc.Expression:
    if isinstance(value, list | tuple | set | frozenset):
        return pc.field(column).isin(list(value))
    return pc.field(column) == value


def _layer_condition(value: Any) -> pc.Expression:
    """layer = L, where L < 0 counts from the output layer (-1 is the output layer)."""
    values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    counted = [v for v in values if v < 0]
    condition = pc.field("layer").isin([v for v in values if v > 0])
    if counted:
        condition = condition | pc.field("layer_from_output").isin(counted)
    return condition


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset)


def _check_matches(dataset: ds.Dataset, filters: Mapping[str, Any]) -> None:
    """Raise ValueError naming the values present for a filter that matches no row, or a list
    filter with a value (or more) that matches no row, or an empty list (it matches nothing).
    A value matches when the column holds it exactly (==, as the filter itself); a negative
    `layer` counts from the output layer (layer_from_output)."""
    for column, value in filters.items():
        values = list(value) if _is_list(value) else [value]
        missing = [v for v in values if not _present(dataset, column, v)]
        if missing or not values:
            present = pc.unique(dataset.to_table(columns=[column]).column(column)).to_pylist()
            shown = ", ".join(repr(v) for v in sorted(present))
            if column == "layer":
                shown += " (or -1 for the output layer, -2 below it, ...)"
            what = (" matches no row (an empty list matches nothing)" if not values else
                    " matches no row" if len(missing) == len(values) else
                    f": {', '.join(repr(v) for v in missing)} "
                    f"match{'es' if len(missing) == 1 else ''} no row")
            raise ValueError(f"{column}={value!r}{what}; values present: {shown}")


def _present(dataset: ds.Dataset, column: str, value: Any) -> bool:
    """Whether some row has `column` == `value` (`layer`: counted from the output if < 0)."""
    condition = _layer_condition(value) if column == "layer" else _equals(column, value)
    return dataset.count_rows(filter=condition) > 0


def load(path: str | Path, table: str | None = None, **equals_filters: Any) -> pd.DataFrame:
    """A results folder's `summary` (default) or `per_seed` table as a pandas DataFrame.

    `path` may also be the table's own folder (results/x/per_seed), or a pyarrow filesystem
    URI of either (file://, s3://, gs://; `gradjax.results.remote`). Keyword filters keep rows
    whose column equals the value (or is in it, for a list), e.g.
    `load("results/x", "per_seed", activation="relu", layer=1, param="W")`; `layer=-1` is each
    cell's output layer, -2 the layer below it. A filter that matches no row, a list filter
    with a value that matches no row (== exactly, as the filter) and an empty list raise
    ValueError naming the values present. Rows come sorted by cell (then seed), layer, param;
    strings are plain strings, never categoricals.
    """
    table = _table_of(path, table)
    fs = None
    if isinstance(path, str) and "://" in path:
        fs, files = _remote_files(path, table)
    else:
        files = table_files(path, table)
    try:
        dataset = ds.dataset(files, format=VERIFIED, filesystem=fs)
        return _load(dataset, table, equals_filters)
    except (OSError, pa.ArrowInvalid) as err:
        bad = next((f for f in files if fs is None and unreadable(f)), None)
        if bad is None:
            raise
        raise ResultsError(f"{bad}: truncated or corrupt ({unreadable(bad)}); run "
                           "`gradjax run` on its sweep again to compute that cell anew") from err


def _load(dataset: ds.Dataset, table: str, equals_filters: Mapping[str, Any]) -> pd.DataFrame:
    unknown = sorted(set(equals_filters) - set(dataset.schema.names))
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(dataset.schema.names)}")
    lists = {c: v for c, v in equals_filters.items() if _is_list(v)}
    _check_matches(dataset, lists)  # every value of a list must match, as a scalar must
    condition = None
    for column, value in equals_filters.items():
        term = _layer_condition(value) if column == "layer" else _equals(column, value)
        condition = term if condition is None else condition & term
    result = dataset.to_table(filter=condition)
    if result.num_rows == 0:
        _check_matches(dataset, equals_filters)
    order = ["cell", "seed", "layer"] if table == "per_seed" else ["cell", "layer"]
    result = result.sort_by([(c, "ascending") for c in order] + [("param", "ascending")])
    return result.to_pandas()
