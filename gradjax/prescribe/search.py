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
import json
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

CRITERIA = ("critical", "unit-variance", "equal-gradients")  # docs/tune.md
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


def round_sweep(sweep: Sweep, target: Target, grid: Mapping[str, Sequence[Any]], n: int | str,
                steps: Sequence[int] = ()) -> Sweep:
    """The round's sweep: the target's options with `grid` (option -> values), at step 0, or
    at each of `steps` (the check round's training, with the cell's optimizer options)."""
    doc = {"name": f"{sweep.name}-tune-{target.index}-{n}", "seeds": sweep.seeds,
           "root_seed": sweep.root_seed, "per_seed": True,
           "defaults": {**target.options, **({} if steps else {"step": 0})},
           "grid": {k: list(v) for k, v in grid.items()},
           **({"steps": list(steps)} if steps else {})}
    source = Path(sweep.source).parent / f"{doc['name']}.toml"  # plug-ins import from there
    return parse_sweep(dumps(doc), str(source))


def scale_grid(scales: np.ndarray) -> dict[str, list[float]]:
    return {"scale": [float(s) for s in scales]}


def profiles(folder: Path) -> pd.DataFrame:
    """|dL/dz_l|^2 of every (scale, seed, layer) of a finished round's folder."""
    rows = reading.load(folder, "per_seed")
    rows = rows[rows["delta_sq_norm"].notna()]
    return rows.groupby(["scale", "seed", "layer"], as_index=False)["delta_sq_norm"].first()


def balance(folder: Path, by: str = "scale") -> pd.DataFrame:
    """For every (`by`, seed) of a finished round's folder, at step 0: `grad_ratio`, the first
    layer's over the last layer's |dL/dW_l|^2 (W: the layer's largest parameter, its weight
    matrix or kernel), `dz_ratio`, the same of |dL/dz_l|^2, and `grad_spread`, the largest
    over the smallest |dL/dW_l|^2 of all layers."""
    rows = reading.load(folder, "per_seed", step=0)
    weights = rows[rows["grad_sq_norm"].notna()]
    weights = weights[weights["n"] == weights.groupby("layer")["n"].transform("max")]
    taps = rows[rows["delta_sq_norm"].notna()]
    found = {}
    for name, kept, stat in (("grad", weights, "grad_sq_norm"), ("dz", taps, "delta_sq_norm")):
        by_layer = kept.groupby([by, "seed", "layer"])[stat].first().unstack("layer")
        found[f"{name}_ratio"] = by_layer[by_layer.columns.min()] / by_layer[
            by_layer.columns.max()]
        if name == "grad":
            found["grad_spread"] = by_layer.max(axis=1) / by_layer.min(axis=1)
    return pd.DataFrame(found).reset_index()


BETTER = 1.25  # `improved`: the tuned grad_spread is nearer 1 than the default's by this factor


def halved(folder: Path, step: int, by: str = "scale") -> pd.Series:
    """Per value of `by`, the fraction of inits whose loss fell below half its step-0 value
    within `step` optimizer steps (`loss_halved_step`)."""
    rows = reading.load(folder, "per_seed", step=step)
    per_init = rows.groupby([by, "seed"])["loss_halved_step"].first()
    return per_init.notna().groupby(by).mean()


def compared(folder: Path, by: str, ends: Mapping[str, Callable[[pd.Index], int]],
             train_steps: int) -> dict[str, Any]:
    """The check round's columns from its finished folder: for each end ("before", "after",
    picked among the values of `by` by `ends[when]`), the medians over inits of `balance`'s
    ratios and `frac_loss_halved`, and `improved`: whether the tuned weight-gradient spread is
    nearer 1 by a factor BETTER. Never hidden: a tuned init that does not balance the
    gradients says False."""
    medians = balance(folder, by).groupby(by).median().drop(columns="seed")
    medians["frac_loss_halved"] = halved(folder, train_steps, by) if train_steps > 0 else math.nan
    found = {f"{r}_{when}": float(medians.iloc[pick(medians.index)][r])
             for when, pick in ends.items() for r in medians.columns}
    before, after = found["grad_spread_before"], found["grad_spread_after"]
    improved = before > 0 and after > 0 and (
        abs(math.log(after)) + math.log(BETTER) < abs(math.log(before)))
    return {**found, "improved": bool(improved)}


def check(sweep: Sweep, target: Target, tuned_scale: float, out: Path, points: int,
          train_steps: int, run: Callable[[Sweep, Path], None]) -> dict[str, Any]:
    """The critical scale's check round (`compared`): the same inits at `points` scales from
    the cell's own scale to `tuned_scale` (so the zoom rounds' program serves at step 0), and
    with `train_steps`, trained that many steps with the cell's optimizer options."""
    if not math.isfinite(tuned_scale):
        return check_nan()
    folder = out / "rounds" / f"{target.index}-check"
    low, high = sorted((math.log(target.scale), math.log(tuned_scale)))
    if high - low < 1e-6:  # already critical: a grid needs distinct scales
        low, high = low - 1e-3, high + 1e-3
    scales = np.exp(np.linspace(low, high, points))
    steps = (0, train_steps) if train_steps > 0 else ()
    run(round_sweep(sweep, target, scale_grid(scales), "check", steps), folder)

    def nearest(scale: float) -> Callable[[pd.Index], int]:
        return lambda index: int(np.argmin(np.abs(np.log(index.to_numpy() / scale))))

    return compared(folder, "scale", {"before": nearest(target.scale),
                                      "after": nearest(tuned_scale)}, train_steps)


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
        run(round_sweep(sweep, target, scale_grid(scales), n), folder)
        measured.append(profiles(folder))
        layers = measured[0]["layer"].nunique()
        if layers < critical.MIN_LAYERS:
            unmeasured = Crossings(math.nan, np.array([]))
            note = (f"too shallow to measure chi: {layers} layer(s) with dL/dz (taps), the "
                    f"critical criterion needs {critical.MIN_LAYERS}")
            return tune_row(target, unmeasured, check_nan(), layers, train_steps, note)
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
    seen = np.concatenate([m["scale"].unique() for m in measured])
    note = "" if math.isfinite(found.mean) else (
        f"no critical scale: the measured chi does not cross 1 from scale {seen.min():.4g} "
        f"to {seen.max():.4g}")
    return tune_row(target, found, checked, layers, train_steps, note)


