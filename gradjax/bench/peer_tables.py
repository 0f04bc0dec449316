"""The per-seed table a peer's user writes: the rows and columns of `gradjax run`'s, to Parquet.

gradjax's run path ends in Parquet: a row per (seed, tensor) with the sweep's identity, every
option, the tensor's position and every statistic (`gradjax.results.schema.per_seed_schema`).
A user of numpy or torch.func who wants the same answer has to write that table too, so the
bench times each vectorized peer with it: `PeerTables.write` turns a chunk of the peer's
statistics ([c, P, ...], one point per cell) into the same rows with
`gradjax.results.schema.per_seed_table` and writes them with pyarrow's defaults
(`pyarrow.parquet.write_table`), one file per call: per chunk for the vectorized peers, per
bucket for the numpy loop. It leaves out what only gradjax does to its
files (page checksums, atomic renames, pieces, the summary table, the across-seed moments), so
the peers are not charged for gradjax's guarantees.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradjax.bench.workloads import Workload
from gradjax.results.schema import per_seed_schema, per_seed_table, stat_type
from gradjax.spec import LAYER_STATS, PARAM_STATS
from gradjax.sweep import parse_sweep


class PeerTables:
    """Writes a peer's chunks of statistics as `gradjax run`'s per-seed rows, into `folder`.

    Args:
      workload: what the peer computes; its sweep (`Workload.sweep_text`) gives each point's
        cell, in the order of the workload's buckets and points.
      folder: where the files go (`<bucket>-<first seed>.parquet`, overwritten by a rerun).

    `seconds` adds up the time spent in `write` (building the rows and writing them).
    """

    def __init__(self, workload: Workload, folder: Path) -> None:
        sweep = parse_sweep(workload.sweep_text(), workload.source or f"<bench {workload.name}>")
        self.name = sweep.name
        self.cells = [list(bucket.cells) for bucket in sweep.buckets()]
        counts = [len(cells) for cells in self.cells]
        if counts != [b.n_points for b in workload.buckets]:
            raise ValueError(f"workload {workload.name}: its sweep's buckets hold {counts} "
                             f"cells, its buckets {[b.n_points for b in workload.buckets]} points")
        self.schema = per_seed_schema(stat_type(sweep), sweep.extra_options)
        self.folder = folder
        self.seconds = 0.0

    def table(self, bucket: int, first_seed: int, stats: Mapping[str, np.ndarray]) -> pa.Table:
        """The per-seed rows of one chunk of bucket `bucket` (0-based): `stats` [c, P, ...] for
        the seeds first_seed .. first_seed + c - 1, every point's rows in cell order."""
        c = len(stats["loss_value"])
        seeds = np.arange(first_seed, first_seed + c, dtype=np.int64)
        return pa.concat_tables(
            per_seed_table(self.name, cell, seeds, {k: v[:, p] for k, v in stats.items()},
                           self.schema)
            for p, cell in enumerate(self.cells[bucket]))

    def bytes_per_init(self) -> int:
        """Arrow bytes of one seed's rows at every point of the largest bucket: what a chunk's
        table adds to a peer's memory per init (seed)."""
        largest = 0
        for b, cells in enumerate(self.cells):
            layers, points = len(cells[0].spec.sizes) - 1, len(cells)
            stats = {**{s: np.zeros((1, points, layers, 2), np.float32) for s in PARAM_STATS},
                     **{s: np.zeros((1, points, layers), np.float32) for s in LAYER_STATS},
                     "loss_value": np.zeros((1, points), np.float32)}
            largest = max(largest, self.table(b, 0, stats).nbytes)
        return largest

    def write(self, bucket: int, first_seed: int, stats: Mapping[str, np.ndarray]) -> Path:
        """`table`, written to its file with pyarrow's default options; returns the path."""
        start = time.perf_counter()
        path = self.folder / f"{bucket}-{first_seed}.parquet"
        pq.write_table(self.table(bucket, first_seed, stats), path)
        self.seconds += time.perf_counter() - start
        return path
