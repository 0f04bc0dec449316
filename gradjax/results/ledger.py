"""Pieces of a sweep's work in a results folder: what is done, who holds what, finishing cells.

A *piece* is one cell's seeds [a, b) inside one *seed block* (blocks of `seed_block` seeds,
fixed when the folder is made and recorded in it). The work of a sweep is the list of
(cell, block) pairs, ordered by bucket, block, then cell; shard i of n owns a fixed contiguous
1/n of that list, whatever is already done, so n processes started on one folder (a job
array, Ray tasks, the processes of a multi-host JAX job) split it with no coordinator.

  .work/pieces/<key>/seeds-A-B.parquet   the per-seed rows of seeds [A, B) of the cell <key>
  .work/pieces/<key>/seeds-A-B.npz       their per-entry moments per row (`CellMoments`),
                                         written after the rows: a piece exists once this does
  .work/locks/<key>.<block>.lock         flock held by the process computing that piece
  .work/locks/<key>.lock                 flock held while the cell is finished

A cell's key is a hash of what fixes its numbers (options, label, root seed, plug-in model
source), not its index, so adding values to an axis (which renumbers cells) keeps its pieces.
Per-seed numbers depend on the seed alone (`gradjax.nn.keys`), so pieces computed by any process
with any chunking join into the table a single run writes, bit for bit. A cell is *finished*
by whichever process sees its pieces cover [0, seeds): the rows are joined in seed order into
per_seed/, the moments merged in seed order into the summary, and the pieces replaced by one
moments file for [0, seeds) whose rows are per_seed/'s (what growing the seed count builds on).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gradjax.results import files, layout, results_folder, schema
from gradjax.results.summary import CellMoments, cell_summary
from gradjax.spec import STATS
from gradjax.sweep import Cell, Sweep

_RANGE = re.compile(r"seeds-(\d{10})-(\d{10})\.npz")


def cell_key(sweep: Sweep, cell: Cell) -> str:
    """What fixes a cell's numbers, hashed: its options and label, the root seed and the
    source of its plug-in model. Not the cell's index, nor the sweep file's text."""
    sources = dict(sweep.model_sources)
    ident = {"options": cell.columns(), "label": cell.label, "root_seed": sweep.root_seed,
             "model_source": sources.get(cell.options["model"])}
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def blocks(seeds: int, seed_block: int) -> list[tuple[int, int]]:
    return [(a, min(a + seed_block, seeds)) for a in range(0, seeds, seed_block)]


def owned(sweep: Sweep, seed_block: int, shard: int, shards: int) -> list[tuple[Cell, int]]:
    """The (cell, block) pairs shard `shard` (0-based) of `shards` owns: a contiguous share of
    every pair of the sweep, ordered by bucket, block and cell."""
    pairs = [(cell, k) for bucket in sweep.buckets()
             for k in range(len(blocks(sweep.seeds, seed_block))) for cell in bucket.cells]
    lo, hi = len(pairs) * shard // shards, len(pairs) * (shard + 1) // shards
    return pairs[lo:hi]


def _subtract(seed_range: tuple[int, int],
              covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [a, b) outside every range of `covered`."""
    out, (a, b) = [], seed_range
    for c, d in sorted(covered):
        if d <= a or c >= b:
            continue
        if c > a:
            out.append((a, c))
        a = max(a, d)
    if a < b:
        out.append((a, b))
    return out


