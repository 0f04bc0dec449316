"""`tune`: the prescribed init of every cell of a sweep, found by zooming in on a grid of scales.

Each zoom round is an ordinary sweep (`gradjax.run.engine.execute_sweep`): the cell's options at
step 0 (an init property), `scale` on a grid of `points` values, the sweep's own seeds and
root seed. Scale is traced, so every round of every cell of one shape bucket runs one compiled
program, and the same seeds in every round (common random numbers: each init's weights are
its unit-scale draw times the scale) make each init's crossing a smooth function of scale.
Every round is a results folder under `<out>/rounds/`, so a re-run resumes and a finished tune
computes nothing. The table goes to `<out>/tune/` (`gradjax.load(out, "tune")`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gradjax.prescribe import critical
from gradjax.results import files, layout, reading
from gradjax.run import engine
from gradjax.run.library import as_sweep
from gradjax.sweep import Sweep, parse_sweep
from gradjax.sweep.budget import DEFAULT_MAX_MEMORY
from gradjax.sweep.toml_text import dumps

CRITERIA = ("critical",)  # unit-variance and equal-gradients are not built yet
START_GRID = (0.25, 4.0)  # the first grid, as multiples of the cell's own scale
POINTS = 9
ZOOM_ROUNDS = 3
TRAIN_STEPS = 20  # the check round's optimizer steps: did the loss halve within them?
WIDEN = 4.0  # a first grid without a crossing is widened by this factor on each side, once


@dataclasses.dataclass(frozen=True)
class Target:
    """One cell to tune: its options at step 0 without `scale`, and the scale it starts from."""

    index: int
    cell: int  # the first cell of the sweep it tunes
    label: str
    options: Mapping[str, Any]
    scale: float


def targets_of(sweep: Sweep) -> list[Target]:
    """The sweep's cells as tuning targets, one per set of options apart from `scale` and the
    training step (cells that differ only there share one prescription, measured from the
    first of them's scale)."""
    seen: dict[tuple, Target] = {}
    for cell in sweep.cells:
        options = {k: v for k, v in cell.options.items()
                   if v is not None and k not in ("scale", "step")}
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))
        if key not in seen:
            seen[key] = Target(len(seen), cell.index, cell.label, options,
                               float(cell.options["scale"]))
    return list(seen.values())


def round_sweep(sweep: Sweep, target: Target, scales: np.ndarray, n: int | str,
                steps: Sequence[int] = ()) -> Sweep:
    """The zoom round's sweep: the target's options, `scale` over `scales`, at step 0, or at
    each of `steps` (the check round's training, with the cell's optimizer options)."""
    doc = {"name": f"{sweep.name}-tune-{target.index}-{n}", "seeds": sweep.seeds,
           "root_seed": sweep.root_seed, "per_seed": True,
           "defaults": {**target.options, **({} if steps else {"step": 0})},
           "grid": {"scale": [float(s) for s in scales]},
           **({"steps": list(steps)} if steps else {})}
    source = Path(sweep.source).parent / f"{doc['name']}.toml"  # plug-ins import from there
    return parse_sweep(dumps(doc), str(source))


def profiles(folder: Path) -> pd.DataFrame:
    """|dL/dz_l|^2 of every (scale, seed, layer) of a finished round's folder."""
    rows = reading.load(folder, "per_seed")
    rows = rows[rows["delta_sq_norm"].notna()]
    return rows.groupby(["scale", "seed", "layer"], as_index=False)["delta_sq_norm"].first()


def first_over_last(folder: Path) -> pd.DataFrame:
    """For every (scale, seed) of a finished round's folder, the first layer's over the last
    layer's: `grad_ratio`, of |dL/dW_l|^2 (W: the layer's largest parameter, its weight matrix
    or kernel), and `dz_ratio`, of |dL/dz_l|^2."""
    rows = reading.load(folder, "per_seed", step=0)
    weights = rows[rows["grad_sq_norm"].notna()]
    weights = weights[weights["n"] == weights.groupby("layer")["n"].transform("max")]
    taps = rows[rows["delta_sq_norm"].notna()]
    ratios = {}
    for name, kept, stat in (("grad_ratio", weights, "grad_sq_norm"),
                             ("dz_ratio", taps, "delta_sq_norm")):
        by_layer = kept.groupby(["scale", "seed", "layer"])[stat].first().unstack("layer")
        ratios[name] = by_layer[by_layer.columns.min()] / by_layer[by_layer.columns.max()]
    return pd.DataFrame(ratios).reset_index()


BETTER = 1.25  # `improved`: the tuned ratio is nearer 1 than the default's by this factor


