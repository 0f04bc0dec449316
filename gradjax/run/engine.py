"""Running a sweep (`execute_sweep`): the work a run takes on, the order it runs it in, and the
folder's life from opening to complete. The jobs it calls on each have a module:
`gradjax.run.plan` (packs and chunks within the memory budget), `gradjax.run.executables`
(compiled programs and the compile cache), `gradjax.run.pack_work` (one host loop over a pack's
chunks, its parts and checkpoints), `gradjax.run.progress` (phases, the progress line, the
report), `gradjax.run.provenance` and `gradjax.run.interrupt` (Ctrl-C).

A run computes its share of the sweep's pieces (`gradjax.results.ledger`: cells x seed blocks;
all of them unless it is one of several shards), grouped into packs: cells of one bucket that
need the same seeds. A pack holds the locks of its pieces while it runs (`share_of`, and a
claim before each pack). The next group is planned and compiled in a background thread while
the current one computes. When a pack has all its seeds, each cell's piece is written; a cell
whose pieces cover every seed is finished (per-seed file, then summary) by whichever process
gets there, and the last one completes the folder (`complete_folder`).

Per-seed numbers do not depend on the chunk size, the number of points in a pack or the device
count (`gradjax.nn.xla`), so neither the budget nor a resume nor the shard count changes them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax
from tqdm import tqdm

from gradjax.nn.theory_columns import add_theory_columns
from gradjax.probe.compile_cache import cache_events
from gradjax.results import reading, results_folder, schema
from gradjax.results.inert import inert_lines
from gradjax.results.ledger import Ledger, cell_key, owned
from gradjax.results.results_folder import SEED_BLOCK
from gradjax.run.executables import compile_cache_on
from gradjax.run.interrupt import STOP, check_stop, stop_on_sigint, wait_until
from gradjax.run.launch_options import conflict
from gradjax.run.model_check import x64_if_needed
from gradjax.run.pack_work import PackRun, run_pack, stale_packs
from gradjax.run.plan import Pack, params_of, plan_group
from gradjax.run.preflight import check_sweep
from gradjax.run.progress import Progress, RunReport, peak_memory_text, rate_text
from gradjax.run.provenance import describe_spec, run_metadata
from gradjax.sweep import Cell, Sweep
from gradjax.sweep.budget import (
    DEFAULT_MAX_MEMORY,
    format_bytes,
    moment_bytes,
    peak_resident_bytes,
)


def execute_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    max_memory: int = DEFAULT_MAX_MEMORY,
    overwrite: bool = False,
    quiet: bool = False,
    chunk: int | None = None,
    devices: int | Sequence | None = None,
    log: Callable[[str], None] | None = None,
    refuse_over: bool = True,
    shard: tuple[int, int] = (1, 1),
    seed_block: int | None = None,
    only: Sequence[tuple[Sequence[int], tuple[int, int]]] | None = None,
) -> RunReport:
    """Run (or resume, or grow) `sweep` into the folder `out`; see the module docstring.

    `chunk` fixes the chunk size (otherwise it comes from `max_memory`); `devices` limits the
    devices the seeds are sharded over (a count of `jax.devices()`, or the devices
    themselves). An MLP cell whose smallest chunk is estimated over `max_memory` is refused
    before anything is written, unless `refuse_over` is False (the bench): then it runs its
    smallest chunk, as other models do (their size is known only to XLA's analysis of the
    compiled program). `shard` (i, n) computes only the i-th of n fixed shares of the work
    (`gradjax.results.ledger`); `seed_block` sets a new folder's seeds per block (default
    `ledger.SEED_BLOCK`). `only` restricts the run to the given (cell indices of one bucket,
    seeds [a, b)) groups and leaves the folder's completion to its caller (a Ray task).
    """
    started = time.perf_counter()
    check_shard(shard, overwrite)
    check_sweep(sweep, max_memory if refuse_over else None)
    folder = results_folder.ResultsFolder(Path(out))
    use = devices_of(devices)
    say = (lambda msg: None) if quiet else (log or (lambda msg: tqdm.write(msg)))
    report = RunReport()
    misses = cache_events().misses
    meta = run_metadata(sweep)
    ledger = open_ledger(sweep, folder, meta, overwrite, seed_block or SEED_BLOCK, say,
                         check=only is None, shard=shard)
    try:
        report.cells_skipped = sum(ledger.finished(c) for c in sweep.cells)
        with stop_on_sigint():
            for _ in range(PASSES):
                work = share_of(sweep, ledger, shard) if only is None else _groups(sweep, only)
                if not work:
                    break
                with x64_if_needed(sweep):
                    _run_share(sweep, ledger, work, use, max_memory, chunk, quiet, say, report)
                if only is not None:
                    break
            if only is None and complete_folder(ledger, say) and not quiet:
                for line in inert_lines(reading.load(folder.root, "summary")):
                    say(line)
    finally:
        folder.release()
    return _finish_report(report, started, sweep, shard, folder, max_memory, say, misses)


PASSES = 3  # a piece found unreadable when its cell is finished is dropped and run again


def _groups(sweep: Sweep, only: Sequence[tuple[Sequence[int], tuple[int, int]]]) -> list:
    """`only`'s (cell indices, seed range) groups as `share_of` gives them."""
    buckets = sweep.buckets()
    bucket_of = {c.index: b for b, bucket in enumerate(buckets, 1) for c in bucket.cells}
    out = []
    for cells, seed_range in only:
        b = bucket_of[cells[0]]
        if any(bucket_of[c] != b for c in cells):
            raise ValueError(f"cells {list(cells)} are not all of one bucket")
        out.append((b, buckets[b - 1], [sweep.cells[c] for c in cells], tuple(seed_range)))
    return out


