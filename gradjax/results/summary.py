"""Per-cell summaries across inits (seeds), and the exact across-seed gradient variance.

Two kinds of "variance across seeds" live here; neither is the within-tensor `grad_var`:

  <stat>_std             the spread of a per-init statistic over the cell's inits (ddof=0)
  grad_var_across_seeds  for each entry of a gradient tensor, its population variance over the
                         inits (ddof=0), then the mean of that over the tensor's entries. Each
                         chunk of seeds gives per-entry (count, mean, M2); chunks are merged on
                         the host in float64 with Chan et al.'s parallel formula, so it is exact
                         whatever the chunking, and no per-entry array is ever written out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gradjax.results.schema import not_applicable, position_columns, rule_options
from gradjax.spec import AGGREGATES, CELL_STATS, PERCENTILES, STATS
from gradjax.sweep import Cell


def chan_merge(n_a: int, mean_a: np.ndarray, m2_a: np.ndarray, n_b: int, mean_b: np.ndarray,
               m2_b: np.ndarray, *, into_a: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry (mean, M2) of two disjoint sets of n_a and n_b samples (Chan, Golub and
    LeVeque 1979): delta = mean_b - mean_a, mean = mean_a + delta n_b / n,
    M2 = M2_a + M2_b + delta^2 n_a n_b / n. An exploding cell's inf gradients make its moments
    inf/NaN, as they should, without warnings. `into_a` writes the result into mean_a and m2_a
    (the same operations in the same order, so the same bits): a run's moments are as large as
    its network, and a fresh copy per chunk costs memory and time."""
    n = n_a + n_b
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.asarray(mean_b - mean_a)  # a new array (also for 0-d inputs)
        mean = np.add(mean_a, delta * (n_b / n), out=mean_a if into_a else None)
        m2 = np.add(m2_a, m2_b, out=m2_a if into_a else None)
        np.square(delta, out=delta)
        delta *= n_a * n_b / n
        m2 += delta
        return mean, m2


@dataclasses.dataclass(frozen=True)
class CellMoments:
    """Per-entry count n, mean and M2 over some seeds of one cell, per result row (None for a
    row with no gradient of its own), float64: what a piece of a cell's seeds keeps so that
    pieces computed anywhere merge into the cell's `grad_var_across_seeds`."""

    n: int
    rows: tuple[tuple[np.ndarray, np.ndarray] | None, ...]

    def merge(self, other: CellMoments) -> CellMoments:
        """Chan et al. (1979): combine two disjoint sets of seeds (`chan_merge`)."""
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        rows = tuple(None if a is None else chan_merge(self.n, *a, other.n, *b)
                     for a, b in zip(self.rows, other.rows, strict=True))
        return CellMoments(self.n + other.n, rows)

    def var_across_seeds(self) -> np.ndarray:
        """[rows]: the mean over a tensor's entries of their population variance across seeds
        (M2 / n); NaN for rows with none."""
        with np.errstate(invalid="ignore", over="ignore"):
            return np.array([np.nan if r is None else np.mean(r[1]) / self.n
                             for r in self.rows])

    def save(self, path: Any) -> None:
        """To an open binary file or a path (npz: plain arrays, no pickle)."""
        arrays = {f"{k}{i}": v for i, r in enumerate(self.rows) if r is not None
                  for k, v in zip(("mean", "m2"), r, strict=True)}
        np.savez(path, n=self.n, rows=len(self.rows), **arrays)

    @classmethod
    def load(cls, path: Any) -> CellMoments:
        with np.load(path, allow_pickle=False) as z:
            rows = tuple((z[f"mean{i}"], z[f"m2{i}"]) if f"mean{i}" in z.files else None
                         for i in range(int(z["rows"])))
            return cls(int(z["n"]), rows)


