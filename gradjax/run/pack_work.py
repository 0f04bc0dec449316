"""A pack's work: its chunks computed by one host loop (`run_chunks`, which `gradjax run`,
`gradjax bench` and every executor use), their Parquet parts, checkpoints of the across-seed
moments, and a resume from the last checkpoint (`PackRun`, `run_pack`).

A pack's progress lives in `.work/packs/pack-*/` (`gradjax.results.layout`): one Parquet part
per (cell, chunk) and a checkpoint (`state.npz`: seeds done plus the float64 across-seed moments
merged so far). Parts are written by a background thread while the next chunk computes (one
chunk's parts at a time), and always before the checkpoint that covers them; on resume, parts
past the checkpoint are dropped and the pack continues from it. The checkpoint is rewritten
after a chunk once the compute since the last one is at least CHECKPOINT_RATIO times what
writing it took, so its cost stays under ~1/CHECKPOINT_RATIO of the run even when the moments
are large (tiny networks checkpoint after every chunk).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradjax.probe import tree_probe
from gradjax.probe.stats import to_host
from gradjax.results import files, layout, results_folder, schema
from gradjax.results.ledger import Ledger
from gradjax.run.executables import Executable
from gradjax.run.interrupt import Interrupted, check_stop, wait_until
from gradjax.run.moments import ChunkMoments
from gradjax.run.plan import Pack
from gradjax.run.progress import Phases, Progress
from gradjax.spec import capabilities
from gradjax.sweep import Sweep
from gradjax.sweep.budget import (
    release_free_memory,
)

CHECKPOINT_RATIO = 10.0


def row_positions(pack: Pack, points: dict) -> dict[str, Any]:
    """The position columns of one init's rows in the pack's tables."""
    if capabilities(pack.bucket.spec.model).shapes_from_options:
        return schema.position_columns(pack.cells[0])
    return tree_probe.positions(pack.bucket.spec, points)


def _part_name(key: str, first_seed: int) -> str:
    """A part's name: the cell's key, not its index (which an added axis value changes)."""
    return f"{key}.seeds-{first_seed:010d}.parquet"


def _part_start(path: Path) -> int:
    return int(path.name.split(".seeds-")[1].split(".")[0])


def run_chunks(
    executable: Executable, root_seed: int, points: dict, n_real: int, first: int, total: int
) -> Iterator[tuple[int, int, dict, ChunkMoments]]:
    """(first seed, valid count, stats as numpy [c, P, ...], moments) per chunk of seeds from
    `first` to `total`, computing the first `n_real` points (the rest are padding). Each device
    gets a contiguous share of the chunk; the next chunk is dispatched before the previous one
    is fetched."""
    chunk, local = executable.chunk, executable.local
    on_device = [jax.device_put(points, d) for d in executable.devices]
    root, n_real = np.uint32(root_seed), np.int32(n_real)

    def fetch(start, count, outs):
        leaves = jax.tree.leaves(outs)
        wait_until(lambda: all(leaf.is_ready() for leaf in leaves))
        stats = to_host({k: np.concatenate([np.asarray(out[0][k]) for out in outs])[:count]
                         for k in outs[0][0]})
        moments = ChunkMoments(0, None)
        for out in outs:
            moments = moments.merge(ChunkMoments.from_chunk(out[1]), in_place=True)
        return start, count, stats, moments

    pending = None
    for start in range(first, total, chunk):
        count = min(chunk, total - start)
        seeds = np.zeros(chunk, np.int32)
        seeds[:count] = np.arange(start, start + count)
        valid = np.arange(chunk) < count
        outs = [
            fn(root, jax.device_put(seeds[i * local : (i + 1) * local], device),
               jax.device_put(valid[i * local : (i + 1) * local], device), pts, n_real)
            for i, (fn, device, pts) in enumerate(
                zip(executable.fns, executable.devices, on_device, strict=True))
        ]
        if pending is not None:
            yield fetch(*pending)
        pending = (start, count, outs)
    if pending is not None:
        yield fetch(*pending)


class PackRun:
    """One pack's chunks, parts and checkpoints, and the pieces it leaves
    (`gradjax.results.ledger`)."""

    def __init__(self, sweep: Sweep, ledger: Ledger, pack: Pack, schema: pa.Schema,
                 phases: Phases):
        self.sweep, self.ledger, self.pack, self.schema = sweep, ledger, pack, schema
        self.phases = phases
        self.dir = ledger.folder.work_dir(pack.name(ledger.keys))
        self.state_path = self.dir / "state.npz"
        self.points = pack.points()
        self.positions = row_positions(pack, self.points)
        self.whole: dict[int, pa.Table] = {}  # cells whose one part this process wrote
        self.writer = concurrent.futures.ThreadPoolExecutor(1, "gradjax-parts")
        self.pending: list[concurrent.futures.Future] = []

    def resume(self, like: Any) -> tuple[int, ChunkMoments]:
        """The next seed and the moments so far, from the checkpoint; parts past it are
        removed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        block = self.pack.seed_range[0] // self.ledger.seed_block
        files.write_text(json.dumps({"pieces": [[self.ledger.keys[c.index], block]
                                                  for c in self.pack.cells]}),
                           self.dir / layout.PACK_RECORD)
        state = files.read_checkpoint(self.state_path)
        done, moments = self.pack.seed_range[0], ChunkMoments(0, None)
        if state is not None:
            done, n, leaves = state
            moments = ChunkMoments.from_leaves(n, leaves, like)
        for part in self.dir.glob("*.seeds-*.parquet"):
            if _part_start(part) >= done:
                part.unlink()
        return done, moments

    def write_parts(self, start: int, stats: dict) -> None:
        """One part per cell, with the per-seed table's metadata (a piece whose seeds fit one
        chunk has a single part, which becomes the piece as it is), written by a background
        thread while the next chunk computes; the previous chunk's parts are waited for
        first, so at most one chunk's tables are held."""
        self.drain()
        seeds = np.arange(start, start + len(stats["loss_value"]))
        whole = len(seeds) == self.pack.seed_range[1] - self.pack.seed_range[0]
        for p, cell in enumerate(self.pack.cells):
            table = schema.per_seed_table(
                self.sweep.name, cell, seeds, {k: v[:, p] for k, v in stats.items()},
                self.schema, self.positions,
            )
            if whole:
                self.whole[cell.index] = table
            self.pending.append(self.writer.submit(
                files.write_parquet, table,
                self.dir / _part_name(self.ledger.keys[cell.index], start),
                self.ledger.cell_meta(cell, "per_seed")))

    def drain(self) -> None:
        """Wait for the parts being written (their errors are raised here); the wait counts
        as write time."""
        with self.phases.timing("write"):
            for future in self.pending:
                future.result()
        self.pending = []

    def close(self) -> None:
        self.writer.shutdown(wait=True)

    def checkpoint(self, done: int, moments: ChunkMoments) -> float:
        """Save progress; every part it covers is on disk first."""
        start = time.perf_counter()
        self.drain()
        with self.phases.timing("write"):
            files.write_checkpoint(self.state_path, done, moments.n, moments.leaves())
        return time.perf_counter() - start

    def finish(self, moments: ChunkMoments) -> list[int]:
        """Each cell's piece (its parts joined, or its one part renamed) and its row moments;
        then each cell is finished if its pieces now cover every seed. Returns the cells
        finished."""
        self.drain()
        a, b = self.pack.seed_range
        rows = len(self.positions["layer"])
        layered = capabilities(self.pack.bucket.spec.model).layered_probe
        finished = []
        for p, cell in enumerate(self.pack.cells):
            parts = sorted(self.dir.glob(f"{self.ledger.keys[cell.index]}.seeds-*.parquet"),
                           key=_part_start)
            table = self.whole.get(cell.index) if len(parts) == 1 else None
            with self.phases.timing("write"):
                if table is None:
                    table = pa.concat_tables([pq.read_table(part) for part in parts])
                if table.num_rows != (b - a) * rows:
                    raise RuntimeError(f"{self.dir}: cell {cell.index} has {table.num_rows} "
                                       f"per-seed rows, expected {(b - a) * rows}")
                piece = moments.rows(p, rows, layered)
                self.ledger.write_piece(cell, a, b, parts[0] if len(parts) == 1 else table,
                                        piece)
                if self.ledger.finish(cell, {(a, b): (table, piece)}):
                    finished.append(cell.index)
        shutil.rmtree(self.dir, ignore_errors=True)
        release_free_memory()  # the pack's tables, freed
        return finished


