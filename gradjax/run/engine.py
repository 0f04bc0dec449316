"""Running a sweep: units of cells, chunks of seeds, a memory budget, resume and progress.

A bucket (cells with one `ProbeSpec`) compiles once. Its cells run together as one unit, their
scale, bias_scale and fixed data being traced inputs of the program (one "point" per cell),
unless the budget cannot hold even the smallest chunk of seeds for all of them; then it is split
into units of equal point count (the last one padded), which share the same executable.

Seeds run in chunks of C, C chosen from `max_memory` and checked against XLA's own memory
analysis of the compiled chunk. With more than one device the seeds of a chunk are split
across them (C a multiple of the device count), each device running the single-device program
on its share, concurrently. Per-seed numbers do not depend on C, on the number of points in a
unit or on the device count (`gradjax.nn.xla`), so neither the budget nor a resume changes them.

A run computes its share of the sweep's pieces (`gradjax.results.ledger`: cells x seed blocks; all
of them unless it is one of several shards), grouped into units: cells of one bucket that need the
same seeds. A unit holds the locks of its pieces while it runs. Its progress lives in
`.work/units/unit-*/`: one Parquet part per (cell, chunk) and a checkpoint (`state.npz`: seeds done
plus the float64 across-seed moments merged so far). Parts are written by a background thread while
the next chunk computes (one chunk's parts at a time), and always before the checkpoint that covers
them; on resume, parts past the checkpoint are dropped and the unit continues from it. The
checkpoint is rewritten after a chunk once the compute since the last one is at least
CHECKPOINT_RATIO times what writing it took, so its cost stays under ~1/CHECKPOINT_RATIO of the run
even when the moments are large (tiny networks checkpoint after every chunk). When a unit has all
its seeds, each cell's piece is written and the unit's folder removed; a cell whose pieces cover
every seed is finished (per-seed file, then summary) by whichever process gets there, and the last
one completes the folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jaxlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from gradjax.nn.models.family import SCALES
from gradjax.nn.models.registry import resolve
from gradjax.nn.theory import add_theory_columns
from gradjax.probe import tree_probe
from gradjax.probe.mlp_probe import make_points
from gradjax.probe.programs import MATMUL_PRECISION, compiled_chunk
from gradjax.probe.stats import to_host
from gradjax.results import storage
from gradjax.results.inert import inert_lines
from gradjax.results.ledger import Ledger, blocks, cell_key, owned
from gradjax.results.storage import SEED_BLOCK
from gradjax.run.model_check import x64_if_needed
from gradjax.run.moments import ChunkMoments
from gradjax.run.preflight import check_sweep
from gradjax.spec import COMMON, MIN_AXIS, ProbeSpec
from gradjax.sweep import Bucket, Cell, Sweep
from gradjax.sweep.budget import (
    DEFAULT_MAX_MEMORY,
    estimate_bytes,
    format_bytes,
    host_reserve,
    moment_bytes,
    peak_resident_bytes,
    process_footprint,
    release_free_memory,
)

CHECKPOINT_RATIO = 10.0
GROW_IF, GROW_TO = 2.0, 0.8  # re-plan a chunk XLA says could be 2x larger, to 80% of budget
POLL_S = 0.05  # the longest a run waits (on a compile, on a chunk's results) without polling


class Interrupted(KeyboardInterrupt):
    """SIGINT during a run, raised where it is safe: between chunks, or while the main thread
    waits on a compile or on a chunk's results; never inside a JAX call (an exception thrown
    into a thread of XLA aborts the process). The finished chunks are checkpointed first."""


_STOP = threading.Event()  # set by the run's SIGINT handler


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[None]:
    """While a run goes on in the main thread, SIGINT only sets a flag that the run polls
    (`_check_stop`); a second SIGINT while it stops does nothing more. Off the main thread
    (where Python cannot install a handler) SIGINT is left as it is."""
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: _STOP.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None
                      else previous)


def _check_stop() -> None:
    if _STOP.is_set():
        raise Interrupted


def _wait_until(ready: Callable[[], bool]) -> None:
    """Return once `ready()`; meanwhile poll for SIGINT, sleeping 1 ms at first and at most
    POLL_S (a chunk that is ready at once costs no sleep, a slow one at most ~POLL_S)."""
    pause = 0.001
    while not ready():
        _check_stop()
        time.sleep(pause)
        pause = min(2 * pause, POLL_S)


def busy_threads() -> list[str]:
    """gradjax's background threads still alive (a compile in XLA cannot be stopped)."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith("gradjax-") and t.is_alive()]


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a bucket runs: units of `points` cells each, chunks of `chunk` seeds."""

    points: int
    chunk: int


def initial_plan(spec: ProbeSpec, n_cells: int, seeds: int, budget: int, n_devices: int,
                 n_params: int | None = None) -> Plan:
    """The largest chunk (and, only if needed, fewest points per unit) the estimate allows."""
    smallest = MIN_AXIS * n_devices
    largest = max(smallest, _round_up(seeds, n_devices))
    points = n_cells

    def need(chunk: int, points: int) -> int:
        return estimate_bytes(spec, chunk, points, n_params)

    while points > 1 and need(smallest, points) > budget:
        points = max(1, points // 2)
    per_seed = need(1, points) - need(0, points)
    chunk = (budget - need(0, points)) // per_seed // n_devices * n_devices
    return Plan(points, int(min(max(chunk, smallest), largest)))


@dataclasses.dataclass(frozen=True)
class Unit:
    """Cells of one bucket that run together; `size` points (the last cell repeated to pad)."""

    bucket: Bucket
    cells: tuple[Cell, ...]
    size: int
    span: tuple[int, int] = (0, 0)  # the seeds [a, b) it computes for each of its cells

    def name(self, keys: dict[int, str]) -> str:
        """Its work folder's name: what it computes (cell keys and seeds), not the cells'
        indices, which change when an axis grows."""
        what = ",".join(keys[c.index] for c in self.cells) + f":{self.span}"
        digest = hashlib.sha1(what.encode()).hexdigest()[:12]
        return f"unit-{self.cells[0].index:05d}-{len(self.cells)}-{digest}"

    def points(self) -> dict:
        padded = (*self.cells, *([self.cells[-1]] * (self.size - len(self.cells))))
        return make_points(self.bucket.spec, **self.bucket.points(padded))


def units_of(bucket: Bucket, cells: Sequence[Cell], points: int,
             span: tuple[int, int] = (0, 0)) -> list[Unit]:
    """Consecutive groups of `points` cells, each padded to at least MIN_AXIS points (and the
    last one to the size of the others): an axis of size 1 would change XLA's reductions."""
    step = min(points, len(cells))
    size = max(step, MIN_AXIS)
    return [Unit(bucket, tuple(cells[i : i + step]), size, span)
            for i in range(0, len(cells), step)]


