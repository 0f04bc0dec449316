"""Prescriptions: the init that keeps a model's gradients alive, found from measured gradients.
`critical` holds the criterion's math on measured profiles of |dL/dz| (numpy only); `search`
drives it, one ordinary sweep per zoom round over a traced grid of scales, and writes the table
that `gradjax.load(folder, "tune")` reads (`gradjax tune`, `gradjax.tune`); `rescale` applies a
row of it to a params pytree. It sits above `run` (it runs sweeps) and beside `bench`."""

from gradjax.prescribe.rescale import rescale
from gradjax.prescribe.search import CRITERIA, targets_of, tune, tune_folder

__all__ = ["CRITERIA", "rescale", "targets_of", "tune", "tune_folder"]
