"""Arrow schemas of the two tables, derived from the declarations (`gradjax.spec`): the
identity, position, option and statistic columns; per-seed rows from a chunk's statistics;
where a statistic does not apply (null) as against undefined (NaN); and `stats_frame`, the tidy
frame of one init's `grad_stats`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gradjax.spec import (
    AGGREGATES,
    CELL_STATS,
    EXAMPLE_STATS,
    INIT_STATS,
    LAYER_STATS,
    OPTION_TABLE,
    PARAM_STATS,
    SCALED,
    STAT_BY_NAME,
    STATS,
    THEORY_COLUMNS,
    capabilities,
)
from gradjax.spec.option import Option
from gradjax.sweep import Cell, Sweep

ARROW_TYPES: dict[str, pa.DataType] = {  # option kind -> column type
    "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "name": pa.string(),
    "text": pa.string(), "model": pa.string(),
    "inputs": pa.string(), "targets": pa.string(),  # "gaussian", ... or JSON text of the rows
    "scales": pa.string(),  # JSON text of the list
}


IDENTITY = [pa.field("sweep", pa.string()), pa.field("cell", pa.int64()),
            pa.field("label", pa.string())]


# layer_from_output: -1 for the output layer (layer = depth + 1), -2 below it, ...; n: entries
# of the tensor
POSITION = [pa.field("layer", pa.int64()), pa.field("layer_from_output", pa.int64()),
            pa.field("param", pa.string()), pa.field("n", pa.int64())]


POSITION_COLUMNS: tuple[str, ...] = tuple(f.name for f in POSITION)


def option_fields(extra: Sequence[Option] = ()) -> list[pa.Field]:
    """A column per option: gradjax's (`OPTION_TABLE`), then a sweep's plug-in options."""
    return [pa.field(o.name, ARROW_TYPES[o.kind]) for o in (*OPTION_TABLE, *extra)]


def per_seed_schema(stat_type: pa.DataType, extra: Sequence[Option] = ()) -> pa.Schema:
    """identity, options, seed, position, then every per-seed statistic: the magnitudes
    (`gradjax.spec.SCALED`, whose squares need float64's range) as float64, the others as
    `stat_type`."""
    return pa.schema([
        *IDENTITY, *option_fields(extra), pa.field("seed", pa.int64()), *POSITION,
        *(pa.field(s, pa.float64() if s in SCALED else stat_type) for s in STATS),
    ])


def summary_schema(extra: Sequence[Option] = ()) -> pa.Schema:
    """identity, options, layer, param, seeds, `<stat>_<aggregate>`, across-seed columns and
    the mean-field columns of `gradjax.nn.theory` (all float64)."""
    return pa.schema([
        *IDENTITY, *option_fields(extra), *POSITION, pa.field("seeds", pa.int64()),
        *(pa.field(f"{s}_{a}", pa.float64()) for s in STATS for a in AGGREGATES),
        *(pa.field(s, pa.float64()) for s in CELL_STATS),
        *(pa.field(c, pa.float64()) for c in THEORY_COLUMNS),
    ])


def stat_type(sweep: Sweep) -> pa.DataType:
    """float32 per-seed statistics, float64 if any cell computes in float64."""
    x64 = any(c.options["dtype"] == "float64" for c in sweep.cells)
    return pa.float64() if x64 else pa.float32()


def as_rows(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Statistics [..., rows], one row per tensor, from the MLP probe's layer form
    (PARAM_STATS [..., L, 2], LAYER_STATS [..., L] repeated on the W and b rows) or already in
    row form (every statistic [..., rows], from `gradjax.probe.tree_probe`); loss_value [...] is
    repeated on every row, as is every other of INIT_STATS."""
    layer_form = np.ndim(stats["grad_var"]) == np.ndim(stats["preact_var"]) + 1
    out = {}
    for name in PARAM_STATS:
        value = np.asarray(stats[name])
        out[name] = value.reshape(*value.shape[:-2], -1) if layer_form else value
    for name in EXAMPLE_STATS:  # absent from `grad_stats` (no per-example gradients): NaN
        value = np.asarray(stats.get(name, np.full(np.shape(stats["grad_var"]), np.nan)))
        out[name] = value.reshape(*value.shape[:-2], -1) if layer_form else value
    for name in LAYER_STATS:
        value = np.asarray(stats[name])
        out[name] = np.repeat(value, 2, axis=-1) if layer_form else value
    for name in INIT_STATS:  # loss_halved_step is absent from `grad_stats`: NaN
        value = np.asarray(stats.get(name, np.full(np.shape(stats["loss_value"]), np.nan)))
        out[name] = np.broadcast_to(value[..., None], out["grad_var"].shape)
    return out


def rule_options(cell: Cell) -> dict[str, Any]:
    """What `not_applicable` asks of a cell: its options, with those of its program
    (`Cell.spec`): activation None for a model with no activation option, structural_zeros
    and per_example as computed."""
    spec = cell.spec
    return {**cell.options, "activation": spec.activation,
            "structural_zeros": spec.structural_zeros, "per_example": spec.per_example}


def not_applicable(positions: Mapping[str, Any], options: Mapping[str, Any],
                   ) -> dict[str, np.ndarray]:
    """Per statistic (STATS and CELL_STATS), a bool [rows] over one init's rows: True where it
    does not apply, as `gradjax.spec.Stat` declares (`on`, `needs`, `capability`, `min_n`,
    `min_units`; the "null on" column of docs/conventions.md). There it is null in the tables;
    a value computed and undefined stays NaN. The one place the rule is applied.

    `positions`: param, layer_from_output, and n, units and dz where known (units: a tensor's
    last axis, 0 for a 1-D tensor; an MLP's follow from width and out_dim; dz: whether a
    tap has dL/dz, `gradjax.nn.tap_shifts`). `options`: a
    cell's (`rule_options`): model, per_example, structural_zeros, step, activation (None: the
    model has no activation option), width and out_dim."""
    tap = np.array([str(p).startswith("taps[") for p in positions["param"]], dtype=bool)
    family = capabilities(options.get("model", "mlp"))
    layered = family.layered_probe  # layer statistics on parameter rows, not on taps
    output = np.asarray(positions["layer_from_output"]) == -1
    leaf = ~tap & (not layered)
    off = {"params": tap, "layers": leaf, "hidden": leaf | (output & layered),
           "all": np.zeros_like(tap)}
    without = {"per_example": not options.get("per_example"),
               "structural_zeros": not options.get("structural_zeros"),
               "steps": not options.get("step"),
               "activation": tap & (options.get("activation") is None),
               "tap_shift": tap & ~np.asarray(positions.get("dz", tap), bool)}
    n, units = positions.get("n"), _units(positions, options)
    out = {}
    for name in (*STATS, *CELL_STATS):
        stat = STAT_BY_NAME[name]
        lacks = bool(stat.capability) and not getattr(family, stat.capability)
        mask = off[stat.on] | without.get(stat.needs, False) | lacks
        if stat.min_n and n is not None:
            mask = mask | (np.asarray(n) < stat.min_n)
        if stat.min_units and units is not None:
            mask = mask | (units < stat.min_units)
        out[name] = np.broadcast_to(mask, tap.shape)
    return out


def _units(positions: Mapping[str, Any], options: Mapping[str, Any]) -> np.ndarray | None:
    """Each row's units (`not_applicable`), None where unknown."""
    if "units" in positions:
        return np.asarray(positions["units"])
    if not capabilities(options.get("model", "mlp")).shapes_from_options or (
            options.get("out_dim") is None):
        return None
    fan_out = np.where(np.asarray(positions["layer_from_output"]) == -1, options["out_dim"],
                       options.get("width") or 0)
    return np.where(np.asarray(positions["param"]) == "W", fan_out, 0)


def per_seed_table(
    sweep_name: str, cell: Cell, seeds: np.ndarray, stats: Mapping[str, np.ndarray],
    schema: pa.Schema, positions: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Rows (seed, tensor) of one cell from its stats (`as_rows` form or the MLP's layer
    form) and the position columns of one init's rows (default: the MLP's,
    `position_columns`)."""
    positions = position_columns(cell) if positions is None else positions
    stats = as_rows(stats)
    c, per_init = stats["grad_var"].shape
    null = not_applicable(positions, rule_options(cell))
    rows = c * per_init
    def constant(value: Any, type_: pa.DataType) -> pa.Array:
        # pa.repeat: a 400,000-row string column in 2 ms, where pa.array of a list takes 230
        return pa.repeat(pa.scalar(value, type_), rows)

    columns: dict[str, Any] = {
        "sweep": constant(sweep_name, pa.string()),
        "cell": np.full(rows, cell.index, np.int64),
        "label": constant(cell.label, pa.string()),
    }
    for name, value in cell.columns().items():
        columns[name] = constant(value, schema.field(name).type)
    columns["seed"] = np.repeat(np.asarray(seeds, np.int64), per_init)
    for name, values in positions.items():
        if name == "param":
            columns[name] = pa.array(list(values), pa.string()).take(
                np.tile(np.arange(per_init), c))
        else:
            columns[name] = np.tile(values, c)
    for name in STATS:
        columns[name] = pa.array(np.asarray(stats[name]).reshape(rows),
                                 mask=np.tile(null[name], c))
    arrays = [_arrow(columns[f.name], f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _layer_positions(n_layers: int) -> dict[str, Any]:
    """layer, layer_from_output and param of one init's rows: (layer, W), (layer, b) for
    layer 1 .. n_layers."""
    layer = np.repeat(np.arange(1, n_layers + 1, dtype=np.int64), 2)
    return {"layer": layer, "layer_from_output": layer - (n_layers + 1),
            "param": ["W", "b"] * n_layers}


def position_columns(cell: Cell) -> dict[str, Any]:
    """`_layer_positions` of an MLP cell's network, and n, each tensor's number of entries."""
    sizes = cell.spec.sizes
    n = [count for a, b in zip(sizes[:-1], sizes[1:], strict=True) for count in (a * b, b)]
    return {**_layer_positions(len(sizes) - 1), "n": np.asarray(n, np.int64)}


def stats_frame(stats: Mapping[str, Any], params: Any = None) -> pd.DataFrame:
    """`gradjax.grad_stats`' result as a tidy DataFrame: one row per (layer, param), with the
    columns layer, layer_from_output, param and every statistic (a layer statistic repeated on
    the W and b rows, loss_value on every row), as in the per-seed table. The statistics are
    pandas' nullable Float64: <NA> where one does not apply (`not_applicable`, as null in the
    tables; also those `grad_stats` does not compute: per-example, param_sq_norm,
    loss_halved_step), NaN where it was computed and is undefined. With the MLP's `params`
    (a list of {"W", "b"}), also n and the rules that need each tensor's size. A model's rows
    (`grad_stats` of an `(init, apply)` pair) bring their own positions, n included."""
    if "param" in stats:  # a model's rows: leaves, then taps
        frame: dict[str, Any] = {f.name: stats[f.name] for f in POSITION}
        frame["units"] = stats["units"]
        options = {"model": "(init, apply)", "activation": stats.get("activation")}
    else:
        frame = _layer_positions(np.asarray(stats["grad_var"]).shape[0])
        options = {"model": "mlp", "structural_zeros": True, "activation": ""}
    if params is not None:
        shapes = [np.shape(layer[p]) for layer in params for p in ("W", "b")]
        frame["n"] = np.array([int(np.prod(s)) for s in shapes], np.int64)
        frame["units"] = np.array([s[-1] if len(s) >= 2 else 0 for s in shapes], np.int64)
    null = not_applicable(frame, options)
    frame.pop("units", None)
    for name, values in as_rows(stats).items():
        frame[name] = pd.arrays.FloatingArray(np.asarray(values, np.float64),
                                              null[name] | (name not in stats))
    return pd.DataFrame(frame)


def _arrow(values: Any, type_: pa.DataType) -> pa.Array:
    return (values if isinstance(values, pa.Array) else pa.array(values)).cast(type_)


def summary_table(frame: pd.DataFrame, extra: Sequence[Option] = ()) -> pa.Table:
    """A cell's summary frame (see `gradjax.results.summary`) in the summary schema, no pandas
    metadata."""
    schema = summary_schema(extra)
    arrays = [_arrow(_values(frame[f.name]), f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _values(column: pd.Series) -> Any:
    """A frame's column for `_arrow`: a nullable Float64 column keeps <NA> as null and NaN as
    NaN (a plain float column's NaN stays NaN)."""
    values = column.array
    return pa.array(values) if isinstance(values, pd.arrays.FloatingArray) else column.to_numpy()