def describe_spec(spec: ProbeSpec) -> str:
    """Every option that fixes a bucket's compiled program, by its sweep-file name. For a
    model other than the MLP: what its factory takes (a traced one "per cell") and the options
    of the probe around it (loss, data, dtype, ...), never the MLP's own (init, bias_init,
    activation, norm), which it does not take."""
    if spec.model != "mlp":
        return _describe_model(spec)
    sizes = spec.sizes
    shape = {"in_dim": sizes[0], "width": sizes[1] if len(sizes) > 2 else "-",
             "depth": spec.depth, "out_dim": sizes[-1]}
    skip = ("sizes", "model_options", "model_folder")
    options = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
               if f.name not in skip and f.name not in shape}
    options["optimizer"] = spec.optimizer or "none (step 0)"
    return ", ".join(f"{k} {v}" for k, v in {**shape, **options}.items())


def _describe_model(spec: ProbeSpec) -> str:
    family = resolve(spec.model, spec.model_folder)
    static = dict(spec.model_options)
    takes = ", ".join(f"{n} {static[n]}" if n in static else f"{n} per cell"
                      for n in family.params) or "no options"
    if not family.handles_scale:
        takes += "; scale and bias_scale multiplied onto its leaves"
    dims = {"in_dim": spec.sizes[0], "out_dim": spec.sizes[-1]}
    common = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name in COMMON and f.name not in ("model", *SCALES)}
    if spec.output_activation != "leaky_relu":
        common.pop("leaky_slope", None)
    common["optimizer"] = spec.optimizer or "none (step 0)"
    shown = {k: v for k, v in dims.items() if k not in family.params} | common
    return (f"model {spec.model} ({takes}), "
            + ", ".join(f"{k} {v}" for k, v in shown.items()))


def tensors_of(bucket: Bucket) -> int:
    """Parameter tensors of one init (the MLP: a weight and a bias per layer)."""
    if bucket.spec.model == "mlp":
        return 2 * (len(bucket.spec.sizes) - 1)
    points = make_points(bucket.spec, **bucket.points(bucket.cells[:1]))
    return tree_probe.param_tensors(bucket.spec, points)


def params_of(bucket: Bucket) -> int | None:
    """Entries of one init's parameters for a model other than the MLP (None: the MLP, whose
    count `gradjax.sweep.budget` knows from its sizes)."""
    if bucket.spec.model == "mlp":
        return None
    points = make_points(bucket.spec, **bucket.points(bucket.cells[:1]))
    return tree_probe.param_count(bucket.spec, points)


