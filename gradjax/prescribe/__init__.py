"""Prescriptions: the init that keeps a model's gradients alive, found from measured gradients.
`tuning` runs a tune (`gradjax tune`, `gradjax.tune`): every cell of a sweep (`target`) by one
criterion, into the table that `gradjax.load(folder, "tune")` reads. `critical` holds the
critical criterion's math on measured profiles of |dL/dz| (numpy only) and `search` its zoom
rounds over a traced grid of scales; `layerwise` the per-layer criteria (`unit-variance`,
LSUV's; `equal-gradients`, GradInit's balance), written for one init in JAX and vmapped over a
cell's seeds, and `per_layer` their rows; `check` reads every criterion's check round, an
ordinary sweep of the same inits before and after; `rescale` applies a cell's rows to a params
pytree; `command` is the command line. It sits above `run` (it runs sweeps) and beside
`bench`; the prescription in words is `gradjax.analysis.prescription`'s."""

from gradjax.prescribe.rescale import rescale
from gradjax.prescribe.target import targets_of
from gradjax.prescribe.tuning import CRITERIA, tune, tune_folder

__all__ = ["CRITERIA", "rescale", "targets_of", "tune", "tune_folder"]
