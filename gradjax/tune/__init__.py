"""Prescriptions: the init that keeps a model's gradients alive, found from measured gradients.
`critical` holds the criterion's math on measured profiles of |dL/dz| (numpy only); `search`
drives it, one ordinary sweep per zoom round over a traced grid of scales, and writes the table
that `gradjax.load(folder, "tune")` reads. It sits above `run` (it runs sweeps) and beside
`bench`."""

from gradjax.tune.search import CRITERIA, targets_of, tune

__all__ = ["CRITERIA", "targets_of", "tune"]