def _percentile(ordered: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """numpy's default ("linear") percentile of the first `counts` entries along axis 0 of a
    sorted array (NaNs sort last, so those are the defined values); NaN where counts is 0."""
    pos = q / 100.0 * np.maximum(counts - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(counts - 1, 0))
    a = np.take_along_axis(ordered, lo[None], axis=0)[0]
    b = np.take_along_axis(ordered, hi[None], axis=0)[0]
    t = pos - lo
    with np.errstate(invalid="ignore"):
        diff = b - a
        value = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
        value = np.where(a == b, a, value)
    return np.where(counts > 0, value, np.nan)


def describe(values: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, std (ddof=0) and the 5th/50th/95th percentiles over axis 0 (the seeds).

    NaN values are left out: they mark a statistic that is undefined for that init (grad_cv of
    an all-zero gradient) or, read from a null, one that does not apply to the row. NaN where
    no init has a value. Infinite values are kept.
    """
    x = np.asarray(values, np.float64)
    defined = ~np.isnan(x)
    counts = defined.sum(axis=0)
    safe = np.maximum(counts, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        mean = np.where(defined, x, 0.0).sum(axis=0) / safe
        dev = np.where(defined, x - mean[None], 0.0)
        std = np.sqrt(np.square(dev).sum(axis=0) / safe)
    out = {
        "mean": np.where(counts > 0, mean, np.nan),
        "std": np.where(counts > 0, std, np.nan),
    }
    ordered = np.sort(x, axis=0)
    for name, q in PERCENTILES.items():
        out[name] = _percentile(ordered, counts, q)
    return out


def cell_summary(
    sweep_name: str, cell: Cell, per_seed: pa.Table, var_across_seeds: np.ndarray,
    positions: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per tensor of one cell, from its per-seed table (rows ordered by seed, then as
    `positions`, default the MLP's `position_columns`) and its per-row
    `grad_var_across_seeds` (the run adds the mean-field columns: `Ledger.add_columns`). A
    statistic is null (<NA> in a nullable Float64 column, null in `schema.summary_table`) on
    the rows where it does not apply (`schema.not_applicable`, or null for every seed in
    `per_seed`), NaN where it applies and no init has a value."""
    positions = position_columns(cell) if positions is None else positions
    per_init = len(positions["layer"])
    seeds = per_seed.num_rows // per_init
    frame: dict[str, Any] = {
        "sweep": sweep_name,
        "cell": cell.index,
        "label": cell.label,
        **cell.columns(),
        **positions,
        "seeds": seeds,
    }
    null = not_applicable(positions, rule_options(cell))
    for stat in STATS:
        column = per_seed.column(stat)
        values = column.to_numpy().reshape(seeds, per_init)
        never = null[stat] | column.is_null().to_numpy(zero_copy_only=False).reshape(
            seeds, per_init).all(axis=0)
        described = describe(values)
        for agg in AGGREGATES:
            frame[f"{stat}_{agg}"] = _nullable(described[agg], never)
    frame["grad_var_across_seeds"] = np.asarray(var_across_seeds, np.float64).reshape(-1)
    max_abs = per_seed.column("grad_max_abs").to_numpy().reshape(seeds, per_init)
    frame["frac_seeds_all_zero"] = np.mean(max_abs == 0, axis=0)
    # no init has halved its loss before an update: 0 at step 0 (loss_halved_step is null)
    halved = per_seed.column("loss_halved_step").to_numpy().reshape(seeds, per_init)
    frame["frac_loss_halved"] = np.mean(~np.isnan(halved), axis=0)
    for stat in CELL_STATS:
        frame[stat] = _nullable(np.asarray(frame[stat], np.float64), null[stat])
    return pd.DataFrame(frame)


def _nullable(values: np.ndarray, null: np.ndarray) -> Any:
    """`values` with <NA> where `null` (a nullable Float64 array; NaN stays NaN), or as they
    are where nothing is null."""
    null = np.asarray(null, bool)
    return pd.arrays.FloatingArray(values.astype(np.float64), null) if null.any() else values
