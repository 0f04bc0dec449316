"""Planning a run: packs of cells and chunks of seeds within a memory budget.

A bucket's cells run together as one pack (their scale, bias_scale and data are traced inputs,
one "point" per cell) unless the budget cannot hold the smallest chunk for all of them. The chunk
size starts from the budget's estimate (`gradjax.sweep.budget.estimate_bytes`, `first_plan`),
then is checked against XLA's memory analysis of the compiled program (`plan_bucket`). On a CPU
backend the budget also holds the process (`device_budget`) and each pack's host memory, in
proportion to its points (`host_per_point`): a bucket whose float64 moments are large runs as
many points per pack as the budget holds.

Chunk sizes (seeds per device) and pack sizes (points) come from one fixed ladder, 2^k and
3 * 2^(k-1) (`rung_up`, `rung_down`). The same bucket then compiles the same program whether it
runs whole, resumed, grown within a rung, as a shard or as a Ray task (each plans from the
bucket's cells and the sweep's seeds, not from its share: `plan_group`), and the persistent
compile cache has it. A padded seed is computed and dropped: at most a third of a chunk for a
sweep's own seeds, more where a few added seeds fill the chunk the sweep was planned with. A
padded point is never computed (`gradjax.probe.chunking.loop_over_points`)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence

from gradjax.probe import tree_probe
from gradjax.probe.chunking import make_points
from gradjax.results.ledger import blocks
from gradjax.results.results_folder import SEED_BLOCK
from gradjax.run.executables import Executable, build_executable
from gradjax.run.model_check import x64_if_needed
from gradjax.spec import MIN_ARRAY_AXIS, ProbeSpec, capabilities
from gradjax.sweep import Bucket, Cell, Sweep
from gradjax.sweep.budget import (
    estimate_bytes,
    host_reserve,
    param_count,
    process_footprint,
)

GROW_IF, GROW_TO = 2.0, 0.8  # re-plan a chunk XLA says could be 2x larger, to 80% of budget

# A network this small (parameter entries x batch examples of one init) compiles at LLVM -O0 on a
# CPU: 40 % less compile for a tiny net whose run takes milliseconds either way.
QUICK_WORK = 4096
QUICK = {"xla_backend_optimization_level": 0}


def round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def rung_up(n: int) -> int:
    """The smallest size of the ladder (2, 3, 4, 6, 8, 12, 16, 24, ...) that is >= n."""
    size = MIN_ARRAY_AXIS
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def rung_down(n: int) -> int:
    """The largest size of the ladder that is <= n (MIN_ARRAY_AXIS below it)."""
    size = rung_up(n)
    if size <= n or size == MIN_ARRAY_AXIS:
        return size
    return size * 3 // 4 if size & (size - 1) == 0 else size * 2 // 3


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a bucket runs: packs of `points` cells each, chunks of `chunk` seeds."""

    points: int
    chunk: int


def initial_plan(spec: ProbeSpec, n_cells: int, seeds: int, budget: int, n_devices: int,
                 n_params: int | None = None, per_point: int = 0) -> Plan:
    """The largest chunk the estimate allows, on the ladder, with `per_point` bytes held beside
    the chunk for each of a pack's cells (a padding point keeps nothing on the host); only if
    the smallest chunk does not fit, fewer points per pack, down the ladder, to the most that
    fit."""
    smallest = MIN_ARRAY_AXIS * n_devices
    points = n_cells

    def need(chunk: int, points: int) -> int:
        return estimate_bytes(spec, chunk, rung_up(points), n_params) + per_point * points

    while points > 1 and need(smallest, points) > budget:
        points = 1 if points <= MIN_ARRAY_AXIS else rung_down(points - 1)  # down the ladder
    per_seed = need(1, points) - need(0, points)
    per_device = (budget - need(0, points)) // per_seed // n_devices
    return Plan(points, on_ladder(per_device * n_devices, seeds, n_devices))


