"""Results on disk: the folder layout, Arrow schemas, atomic Parquet writes, and `load`.

results/<name>/
  sweep.toml              the sweep file exactly as given (the last run's)
  per_seed/cell-NNNNN.parquet   one row per (cell, seed, layer, param)
  summary/cell-NNNNN.parquet    one row per (cell, layer, param)
  manifest.json           written once every cell is finished (cells, seeds, rows per table)
  .run.json               what the folder's results are (`run_record`: the parsed sweep)
  .work/                  pieces, kept moments, locks and in-progress units
  (`gradjax.results.ledger`)
  .lock                   held (flock) only while a run opens or completes the folder
  .run.lock               shared by the runs of one version of the sweep; growing needs it alone

Every file is written under a dot-prefixed temporary name and renamed into place, so a reader
(or a resumed run) never sees a partial file; dot-prefixed names are skipped by pyarrow.dataset
and do not match `*.parquet` globs. Every Parquet page carries a CRC, checked on read, so a
damaged file is reported, never read as data. Cells are ordinary columns, not hive partitions,
so pandas, pyarrow.dataset, DuckDB and polars all read the same typed columns with no extra
flags.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

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

TABLES: tuple[str, ...] = ("summary", "per_seed")
RUN_FILE, SWEEP_FILE, WORK_DIR, LOCK_FILE = ".run.json", "sweep.toml", ".work", ".lock"
RESULTS = Path("results")  # a run writes to RESULTS/<sweep name> unless given a folder
MANIFEST_FILE = "manifest.json"  # written once every cell is finished
RUN_LOCK = ".run.lock"  # shared by the runs of one version of the sweep (`ResultsFolder.open`)
COMPRESSION = "zstd"
SEED_BLOCK = 65536  # seeds per block of a new folder (`results.ledger`): most cells have one
OWN_ENTRIES = frozenset({SWEEP_FILE, RUN_FILE, WORK_DIR, LOCK_FILE, RUN_LOCK, MANIFEST_FILE,
                         "per_seed", "summary"})


LOCK_WAIT_S = 600.0  # opening (renumbering) or completing a folder: well under 1 s per cell


def wait_for_lock(file: Any, seconds: float) -> bool:
    """flock `file` exclusively, waiting up to `seconds`; whether it was taken."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


class ResultsError(RuntimeError):
    """A results folder that cannot be used as asked (another sweep's, or busy)."""