def _finish_report(report, started, sweep, shard, folder, max_memory, say, misses) -> RunReport:
    report.wall_s = time.perf_counter() - started
    report.peak_rss = peak_resident_bytes()
    cache = "persistent compile cache off"
    if compile_cache_on():
        report.cache_misses = cache_events().misses - misses
        cache = (f"loaded {report.from_cache} from the persistent compile cache, "
                 f"{report.cache_misses} cache misses in all")
    spent = ", ".join(f"{phase} {s:.1f} s" for phase, s in report.time_spent().items())
    which = f" (shard {shard[0]}/{shard[1]})" if shard[1] > 1 else ""
    say(f"{sweep.name}{which}: {report.cells} cells run, {report.cells_skipped} already done; "
        f"{report.inits:,} inits in {report.wall_s:.1f} s "
        f"({rate_text(report.inits_per_s)} inits/s; "
        f"{spent}); compiled {report.compiled} chunk programs, {cache}; "
        f"{peak_memory_text(report.peak_rss, max_memory)}; results in {folder.root}")
    return report


def check_shard(shard: tuple[int, int], overwrite: bool) -> None:
    """Refuse a shard outside 1..n, and options that do not go with shards
    (`launch_options.conflict`)."""
    i, n = shard
    if not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: i must be in 1..n")
    problem = conflict(shard=shard, overwrite=overwrite)
    if problem:
        raise ValueError(problem)


def devices_of(devices: int | Sequence | None) -> list:
    """The local devices to use: all (default), the first `devices`, or those given."""
    if devices is None or isinstance(devices, int):
        local = jax.local_devices()
        return local[: devices or len(local)]
    return list(devices)


def open_ledger(sweep: Sweep, folder: results_folder.ResultsFolder, meta: dict[str, str],
                overwrite: bool, seed_block: int, say: Callable[[str], None],
                check: bool = True, shard: tuple[int, int] = (1, 1)) -> Ledger:
    """Check and open the folder for `sweep` (moving finished cells an added axis value
    renumbered) and, with `check`, drop finished cells whose files are damaged, to compute
    them again: every page of the shard's own cells is read (its checksum checked), the
    footers of the others (a shard does not read the whole folder)."""
    keys = [cell_key(sweep, cell) for cell in sweep.cells]
    record = results_folder.run_record(sweep, keys, seed_block)
    probe = Ledger(folder, sweep, seed_block, meta)
    record = folder.open(sweep, record, overwrite, renumber=probe.renumber)
    ledger = Ledger(folder, sweep, record["seed_block"], meta, add_columns=add_theory_columns)
    mine = {cell.index for cell, _ in owned(sweep, ledger.seed_block, shard[0] - 1, shard[1])}
    try:
        for cell in sweep.cells if check else ():
            problem = ledger.forget_if_damaged(cell, whole=cell.index in mine)
            if problem:
                say(f"cell {cell.index}: {problem}; computing it again")
    except BaseException:
        folder.release()
        raise
    return ledger


def complete_folder(ledger: Ledger, say: Callable[[str], None]) -> bool:
    """Finish every cell whose pieces are all there (other shards' too) and, once every cell
    is finished, write the folder's manifest and remove its work files: whichever run gets
    here last completes the folder. Returns whether the folder is complete."""
    finished = [ledger.finish(cell) for cell in ledger.sweep.cells]
    if not all(finished):
        left = len(finished) - sum(finished)
        say(f"{ledger.sweep.name}: {left} of {len(finished)} cells wait for other shards")
        return False
    with ledger.folder.locked():
        ledger.write_manifest()
    return True


def _planned(sweep, work, budget, devices, chunk, report) -> Iterator[tuple]:
    """(b, bucket, todo, seed_range, packs, built) for each group of `work`, planning (and
    compiling) the next group in a background thread while the caller runs the current one;
    only the wait for a plan counts as compile time. XLA compiles a program on one thread,
    and a CPU sweep's chunks leave part of the cores idle, so the next compile mostly fills
    idle time (measured in docs/performance.md); on a GPU it runs beside the device's
    computation."""
    def plan(bucket, todo, seed_range):
        return plan_group(sweep, bucket, todo, seed_range, budget, devices, chunk)

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gradjax-compile")
    try:
        future = pool.submit(plan, *work[0][1:]) if work else None
        for i, (b, bucket, todo, seed_range) in enumerate(work):
            with report.phases.timing("compile"):
                wait_until(future.done)
                packs, built = future.result()
            if i + 1 < len(work):
                future = pool.submit(plan, *work[i + 1][1:])
            yield b, bucket, todo, seed_range, packs, built
    finally:  # interrupted: a compile under way is left to finish (XLA cannot stop it)
        pool.shutdown(wait=not STOP.is_set(), cancel_futures=True)


