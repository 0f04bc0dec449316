"""`gradjax bench`: gradjax against its peers, side by side, in one run.

For each workload and implementation, in a fresh process of its own (so that peak RSS is that
measurement's own, and a GPU run's parent never holds the device):

  inits/s        median and min..max over `--reps` timed repetitions of the whole workload,
                 after a warm-up; statistics included, copied back to the host
  compute_s ...  gradjax: where one timed `gradjax run` spent its time (compute: chunks
                 dispatched and their results awaited; write: Parquet and checkpoints; other)
  compile_s      JAX's own trace + lowering + backend compile durations (jax.monitoring)
  peak_rss_mb    the process's peak resident set (ru_maxrss), with `base_rss_mb` after imports
  gflops         achieved "useful" GFLOP/s: 6 * batch * sum(fan_in * fan_out) per init (forward
                 and backward matmuls) times inits/s, and `pct_of_peak`, its share of the same
                 run's measured f32 matmul peak (a jitted 2048^3 matmul)
  cpu_wall       CPU time / wall time of the timed repetitions: about the thread count on a
                 quiet machine, lower when another process holds a core

Implementations: `gradjax` (`gradjax run` itself: `engine.execute_sweep` on the workload's sweep
file, `Workload.sweep_text`, Parquet writes included), `numpy_vec` and `numpy_loop` (see
`gradjax.bench.numpy_peer`; the loop times `loop_inits` inits and extrapolates), and `torch_func`
(`gradjax.bench.torch_peer`: `torch.func.vmap(grad)`, the same draws as numpy_vec; measured only
where torch is installed, otherwise listed as not measured). The peers draw their own random
numbers and compute the same statistics (tests/test_baselines.py), and each writes the same
per-seed table to Parquet as it goes (`gradjax.bench.peer_tables`), as its user would have to:
every row is timed on both sides. `write_s` is that share of a run (the mean over the timed
runs; numpy_loop's, of the `loop_inits` it times). A peer's memory estimate counts a chunk's
table.

Memory: `--max-memory` is the budget `gradjax run` plans its chunks in (XLA's memory analysis of
the compiled program; peers: `numpy_peer.vec_bytes_per_init`), after the process's own
footprint; each measured peak RSS is then checked against it. On GPU / TPU the analysis is of
device memory, reported as `device_peak_mb`.

This module holds the measuring: a `Job` is one measurement, run by `run_job` in this process
or by `run_isolated` in a fresh one. The workloads are data (`gradjax.bench.workloads`), the
records are made in `gradjax.bench.record` and the command line is `gradjax.bench.command`, so
a test or a script can measure its own workload. See docs/performance.md.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gradjax.bench import numpy_peer, torch_peer
from gradjax.bench.peer_tables import PeerTables
from gradjax.bench.workloads import Workload
from gradjax.sweep.budget import peak_resident_bytes

IMPLS: tuple[str, ...] = ("gradjax", "numpy_vec", "numpy_loop", "torch_func")
PEERS: tuple[str, ...] = ("numpy_vec", "numpy_loop", "torch_func")  # run with --blas-threads
COMPILE_EVENTS: tuple[str, ...] = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
BLAS_THREAD_VARS: tuple[str, ...] = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


# ----------------------------------------------------------------------------- measuring


@dataclasses.dataclass(frozen=True)
class Job:
    """One measurement, run in a process of its own (picklable)."""

    impl: str  # one of IMPLS, or "peak" for the matmul peak
    workload: Workload | None = None
    reps: int = 5
    max_memory: int | None = None  # bytes
    chunk: int | None = None  # overrides workload.chunk
    matmul_n: int = 2048
    blas_threads: int | None = None  # BLAS / torch threads of a peer's process


class CompileLog:
    """Counts and times JAX compilations while active (jax.monitoring listeners)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.compiles = 0
        self.cache_hits = 0

    def _duration(self, event: str, duration: float, **kwargs: Any) -> None:
        if event in COMPILE_EVENTS:
            self.seconds += duration
            self.compiles += event == COMPILE_EVENTS[-1]

    def _event(self, event: str, **kwargs: Any) -> None:
        self.cache_hits += event == "/jax/compilation_cache/cache_hits"

    def __enter__(self) -> CompileLog:
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)
        return self

    def __exit__(self, *exc: object) -> None:
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._duration)
        jax.monitoring.unregister_event_listener(self._event)

    @property
    def backend_compiles(self) -> int:
        """Compilations not served by the persistent compilation cache."""
        return self.compiles - self.cache_hits


def peak_rss_mb() -> float | None:
    """This process's peak resident set size so far, in MiB (None where unknown)."""
    peak = peak_resident_bytes()
    return None if peak is None else peak / 2**20