def row_positions(unit: Unit, points: dict) -> dict[str, Any]:
    """The position columns of one init's rows in the unit's tables."""
    if unit.bucket.spec.model == "mlp":
        return storage.position_columns(unit.cells[0])
    return tree_probe.positions(unit.bucket.spec, points)


class _CacheEvents:
    """Counts persistent compilation cache hits and misses (jax.monitoring events), for every
    program this process compiles."""

    HIT, MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"

    def __init__(self):
        self.hits = self.misses = 0

    def __call__(self, event: str, **kwargs: Any) -> None:
        self.hits += event == self.HIT
        self.misses += event == self.MISS


@functools.cache
def cache_events() -> _CacheEvents:
    """The process's counter of compile-cache events, listening from the first call on."""
    events = _CacheEvents()
    jax.monitoring.register_event_listener(events)
    return events


@functools.cache
def git_revision() -> tuple[str, bool] | None:
    """(commit, has uncommitted changes) of the checkout gradjax runs from, if it is one."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head, bool(dirty)


def run_metadata(sweep: Sweep) -> dict[str, str]:
    """Provenance for every Parquet file of a run (the UTC time is added per file)."""
    from gradjax import __version__

    device = jax.devices()[0]
    meta = {
        "sweep_name": sweep.name,
        "sweep_text": sweep.text,
        "sweep_sha256": hashlib.sha256(sweep.text.encode()).hexdigest(),
        "seeds": str(sweep.seeds),
        "root_seed": str(sweep.root_seed),
        "gradjax_version": __version__,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": str(jax.device_count()),
        "matmul_precision": MATMUL_PRECISION,
    }
    if sweep.model_sources:
        meta["model_sources"] = json.dumps(dict(sweep.model_sources))
    git = git_revision()
    if git is not None:
        meta["git_revision"], meta["git_dirty"] = git[0], str(git[1]).lower()
    return meta


def enable_compile_cache(path: Path | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (every program, however quick to compile),
    in a folder only this user can read or write (0700)."""
    path = storage.private_folder(storage.user_cache_dir() if path is None else Path(path))
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@dataclasses.dataclass(frozen=True)
class Executable:
    """The bucket's chunk function compiled for each device: `chunk` seeds in all, split evenly
    over `devices`, each running the single-device program on its share."""

    fns: tuple
    devices: tuple
    chunk: int
    points: int
    peak_bytes: int
    compile_s: float
    source: str  # "compiled", "compile cache" (persistent) or "memory" (this process)

    @property
    def local(self) -> int:
        return self.chunk // len(self.devices)


def compile_chunk(spec: ProbeSpec, points: dict, chunk: int, devices: Sequence) -> Executable:
    """The bucket's chunk function compiled for this shape (`programs.compiled_chunk`, which
    keeps every program of the process).

    With several devices each gets its own copy of the single-device program, compiled for
    C / devices seeds, rather than one SPMD program: XLA partitions an SPMD program's
    reductions differently, while the per-device program is exactly what one device runs with
    a smaller chunk, so per-seed numbers do not depend on the device count.
    """
    n_points = int(points["scale"].shape[0])
    local = chunk // len(devices)
    events = cache_events()
    hits, misses, start = events.hits, events.misses, time.perf_counter()
    fns, peak, fresh = [], 0, False
    for device in devices:
        fn, new = compiled_chunk(spec, True, local, points, device)
        memory = fn.memory_analysis()
        # arguments, XLA's temporaries, and the outputs twice (one chunk in flight while the
        # previous one is copied to the host)
        peak += (memory.argument_size_in_bytes + memory.temp_size_in_bytes
                 + 2 * memory.output_size_in_bytes)
        fns.append(fn)
        fresh |= new
    cached = events.hits > hits and events.misses == misses
    source = ("compile cache" if cached else "compiled") if fresh else "memory"
    if fresh:
        release_free_memory()  # the compiler's freed memory, kept by the C heap otherwise
    return Executable(tuple(fns), tuple(devices), chunk, n_points, int(peak),
                      time.perf_counter() - start if fresh else 0.0, source)


def even_chunks(plan: Plan, seeds: int, n_devices: int) -> Plan:
    """The same number of chunks, but equal ones: a 220-seed chunk for 256 seeds would pad
    the second chunk with 184 seeds computed for nothing; two of 128 do not."""
    n_chunks = math.ceil(seeds / plan.chunk)
    return Plan(plan.points, max(MIN_AXIS * n_devices,
                                 _round_up(math.ceil(seeds / n_chunks), n_devices)))