ARROW_TYPES: dict[str, pa.DataType] = {  # option kind -> column type
    "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "name": pa.string(),
    "text": pa.string(), "model": pa.string(),
    "inputs": pa.string(), "targets": pa.string(),  # "gaussian", ... or JSON text of the rows
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

    `positions`: param, layer_from_output, and n and units where known (units: a tensor's
    last axis, 0 for a 1-D tensor; an MLP's follow from width and out_dim). `options`: a
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
               "activation": tap & (options.get("activation") is None)}
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


def user_cache_dir() -> Path:
    """Where JAX's persistent compilation cache lives: $XDG_CACHE_HOME/gradjax/jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradjax" / "jax"


def private_folder(path: Path) -> Path:
    """`path` made (if needed) and readable, writable and listable by this user only (0700):
    a compile cache others could write could hand this process their programs."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a dot-prefixed temporary path beside `path`; on success fsync and rename it into
    place, on failure remove it. Readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_parquet(table: pa.Table, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Atomically write `table` (schema metadata replaced by `metadata` if given)."""
    if metadata is not None:
        table = table.replace_schema_metadata(dict(metadata))
    # a CRC per page, checked on every read (`read_verified`, `load`): a damaged file is never
    # read as data. Dictionary encoding for the option and position columns only: on the
    # statistics it
    # costs time and bytes (S's 400,000-row table: 0.48 s and 17.0 MB with it, 0.26 s and
    # 13.0 MB without)
    dictionary = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=COMPRESSION, use_dictionary=dictionary,
                       write_page_checksum=True)


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode())


def write_checkpoint(path: Path, seeds_done: int, n: int, leaves: list[np.ndarray]) -> None:
    """Atomically save a unit's progress: seeds done and the merged float64 moment leaves."""
    arrays = {f"leaf{i}": a for i, a in enumerate(leaves)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, seeds_done=seeds_done, n=n, **arrays)


def read_checkpoint(path: Path) -> tuple[int, int, list[np.ndarray]] | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        leaves = [z[f"leaf{i}"] for i in range(len(z.files) - 2)]
        return int(z["seeds_done"]), int(z["n"]), leaves


FORMAT = 2  # of .run.json; 1 (text hash and seeds) was written before shards and growth


def run_record(sweep: Sweep, keys: Sequence[str], seed_block: int) -> dict[str, Any]:
    """What a folder's results are: per cell index the key of what fixes its numbers
    (`gradjax.results.ledger.cell_key`), the seeds per cell, the statistics per_seed keeps and the
    seed block its pieces use. Not the sweep file's text: a comment is not a change."""
    return {"format": FORMAT, "name": sweep.name, "seeds": sweep.seeds,
            "per_seed": list(sweep.per_seed), "seed_block": seed_block, "cells": list(keys)}


def _difference(recorded: dict[str, Any], new: dict[str, Any], sweep: Sweep) -> str | None:
    """Why `sweep` cannot continue the recorded results (None if it can: the same cells, or
    more of them, or more seeds)."""
    if recorded.get("format") != FORMAT:
        return "written by an earlier gradjax"
    if recorded["name"] != new["name"]:
        return f"its name is {recorded['name']!r}"
    if recorded["per_seed"] != new["per_seed"]:
        return "it keeps other per-seed statistics"
    if new["seeds"] < recorded["seeds"]:
        return (f"it has {recorded['seeds']} seeds per cell and {sweep.source} asks for "
                f"{new['seeds']}; seeds can be added, not removed")
    present = set(new["cells"])
    for index, key in enumerate(recorded["cells"]):
        if key not in present:
            return (f"its cell {index} is not a cell of {sweep.source}: options, labels, "
                    "root_seed or a plug-in model's source changed")
    return None


class ResultsFolder:
    """The results folder of one sweep; `open` checks it belongs to that sweep."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def per_seed_path(self, cell: int) -> Path:
        return self.root / "per_seed" / f"cell-{cell:05d}.parquet"

    def summary_path(self, cell: int) -> Path:
        return self.root / "summary" / f"cell-{cell:05d}.parquet"

    def work_dir(self, unit: str) -> Path:
        return self.root / WORK_DIR / "units" / unit

    def done(self, cell: int) -> bool:
        """A cell's summary file exists (written after its per-seed file)."""
        return self.summary_path(cell).exists()

    def recorded(self) -> dict[str, Any] | None:
        run_file = self.root / RUN_FILE
        return json.loads(run_file.read_text()) if run_file.exists() else None

    def check(self, sweep: Sweep, record: dict[str, Any], overwrite: bool) -> None:
        """Refuse a folder that holds results another sweep made (unless `overwrite`) or that
        is not a results folder at all. A sweep with more seeds or more cells continues the
        folder. Writes nothing."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ResultsError(f"{root}: exists and is not a folder")
        recorded = self.recorded()
        if recorded is not None:
            why = None if overwrite else _difference(recorded, record, sweep)
            if why is not None:
                raise ResultsError(
                    f"{root}: holds results of a different sweep ({why}); use --overwrite to "
                    "replace them or --out to write elsewhere")
        elif root.exists() and any(p.name not in OWN_ENTRIES and not p.name.endswith(".tmp")
                                   for p in root.iterdir()):
            raise ResultsError(f"{root}: exists, is not empty and is not a gradjax results "
                               "folder; choose another --out")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The folder's own lock, held only while a run opens the folder or completes it
        (pieces have locks of their own, `gradjax.results.ledger`): runs on one folder wait here,
        up to LOCK_WAIT_S."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as lock:
            if not wait_for_lock(lock, LOCK_WAIT_S):
                raise ResultsError(f"{self.root}: another gradjax run has held the folder's "
                                   f"lock for {LOCK_WAIT_S:g} s (opening or completing it)")
            yield

    def open(self, sweep: Sweep, record: dict[str, Any], overwrite: bool,
             renumber: Any) -> dict[str, Any]:
        """Check and prepare the folder (clearing it with `overwrite`) and record `record`;
        `renumber(old_record)` moves finished cells whose index the sweep changed. Returns
        the record in force (an existing folder keeps its seed block)."""
        self.check(sweep, record, overwrite)
        with self.locked():
            self.check(sweep, record, overwrite)  # another run may have changed it meanwhile
            old = None if overwrite else self.recorded()
            if old is not None:
                record = {**record, "seed_block": old["seed_block"]}
            self._hold_run_lock(changing=overwrite or record != old)
            if overwrite:
                self.clear()
            if old is not None:
                renumber(old)
            for sub in ("per_seed", "summary", WORK_DIR):
                (self.root / sub).mkdir(exist_ok=True)
            self.remove_temporaries(only_dead=True)
            write_text(sweep.text, self.root / SWEEP_FILE)
            if record != old:  # more seeds or cells: the folder is no longer complete
                with contextlib.suppress(FileNotFoundError):
                    (self.root / MANIFEST_FILE).unlink()
                write_text(json.dumps(record, indent=1) + "\n", self.root / RUN_FILE)
            fcntl.flock(self._run_lock, fcntl.LOCK_SH)
        return record

    def _hold_run_lock(self, changing: bool) -> None:
        """Share `.run.lock` with the other runs of this version of the sweep for the rest of
        this run (`release`); a run that changes what the folder holds (growth, --overwrite)
        needs it alone, so that no run of the previous version writes on meanwhile."""
        self._run_lock = open(self.root / RUN_LOCK, "a")  # noqa: SIM115 (held past this call)
        try:
            fcntl.flock(self._run_lock, (fcntl.LOCK_EX if changing else fcntl.LOCK_SH)
                        | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise ResultsError(f"{self.root}: a run of another version of this sweep (fewer "
                               "seeds or cells) is still writing here; let it finish or stop "
                               "it, then run again") from None

    def release(self) -> None:
        """Let go of `.run.lock` (the run is over)."""
        lock = getattr(self, "_run_lock", None)
        if lock is not None:
            lock.close()
            self._run_lock = None

    def clear(self) -> None:
        """Remove what a run writes (and nothing else in the folder)."""
        for sub in ("per_seed", "summary", WORK_DIR):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        for name in (SWEEP_FILE, RUN_FILE, MANIFEST_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()

    def remove_temporaries(self, only_dead: bool) -> None:
        """Temporary files of killed runs (the rename never happened); with `only_dead`, only
        those of this host's processes that are gone (another run may be writing the rest)."""
        for tmp in self.root.rglob(".*.tmp"):
            parts = tmp.name.rsplit(".", 3)
            host, pid = (parts[1], parts[2]) if len(parts) == 4 else ("", "")
            if only_dead and (host != _HOST or _alive(int(pid) if pid.isdigit() else -1)):
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


_HOST = socket.gethostname().replace(".", "-")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; allowed: {', '.join(TABLES)}")
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


VERIFIED = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))


def read_verified(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A Parquet file with its page checksums verified (raises for a damaged file)."""
    return pq.read_table(path, columns=columns, page_checksum_verification=True)


def unreadable(path: Path) -> str | None:
    """Why a Parquet file cannot be read whole (truncated, corrupt), or None."""
    try:
        read_verified(path)
    except (OSError, pa.ArrowException) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


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
