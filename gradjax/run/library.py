"""`gradjax.run_sweep`: a sweep from a notebook, as a dict of the TOML's shape, a file or a
`Sweep`, run (or resumed, or grown) into a results folder exactly as `gradjax run` does, and
its summary table returned.

    summary = gradjax.run_sweep({
        "name": "tiny_init", "seeds": 1000,
        "defaults": {"in_dim": 2, "width": 3, "depth": 1, "out_dim": 1, "activation": "tanh"},
        "grid": {"scale": [0.01, 0.1, 1.0]},
    })

The folder is the command line's (`results/<name>` unless `out` is given), with its rules: a
folder of another sweep is refused unless `overwrite`, a folder of this sweep is resumed or
grown, and the sweep is kept in it as `sweep.toml`, so `gradjax run results/<name>/sweep.toml`
runs the same sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from gradjax.results import layout, reading
from gradjax.run import engine, executables
from gradjax.sweep import Sweep, load_sweep, sweep_from_dict
from gradjax.sweep.budget import DEFAULT_MAX_MEMORY, parse_bytes


def run_sweep(
    sweep: Mapping[str, Any] | str | Path | Sweep,
    out: str | Path | None = None,
    *,
    max_memory: int | str = DEFAULT_MAX_MEMORY,
    overwrite: bool = False,
    quiet: bool = True,
    compile_cache: bool = True,
) -> pd.DataFrame:
    """Run `sweep` into `out` (default `results/<name>`) and return its summary table
    (`gradjax.load(out)`).

    Args:
      sweep: a dict of the sweep file's shape (`gradjax.sweep.toml_text`), the path of a sweep
        file, or a parsed `Sweep`. A dict's plug-in model is imported from the current folder.
      out: the results folder (an object store's URI: `gradjax run --out URI`).
      max_memory: the device memory budget, in bytes or as text such as "2GB".
      overwrite: replace a folder that holds another sweep's results.
      quiet: no progress bar or log lines.
      compile_cache: use the persistent compile cache (`gradjax run`'s default).

    Returns:
      The summary table: one row per (cell, layer, parameter), medians and percentiles over
      inits (docs/conventions.md).

    Raises `SweepError` for a bad sweep, `ResultsError` for a folder it may not use.
    """
    sweep = as_sweep(sweep)
    budget = parse_bytes(max_memory) if isinstance(max_memory, str) else int(max_memory)
    if compile_cache:
        executables.enable_compile_cache()
    else:
        executables.disable_compile_cache()
    folder = layout.RESULTS / sweep.name if out is None else Path(out)
    engine.execute_sweep(sweep, folder, max_memory=budget, overwrite=overwrite, quiet=quiet)
    return reading.load(folder)


def as_sweep(sweep: Mapping[str, Any] | str | Path | Sweep) -> Sweep:
    """A parsed sweep from a dict of the sweep file's shape, a sweep file's path, or itself."""
    if isinstance(sweep, Sweep):
        return sweep
    if isinstance(sweep, Mapping):
        return sweep_from_dict(sweep)
    return load_sweep(sweep)
