"""`gradjax validate --estimate`: a run's time and memory from a model of its cost, compiling
nothing.

Timing the run's own programs would cost what the run's compiles cost, which is most of a small
run, so the estimate prices each program from its shape instead:

- plan: each group of work as `gradjax run` starts it (`plan.first_plan`: chunk and points
  from the budget's byte estimate, before XLA's memory analysis of the compiled program corrects
  them), in the same groups (`plan.fresh_work`);
- start: START_S, for the process, its imports and a small sweep's writes;
- compile: COMPILE_S per program plus the kernel's compile_seconds_per_tensor per parameter
  tensor of one init, times QUICK_COMPILE for a tiny network's program (`plan.compile_options`);
- compute: per chunk, CHUNK_S, and per (seed, point) flops / FLOP_RATE + entries / ENTRY_RATE +
  tensors x the kernel's seconds_per_tensor, with flops = 6 x batch x parameters (forward and
  backward of dense layers; a convolution or attention reuses its parameters, so its flops are
  counted low) and entries = parameters (the statistics read every gradient entry about a dozen
  times).

The constants were fitted to runs on the reference machine (2 CPU cores; the fit and its error
are in docs/sweeps.md, and `benchmarks/estimate_accuracy.py` remeasures them), and the
seconds are that machine's: a faster CPU or an accelerator takes less. They are not scaled by a
quick timing of this machine, because on a shared or virtual machine such a timing varied by
40 % between processes (more than the model's own error), and it would time the host, not the
accelerator. Parquet writes beyond a small sweep's are not in the time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

from gradjax.probe.programs import kernel_of
from gradjax.results.results_folder import SEED_BLOCK
from gradjax.run import engine, plan
from gradjax.run.preflight import check_sweep
from gradjax.sweep import Bucket, Sweep
from gradjax.sweep.budget import estimate_bytes, moment_bytes, param_count

# fitted on the reference machine to 8 single-bucket sweeps (MLPs of width 3 to 512 and depth
# 1 to 32, resmlp, an Equinox CNN, a Flax NNX transformer block); the per-tensor cost of the
# statistics and of compiling them are the probe's
START_S = 3.5  # starting Python and JAX, and a small sweep's folder and Parquet writes
COMPILE_S = 11.5  # per program, plus the kernel's compile_seconds_per_tensor per tensor
QUICK_COMPILE = 0.4  # of that, at plan.QUICK: the seed sweep's 4.4 s per program against 11.6
CHUNK_S = 0.015  # dispatching a chunk and fetching its results
FLOP_RATE = 6.4e9  # flops per second of the probe's forward and backward passes
ENTRY_RATE = 8e7  # gradient entries per second through the statistics and moments


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What `estimate_run` predicts for a run into an empty folder."""

    compile_s: float  # compiling every program, one after another
    compute_s: float  # every chunk of every pack
    device_bytes: int  # the largest chunk's bytes, as the budget's estimate puts them
    host_bytes: int  # the largest pack's across-seed moments
    programs: int  # distinct chunk programs the run compiles
    chunks: int  # chunks the run computes
    wall_s: float  # what the estimate itself took
    start_s: float = START_S

    @property
    def total_s(self) -> float:
        return self.start_s + self.compile_s + self.compute_s


def estimate_run(sweep: Sweep, budget: int, devices: int | Sequence | None = None,
                 seed_block: int = SEED_BLOCK) -> Estimate:
    """The time and memory of `gradjax run SWEEP` into an empty folder within `budget` bytes,
    from the run's first plans and the cost model above. Compiles nothing and writes nothing;
    raises `SweepError` where `run` would refuse the sweep."""
    started = time.perf_counter()
    check_sweep(sweep, budget)
    use = engine.devices_of(devices)
    programs: set[tuple] = set()
    compile_s = compute_s = 0.0
    device_bytes = host_bytes = chunks = 0
    for b, bucket, cells, seed_range in plan.fresh_work(sweep, seed_block):
        seeds = seed_range[1] - seed_range[0]
        chosen = plan.first_plan(bucket, cells, plan.planned_seeds(sweep, seed_range),
                                 plan.device_budget(budget, use), len(use),
                                 plan.host_per_point(bucket, use))
        packs = plan.packs_of(bucket, cells, chosen.points, seed_range)
        size, n_params, tensors = packs[0].size, parameters(bucket), plan.tensors_of(bucket)
        traced = plan.params_of(bucket)  # None where the budget knows the sizes itself
        if (b, chosen.chunk, size) not in programs:
            programs.add((b, chosen.chunk, size))
            quick = QUICK_COMPILE if plan.compile_options(bucket, use) else 1.0
            compile_s += quick * (COMPILE_S
                                  + tensors * kernel_of(bucket.spec).compile_seconds_per_tensor)
        n_chunks = math.ceil(seeds / chosen.chunk) * len(packs)
        per_init = (6 * bucket.spec.batch * n_params / FLOP_RATE + n_params / ENTRY_RATE
                    + tensors * kernel_of(bucket.spec).seconds_per_tensor)
        compute_s += n_chunks * (CHUNK_S + chosen.chunk * size * per_init / len(use))
        chunks += n_chunks
        device_bytes = max(device_bytes, estimate_bytes(bucket.spec, chosen.chunk, size, traced))
        host_bytes = max(host_bytes, moment_bytes(bucket.spec, size, traced))
    return Estimate(compile_s, compute_s, device_bytes, host_bytes, len(programs), chunks,
                    time.perf_counter() - started)


def parameters(bucket: Bucket) -> int:
    """Entries of one init's parameters."""
    n = plan.params_of(bucket)
    return param_count(bucket.spec) if n is None else n