def share_of(sweep: Sweep, ledger: Ledger, shard: tuple[int, int]) -> list[tuple]:
    """The shard's unfinished work as (b, bucket, cells, seed range) groups: cells of one
    bucket that need the same seeds, in the order of `ledger.owned`."""
    buckets = sweep.buckets()
    bucket_of = {c.index: b for b, bucket in enumerate(buckets, 1) for c in bucket.cells}
    groups: dict[tuple[int, int, int], list[Cell]] = {}
    for cell, block in owned(sweep, ledger.seed_block, shard[0] - 1, shard[1]):
        if ledger.finished(cell):
            continue
        for seed_range in ledger.todo(cell, block):
            groups.setdefault((bucket_of[cell.index], *seed_range), []).append(cell)
    return [(b, buckets[b - 1], cells, (lo, hi)) for (b, lo, hi), cells in groups.items()]


def _claim(ledger: Ledger, pack: Pack) -> tuple[Pack | None, list]:
    """The pack reduced to the cells whose piece this process could lock and that are still
    to do (another process may hold or have done some); and the locks, to close after."""
    block = pack.seed_range[0] // ledger.seed_block
    cells, locks = [], []
    for cell in pack.cells:
        lock = ledger.claim(cell, block)
        if lock is None:
            continue
        if not ledger.finished(cell) and ledger.todo(cell, block) == [pack.seed_range]:
            cells.append(cell)
            locks.append(lock)
        else:
            lock.close()
    mine = dataclasses.replace(pack, cells=tuple(cells)) if cells else None
    if mine is not None:
        claimed = {(ledger.keys[c.index], block) for c in cells}
        stale_packs(ledger.folder, claimed, mine.name(ledger.keys))
    return mine, locks


def _run_share(sweep, ledger, work, devices, budget, chunk, quiet, say, report) -> None:
    per_seed_schema = schema.per_seed_schema(schema.stat_type(sweep), sweep.extra_options)
    todo = sum(len(cells) * (hi - lo) for _, _, cells, (lo, hi) in work)
    progress = Progress(sweep.name, len(sweep.cells), report.cells_skipped, todo, quiet, say)
    ran: set[int] = set()
    try:
        for b, bucket, todo, seed_range, packs, built in _planned(sweep, work, budget, devices,
                                                                  chunk, report):
            executable = built[-1]
            report.compiled += sum(e.source == "compiled" for e in built)
            report.from_cache += sum(e.source == "compile cache" for e in built)
            report.in_memory += sum(e.source == "memory" for e in built)
            _say_bucket(say, b, len(sweep.buckets()), bucket, todo, seed_range, packs, built,
                        budget, len(devices))
            for planned in packs:
                check_stop()
                pack, locks = _claim(ledger, planned)
                if pack is None:
                    progress.resumed(len(planned.cells) * (seed_range[1] - seed_range[0]))
                    continue
                try:
                    run = PackRun(sweep, ledger, pack, per_seed_schema, report.phases)
                    try:
                        report.inits += run_pack(run, executable, progress)
                    finally:
                        run.close()
                finally:
                    for lock in locks:
                        lock.close()
                ran.update(c.index for c in pack.cells)
                report.packs.append({"cells": [c.index for c in pack.cells],
                                     "seeds": list(seed_range), "chunk": executable.chunk,
                                     "points": executable.points,
                                     "peak_bytes": executable.peak_bytes})
    finally:
        progress.close()
    report.cells += len(ran)


def _say_bucket(say, b, n_buckets, bucket, todo, seed_range, packs, built, budget,
                n_devices) -> None:
    executable = built[-1]
    how = {"compiled": "compiled", "compile cache": "loaded from the compile cache",
           "memory": "already compiled"}[executable.source]
    level = dict(executable.options).get("xla_backend_optimization_level")
    how += "" if level is None else f" at LLVM -O{level} (a tiny network)"
    over = " (over budget: the smallest chunk)" if executable.peak_bytes > budget else ""
    host = moment_bytes(bucket.spec, len(packs[0].cells), params_of(bucket))
    seeds = "" if seed_range[0] == 0 else f", seeds {seed_range[0]}..{seed_range[1] - 1}"
    say(f"bucket {b}/{n_buckets} {describe_spec(bucket.spec)}: {len(todo)} cells in "
        f"{len(packs)} pack(s){seeds}; chunk {executable.chunk} seeds x {executable.points} "
        f"points on {n_devices} device(s); device memory "
        f"{format_bytes(executable.peak_bytes)} of {format_bytes(budget)}{over}, "
        f"across-seed moments {format_bytes(host)} on the host; {how} in "
        f"{sum(e.compile_s for e in built):.1f} s")