def halved(folder: Path, step: int) -> pd.Series:
    """Per scale, the fraction of inits whose loss fell below half its step-0 value within
    `step` optimizer steps (`loss_halved_step`)."""
    rows = reading.load(folder, "per_seed", step=step)
    per_init = rows.groupby(["scale", "seed"])["loss_halved_step"].first()
    return per_init.notna().groupby("scale").mean()


def check(sweep: Sweep, target: Target, tuned_scale: float, out: Path, points: int,
          train_steps: int, run: Callable[[Sweep, Path], None]) -> dict[str, Any]:
    """The same inits from the cell's own scale to `tuned_scale` (`points` scales, so the
    rounds' program serves at step 0): medians over inits of the first-over-last layer ratios
    at both ends, and `improved`: whether the tuned weight-gradient ratio is nearer 1 by a
    factor BETTER. Never hidden: a tuned init that does not balance the gradients says False.
    With `train_steps`, the same inits also train that many steps with the cell's optimizer
    options, and `frac_loss_halved_before` / `_after` say how many halved their loss."""
    if not math.isfinite(tuned_scale):
        return check_nan()
    folder = out / "rounds" / f"{target.index}-check"
    low, high = sorted((math.log(target.scale), math.log(tuned_scale)))
    if high - low < 1e-6:  # already critical: a grid needs distinct scales
        low, high = low - 1e-3, high + 1e-3
    scales = np.exp(np.linspace(low, high, points))
    steps = (0, train_steps) if train_steps > 0 else ()
    run(round_sweep(sweep, target, scales, "check", steps), folder)
    medians = first_over_last(folder).groupby("scale").median().drop(columns="seed")
    medians["frac_loss_halved"] = halved(folder, train_steps) if train_steps > 0 else math.nan
    ends = {"before": target.scale, "after": tuned_scale}
    nearest = {when: medians.iloc[np.argmin(np.abs(np.log(medians.index / scale)))]
               for when, scale in ends.items()}
    found = {f"{r}_{when}": float(row[r]) for when, row in nearest.items()
             for r in medians.columns}
    before, after = found["grad_ratio_before"], found["grad_ratio_after"]
    improved = before > 0 and after > 0 and (
        abs(math.log(after)) + math.log(BETTER) < abs(math.log(before)))
    return {**found, "improved": bool(improved)}


def log_chi(profile: pd.DataFrame) -> float:
    """ln chi of one profile (`critical.chi_of_profile`); NaN where chi is not measured."""
    chi = critical.chi_of_profile(profile["layer"], profile["delta_sq_norm"])
    return math.log(chi) if chi > 0 else math.nan


@dataclasses.dataclass(frozen=True)
class Crossings:
    """Where chi = 1 on the points measured so far: from the mean over inits, and per init."""

    mean: float
    per_init: np.ndarray

    def spread(self) -> tuple[float, float, float]:
        return critical.percentiles(self.per_init)


def crossings(profile: pd.DataFrame) -> Crossings:
    """Crossings of every point measured for one target (all zoom rounds together)."""
    mean = profile.groupby(["scale", "layer"], as_index=False)["delta_sq_norm"].mean()
    per_scale = mean.groupby("scale").apply(log_chi, include_groups=False)
    per_seed = profile.groupby(["seed", "scale"]).apply(log_chi, include_groups=False)
    seeds = per_seed.index.get_level_values("seed").unique()
    per_init = np.array([critical.crossing(per_seed[s].index.to_numpy(),
                                           per_seed[s].to_numpy()) for s in seeds])
    return Crossings(critical.crossing(per_scale.index.to_numpy(), per_scale.to_numpy()),
                     per_init)


def tune_target(sweep: Sweep, target: Target, out: Path, *, points: int, zoom_rounds: int,
                train_steps: int, run: Callable[[Sweep, Path], None]) -> dict[str, Any]:
    """The critical scale of one target, zooming `zoom_rounds` times after the first grid."""
    low, high = START_GRID
    scales = target.scale * np.exp(np.linspace(math.log(low), math.log(high), points))
    measured: list[pd.DataFrame] = []
    for n in range(zoom_rounds + 1):
        folder = out / "rounds" / f"{target.index}-{n}"
        run(round_sweep(sweep, target, scales, n), folder)
        measured.append(profiles(folder))
        layers = measured[0]["layer"].nunique()
        if layers < critical.MIN_LAYERS:
            unmeasured = Crossings(math.nan, np.array([]))
            return tune_row(target, unmeasured, check_nan(), layers, train_steps)
        found = crossings(pd.concat(measured, ignore_index=True))
        if math.isnan(found.mean):
            if n > 0:
                break
            scales = np.exp(np.linspace(math.log(scales[0] / WIDEN),
                                        math.log(scales[-1] * WIDEN), points))
            continue
        p05, _, p95 = found.spread()
        seen = np.unique(np.concatenate([m["scale"].unique() for m in measured]))
        scales = critical.zoomed_grid(seen, found.mean, (p05, p95), points)
    checked = check(sweep, target, found.mean, out, points, train_steps, run)
    return tune_row(target, found, checked, layers, train_steps)


