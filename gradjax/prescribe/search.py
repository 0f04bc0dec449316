"""The `critical` criterion's search for one target: zoom rounds over a grid of scales, then its
check round.

Each zoom round is an ordinary sweep (`gradjax.run.engine.execute_sweep`): the cell's options at
step 0 (an init property), `scale` on a grid of `points` values, the sweep's own seeds and
root seed. Scale is traced, so every round of every cell of one shape bucket runs one compiled
program, and the same seeds in every round (common random numbers: each init's weights are
its unit-scale draw times the scale) make each init's crossing a smooth function of scale.
Every round is a results folder under `<out>/rounds/`, so a re-run resumes and a finished tune
computes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradjax.prescribe import critical
from gradjax.prescribe.check import check_nan, compared
from gradjax.prescribe.target import Target, round_sweep, scale_grid
from gradjax.results import reading
from gradjax.sweep import Sweep

START_GRID = (0.25, 4.0)  # the first grid, as multiples of the cell's own scale
POINTS = 9
ZOOM_ROUNDS = 3
WIDEN = 4.0  # a first grid without a crossing is widened by this factor on each side, once


def profiles(folder: Path) -> pd.DataFrame:
    """|dL/dz_l|^2 of every (scale, seed, layer) of a finished round's folder."""
    rows = reading.load(folder, "per_seed")
    rows = rows[rows["delta_sq_norm"].notna()]
    return rows.groupby(["scale", "seed", "layer"], as_index=False)["delta_sq_norm"].first()


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
            "label": target.label, **target.columns}
