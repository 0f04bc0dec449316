"""Sweep files, no JAX: TOML text (or a dict of its shape, `toml_text`) -> validated cells ->
shape buckets. `parse` is the parser, `values` checks one value at a time (and holds
`SweepError`), `model` holds what the parser builds (`Sweep`, `Cell`, `Bucket`), and `budget`
the memory a bucket's chunk needs. Imports the declarations and the model families' registry
(which finds a plug-in's options from its factory's signature without importing JAX).
"""

from gradjax.sweep.model import SHAPE_OPTIONS, Bucket, Cell, Sweep
from gradjax.sweep.parse import TOP_LEVEL, load_sweep, parse_sweep, sweep_from_dict
from gradjax.sweep.values import MAX_SEEDS, SweepError

__all__ = [
    "Bucket",
    "Cell",
    "MAX_SEEDS",
    "SHAPE_OPTIONS",
    "Sweep",
    "SweepError",
    "TOP_LEVEL",
    "load_sweep",
    "parse_sweep",
    "sweep_from_dict",
]