def timed_reps(run: Callable[[], None], reps: int) -> tuple[list[float], float]:
    """Wall seconds of each of `reps` calls of `run`, and CPU time / wall time over them all."""
    walls = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        start = time.perf_counter()
        run()
        walls.append(time.perf_counter() - start)
    return walls, (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def rates(count: float, walls: list[float]) -> tuple[float, float, float]:
    """count per second: (median, min, max) over the timed repetitions."""
    return count / statistics.median(walls), count / max(walls), count / min(walls)


def _inits_rates(inits: int, walls: list[float]) -> dict[str, float]:
    median, low, high = rates(inits, walls)
    return {"inits_per_s": median, "inits_per_s_min": low, "inits_per_s_max": high}


def measure_matmul_peak(n: int = 2048, reps: int = 5) -> dict[str, Any]:
    """GFLOP/s of a jitted n^3 float32 matmul (median and min..max over reps), and the device."""
    import jax
    import jax.numpy as jnp

    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    walls, cpu_wall = timed_reps(lambda: jax.block_until_ready(matmul(a, b)), reps)
    median, low, high = rates(2 * n**3 / 1e9, walls)
    device = jax.devices()[0]
    return {
        **measure_draw_rate(reps=reps),
        "matmul_n": n,
        "matmul_gflops": median,
        "matmul_gflops_min": low,
        "matmul_gflops_max": high,
        "matmul_cpu_wall": cpu_wall,
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
    }


def measure_draw_rate(n: int = 2**24, reps: int = 5) -> dict[str, Any]:
    """Float32 standard normals per second (median, min..max over reps) drawn as the probe
    draws them: `jax.random.normal` on a typed key, with gradjax's threefry lowering."""
    import jax  # the compute stack only when measuring: `bench --help` loads no JAX
    import jax.numpy as jnp

    from gradjax.nn import keys

    draw = jax.jit(lambda key: jax.random.normal(key, (n,), jnp.float32))
    key = keys.init_key(0, 0)
    jax.block_until_ready(draw(key))
    walls, _ = timed_reps(lambda: jax.block_until_ready(draw(key)), reps)
    median, low, high = rates(n, walls)
    return {"draw_rate": median, "draw_rate_min": low, "draw_rate_max": high}


def _device_peak_mb() -> float | None:
    import jax

    stats = jax.local_devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None  # the CPU client keeps no such statistics
    return stats["peak_bytes_in_use"] / 2**20


def _budget(job: Job, base_mb: float | None) -> float | None:
    """Bytes left for the workload under --max-memory, after what the process already holds."""
    if job.max_memory is None:
        return None
    return job.max_memory - (base_mb or 0.0) * 2**20


def _measure_gradjax(job: Job) -> dict[str, Any]:
    """`gradjax run` itself (`engine.execute_sweep`: its programs, host loop and Parquet writes)
    on the workload's sweep, into a temporary folder; the warm-up run compiles, the timed
    ones reuse the process's compiled programs."""
    from gradjax.run.engine import execute_sweep  # the compute stack: not for `bench --help`
    from gradjax.sweep import parse_sweep
    from gradjax.sweep.budget import DEFAULT_MAX_MEMORY

    w = job.workload
    sweep = parse_sweep(w.sweep_text(), w.source or f"<bench {w.name}>")
    base = peak_rss_mb()
    memory = DEFAULT_MAX_MEMORY if job.max_memory is None else job.max_memory
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        def run() -> None:
            reports.append(execute_sweep(sweep, Path(tmp) / "out", overwrite=True, quiet=True,
                                     chunk=job.chunk, max_memory=memory, refuse_over=False))

        with CompileLog() as compile_log:
            run()  # warm-up
        with CompileLog() as rerun_log:
            walls, cpu_wall = timed_reps(run, job.reps)
    packs = reports[-1].packs
    spent = reports[-1].time_spent()  # one timed run of `gradjax run`: where its time went
    return {
        "compute_s": spent["compute"], "write_s": spent["write"], "other_s": spent["other"],
        **_inits_rates(w.inits, walls),
        "inits_timed": w.inits, "extrapolated": False, "cpu_wall": cpu_wall,
        "compile_s": compile_log.seconds, "compiles": compile_log.backend_compiles,
        "cache_hits": compile_log.cache_hits, "recompiles": rerun_log.compiles,
        "chunk": min(p["chunk"] for p in packs), "base_rss_mb": base,
        "device_peak_mb": _device_peak_mb(),
        "memory_estimate_mb": max(p["peak_bytes"] for p in packs) / 2**20,
    }


def peer_run(job: Job, seeds: int, chunk: int, tables: PeerTables) -> Callable[[], None]:
    """One run of the peer `job.impl` over `seeds` seeds of the workload, in chunks of `chunk`
    seeds, each chunk's per-seed table written by `tables` as it comes (numpy_loop: its
    inits' rows written at the end of each bucket)."""
    def run() -> None:
        for b, p in enumerate(job.workload.buckets):
            args = (p.spec, seeds, p.scales, p.bias_scales, p.xs, p.ys)
            if job.impl == "numpy_loop":
                inits = list(numpy_peer.numpy_loop(*args))
                tables.write(b, 0, {k: np.stack([s[k] for s in inits]) for k in inits[0]})
                continue
            stream: Iterator = (torch_peer.torch_func(*args, chunk=chunk)
                                if job.impl == "torch_func"
                                else numpy_peer.numpy_vec(*args, chunk=chunk))
            first = 0
            for stats in stream:
                tables.write(b, first, stats)
                first += len(stats["loss_value"])

    return run


def _measure_peer(job: Job) -> dict[str, Any]:
    """A numpy or torch peer. torch_func runs with `job.blas_threads` torch threads when set
    (restored afterwards), and reports the count it ran with as `torch_threads`."""
    if job.impl != "torch_func":
        return _measure_chunks(job)
    torch = torch_peer.import_torch()
    previous = torch.get_num_threads()
    if job.blas_threads is not None:
        torch.set_num_threads(job.blas_threads)
    try:
        out = _measure_chunks(job)
        out["torch_threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return out


def _measure_chunks(job: Job) -> dict[str, Any]:
    """numpy_vec and torch_func (over chunks of inits), or numpy_loop (one init at a time)."""
    vectorized = job.impl != "numpy_loop"
    w = job.workload
    base = peak_rss_mb()
    budget = _budget(job, base)
    chunk = job.chunk or w.chunk
    estimate = None
    seeds = w.n_inits if vectorized else w.loop_inits
    with tempfile.TemporaryDirectory() as tmp:
        tables = PeerTables(w, Path(tmp))
        if vectorized:
            per_init = (max(numpy_peer.vec_bytes_per_init(p.spec, p.n_points)
                            for p in w.buckets) + tables.bytes_per_init())
            if budget is not None:
                chunk = max(1, min(chunk, 2 ** int(math.log2(max(budget // per_init, 1)))))
            estimate = per_init * chunk / 2**20
        run = peer_run(job, seeds, chunk, tables)
        run()  # warm-up
        tables.seconds = 0.0
        walls, cpu_wall = timed_reps(run, job.reps)
    inits = seeds * sum(p.n_points for p in w.buckets)
    return {
        **_inits_rates(inits, walls), "write_s": tables.seconds / job.reps,
        "inits_timed": inits, "extrapolated": inits < w.inits, "cpu_wall": cpu_wall,
        "compile_s": 0.0, "compiles": 0, "cache_hits": 0, "recompiles": 0,
        "chunk": chunk if vectorized else 1, "base_rss_mb": base, "device_peak_mb": None,
        "memory_estimate_mb": estimate,
    }


def run_job(job: Job) -> dict[str, Any]:
    """Run one measurement in this process; returns its fields (peak RSS taken at the end)."""
    if job.impl == "peak":
        return measure_matmul_peak(job.matmul_n, max(job.reps, 5))
    if job.impl == "torch_func":
        try:
            torch_peer.import_torch()
        except ImportError as err:  # not measured; the message says how to install it
            return {"error": str(err)}
    for bucket in job.workload.buckets:
        if job.impl != "gradjax":
            numpy_peer.check_supported(bucket.spec)
    measure = _measure_gradjax if job.impl == "gradjax" else _measure_peer
    out = measure(job)
    out.update(reps=job.reps, peak_rss_mb=peak_rss_mb())
    if job.impl != "gradjax":
        out["blas_threads"] = blas_threads_setting()
    return out


def blas_threads_setting() -> int | None:
    """The BLAS thread count this process's environment asks for (None: BLAS's default)."""
    for name in BLAS_THREAD_VARS:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def _child(conn, job: Job) -> None:
    try:
        result = run_job(job)
    except Exception as err:  # reported in the record, the other measurements go on
        result = {"error": f"{type(err).__name__}: {err}"}
    conn.send(result)
    conn.close()


def run_isolated(job: Job) -> dict[str, Any]:
    """`run_job` in a fresh spawned process (its own peak RSS; the parent never starts JAX).

    A peer's process gets `job.blas_threads` in the BLAS thread variables, which BLAS reads
    when numpy loads (and torch when it loads; torch_func also calls torch.set_num_threads)."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, job), daemon=True)
    env = {}
    if job.blas_threads is not None and job.impl in PEERS:
        env = dict.fromkeys(BLAS_THREAD_VARS, str(job.blas_threads))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    proc.join()
    if result is None:
        return {"error": f"the measuring process died (exit code {proc.exitcode})"}
    return result