def tune_row(target: Target, found: Crossings, checked: Mapping[str, Any], layers: int,
             train_steps: int, note: str) -> dict[str, Any]:
    """The tune table's row of one target: NaN multipliers where chi was not measured, and
    then `note` says why."""
    p05, p50, p95 = found.spread()
    return {"criterion": "critical", "param": None, "layer": None,
            "multiplier": found.mean / target.scale, "multiplier_p05": p05 / target.scale,
            "multiplier_p50": p50 / target.scale, "multiplier_p95": p95 / target.scale,
            "critical_scale": found.mean, "from_scale": target.scale,
            "inits_crossing": int(np.isfinite(found.per_init).sum()),
            "inits": int(found.per_init.size), **checked, "train_steps": train_steps,
            "layers_with_dz": layers, "note": note, "cell": target.cell,
            "label": target.label, **target.options}


def layer_multipliers(sweep: Sweep, target: Target, criterion: str, out: Path) -> pd.DataFrame:
    """Every init's multiplier of every layer by a per-layer `criterion` (`layerwise`), and
    whether the init's own criterion holds at them: columns seed, layer, multiplier, holds.
    Kept as `<out>/rounds/<target>-<criterion>.parquet`, so a re-run computes nothing."""
    path = out / "rounds" / f"{target.index}-{criterion}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    from gradjax.prescribe import layerwise  # JAX: the per-layer criteria only

    one = round_sweep(sweep, target, scale_grid(np.array([target.scale])), criterion)
    model = layerwise.cell_model(one)
    m, holds = layerwise.multipliers(criterion, model, sweep.root_seed, sweep.seeds)
    seeds, layers = np.meshgrid(np.arange(m.shape[0]), np.arange(1, m.shape[1] + 1),
                                indexing="ij")
    table = pd.DataFrame({"seed": seeds.ravel(), "layer": layers.ravel(),
                          "multiplier": m.ravel(), "holds": np.repeat(holds, m.shape[1])})
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_parquet(pa.Table.from_pandas(table, preserve_index=False), path)
    return table


def tune_layers(sweep: Sweep, target: Target, out: Path, *, criterion: str, train_steps: int,
                run: Callable[[Sweep, Path], None]) -> list[dict[str, Any]]:
    """The rows of one target by a per-layer criterion: one per weight leaf, its layer's
    median multiplier over inits and their 5-95 % range; then the check round: the cell's
    init against the same inits with those multipliers (`layer_scale`)."""
    from gradjax.prescribe import layerwise  # JAX: the per-layer criteria only

    per_init = layer_multipliers(sweep, target, criterion, out)
    spread = {layer: critical.percentiles(group["multiplier"].to_numpy())
              for layer, group in per_init.groupby("layer")}
    # the cell's own layer_scale, else 1 per layer: before and after then share one program
    before = [float(c) for c in target.options.get("layer_scale") or (1.0,) * len(spread)]
    after = [c * spread[layer][1] for c, layer in zip(before, sorted(spread), strict=True)]
    folder = out / "rounds" / f"{target.index}-{criterion}-check"
    steps = (0, train_steps) if train_steps > 0 else ()
    run(round_sweep(sweep, target, {"scale": [target.scale], "layer_scale": [before, after]},
                    f"{criterion}-check", steps), folder)
    labels = {"before": json.dumps(before), "after": json.dumps(after)}
    checked = compared(folder, "layer_scale", {
        when: (lambda index, text=text: int(np.flatnonzero(index == text)[0]))
        for when, text in labels.items()}, train_steps)
    model = layerwise.cell_model(round_sweep(sweep, target, scale_grid([target.scale]), 0))
    holds = per_init.groupby("seed")["holds"].first()
    rows = []
    for path, layer, weight in zip(model.leaf_path, model.leaf_layer, model.weights,
                                   strict=True):
        if not weight:
            continue
        p05, p50, p95 = spread[int(layer)]
        rows.append({"criterion": criterion, "param": path, "layer": int(layer),
                     "multiplier": p50, "multiplier_p05": p05, "multiplier_p50": p50,
                     "multiplier_p95": p95, "critical_scale": math.nan,
                     "from_scale": target.scale, "inits_holding": int(holds.sum()),
                     "inits": int(holds.size), **checked, "train_steps": train_steps,
                     "note": "", "cell": target.cell, "label": target.label, **target.options})
    return rows


def check_nan() -> dict[str, Any]:
    """The check round's columns when there is nothing to check."""
    return {**{f"{r}_{when}": math.nan
               for r in ("grad_ratio", "grad_spread", "dz_ratio", "frac_loss_halved")
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
    any earlier rows of the same `criterion` (the other criteria's rows kept); lists and
    tuples as JSON text, as the results tables hold them."""
    for column in table.columns:
        if table[column].map(lambda v: isinstance(v, tuple | list)).any():
            table[column] = table[column].map(json.dumps)
    path = out / layout.TUNE / f"{layout.TUNE}.parquet"
    if path.exists():
        kept = pd.read_parquet(path)
        table = pd.concat([kept[kept["criterion"] != criterion], table], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_parquet(pa.Table.from_pandas(table, preserve_index=False), path)
