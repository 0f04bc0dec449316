"""Prescriptions: the init that keeps a model's gradients alive, found from measured gradients.
`critical` holds the critical criterion's math on measured profiles of |dL/dz| (numpy only);
`layerwise` the per-layer criteria (`unit-variance`, LSUV's; `equal-gradients`, GradInit's
balance), written for one init in JAX and vmapped over a cell's seeds; `search` drives them,
the critical scale by zoom rounds over a traced grid of scales, each criterion's check round
as an ordinary sweep, and writes the table that `gradjax.load(folder, "tune")` reads
(`gradjax tune`, `gradjax.tune`); `rescale` applies a cell's rows to a params pytree. It sits
above `run` (it runs sweeps) and beside `bench`; the prescription in words is
`gradjax.analysis.prescription`'s."""

from gradjax.prescribe.rescale import rescale
from gradjax.prescribe.search import CRITERIA, targets_of, tune, tune_folder

__all__ = ["CRITERIA", "rescale", "targets_of", "tune", "tune_folder"]