def tune_row(target: Target, found: Crossings, checked: Mapping[str, Any], layers: int,
             train_steps: int) -> dict[str, Any]:
    """The tune table's row of one target: NaN multipliers where chi was not measured."""
    p05, p50, p95 = found.spread()
    return {"criterion": "critical", "param": None, "layer": None,
            "multiplier": found.mean / target.scale, "multiplier_p05": p05 / target.scale,
            "multiplier_p50": p50 / target.scale, "multiplier_p95": p95 / target.scale,
            "critical_scale": found.mean, "from_scale": target.scale,
            "inits_crossing": int(np.isfinite(found.per_init).sum()),
            "inits": int(found.per_init.size), **checked, "train_steps": train_steps,
            "layers_with_dz": layers, "cell": target.cell, "label": target.label,
            **target.options}


def check_nan() -> dict[str, Any]:
    """The check round's columns when there is nothing to check."""
    return {**{f"{r}_{when}": math.nan
               for r in ("grad_ratio", "dz_ratio", "frac_loss_halved")
               for when in ("before", "after")}, "improved": False}


def tune(sweep: Mapping[str, Any] | str | Path | Sweep, out: str | Path | None = None, *,
         criterion: str = "critical", points: int = POINTS, zoom_rounds: int = ZOOM_ROUNDS,
         train_steps: int = TRAIN_STEPS, max_memory: int = DEFAULT_MAX_MEMORY, quiet: bool = True,
         run: Callable[[Sweep, Path], None] | None = None,
         say: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Tune every cell of `sweep` by `criterion` into the folder `out`; returns the table.

    Args:
      sweep: a dict of the sweep file's shape, a sweep file's path, or a parsed sweep; each
        cell's first grid is centred on its `scale` (START_GRID times the scale).
      out: the tune's folder (default `results/<name>-tune`): `tune/` (the table) and
        `rounds/` (one results folder per zoom round of each cell).
      criterion: one of CRITERIA.
      points: scales per zoom round (one compiled program for all rounds of a shape bucket).
      zoom_rounds: zoom rounds after the first grid.
      train_steps: optimizer steps the check round trains the same inits for, at the cell's
        scale and the tuned one, with the cell's optimizer options (0: no training).
      max_memory: the device memory budget of the rounds' runs, in bytes (`gradjax run
        --max-memory`).
      quiet: no progress bar or log lines from the rounds' runs.
      run: runs a round's sweep into a folder (default: `engine.execute_sweep`, resuming).
      say: called with a line after each tuned cell.

    Returns:
      One row per cell: `criterion`, `param` and `layer` (null: a global scale), `multiplier`
      (critical_scale over the cell's scale), its 5/50/95 % percentiles over inits, the
      `critical_scale`, how many inits crossed chi = 1 on the grid, the check round's
      ratios and `improved`, `wall_s` (the cell's tune, rounds and check), and the cell's
      options (docs/tune.md).

    Raises ValueError for an unknown criterion or a cell whose scale is not positive, before
    anything is written; `SweepError` for a bad sweep.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion {criterion!r}; allowed: {', '.join(CRITERIA)}")
    sweep = as_sweep(sweep)
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
        row = tune_target(sweep, target, out, points=points, zoom_rounds=zoom_rounds,
                          train_steps=train_steps, run=run)
        rows.append({**row, "wall_s": time.perf_counter() - began})
        if say is not None:
            say(f"tuned {i + 1} of {len(targets)} in {rows[-1]['wall_s']:.1f} s")
    table = pd.DataFrame(rows)
    write_table(table, out)
    return reading.load(out, layout.TUNE)


def tune_folder(sweep: Sweep, out: str | Path | None) -> Path:
    """The tune's folder: `out`, else `results/<name>-tune`."""
    return layout.RESULTS / f"{sweep.name}-tune" if out is None else Path(out)


def write_table(table: pd.DataFrame, out: Path) -> None:
    """The tune table, atomically, as `<out>/tune/tune.parquet` (lists as their text)."""
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, tuple | list)).any():
            table[column] = table[column].map(repr)
    folder = out / layout.TUNE
    folder.mkdir(parents=True, exist_ok=True)
    files.write_parquet(pa.Table.from_pandas(table, preserve_index=False),
                        folder / f"{layout.TUNE}.parquet")