def on_ladder(chunk: int, seeds: int, n_devices: int) -> int:
    """The ladder's chunk for at most `chunk` seeds (all `seeds` in one, if they fit): on each
    device the largest rung that fits, or the smallest that holds every seed."""
    per_device = min(rung_down(max(chunk // n_devices, 1)), rung_up(-(-seeds // n_devices)))
    return per_device * n_devices


@dataclasses.dataclass(frozen=True)
class Pack:
    """Cells of one bucket that run together; `size` points (the last cell repeated to pad)."""

    bucket: Bucket
    cells: tuple[Cell, ...]
    size: int
    seed_range: tuple[int, int] = (0, 0)  # the seeds [a, b) it computes for each of its cells

    def name(self, keys: dict[int, str]) -> str:
        """Its work folder's name: what it computes (cell keys and seeds), not the cells'
        indices, which change when an axis grows."""
        what = ",".join(keys[c.index] for c in self.cells) + f":{self.seed_range}"
        digest = hashlib.sha1(what.encode()).hexdigest()[:12]
        return f"pack-{self.cells[0].index:05d}-{len(self.cells)}-{digest}"

    def points(self) -> dict:
        padded = (*self.cells, *([self.cells[-1]] * (self.size - len(self.cells))))
        return make_points(self.bucket.spec, **self.bucket.points(padded))


def packs_of(bucket: Bucket, cells: Sequence[Cell], points: int,
             seed_range: tuple[int, int] = (0, 0)) -> list[Pack]:
    """Consecutive groups of `points` cells, each padded to the ladder's size for `points` (at
    least MIN_ARRAY_AXIS: an axis of size 1 would change XLA's reductions)."""
    step = min(points, len(cells))
    size = rung_up(points)
    return [Pack(bucket, tuple(cells[i : i + step]), size, seed_range)
            for i in range(0, len(cells), step)]


def tensors_of(bucket: Bucket) -> int:
    """Parameter tensors of one init (shapes from options: a weight and a bias per layer)."""
    if capabilities(bucket.spec.model).shapes_from_options:
        return 2 * (len(bucket.spec.sizes) - 1)
    points = make_points(bucket.spec, **bucket.points(bucket.cells[:1]))
    return tree_probe.param_tensors(bucket.spec, points)


def params_of(bucket: Bucket) -> int | None:
    """Entries of one init's parameters, traced from the model (None for a family whose shapes
    follow from its options: `gradjax.sweep.budget.param_count` knows them)."""
    if capabilities(bucket.spec.model).shapes_from_options:
        return None
    points = make_points(bucket.spec, **bucket.points(bucket.cells[:1]))
    return tree_probe.param_count(bucket.spec, points)


def compile_options(bucket: Bucket, devices: Sequence) -> dict:
    """XLA's options for the bucket's program: `QUICK` (LLVM at -O0) for a network of at most
    QUICK_WORK parameter entries x batch examples on a CPU, else XLA's defaults.

    -O0 compiles the seed sweep's programs in 3.3 s instead of 6.0, and runs the 2-3-1 net at
    3.4 us per init and point instead of 0.7; a depth-10 width-128 net, batch 64, it runs 5x
    slower (39 ms per init and point instead of 7.8), so larger networks keep the default. The
    choice follows from the bucket alone (never from its seeds or chunk), so every run of it
    gives the same numbers; the two levels differ by float32 rounding.
    """
    if devices[0].platform != "cpu":
        return {}
    n_params = params_of(bucket)
    n_params = param_count(bucket.spec) if n_params is None else n_params
    return dict(QUICK) if n_params * bucket.spec.batch <= QUICK_WORK else {}


def even_chunks(plan: Plan, seeds: int, n_devices: int) -> Plan:
    """The same number of chunks, but the smallest rung that holds the seeds in them: a
    192-seed chunk for 256 seeds would pad the second chunk with 128 seeds computed for
    nothing; two of 128 do not."""
    n_chunks = math.ceil(seeds / plan.chunk)
    return Plan(plan.points, on_ladder(plan.chunk, math.ceil(seeds / n_chunks), n_devices))


def first_plan(bucket: Bucket, cells: Sequence[Cell], seeds: int, budget: int,
               n_devices: int, per_point: int = 0) -> Plan:
    """The plan `plan_bucket` starts from, before XLA's memory analysis corrects it: the
    budget's estimate (`initial_plan`) in equal chunks. No compile. The points per pack are
    planned for all of the bucket's cells, so that a share of them packs like the whole."""
    return even_chunks(initial_plan(bucket.spec, len(bucket.cells), seeds, budget, n_devices,
                                    params_of(bucket), per_point), seeds, n_devices)


def plan_bucket(
    bucket: Bucket, cells: Sequence[Cell], seeds: int, budget: int, devices: Sequence,
    chunk: int | None = None, seed_range: tuple[int, int] | None = None, per_point: int = 0,
) -> tuple[list[Pack], list[Executable]]:
    """Packs for a bucket's unfinished `cells` within `budget` bytes, less `per_point` for each
    point of a pack, computing `seeds` seeds each (the seeds `seed_range`, default [0, seeds)),
    and the executables built on the way (the last one is used).

    Starts from the estimate, then shrinks the chunk (then the points per pack) while XLA's
    memory analysis says the budget is exceeded, or grows the chunk once if it says the
    estimate was too cautious by GROW_IF or more; a given `chunk` is used as is.
    """
    n_dev = len(devices)
    smallest = MIN_ARRAY_AXIS * n_dev

    def even(p: Plan) -> Plan:
        return even_chunks(p, seeds, n_dev)

    plan = first_plan(bucket, cells, seeds, budget, n_dev, per_point)
    if chunk is not None:
        plan = Plan(len(bucket.cells), round_up(max(chunk, smallest), n_dev))
    built, options = [], compile_options(bucket, devices)  # once: it traces a plug-in
    largest = max(smallest, round_up(seeds, n_dev))
    seed_range = (0, seeds) if seed_range is None else seed_range
    while True:
        packs = packs_of(bucket, cells, plan.points, seed_range)
        executable = build_executable(bucket.spec, packs[0].points(), plan.chunk, devices,
                                      options)
        built.append(executable)
        if chunk is not None:
            return packs, built
        scale = max(budget - per_point * plan.points, 1) / executable.peak_bytes
        grown = min(largest, int(plan.chunk * GROW_TO * scale) // n_dev * n_dev)
        if scale >= 1 and len(built) == 1 and grown >= GROW_IF * plan.chunk:
            plan = even(Plan(plan.points, grown))  # the estimate was far too cautious: grow once
        elif scale >= 1:
            return packs, built
        elif plan.chunk > smallest:
            plan = even(Plan(plan.points, max(smallest, int(plan.chunk * scale) // n_dev * n_dev)))
        elif plan.points > 1:
            plan = Plan(max(1, int(plan.points * scale)), plan.chunk)
        else:
            return packs, built  # the smallest program; the log says it is over budget


FOOTPRINT_STEP = 64 * 1024**2  # a CPU run reserves its own resident set in steps of this


def device_budget(budget: int, devices: Sequence) -> int:
    """The bytes a bucket's packs may plan their chunks and host memory in: `budget` on an
    accelerator; on a CPU backend (device memory is host memory) what is left of it after the
    process's own resident set. The resident set is rounded up to FOOTPRINT_STEP so that
    processes whose footprints differ by a few MB (`validate --estimate` and the run it fills
    the compile cache for) plan the same chunks."""
    if devices[0].platform != "cpu":
        return budget
    return max(budget - round_up(process_footprint(), FOOTPRINT_STEP), 1)


def host_per_point(bucket: Bucket, devices: Sequence) -> int:
    """Host bytes a pack holds beside its device buffers for each of its points
    (`gradjax.sweep.budget.host_reserve` of one point), which its chunk must leave room for on a
    CPU backend; 0 on an accelerator, whose chunk has the device to itself."""
    if devices[0].platform != "cpu":
        return 0
    return host_reserve(bucket.spec, 1, params_of(bucket))


def plan_group(sweep: Sweep, bucket: Bucket, cells: Sequence[Cell],
               seed_range: tuple[int, int], budget: int, devices: Sequence,
               chunk: int | None = None) -> tuple[list[Pack], list[Executable]]:
    """`plan_bucket` for one group of a run's work (cells of `bucket` needing the seeds
    `seed_range`) within the run's `budget`, planned as for the whole bucket and the sweep's
    seeds (`planned_seeds`), so that every share, resume and growth of it plans the same
    program. Safe in any thread."""
    with x64_if_needed(sweep):  # JAX's x64 switch is per thread
        return plan_bucket(bucket, cells, planned_seeds(sweep, seed_range),
                           device_budget(budget, devices), devices, chunk, seed_range,
                           host_per_point(bucket, devices))


def planned_seeds(sweep: Sweep, seed_range: tuple[int, int]) -> int:
    """The seeds a group's chunk is planned for: the sweep's (at most one SEED_BLOCK), not only
    the group's own. Seeds added to a sweep then run in the chunk its first run compiled, at the
    cost of padding that chunk (see `on_ladder`)."""
    return max(seed_range[1] - seed_range[0], min(sweep.seeds, SEED_BLOCK))


def fresh_work(sweep: Sweep, seed_block: int = SEED_BLOCK) -> list[tuple]:
    """The (b, bucket, cells, seed range) groups of a run into an empty folder, as `share_of`
    gives them: each bucket's cells, once per seed block."""
    return [(b, bucket, list(bucket.cells), seed_range)
            for b, bucket in enumerate(sweep.buckets(), 1)
            for seed_range in blocks(sweep.seeds, seed_block)]