class Ledger:
    """The pieces, locks and finishing of one results folder for one sweep."""

    def __init__(self, folder: results_folder.ResultsFolder, sweep: Sweep, seed_block: int,
                 meta: dict[str, str], add_columns: Callable[[pd.DataFrame], pd.DataFrame]
                 = lambda frame: frame):
        """`add_columns` takes a finished cell's summary frame and returns it with the columns
        that only the compute layers know how to add (the run's mean-field theory)."""
        self.folder, self.sweep, self.seed_block, self.meta = folder, sweep, seed_block, meta
        self.add_columns = add_columns
        self.work = layout.work(folder.root)
        self.keys = {cell.index: cell_key(sweep, cell) for cell in sweep.cells}
        self.keeps_all = sweep.per_seed == STATS

    def piece_dir(self, cell: Cell) -> Path:
        return self.work / layout.PIECES / self.keys[cell.index]

    def piece_paths(self, cell: Cell, a: int, b: int) -> tuple[Path, Path]:
        stem = self.piece_dir(cell) / f"seeds-{a:010d}-{b:010d}"
        return stem.with_suffix(".parquet"), stem.with_suffix(".npz")

    def ranges(self, cell: Cell) -> list[tuple[int, int]]:
        """The seed ranges of the cell's pieces on disk (moments written), by start."""
        folder = self.piece_dir(cell)
        if not folder.is_dir():
            return []
        found = (_RANGE.fullmatch(p.name) for p in folder.iterdir())
        return sorted((int(m[1]), int(m[2])) for m in found if m)

    def _has_rows(self, cell: Cell, a: int, b: int) -> bool:
        """A piece's rows are its own file, or (for the finished [0, S0)) per_seed/'s."""
        rows, _ = self.piece_paths(cell, a, b)
        if rows.exists():
            return True
        return a == 0 and self.keeps_all and self.folder.per_seed_path(cell.index).exists()

    def cover(self, cell: Cell) -> list[tuple[int, int]]:
        """Non-overlapping pieces with rows, by start, the widest first where several start
        at one seed: a finished range wins over the pieces it was made of."""
        ranges = [r for r in self.ranges(cell) if r[1] <= self.sweep.seeds
                  and self._has_rows(cell, *r)]
        chosen: list[tuple[int, int]] = []
        for a, b in sorted(ranges, key=lambda r: (r[0], -r[1])):
            if _subtract((a, b), chosen) == [(a, b)]:
                chosen.append((a, b))
        return chosen

    def todo(self, cell: Cell, block: int) -> list[tuple[int, int]]:
        seed_range = blocks(self.sweep.seeds, self.seed_block)[block]
        return _subtract(seed_range, self.cover(cell))

    def finished(self, cell: Cell) -> bool:
        """Nothing left to do: one moments file for [0, seeds) whose rows are per_seed/'s (a
        piece of all the seeds still has its own rows until the cell is finished), and the
        summary (written before that moments file, or else of fewer seeds)."""
        rows, moments = self.piece_paths(cell, 0, self.sweep.seeds)
        return moments.exists() and not rows.exists() and self.folder.done(cell.index)

    @contextlib.contextmanager
    def hold(self, cell: Cell) -> Iterator[None]:
        """The lock for finishing (or checking) a cell, waited for: a process that wrote a
        cell's last piece must see it finished, by itself or by the holder."""
        (self.work / layout.LOCKS).mkdir(parents=True, exist_ok=True)
        with open(self.work / layout.LOCKS / f"{self.keys[cell.index]}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def claim(self, cell: Cell, block: int) -> IO | None:
        """The open, locked lock file of a piece, or None if another process holds it."""
        (self.work / layout.LOCKS).mkdir(parents=True, exist_ok=True)
        lock = open(self.work / layout.LOCKS / f"{self.keys[cell.index]}.{block}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return None
        return lock

    def write_piece(self, cell: Cell, a: int, b: int, table: pa.Table | Path,
                    moments: CellMoments) -> None:
        """The piece's rows (a table, or a part file renamed into place), then its moments."""
        rows, npz = self.piece_paths(cell, a, b)
        rows.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(table, Path):
            os.replace(table, rows)
        else:
            files.write_parquet(table, rows, self.cell_meta(cell, "per_seed"))
        with files.atomic_path(npz) as tmp, open(tmp, "wb") as f:
            moments.save(f)

    def cell_meta(self, cell: Cell, table: str) -> dict[str, str]:
        return {**self.meta, "cell": str(cell.index), "cell_key": self.keys[cell.index],
                "table": table, "written_utc": files.utc_now()}

    def renumber(self, recorded: dict) -> None:
        """Move finished cells to the index the sweep gives them now (an axis grew), their
        `cell` column rewritten. Crash-safe: files are copied to .work/renumber/ first, and
        a file's own `cell_key` says which cell it is, so a re-run picks up where it
        stopped."""
        if recorded.get("cells") == [self.keys[c.index] for c in self.sweep.cells]:
            return
        index_of = {key: index for index, key in self.keys.items()}
        staging = self.work / layout.RENUMBER
        staging.mkdir(parents=True, exist_ok=True)
        moving = []
        for table in layout.TABLES:
            for path in sorted((self.folder.root / table).glob("cell-*.parquet")):
                meta = pq.read_schema(path).metadata or {}
                key = meta.get(b"cell_key", b"").decode()
                index = int(meta.get(b"cell", b"-1"))
                if key in index_of and index_of[key] != index:
                    moving.append((path, staging / f"{key}.{table}.parquet", key, table))
        for path, staged, key, table in moving:
            cell = self.sweep.cells[index_of[key]]
            files.write_parquet(_with_cell(pq.read_table(path), cell), staged,
                                  self.cell_meta(cell, table))
        for path, *_ in moving:
            path.unlink()
        for staged in sorted(staging.glob("*.parquet")):
            key, table, _ = staged.name.split(".")
            cell = self.sweep.cells[index_of[key]]
            target = (self.folder.per_seed_path if table == "per_seed"
                      else self.folder.summary_path)(cell.index)
            os.replace(staged, target)

    def finished_seeds(self, cell: Cell) -> int:
        """Seeds of the cell's finished range [0, S0) (moments with no rows of their own)."""
        ends = [b for a, b in self.ranges(cell) if a == 0
                and not self.piece_paths(cell, a, b)[0].exists()]
        return max(ends, default=0)

    def damaged(self, cell: Cell, whole: bool) -> str | None:
        """Why a finished cell's files cannot be trusted (truncated, corrupt, or rows that do
        not add up), or None. Reads the Parquet footers only, or with `whole` every page,
        checking its checksum."""
        if not self.folder.done(cell.index):
            return None
        seeds = self.finished_seeds(cell)
        if seeds == 0:  # a finish that stopped before its moments: finishing again mends it
            return None if not _subtract((0, self.sweep.seeds), self.cover(cell)) else (
                "its moments file is missing")
        paths = [self.folder.summary_path(cell.index)]
        if self.sweep.per_seed:
            paths.append(self.folder.per_seed_path(cell.index))
        try:
            rows = [pq.read_metadata(path).num_rows for path in paths]
        except (OSError, pa.ArrowException) as err:
            return f"a file is unreadable ({err})"
        if len(rows) == 2 and (rows[1] < rows[0] * seeds or rows[1] % rows[0]):
            return f"{paths[1].name} has {rows[1]} rows for {seeds} seeds of {rows[0]} rows"
        for path in paths if whole else ():  # a growth half-done leaves more rows, not fewer
            problem = files.unreadable(path)
            if problem:
                return f"{path.parent.name}/{path.name} is damaged ({problem})"
        return None

    def forget_if_damaged(self, cell: Cell, whole: bool) -> str | None:
        """Remove a damaged finished cell's files and its finished moments (its rows are
        gone), to compute it again; returns what was wrong (`damaged`)."""
        with self.hold(cell):
            problem = self.damaged(cell, whole)
            if problem is None:
                return None
            for path in (self.folder.per_seed_path(cell.index),
                         self.folder.summary_path(cell.index)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            seeds = self.finished_seeds(cell)
            if seeds:
                self.piece_paths(cell, 0, seeds)[1].unlink()
            return problem

    def write_manifest(self) -> None:
        """The folder's completion record (rows per table from the Parquet footers); the
        per-pack work files (an earlier version's `.work/units/` too) and locks are removed,
        the cells' moments kept for growing."""
        rows = {table: sum(pq.read_metadata(p).num_rows
                           for p in sorted((self.folder.root / table).glob("*.parquet")))
                for table in layout.TABLES}
        manifest = {"name": self.sweep.name, "complete": True, "cells": len(self.sweep.cells),
                    "seeds": self.sweep.seeds, "rows": rows,
                    "gradjax_version": self.meta.get("gradjax_version"),
                    "finished_utc": files.utc_now()}
        files.write_text(json.dumps(manifest, indent=1) + "\n",
                           self.folder.root / layout.MANIFEST_FILE)
        # every run here is of this sweep (`.run.lock`)
        for sub in (layout.PACKS, layout.LEGACY_UNITS, layout.LOCKS, layout.RENUMBER):
            shutil.rmtree(self.work / sub, ignore_errors=True)
        self.folder.remove_temporaries(only_dead=True)

    def finish(self, cell: Cell, in_memory: dict | None = None) -> bool:
        """Write the cell's per-seed and summary files if its pieces cover every seed (waiting
        for a process that is finishing it); True if the cell is finished now. `in_memory`
        maps a piece's range to its (table, moments) when the caller still holds them."""
        if self.finished(cell):
            return True
        with self.hold(cell):
            if self.finished(cell):
                return True
            cover = self.cover(cell)
            if _subtract((0, self.sweep.seeds), cover):
                return False
            try:
                self._finish(cell, cover, in_memory or {})
            except _Unreadable as err:  # never read as data: dropped, to compute again
                for path in self.piece_paths(cell, *err.seed_range):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                if (err.seed_range[0] == 0
                        and not self.piece_paths(cell, *err.seed_range)[0].exists()):
                    with contextlib.suppress(FileNotFoundError):
                        self.folder.summary_path(cell.index).unlink()
                return False
            return True

    def _rows(self, cell: Cell, a: int, b: int, in_memory: dict) -> pa.Table:
        if (a, b) in in_memory:
            return in_memory[(a, b)]
        rows, _ = self.piece_paths(cell, a, b)
        try:
            if rows.exists():
                table = files.read_verified(rows)
            else:  # a half-grown file holds more seeds
                table = files.read_verified(self.folder.per_seed_path(cell.index))
                table = table.filter(pc.field("seed") < b)
        except (OSError, pa.ArrowException) as err:
            raise _Unreadable((a, b)) from err
        if table.num_rows % (b - a):
            raise _Unreadable((a, b))
        return table

    def _moments(self, cell: Cell, a: int, b: int) -> CellMoments:
        try:
            moments = CellMoments.load(self.piece_paths(cell, a, b)[1])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise _Unreadable((a, b)) from err
        if moments.n != b - a:
            raise _Unreadable((a, b))
        return moments

    def _finish(self, cell: Cell, cover: list[tuple[int, int]], in_memory: dict) -> None:
        in_moments = {seed_range: held[1] for seed_range, held in in_memory.items()}
        in_memory = {seed_range: held[0] for seed_range, held in in_memory.items()}
        tables = [self._rows(cell, a, b, in_memory) for a, b in cover]
        table = _with_cell(pa.concat_tables(tables) if len(tables) > 1 else tables[0], cell)
        moments = CellMoments(0, ())
        for a, b in cover:
            moments = moments.merge(in_moments.get((a, b)) or self._moments(cell, a, b))
        positions = _positions(table, self.sweep.seeds)
        expected = self.sweep.seeds * len(positions["layer"])
        if table.num_rows != expected or moments.n != self.sweep.seeds:
            raise RuntimeError(f"cell {cell.index}: {table.num_rows} per-seed rows and "
                               f"{moments.n} seeds of moments, expected {expected} and "
                               f"{self.sweep.seeds}")
        self._write_per_seed(cell, table, cover)
        frame = self.add_columns(cell_summary(self.sweep.name, cell, table,
                                              moments.var_across_seeds(), positions))
        files.write_parquet(schema.summary_table(frame, self.sweep.extra_options),
                              self.folder.summary_path(cell.index),
                              self.cell_meta(cell, "summary"))
        whole = self.piece_paths(cell, 0, self.sweep.seeds)[1]
        if cover != [(0, self.sweep.seeds)]:  # else the one piece's moments are these
            with files.atomic_path(whole) as tmp, open(tmp, "wb") as f:
                moments.save(f)
        for path in self.piece_dir(cell).iterdir():  # the pieces of these seeds, no other
            found = re.fullmatch(r"seeds-(\d{10})-(\d{10})\.(npz|parquet)", path.name)
            if path != whole and found and int(found[2]) <= self.sweep.seeds:
                path.unlink()

    def _write_per_seed(self, cell: Cell, table: pa.Table,
                        cover: list[tuple[int, int]]) -> None:
        """Only the statistics the sweep keeps (`per_seed`), or none; a single piece whose
        rows are already right is renamed into place."""
        path = self.folder.per_seed_path(cell.index)
        keep = self.sweep.per_seed
        single = self.piece_paths(cell, *cover[0])[0]
        if keep == STATS and len(cover) == 1 and single.exists() and _cell_of(single) == (
                cell.index):
            os.replace(single, path)
        elif keep:
            dropped = set(STATS) - set(keep)
            table = table.select([n for n in table.schema.names if n not in dropped])
            files.write_parquet(table, path, self.cell_meta(cell, "per_seed"))


class _Unreadable(Exception):
    """A piece whose rows or moments cannot be read (truncated, corrupt)."""

    def __init__(self, seed_range: tuple[int, int]):
        super().__init__(seed_range)
        self.seed_range = seed_range


def _cell_of(path: Path) -> int:
    return pq.ParquetFile(path).read_row_group(0, columns=["cell"]).column(0)[0].as_py()


def _with_cell(table: pa.Table, cell: Cell) -> pa.Table:
    """The rows with this cell's index (pieces keep their key when an axis grows, not their
    index)."""
    column = table.schema.get_field_index("cell")
    low_high = pc.min_max(table.column(column)).as_py()
    if low_high["min"] == low_high["max"] == cell.index:
        return table
    return table.set_column(column, "cell", pa.array(np.full(table.num_rows, cell.index)))


def _positions(table: pa.Table, seeds: int) -> dict[str, np.ndarray | list]:
    """The position columns of one init's rows: the first of the table's `seeds` blocks."""
    per_init = table.num_rows // seeds
    head = table.slice(0, per_init)
    out = {name: head.column(name).to_numpy() for name in schema.POSITION_COLUMNS}
    out["param"] = head.column("param").to_pylist()
    return out
