"""The per-layer criteria's tune of one target: each init's multipliers
(`gradjax.prescribe.layerwise`, one compiled call), their medians over inits as one row per
weight leaf, and the check round, one sweep over `layer_scale` before and after (traced:
both in one compiled program per step)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gradjax.prescribe import critical, layerwise
from gradjax.prescribe.check import compared
from gradjax.prescribe.target import Target, round_sweep, scale_grid
from gradjax.results import files
from gradjax.run.model_check import x64_if_needed
from gradjax.sweep import Sweep


def layer_multipliers(sweep: Sweep, target: Target, criterion: str, out: Path,
                      model: layerwise.CellModel, one: Sweep) -> pd.DataFrame:
    """Every init's multiplier of every layer by a per-layer `criterion` (`layerwise`), and
    whether the init's own criterion holds at them: columns seed, layer, multiplier, holds.

    Kept under `<out>/rounds/`, named by a digest of the round's sweep (`one`: the target's
    options, seeds and root seed) and the procedure's constants, so a re-run of the same tune
    computes nothing and a changed one never reads another's multipliers. All seeds are one
    vmapped call: `--max-memory` budgets the rounds' sweeps, not this call."""
    constants = (layerwise.UNIT_VARIANCE_PASSES, layerwise.UNIT_TOLERANCE,
                 layerwise.EQUAL_GRADIENT_PASSES, layerwise.EQUAL_SETTLED, layerwise.EQUAL_STEP)
    digest = hashlib.sha256(f"{one.text}{constants}".encode()).hexdigest()[:16]
    path = out / "rounds" / f"{target.index}-{criterion}-{digest}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    m, holds = layerwise.multipliers(criterion, model, sweep.root_seed, sweep.seeds)
    seeds, layers = np.meshgrid(np.arange(m.shape[0]), np.arange(1, m.shape[1] + 1),
                                indexing="ij")
    table = pd.DataFrame({"seed": seeds.ravel(), "layer": layers.ravel(),
                          "multiplier": m.ravel(), "holds": np.repeat(holds, m.shape[1])})
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_parquet(pa.Table.from_pandas(table, preserve_index=False), path)
    return table


def check_layers(sweep: Sweep, target: Target, out: Path, criterion: str,
                 before: list[float], after: list[float], weight_layers: list[int],
                 train_steps: int, run: Callable[[Sweep, Path], None]) -> dict[str, Any]:
    """The check round: the same inits at `layer_scale` `before` and `after` (one sweep, one
    compiled program per step; one value when they are equal), read over the layers with
    weights (`compared`)."""
    folder = out / "rounds" / f"{target.index}-{criterion}-check"
    steps = (0, train_steps) if train_steps > 0 else ()
    values = [before] if after == before else [before, after]
    run(round_sweep(sweep, target, {"scale": [target.scale], "layer_scale": values},
                    f"{criterion}-check", steps), folder)
    labels = {"before": json.dumps(before), "after": json.dumps(after)}
    return compared(folder, "layer_scale", {
        when: (lambda index, text=text: int(np.flatnonzero(index == text)[0]))
        for when, text in labels.items()}, train_steps, weight_layers)


def tune_layers(sweep: Sweep, target: Target, out: Path, *, criterion: str, train_steps: int,
                run: Callable[[Sweep, Path], None]) -> list[dict[str, Any]]:
    """The rows of one target by a per-layer criterion: one per weight leaf, its layer's
    median multiplier over inits and their 5-95 % range, relative to the cell's own init (its
    `layer_scale` included); then the check round: the cell's init against the same inits
    with those multipliers."""
    one = round_sweep(sweep, target, scale_grid(np.array([target.scale])), criterion)
    with x64_if_needed(one):
        model = layerwise.cell_model(one)
        per_init = layer_multipliers(sweep, target, criterion, out, model, one)
    spread = {layer: critical.percentiles(group["multiplier"].to_numpy())
              for layer, group in per_init.groupby("layer")}
    # the cell's own layer_scale, else 1 per layer: before and after then share one program
    before = [float(c) for c in target.options.get("layer_scale") or (1.0,) * len(spread)]
    after = [c * spread[layer][1] for c, layer in zip(before, sorted(spread), strict=True)]
    weight_layers = [int(layer) for layer in model.weight_layers()]
    checked = check_layers(sweep, target, out, criterion, before, after, weight_layers,
                           train_steps, run)
    holds = per_init.groupby("seed")["holds"].first()
    rows = []
    for path, layer, weight in zip(model.leaf_path, model.leaf_layer, model.weights,
                                   strict=True):
        if not weight:
            continue
        p05, p50, p95 = spread[int(layer)]
        rows.append({"criterion": criterion, "param": path, "layer": int(layer),
                     "multiplier": p50, "multiplier_p05": p05, "multiplier_p50": p50,
                     "multiplier_p95": p95, "layers": model.n_layers, "critical_scale": math.nan,
                     "from_scale": target.scale, "inits_holding": int(holds.sum()),
                     "inits": int(holds.size), **checked, "train_steps": train_steps,
                     "note": "", "cell": target.cell, "label": target.label, **target.columns})
    return rows