def first_plan(bucket: Bucket, cells: Sequence[Cell], seeds: int, budget: int,
               n_devices: int) -> Plan:
    """The plan `plan_bucket` starts from, before XLA's memory analysis corrects it: the
    budget's estimate (`initial_plan`) in equal chunks. No compile."""
    return even_chunks(initial_plan(bucket.spec, len(cells), seeds, budget, n_devices,
                                    params_of(bucket)), seeds, n_devices)


def plan_bucket(
    bucket: Bucket, cells: Sequence[Cell], seeds: int, budget: int, devices: Sequence,
    chunk: int | None = None, span: tuple[int, int] | None = None,
) -> tuple[list[Unit], list[Executable]]:
    """Units for a bucket's unfinished `cells` within `budget` bytes, computing `seeds` seeds
    each (the seeds `span`, default [0, seeds)), and the executables built on the way (the
    last one is used).

    Starts from the estimate, then shrinks the chunk (then the points per unit) while XLA's
    memory analysis says the budget is exceeded, or grows the chunk once if it says the
    estimate was too cautious by GROW_IF or more; a given `chunk` is used as is.
    """
    n_dev = len(devices)
    smallest = MIN_AXIS * n_dev

    def even(p: Plan) -> Plan:
        return even_chunks(p, seeds, n_dev)

    plan = first_plan(bucket, cells, seeds, budget, n_dev)
    if chunk is not None:
        plan = Plan(len(cells), _round_up(max(chunk, smallest), n_dev))
    built = []
    largest = max(smallest, _round_up(seeds, n_dev))
    span = (0, seeds) if span is None else span
    while True:
        units = units_of(bucket, cells, plan.points, span)
        executable = compile_chunk(bucket.spec, units[0].points(), plan.chunk, devices)
        built.append(executable)
        if chunk is not None:
            return units, built
        scale = budget / executable.peak_bytes
        grown = min(largest, int(plan.chunk * GROW_TO * scale) // n_dev * n_dev)
        if scale >= 1 and len(built) == 1 and grown >= GROW_IF * plan.chunk:
            plan = even(Plan(plan.points, grown))  # the estimate was far too cautious: grow once
        elif scale >= 1:
            return units, built
        elif plan.chunk > smallest:
            plan = even(Plan(plan.points, max(smallest, int(plan.chunk * scale) // n_dev * n_dev)))
        elif plan.points > 1:
            plan = Plan(max(1, int(plan.points * scale)), plan.chunk)
        else:
            return units, built  # the smallest program; the log says it is over budget


# where a run's time goes: compiling programs, computing (dispatching chunks and waiting for
# their results on the host), and writing files (Parquet parts, checkpoints, final tables)
PHASES: tuple[str, ...] = ("compile", "compute", "write")


@dataclasses.dataclass
class Phases:
    """Seconds spent in each of `PHASES`."""

    seconds: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


@dataclasses.dataclass
class Report:
    """What a run did."""

    cells: int = 0
    cells_skipped: int = 0
    inits: int = 0
    wall_s: float = 0.0
    compiled: int = 0  # chunk programs compiled
    from_cache: int = 0  # chunk programs loaded from the persistent compile cache
    cache_misses: int | None = None  # every program of the run; None with the cache off
    units: list[dict] = dataclasses.field(default_factory=list)
    peak_rss: int | None = None  # the process's peak resident bytes at the end of the run
    phases: Phases = dataclasses.field(default_factory=lambda: Phases())

    @property
    def inits_per_s(self) -> float:
        return self.inits / self.wall_s if self.wall_s > 0 else math.nan

    def time_spent(self) -> dict[str, float]:
        """Seconds per phase (`PHASES`), and `other`: the wall time not in any of them."""
        spent = dict(self.phases.seconds)
        spent["other"] = max(self.wall_s - sum(spent.values()), 0.0)
        return spent


PROGRESS_EVERY_S = 30.0  # without a terminal, a progress line at most this often


def progress_line(name: str, cells: tuple[int, int, int], inits: tuple[int, int],
                  rate: float, left: float) -> str:
    """The progress line. `cells` is (complete, in progress, total) over the whole sweep: a
    cell is complete when all its seeds are (in this run or before), in progress while some
    of its seeds are computed and others not yet (every cell of the unit running now, as a
    unit computes its cells together); so complete + in progress <= total. `inits` is (done,
    to do) of this run's share, counting inits found done in a checkpoint."""
    complete, running, total = cells
    return (f"{name}: cells {complete}/{total} complete, {running} in progress; inits "
            f"{inits[0]:,}/{inits[1]:,} of this run, {_rate(rate)} inits/s, about "
            f"{_duration(left)} left")


class _Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, a pipe) a line at most every
    PROGRESS_EVERY_S seconds (`progress_line`): cells complete and in progress, inits done,
    the rate and the time left."""

    def __init__(self, name: str, cells_total: int, cells_done: int, todo: int, quiet: bool,
                 say: Callable[[str], None]):
        self.name, self.cells_total, self.cells_done = name, cells_total, cells_done
        self.running: set[int] = set()  # cells with some seeds computed, not yet complete
        self.total, self.done = todo, 0  # the inits of this run's share
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=self.total, initial=self.done, unit="init", unit_scale=True,
                        desc=name, dynamic_ncols=True, disable=quiet or not terminal,
                        file=sys.stderr)
        self.say = None if quiet or terminal else say
        self.computed, self.started = 0, time.perf_counter()
        self.last_line = self.started
        self.finish_cells(())

    def resumed(self, inits: int) -> None:
        """Inits found done in a unit's checkpoint or by another process (not computed by
        this one)."""
        self.done += inits
        self.bar.update(inits)

    def advance(self, inits: int) -> None:
        self.done += inits
        self.computed += inits
        self.bar.update(inits)
        self._line()

    def start_cells(self, cells: Sequence[int]) -> None:
        """Cells whose seeds start to be computed (a unit's)."""
        self.running.update(cells)
        self._postfix()

    def finish_cells(self, cells: Sequence[int]) -> None:
        """Cells now complete (every seed, every piece: a unit's cells are not complete
        while other seed blocks of theirs are still to do)."""
        self.cells_done += len(set(cells))
        self.running.difference_update(cells)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"cells {self.cells_done}/{self.cells_total} complete, "
                                 f"{len(self.running)} in progress")

    def _line(self) -> None:
        now = time.perf_counter()
        if self.say is None or now - self.last_line < PROGRESS_EVERY_S:
            return
        self.last_line = now
        rate = self.computed / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        self.say(progress_line(self.name, (self.cells_done, len(self.running),
                                           self.cells_total), (self.done, self.total),
                               rate, left))

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "? s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else (
        f"{secs}s")


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
        _wait_until(lambda: all(leaf.is_ready() for leaf in leaves))
        stats = to_host({k: np.concatenate([np.asarray(out[0][k]) for out in outs])[:count]
                         for k in outs[0][0]})
        moments = ChunkMoments(0, None)
        for out in outs:
            moments = moments.merge(ChunkMoments.from_chunk(out[1]))
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


class _UnitRun:
    """One unit's chunks, parts and checkpoints, and the pieces it leaves
    (`gradjax.results.ledger`)."""

    def __init__(self, sweep: Sweep, ledger: Ledger, unit: Unit, schema: pa.Schema,
                 phases: Phases):
        self.sweep, self.ledger, self.unit, self.schema = sweep, ledger, unit, schema
        self.phases = phases
        self.dir = ledger.folder.work_dir(unit.name(ledger.keys))
        self.state_path = self.dir / "state.npz"
        self.points = unit.points()
        self.positions = row_positions(unit, self.points)
        self.whole: dict[int, pa.Table] = {}  # cells whose one part this process wrote
        self.writer = concurrent.futures.ThreadPoolExecutor(1, "gradjax-parts")
        self.pending: list[concurrent.futures.Future] = []

    def resume(self, like: Any) -> tuple[int, ChunkMoments]:
        """The next seed and the moments so far, from the checkpoint; parts past it are
        removed."""
        self.dir.mkdir(parents=True, exist_ok=True)
        block = self.unit.span[0] // self.ledger.seed_block
        storage.write_text(json.dumps({"pieces": [[self.ledger.keys[c.index], block]
                                                  for c in self.unit.cells]}),
                           self.dir / "unit.json")
        state = storage.read_checkpoint(self.state_path)
        done, moments = self.unit.span[0], ChunkMoments(0, None)
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
        whole = len(seeds) == self.unit.span[1] - self.unit.span[0]
        for p, cell in enumerate(self.unit.cells):
            table = storage.per_seed_table(
                self.sweep.name, cell, seeds, {k: v[:, p] for k, v in stats.items()},
                self.schema, self.positions,
            )
            if whole:
                self.whole[cell.index] = table
            self.pending.append(self.writer.submit(
                storage.write_parquet, table,
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
            storage.write_checkpoint(self.state_path, done, moments.n, moments.leaves())
        return time.perf_counter() - start

    def finish(self, moments: ChunkMoments) -> list[int]:
        """Each cell's piece (its parts joined, or its one part renamed) and its row moments;
        then each cell is finished if its pieces now cover every seed. Returns the cells
        finished."""
        self.drain()
        a, b = self.unit.span
        rows = len(self.positions["layer"])
        mlp = self.unit.bucket.spec.model == "mlp"
        finished = []
        for p, cell in enumerate(self.unit.cells):
            parts = sorted(self.dir.glob(f"{self.ledger.keys[cell.index]}.seeds-*.parquet"),
                           key=_part_start)
            table = self.whole.get(cell.index) if len(parts) == 1 else None
            with self.phases.timing("write"):
                if table is None:
                    table = pa.concat_tables([pq.read_table(part) for part in parts])
                if table.num_rows != (b - a) * rows:
                    raise RuntimeError(f"{self.dir}: cell {cell.index} has {table.num_rows} "
                                       f"per-seed rows, expected {(b - a) * rows}")
                piece = moments.rows(p, rows, mlp)
                self.ledger.write_piece(cell, a, b, parts[0] if len(parts) == 1 else table,
                                        piece)
                if self.ledger.finish(cell, {(a, b): (table, piece)}):
                    finished.append(cell.index)
        shutil.rmtree(self.dir, ignore_errors=True)
        release_free_memory()  # the unit's tables, freed
        return finished


def _run_unit(run: _UnitRun, executable: Executable, progress: _Progress) -> int:
    """Run one unit to completion; returns the number of inits computed."""
    like = executable.fns[0].out_info[1]["moments"]
    done, moments = run.resume(like)
    n_cells = len(run.unit.cells)
    first, last = run.unit.span
    progress.resumed((done - first) * n_cells)
    progress.start_cells([c.index for c in run.unit.cells])
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
            moments = moments.merge(_first_points(chunk_moments, n_cells))
            done = start + count
            computed += count * n_cells
            progress.advance(count * n_cells)
            if time.perf_counter() - since >= CHECKPOINT_RATIO * write_s and done < last:
                write_s, saved = run.checkpoint(done, moments), done
                since = time.perf_counter()
            _check_stop()
    except Interrupted:
        if done > saved:  # keep every finished chunk: a resume starts after the last one
            run.checkpoint(done, moments)
        raise
    progress.finish_cells(run.finish(moments))
    return computed


def _first_points(moments: ChunkMoments, n: int) -> ChunkMoments:
    """Drop the padding points of the last unit of a bucket."""
    return ChunkMoments(moments.n, jax.tree.map(lambda a: a[:n], moments.tree))


def _stale_units(folder: storage.ResultsFolder, claimed: set[tuple[str, int]],
                 keep: str) -> None:
    """Remove work folders holding pieces this process now holds the locks of (so no other
    process runs them): left by a killed run that planned its units otherwise."""
    units = folder.root / storage.WORK_DIR / "units"
    for record in units.glob("*/unit.json"):
        if record.parent.name == keep:
            continue
        with contextlib.suppress(FileNotFoundError, ValueError):
            pieces = {tuple(p) for p in json.loads(record.read_text())["pieces"]}
            if pieces & claimed:
                shutil.rmtree(record.parent, ignore_errors=True)


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
) -> Report:
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
    folder = storage.ResultsFolder(Path(out))
    use = devices_of(devices)
    say = (lambda msg: None) if quiet else (log or (lambda msg: tqdm.write(msg)))
    report = Report()
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
                for line in inert_lines(storage.load(folder.root, "summary")):
                    say(line)
    finally:
        folder.release()
    return _finish_report(report, started, sweep, shard, folder, max_memory, say, misses)


PASSES = 3  # a piece found unreadable when its cell is finished is dropped and run again


def _groups(sweep: Sweep, only: Sequence[tuple[Sequence[int], tuple[int, int]]]) -> list:
    """`only`'s (cell indices, seeds span) groups as `share_of` gives them."""
    buckets = sweep.buckets()
    bucket_of = {c.index: b for b, bucket in enumerate(buckets, 1) for c in bucket.cells}
    out = []
    for cells, span in only:
        b = bucket_of[cells[0]]
        if any(bucket_of[c] != b for c in cells):
            raise ValueError(f"cells {list(cells)} are not all of one bucket")
        out.append((b, buckets[b - 1], [sweep.cells[c] for c in cells], tuple(span)))
    return out


def _finish_report(report, started, sweep, shard, folder, max_memory, say, misses) -> Report:
    report.wall_s = time.perf_counter() - started
    report.peak_rss = peak_resident_bytes()
    cache = "persistent compile cache off"
    if jax.config.jax_compilation_cache_dir:
        report.cache_misses = cache_events().misses - misses
        cache = (f"loaded {report.from_cache} from the persistent compile cache, "
                 f"{report.cache_misses} cache misses in all")
    spent = ", ".join(f"{phase} {s:.1f} s" for phase, s in report.time_spent().items())
    which = f" (shard {shard[0]}/{shard[1]})" if shard[1] > 1 else ""
    say(f"{sweep.name}{which}: {report.cells} cells run, {report.cells_skipped} already done; "
        f"{report.inits:,} inits in {report.wall_s:.1f} s ({_rate(report.inits_per_s)} inits/s; "
        f"{spent}); compiled {report.compiled} chunk programs, {cache}; "
        f"{_peak_memory(report.peak_rss, max_memory)}; results in {folder.root}")
    return report


def check_shard(shard: tuple[int, int], overwrite: bool) -> None:
    """Refuse a shard outside 1..n, and --overwrite with shards (each would clear the
    others' work)."""
    i, n = shard
    if not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: i must be in 1..n")
    if overwrite and n > 1:
        raise ValueError("--overwrite with --shard: each shard would discard the others' "
                         "work; clear the folder once, then start the shards")


def devices_of(devices: int | Sequence | None) -> list:
    """The local devices to use: all (default), the first `devices`, or those given."""
    if devices is None or isinstance(devices, int):
        local = jax.local_devices()
        return local[: devices or len(local)]
    return list(devices)


def open_ledger(sweep: Sweep, folder: storage.ResultsFolder, meta: dict[str, str],
                overwrite: bool, seed_block: int, say: Callable[[str], None],
                check: bool = True, shard: tuple[int, int] = (1, 1)) -> Ledger:
    """Check and open the folder for `sweep` (moving finished cells an added axis value
    renumbered) and, with `check`, drop finished cells whose files are damaged, to compute
    them again: every page of the shard's own cells is read (its checksum checked), the
    footers of the others (a shard does not read the whole folder)."""
    keys = [cell_key(sweep, cell) for cell in sweep.cells]
    record = storage.run_record(sweep, keys, seed_block)
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


FOOTPRINT_STEP = 64 * 1024**2  # a CPU run reserves its own resident set in steps of this


def device_budget(bucket: Bucket, cells: Sequence[Cell], budget: int, devices: Sequence) -> int:
    """The bytes a group of a bucket's cells may plan its chunks in: `budget` on an
    accelerator; on a CPU backend (device memory is host memory) what is left of it after the
    process's own resident set and the unit's host reserve. The resident set is rounded up to
    FOOTPRINT_STEP so that processes whose footprints differ by a few MB (`validate
    --estimate` and the run it fills the compile cache for) plan the same chunks."""
    if devices[0].platform != "cpu":
        return budget
    held = (_round_up(process_footprint(), FOOTPRINT_STEP)
            + host_reserve(bucket.spec, len(cells), params_of(bucket)))
    return max(budget - held, 1)


def plan_group(sweep: Sweep, bucket: Bucket, cells: Sequence[Cell], span: tuple[int, int],
               budget: int, devices: Sequence, chunk: int | None = None
               ) -> tuple[list[Unit], list[Executable]]:
    """`plan_bucket` for one group of a run's work (cells of `bucket` needing the seeds
    `span`) within the run's `budget`. Safe in any thread."""
    with x64_if_needed(sweep):  # JAX's x64 switch is per thread
        return plan_bucket(bucket, cells, span[1] - span[0],
                           device_budget(bucket, cells, budget, devices), devices, chunk, span)


def fresh_work(sweep: Sweep, seed_block: int = SEED_BLOCK) -> list[tuple]:
    """The (b, bucket, cells, seeds span) groups of a run into an empty folder, as `share_of`
    gives them: each bucket's cells, once per seed block."""
    return [(b, bucket, list(bucket.cells), span)
            for b, bucket in enumerate(sweep.buckets(), 1)
            for span in blocks(sweep.seeds, seed_block)]


def _peak_memory(peak: int | None, budget: int) -> str:
    if peak is None:
        return "peak RSS unknown"
    over = " (over --max-memory)" if peak > budget else ""
    return f"peak RSS {format_bytes(peak)} of {format_bytes(budget)}{over}"


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.3g}"


def _planned(sweep, work, budget, devices, chunk, report) -> Iterator[tuple]:
    """(b, bucket, todo, span, units, built) for each group of `work`, planning (and
    compiling) the next group in a background thread while the caller runs the current one;
    only the wait for a plan counts as compile time. XLA compiles a program on one thread,
    and a CPU sweep's chunks leave part of the cores idle, so the next compile mostly fills
    idle time (measured in docs/performance.md); on a GPU it runs beside the device's
    computation."""
    def plan(bucket, todo, span):
        return plan_group(sweep, bucket, todo, span, budget, devices, chunk)

    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gradjax-compile")
    try:
        future = pool.submit(plan, *work[0][1:]) if work else None
        for i, (b, bucket, todo, span) in enumerate(work):
            with report.phases.timing("compile"):
                _wait_until(future.done)
                units, built = future.result()
            if i + 1 < len(work):
                future = pool.submit(plan, *work[i + 1][1:])
            yield b, bucket, todo, span, units, built
    finally:  # interrupted: a compile under way is left to finish (XLA cannot stop it)
        pool.shutdown(wait=not _STOP.is_set(), cancel_futures=True)


def share_of(sweep: Sweep, ledger: Ledger, shard: tuple[int, int]) -> list[tuple]:
    """The shard's unfinished work as (b, bucket, cells, seeds span) groups: cells of one
    bucket that need the same seeds, in the order of `ledger.owned`."""
    buckets = sweep.buckets()
    bucket_of = {c.index: b for b, bucket in enumerate(buckets, 1) for c in bucket.cells}
    groups: dict[tuple[int, int, int], list[Cell]] = {}
    for cell, block in owned(sweep, ledger.seed_block, shard[0] - 1, shard[1]):
        if ledger.finished(cell):
            continue
        for span in ledger.todo(cell, block):
            groups.setdefault((bucket_of[cell.index], *span), []).append(cell)
    return [(b, buckets[b - 1], cells, (lo, hi)) for (b, lo, hi), cells in groups.items()]


def _claim(ledger: Ledger, unit: Unit) -> tuple[Unit | None, list]:
    """The unit reduced to the cells whose piece this process could lock and that are still
    to do (another process may hold or have done some); and the locks, to close after."""
    block = unit.span[0] // ledger.seed_block
    cells, locks = [], []
    for cell in unit.cells:
        lock = ledger.claim(cell, block)
        if lock is None:
            continue
        if not ledger.finished(cell) and ledger.todo(cell, block) == [unit.span]:
            cells.append(cell)
            locks.append(lock)
        else:
            lock.close()
    mine = dataclasses.replace(unit, cells=tuple(cells)) if cells else None
    if mine is not None:
        claimed = {(ledger.keys[c.index], block) for c in cells}
        _stale_units(ledger.folder, claimed, mine.name(ledger.keys))
    return mine, locks


def _run_share(sweep, ledger, work, devices, budget, chunk, quiet, say, report) -> None:
    schema = storage.per_seed_schema(storage.stat_type(sweep), sweep.extra_options)
    todo = sum(len(cells) * (hi - lo) for _, _, cells, (lo, hi) in work)
    progress = _Progress(sweep.name, len(sweep.cells), report.cells_skipped, todo, quiet, say)
    ran: set[int] = set()
    try:
        for b, bucket, todo, span, units, built in _planned(sweep, work, budget, devices,
                                                            chunk, report):
            executable = built[-1]
            report.compiled += sum(e.source == "compiled" for e in built)
            report.from_cache += sum(e.source == "compile cache" for e in built)
            _say_bucket(say, b, len(sweep.buckets()), bucket, todo, span, units, built, budget,
                        len(devices))
            for planned in units:
                _check_stop()
                unit, locks = _claim(ledger, planned)
                if unit is None:
                    progress.resumed(len(planned.cells) * (span[1] - span[0]))
                    continue
                try:
                    run = _UnitRun(sweep, ledger, unit, schema, report.phases)
                    try:
                        report.inits += _run_unit(run, executable, progress)
                    finally:
                        run.close()
                finally:
                    for lock in locks:
                        lock.close()
                ran.update(c.index for c in unit.cells)
                report.units.append({"cells": [c.index for c in unit.cells],
                                     "seeds": list(span), "chunk": executable.chunk,
                                     "points": executable.points,
                                     "peak_bytes": executable.peak_bytes})
    finally:
        progress.close()
    report.cells += len(ran)


def _say_bucket(say, b, n_buckets, bucket, todo, span, units, built, budget, n_devices) -> None:
    executable = built[-1]
    how = {"compiled": "compiled", "compile cache": "loaded from the compile cache",
           "memory": "already compiled"}[executable.source]
    over = " (over budget: the smallest chunk)" if executable.peak_bytes > budget else ""
    host = moment_bytes(bucket.spec, len(units[0].cells), params_of(bucket))
    seeds = "" if span[0] == 0 else f", seeds {span[0]}..{span[1] - 1}"
    say(f"bucket {b}/{n_buckets} {describe_spec(bucket.spec)}: {len(todo)} cells in "
        f"{len(units)} unit(s){seeds}; chunk {executable.chunk} seeds x {executable.points} "
        f"points on {n_devices} device(s); device memory "
        f"{format_bytes(executable.peak_bytes)} of {format_bytes(budget)}{over}, "
        f"across-seed moments {format_bytes(host)} on the host; {how} in "
        f"{sum(e.compile_s for e in built):.1f} s")