def run_pack(run: PackRun, executable: Executable, progress: Progress) -> int:
    """Run one pack to completion; returns the number of inits computed."""
    like = executable.fns[0].out_info[1]["moments"]
    done, moments = run.resume(like)
    n_cells = len(run.pack.cells)
    first, last = run.pack.seed_range
    progress.resumed((done - first) * n_cells)
    progress.start_cells([c.index for c in run.pack.cells])
    computed, since, write_s, saved = 0, time.perf_counter(), 0.0, done
    chunks = run_chunks(executable, run.sweep.root_seed, run.points, n_cells, done, last)
    try:
        while True:
            with run.phases.timing("compute"):
                item = next(chunks, None)
            if item is None:
                break
            start, count, stats, chunk_moments = item
            stats = {k: v[:, :n_cells] for k, v in stats.items()}
            run.write_parts(start, stats)
            moments = moments.merge(first_points(chunk_moments, n_cells, keep=moments.n == 0),
                                    in_place=True)
            done = start + count
            computed += count * n_cells
            progress.advance(count * n_cells)
            if time.perf_counter() - since >= CHECKPOINT_RATIO * write_s and done < last:
                write_s, saved = run.checkpoint(done, moments), done
                since = time.perf_counter()
            check_stop()
    except Interrupted:
        if done > saved:  # keep every finished chunk: a resume starts after the last one
            run.checkpoint(done, moments)
        raise
    progress.finish_cells(run.finish(moments))
    return computed


def first_points(moments: ChunkMoments, n: int, keep: bool = True) -> ChunkMoments:
    """Drop the padding points of the last pack of a bucket. Where there are some and the
    caller `keep`s the result (a pack's first chunk becomes its running moments, merged into
    in place), copies, so that the padding is not kept alive; otherwise views."""
    def drop(a: np.ndarray) -> np.ndarray:
        return a if a.shape[0] == n else a[:n].copy() if keep else a[:n]

    return ChunkMoments(moments.n, jax.tree.map(drop, moments.tree))


def stale_packs(folder: results_folder.ResultsFolder, claimed: set[tuple[str, int]],
                keep: str) -> None:
    """Remove work folders holding pieces this process now holds the locks of (so no other
    process runs them): left by a killed run that planned its packs otherwise, or by an
    earlier version, which kept them in `.work/units/` (`layout.LEGACY_UNITS`)."""
    records = [*layout.work(folder.root, layout.PACKS).glob(f"*/{layout.PACK_RECORD}"),
               *layout.work(folder.root, layout.LEGACY_UNITS).glob(
                   f"*/{layout.LEGACY_UNIT_RECORD}")]
    for record in records:
        if record.parent.name == keep:
            continue
        with contextlib.suppress(FileNotFoundError, ValueError):
            pieces = {tuple(p) for p in json.loads(record.read_text())["pieces"]}
            if pieces & claimed:
                shutil.rmtree(record.parent, ignore_errors=True)
