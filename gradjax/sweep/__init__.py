"""Sweep files, no JAX: TOML text (or a dict of its shape, `toml_text`) -> validated cells ->
shape buckets (`parse`), and the memory a bucket's chunk needs (`budget`). Imports the
declarations and the model families' registry (which finds a plug-in's options from its
factory's signature without importing JAX).
"""

from gradjax.sweep.parse import (
    MAX_SEEDS,
    SHAPE_OPTIONS,
    TOP_LEVEL,
    Bucket,
    Cell,
    Sweep,
    SweepError,
    load_sweep,
    parse_sweep,
    sweep_from_dict,
)

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
