"""What a tune tunes: a `Target` per set of a sweep's cells that share a prescription, and the
round's sweep that measures one (`round_sweep`): an ordinary sweep of the target's options,
the sweep's own seeds and root seed, so every round and check runs the same inits."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradjax.sweep import Sweep, parse_sweep
from gradjax.sweep.toml_text import dumps


@dataclasses.dataclass(frozen=True)
class Target:
    """One cell to tune: its options at step 0 without `scale` (as a sweep file gives them,
    and as the result tables' columns hold them, `Cell.columns`), and the scale it starts
    from."""

    index: int
    cell: int  # the first cell of the sweep it tunes
    label: str
    options: Mapping[str, Any]
    columns: Mapping[str, Any]
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
            columns = {k: v for k, v in cell.columns().items() if k in options}
            seen[key] = Target(len(seen), cell.index, cell.label, options, columns,
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
    """A round's grid over `scale` alone (`round_sweep`'s `grid`)."""
    return {"scale": [float(s) for s in scales]}
