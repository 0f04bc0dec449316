"""`tune`: every cell of a sweep by one of CRITERIA, into a tune's folder: the table
(`<out>/tune/`, every criterion's rows, `gradjax.load(out, "tune")`) and the rounds
(`<out>/rounds/`, results folders, so a re-run resumes and a finished tune computes nothing).
`critical` is `gradjax.prescribe.search`'s, the per-layer criteria
`gradjax.prescribe.per_layer`'s."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from gradjax.prescribe.per_layer import tune_layers
from gradjax.prescribe.search import POINTS, ZOOM_ROUNDS, tune_target
from gradjax.prescribe.target import targets_of
from gradjax.results import files, layout, reading
from gradjax.run import engine
from gradjax.run.library import as_sweep
from gradjax.run.preflight import check_sweep
from gradjax.sweep import Sweep
from gradjax.sweep.budget import DEFAULT_MAX_MEMORY

CRITERIA = ("critical", "unit-variance", "equal-gradients")  # docs/tune.md
TRAIN_STEPS = 20  # the check round's optimizer steps: did the loss halve within them?


def tune(sweep: Mapping[str, Any] | str | Path | Sweep, out: str | Path | None = None, *,
         criterion: str = "critical", points: int = POINTS, zoom_rounds: int = ZOOM_ROUNDS,
         train_steps: int = TRAIN_STEPS, max_memory: int = DEFAULT_MAX_MEMORY, quiet: bool = True,
         run: Callable[[Sweep, Path], None] | None = None,
         say: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Tune every cell of `sweep` by `criterion` into the folder `out`; returns its rows.

    Args:
      sweep: a dict of the sweep file's shape, a sweep file's path, or a parsed sweep; each
        cell is tuned from its own init (`critical`: its first grid is START_GRID times the
        cell's `scale`).
      out: the tune's folder (default `results/<name>-tune`): `tune/` (the table, every
        criterion's rows) and `rounds/` (a results folder per round and check of each cell,
        and each cell's per-init multipliers of a per-layer criterion).
      criterion: one of CRITERIA (docs/tune.md): `critical`, `unit-variance` or
        `equal-gradients`.
      points: `critical`: scales per zoom round (one compiled program for all rounds of a
        shape bucket) and in its check round.
      zoom_rounds: `critical`: zoom rounds after the first grid.
      train_steps: optimizer steps the check round trains the same inits for, before and
        after, with the cell's optimizer options (0: no training).
      max_memory: the device memory budget of the rounds' runs, in bytes (`gradjax run
        --max-memory`).
      quiet: no progress bar or log lines from the rounds' runs.
      run: runs a round's sweep into a folder (default: `engine.execute_sweep`, resuming).
      say: called with a line after each tuned cell.

    Returns:
      The table's rows of `criterion`: for `critical` one per cell, `param` and `layer` null (a
      global scale), `multiplier` (critical_scale over the cell's scale) and its 5/50/95 %
      percentiles over inits, `critical_scale`, how many inits crossed chi = 1 on the grid,
      `note` (why there is none); for a per-layer criterion one per weight leaf, `param` its
      path and `layer` its layer, `multiplier` the median over inits of the layer's and its
      percentiles, `inits_holding`; for both the check round's columns (`*_before`,
      `*_after`, `improved`), `wall_s` (the cell's tune, its check included) and the cell's
      options (docs/tune.md).

    Raises ValueError for an unknown criterion or a cell whose scale is not positive, before
    anything is written; `SweepError` for a bad sweep.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion {criterion!r}; allowed: {', '.join(CRITERIA)}")
    sweep = as_sweep(sweep)
    check_sweep(sweep, max_memory)  # what `gradjax run` refuses, refused before any round
    out = tune_folder(sweep, out)
    if run is None:
        def run(one_round: Sweep, folder: Path) -> None:
            engine.execute_sweep(one_round, folder, max_memory=max_memory, overwrite=True,
                                 quiet=quiet)
    targets = targets_of(sweep)
    for target in targets:  # before anything is written
        if not target.scale > 0:
            raise ValueError(f"cell {target.cell}: scale {target.scale}: tune starts from a "
                             "positive scale")
    rows = []
    for i, target in enumerate(targets):
        began = time.perf_counter()
        if criterion == "critical":
            found = [tune_target(sweep, target, out, points=points, zoom_rounds=zoom_rounds,
                                 train_steps=train_steps, run=run)]
        else:
            found = tune_layers(sweep, target, out, criterion=criterion,
                                train_steps=train_steps, run=run)
        wall = time.perf_counter() - began
        rows += [{**row, "wall_s": wall} for row in found]
        if say is not None:
            say(f"tuned {i + 1} of {len(targets)} ({criterion}) in {wall:.1f} s")
    write_table(pd.DataFrame(rows), out, criterion)
    return reading.load(out, layout.TUNE, criterion=criterion)


def tune_folder(sweep: Sweep, out: str | Path | None) -> Path:
    """The tune's folder: `out`, else `results/<name>-tune`."""
    return layout.RESULTS / f"{sweep.name}-tune" if out is None else Path(out)


def write_table(table: pd.DataFrame, out: Path, criterion: str) -> None:
    """The tune table, atomically, as `<out>/tune/tune.parquet`: `table`'s rows in place of
    any earlier rows of the same `criterion` (the other criteria's rows kept)."""
    path = out / layout.TUNE / f"{layout.TUNE}.parquet"
    if path.exists():
        kept = pd.read_parquet(path)
        table = pd.concat([kept[kept["criterion"] != criterion], table], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_parquet(pa.Table.from_pandas(table, preserve_index=False), path)
