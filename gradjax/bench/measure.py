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
`gradjax.bench.peers`; the loop times `loop_inits` inits and extrapolates), and `torch_func`
(`torch.func.vmap(grad)`, the same draws as numpy_vec; measured only where torch is installed,
otherwise listed as not measured). The peers draw their own random numbers and compute the
same statistics (tests/test_baselines.py).

Memory: `--max-memory` is the budget `gradjax run` plans its chunks in (XLA's memory analysis of
the compiled program; peers: `baselines.vec_bytes_per_init`), after the process's own
footprint; each measured peak RSS is then checked against it. On GPU / TPU the analysis is of
device memory, reported as `device_peak_mb`.

The workloads are data (`WORKLOADS`, `Workload`, `Part`), so a test or a script can measure
its own with `run_job` / `run_isolated` and `make_record`. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from gradjax.bench import peers as baselines
from gradjax.spec import ProbeSpec, layer_sizes
from gradjax.sweep.budget import peak_resident_bytes, size_argument

IMPLS: tuple[str, ...] = ("gradjax", "numpy_vec", "numpy_loop", "torch_func")
PEERS: tuple[str, ...] = ("numpy_vec", "numpy_loop", "torch_func")  # run with --blas-threads
RECORD_KEYS: tuple[str, ...] = (
    "workload", "impl", "inits", "inits_timed", "extrapolated", "reps", "inits_per_s",
    "inits_per_s_min", "inits_per_s_max", "compile_s", "compiles", "recompiles", "cache_hits",
    "chunk", "peak_rss_mb", "base_rss_mb", "device_peak_mb", "memory_estimate_mb",
    "within_memory", "gflops", "pct_of_peak", "cpu_wall", "blas_threads", "torch_threads",
    "compute_s", "write_s", "other_s", "points", "normals_per_init", "bound_inits_per_s",
    "pct_of_bound", "error",
)
COMPILE_EVENTS: tuple[str, ...] = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
BLAS_THREAD_VARS: tuple[str, ...] = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


@dataclasses.dataclass(frozen=True, eq=False)
class Part:
    """One compiled program of a workload: a `ProbeSpec` and its points (one per cell)."""

    spec: ProbeSpec
    scales: tuple[float, ...] = (1.0,)
    bias_scales: tuple[float, ...] = (1.0,)
    xs: np.ndarray | None = None  # [P, batch, in_dim] when spec.inputs == "fixed"
    ys: np.ndarray | None = None  # [P, batch, out_dim] when spec.targets == "fixed"

    @property
    def n_points(self) -> int:
        return len(self.scales)


@dataclasses.dataclass(frozen=True, eq=False)
class Workload:
    """What one benchmark row measures: `n_inits` seeds, each probed at every point of every
    part; an "init" below is one (seed, point) evaluation."""

    name: str
    description: str
    parts: tuple[Part, ...]
    n_inits: int
    chunk: int  # seeds per numpy_vec / torch_func step (gradjax plans its own, as `run` does)
    loop_inits: int  # seeds the numpy loop times (then extrapolated)
    root_seed: int = 0
    text: str | None = None  # the sweep file a workload was made from (`sweep_workload`)
    source: str = ""  # that file's path: plug-in models are imported from its folder

    def sweep_text(self) -> str:
        """The workload as a sweep file: what `gradjax run` would be given (its own text for
        `sweep_workload`; otherwise one cell per (part, point), the first as [defaults])."""
        if self.text is not None:
            return self.text
        cells = [_cell_options(p, i) for p in self.parts for i in range(p.n_points)]
        lines = [f'name = "bench-{self.name}"', f"seeds = {self.n_inits}",
                 f"root_seed = {self.root_seed}", "", "[defaults]",
                 *(f"{k} = {_toml(v)}" for k, v in cells[0].items())]
        for j, options in enumerate(cells[1:], 1):
            lines += ["", "[[cases]]", f'label = "cell {j}"',
                      *(f"{k} = {_toml(v)}" for k, v in options.items())]
        return "\n".join(lines) + "\n"

    @property
    def inits(self) -> int:
        return self.n_inits * sum(p.n_points for p in self.parts)

    @property
    def flops(self) -> float:
        """Useful forward + backward matmul FLOPs of the whole workload (every point's)."""
        return self.n_inits * sum(p.n_points * flops_per_init(p.spec) for p in self.parts)

    @property
    def normals(self) -> float:
        """Random numbers the whole workload draws: once per seed and part, shared by the
        part's points (common random numbers)."""
        return self.n_inits * sum(draws_per_seed(p.spec) for p in self.parts)

    @property
    def points(self) -> int:
        """Points (cells) evaluated per draw, the largest over the parts."""
        return max(p.n_points for p in self.parts)

    def bound(self, peak_gflops: float, draws_per_s: float) -> float:
        """The roofline in inits/s: every useful FLOP at the matmul peak P plus every draw at
        the measured draw rate R, sharing the same device: 1 / (flops/P + normals/R) per init."""
        seconds = self.flops / (peak_gflops * 1e9) + self.normals / draws_per_s
        return self.inits / seconds


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    return repr(value)


def _cell_options(part: Part, i: int) -> dict[str, Any]:
    """The sweep-file options of point i of a part (an MLP bucket)."""
    spec, sizes = part.spec, part.spec.sizes
    options = {
        "in_dim": sizes[0], "width": sizes[1] if len(sizes) > 2 else 1, "depth": spec.depth,
        "out_dim": sizes[-1], "activation": spec.activation,
        "output_activation": spec.output_activation, "loss": spec.loss, "norm": spec.norm,
        "leaky_slope": spec.leaky_slope, "init": spec.init, "bias_init": spec.bias_init,
        "dtype": spec.dtype, "structural_zeros": spec.structural_zeros,
        "scale": float(part.scales[i]), "bias_scale": float(part.bias_scales[i]),
        "inputs": "gaussian" if spec.inputs == "gaussian" else part.xs[i],
        "targets": spec.targets if spec.targets != "fixed" else part.ys[i],
    }
    if spec.inputs == "gaussian":
        options["batch"] = spec.batch
    return options


def flops_per_init(spec: ProbeSpec) -> float:
    """6 * batch * sum(fan_in * fan_out): the forward matmul (2 per multiply-add) and the two
    backward ones (input and weight gradients), per init; biases and activations left out."""
    pairs = zip(spec.sizes[:-1], spec.sizes[1:], strict=True)
    return 6.0 * spec.batch * sum(a * b for a, b in pairs)


def draws_per_seed(spec: ProbeSpec) -> float:
    """Random numbers one seed draws for a bucket: every weight (unit scale), the biases where
    `bias_init` draws them, and the Gaussian inputs and targets where they are drawn."""
    sizes, count = spec.sizes, 0.0
    count += sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    if spec.bias_init == "normal":
        count += sum(sizes[1:])
    if spec.inputs == "gaussian":
        count += spec.batch * sizes[0]
    if spec.targets != "fixed":
        count += spec.batch * sizes[-1]
    return count


def _gaussian_mlp(in_dim: int, width: int, depth: int, activation: str, batch: int) -> ProbeSpec:
    return ProbeSpec(
        sizes=layer_sizes(in_dim, width, depth, 1), activation=activation,
        init="fan_in_normal", bias_init="zeros", batch=batch, inputs="gaussian",
        targets="gaussian",
    )


WORKLOADS: dict[str, Workload] = {
    "S": Workload(
        "S", "seed net 2-3-1 sigmoid/sigmoid, x=[0.5,0.7], y=1, MSE, N(0,1) weights and biases",
        (Part(
            ProbeSpec(sizes=(2, 3, 1), activation="sigmoid", output_activation="sigmoid",
                      inputs="fixed", targets="fixed"),
            xs=np.array([[[0.5, 0.7]]]), ys=np.array([[[1.0]]]),
        ),),
        n_inits=100_000, chunk=100_000, loop_inits=500,
    ),
    "M": Workload(
        "M", "depth 10 x width 128 tanh, batch 64 Gaussian x/y (dim 128 -> 1), LeCun normal",
        (Part(_gaussian_mlp(128, 128, 10, "tanh", 64)),),
        n_inits=1024, chunk=64, loop_inits=8,
    ),
    "L": Workload(
        "L", "depth 20 x width 512 relu, batch 128 Gaussian x/y (dim 512 -> 1), He normal",
        (Part(_gaussian_mlp(512, 512, 20, "relu", 128), scales=(math.sqrt(2.0),)),),
        n_inits=64, chunk=8, loop_inits=2,
    ),
}
GRID_POINTS = 16
WORKLOADS["M-grid"] = dataclasses.replace(
    WORKLOADS["M"], name="M-grid", n_inits=64, chunk=8, loop_inits=1,
    description=f"M at {GRID_POINTS} scales per draw (1/sqrt(2)..sqrt(2), log-spaced)",
    parts=(dataclasses.replace(WORKLOADS["M"].parts[0], scales=tuple(
        float(v) for v in np.logspace(-0.15, 0.15, GRID_POINTS)),
        bias_scales=(1.0,) * GRID_POINTS),),
)
WORKLOADS["L-grid"] = dataclasses.replace(
    WORKLOADS["L"], name="L-grid", n_inits=4, chunk=2, loop_inits=1,
    description=f"L at {GRID_POINTS} scales per draw (sqrt(2) x 0.9..1.1, log-spaced)",
    parts=(dataclasses.replace(WORKLOADS["L"].parts[0], scales=tuple(
        float(v) for v in math.sqrt(2.0) * np.logspace(-0.046, 0.046, GRID_POINTS)),
        bias_scales=(1.0,) * GRID_POINTS),),
)


def sweep_workload(path: str | Path, chunk: int = 256, loop_inits: int = 10) -> Workload:
    """A workload from a sweep file: one part per shape bucket, all its seeds and cells."""
    from gradjax.sweep import load_sweep

    sweep = load_sweep(path)
    parts = []
    for bucket in sweep.buckets():
        points = bucket.points()
        parts.append(Part(
            bucket.spec, scales=tuple(float(v) for v in points["scales"]),
            bias_scales=tuple(float(v) for v in points["bias_scales"]),
            xs=points["xs"], ys=points["ys"],
        ))
    return Workload(
        sweep.name, f"sweep file {path}: {len(sweep.cells)} cells, {sweep.seeds} seeds",
        tuple(parts), n_inits=sweep.seeds, chunk=min(chunk, sweep.seeds),
        loop_inits=min(loop_inits, sweep.seeds), root_seed=sweep.root_seed, text=sweep.text,
        source=str(path),
    )


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
    import jax
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
    import tempfile

    from gradjax.run.engine import execute_sweep
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
    units = reports[-1].units
    spent = reports[-1].time_spent()  # one timed run of `gradjax run`: where its time went
    return {
        "compute_s": spent["compute"], "write_s": spent["write"], "other_s": spent["other"],
        **_inits_rates(w.inits, walls),
        "inits_timed": w.inits, "extrapolated": False, "cpu_wall": cpu_wall,
        "compile_s": compile_log.seconds, "compiles": compile_log.backend_compiles,
        "cache_hits": compile_log.cache_hits, "recompiles": rerun_log.compiles,
        "chunk": min(u["chunk"] for u in units), "base_rss_mb": base,
        "device_peak_mb": _device_peak_mb(),
        "memory_estimate_mb": max(u["peak_bytes"] for u in units) / 2**20,
    }


def _peer_runs(job: Job, seeds: int, chunk: int) -> Callable[[], None]:
    def run() -> None:
        for p in job.workload.parts:
            args = (p.spec, seeds, p.scales, p.bias_scales, p.xs, p.ys)
            stream: Iterator
            if job.impl == "numpy_loop":
                stream = baselines.numpy_loop(*args)
            elif job.impl == "torch_func":
                stream = baselines.torch_func(*args, chunk=chunk)
            else:
                stream = baselines.numpy_vec(*args, chunk=chunk)
            for _ in stream:
                pass

    return run


def _measure_peer(job: Job) -> dict[str, Any]:
    """A numpy or torch peer. torch_func runs with `job.blas_threads` torch threads when set
    (restored afterwards), and reports the count it ran with as `torch_threads`."""
    if job.impl != "torch_func":
        return _measure_chunks(job)
    torch = baselines.import_torch()
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
    if vectorized:
        per_init = max(baselines.vec_bytes_per_init(p.spec, p.n_points) for p in w.parts)
        if budget is not None:
            chunk = max(1, min(chunk, 2 ** int(math.log2(max(budget // per_init, 1)))))
        estimate = per_init * chunk / 2**20
    seeds = w.n_inits if vectorized else w.loop_inits
    run = _peer_runs(job, seeds, chunk)
    run()  # warm-up
    walls, cpu_wall = timed_reps(run, job.reps)
    inits = seeds * sum(p.n_points for p in w.parts)
    return {
        **_inits_rates(inits, walls),
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
            baselines.import_torch()
        except ImportError as err:  # not measured; the message says how to install it
            return {"error": str(err)}
    for part in job.workload.parts:
        if job.impl != "gradjax":
            baselines.check_supported(part.spec)
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


# ----------------------------------------------------------------------------- reporting


def environment() -> dict[str, Any]:
    """Versions, threads and load of this machine (the device comes from the peak job)."""
    versions = {}
    for pkg in ("jax", "jaxlib", "numpy", "torch"):
        try:
            versions[f"{pkg}_version"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[f"{pkg}_version"] = None
    threads = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    thread_env = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS",
                  "JAX_PLATFORMS")
        if k in os.environ
    }
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {}).get("name")
    return {
        **versions,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "thread_env": json.dumps(thread_env, sort_keys=True),
        "numpy_blas": blas,
        "machine": platform.machine(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def make_record(
    workload: Workload, impl: str, fields: dict[str, Any], peak: dict[str, Any],
    env: dict[str, Any], max_memory: int | None,
) -> dict[str, Any]:
    """One flat record: RECORD_KEYS, then the peak's and the environment's fields."""
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(workload=workload.name, impl=impl, inits=workload.inits,
                  points=workload.points, normals_per_init=workload.normals / workload.inits)
    record.update(fields)
    rate = record["inits_per_s"]
    if rate is not None:
        record["gflops"] = rate * workload.flops / workload.inits / 1e9
        if peak.get("matmul_gflops"):
            record["pct_of_peak"] = 100.0 * record["gflops"] / peak["matmul_gflops"]
        if peak.get("matmul_gflops") and peak.get("draw_rate"):
            bound = workload.bound(peak["matmul_gflops"], peak["draw_rate"])
            record["bound_inits_per_s"] = bound
            record["pct_of_bound"] = 100.0 * rate / bound
    if max_memory is not None and record["peak_rss_mb"] is not None:
        record["within_memory"] = record["peak_rss_mb"] * 2**20 <= max_memory
    return {**record, "description": workload.description, **peak, **env}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rate(value: float | None) -> str:
    """A rate in 3 significant digits with k / M / G suffixes (1.75M, 249, 8.80)."""
    if value is None:
        return "-"
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def format_table(records: list[dict[str, Any]], peak: dict[str, Any]) -> str:
    """The terminal table: one row per workload x implementation."""
    if "error" in peak:
        head = f"matmul peak not measured: {peak['error']}"
    else:
        head = (
            f"device {peak['device_kind']} ({peak['platform']}), f32 matmul peak "
            f"{peak['matmul_gflops']:.1f} GFLOP/s [{peak['matmul_gflops_min']:.1f}.."
            f"{peak['matmul_gflops_max']:.1f}] at {peak['matmul_n']}^3, "
            f"cpu/wall {peak['matmul_cpu_wall']:.2f}; f32 normal draws "
            f"{_rate(peak['draw_rate'])}/s [{_rate(peak['draw_rate_min'])}.."
            f"{_rate(peak['draw_rate_max'])}]\n"
            "bound = 1 / (flops/peak + normals/draw rate) per init (the roofline of a "
            "workload's matmuls and draws)"
        )
    cols = ("workload", "impl", "points", "inits/s", "min..max", "compile s", "peak RSS MB",
            "GFLOP/s", "% peak", "bound", "% bound", "cpu/wall", "x numpy_vec")
    rows, skipped = [cols], []
    vec = {r["workload"]: r["inits_per_s"] for r in records if r["impl"] == "numpy_vec"}
    for r in records:
        if r["error"]:
            skipped.append(f"{r['workload']} {r['impl']}: not measured: {r['error']}")
            continue
        star = "*" if r["extrapolated"] else ""
        ratio = r["inits_per_s"] / vec[r["workload"]] if vec.get(r["workload"]) else None
        memory = _fmt(r["peak_rss_mb"], ".0f") + ("!" if r["within_memory"] is False else "")
        rows.append((
            r["workload"], r["impl"], str(r["points"]), _rate(r["inits_per_s"]) + star,
            f"{_rate(r['inits_per_s_min'])}..{_rate(r['inits_per_s_max'])}",
            _fmt(r["compile_s"], ".2f"), memory, _fmt(r["gflops"], ".3g"),
            _fmt(r["pct_of_peak"], ".1f"), _rate(r["bound_inits_per_s"]),
            _fmt(r["pct_of_bound"], ".1f"), _fmt(r["cpu_wall"], ".2f"), _fmt(ratio, ".3g"),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [head, ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    notes = []
    if any(r["extrapolated"] for r in records):
        notes.append("* extrapolated from fewer inits (numpy_loop)")
    if any(r["within_memory"] is False for r in records):
        notes.append("! peak RSS above --max-memory")
    notes += [f"{r['workload']} gradjax run, one timed run: compute {r['compute_s']:.3g} s, "
              f"write {r['write_s']:.3g} s, other {r['other_s']:.3g} s"
              for r in records if r["impl"] == "gradjax" and r["compute_s"] is not None]
    return "\n".join(lines + skipped + notes)


def write_outputs(records: list[dict[str, Any]], path: str | Path) -> tuple[Path, Path]:
    """The records as a JSON list at `path` and as Parquet beside it (same stem)."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1, default=_json_default) + "\n")
    parquet = path.with_suffix(".parquet")
    pd.DataFrame(records).to_parquet(parquet, index=False)
    return path, parquet


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# ----------------------------------------------------------------------------- command line


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradjax bench`."""
    parser.add_argument("--workload", default="all", choices=(*WORKLOADS, "all", "none"),
                        help="built-in workload(s) to run (default: all; none with --sweep)")
    parser.add_argument("--sweep", metavar="FILE", help="also benchmark a sweep file")
    parser.add_argument("--json", metavar="OUT", help="write the records as JSON (and Parquet)")
    parser.add_argument("--reps", type=_positive, default=5,
                        help="timed repetitions after warm-up (default 5)")
    parser.add_argument("--impl", default=",".join(IMPLS),
                        help=f"comma-separated implementations (default {','.join(IMPLS)})")
    parser.add_argument("--inits", type=_positive,
                        help="override each workload's number of inits (seeds)")
    parser.add_argument("--chunk", type=_positive,
                        help="seeds per gradjax / numpy_vec / torch_func chunk (default: per "
                             "workload)")
    parser.add_argument("--max-memory", type=size_argument, metavar="SIZE",
                        help="memory budget per measurement, e.g. 2GiB: chunks shrink to fit, "
                             "and each measured peak RSS is checked against it")
    parser.add_argument("--matmul-n", type=_positive, default=2048,
                        help="size of the square f32 matmul that measures the peak")
    parser.add_argument("--blas-threads", type=_positive, metavar="N",
                        help="BLAS threads of the numpy peers and torch threads of torch_func "
                             "(default: their own choice); 1 avoids OpenBLAS's collapse when "
                             "another process holds a core")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (faster; peak RSS is then the process's "
                             "peak so far, not each measurement's own)")


def _workloads(args: argparse.Namespace) -> list[Workload]:
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    chosen = [WORKLOADS[n] for n in names if n in WORKLOADS]
    if args.sweep:
        chosen.append(sweep_workload(args.sweep))
    if args.inits:
        chosen = [
            dataclasses.replace(w, n_inits=args.inits, chunk=min(w.chunk, args.inits),
                                loop_inits=min(w.loop_inits, args.inits))
            for w in chosen
        ]
    return chosen


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 on success, 1 if a measurement failed or broke --max-memory."""
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        print(f"error: --impl: unknown {', '.join(unknown)}; allowed: {', '.join(IMPLS)}",
              file=sys.stderr)
        return 2
    try:
        workloads = _workloads(args)
    except ValueError as err:  # includes gradjax.sweep.SweepError
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not workloads:
        print("error: nothing to run: --workload none needs --sweep", file=sys.stderr)
        return 2
    if args.in_process and args.blas_threads:
        print("error: --blas-threads needs the measurements in their own processes "
              "(drop --in-process)", file=sys.stderr)
        return 2
    measure = run_job if args.in_process else run_isolated
    env = environment()
    if env["load_avg_1m"] is not None and env["load_avg_1m"] > env["threads"] / 2:
        print(f"warning: the machine is busy (load average {env['load_avg_1m']:.1f} on "
              f"{env['threads']} threads): figures will be low and noisy; see cpu/wall",
              file=sys.stderr)
    peak = measure(Job("peak", reps=args.reps, matmul_n=args.matmul_n))
    records = []
    for w in workloads:
        for impl in impls:
            print(f"measuring {w.name} {impl} ...", file=sys.stderr, flush=True)
            job = Job(impl, w, reps=args.reps, max_memory=args.max_memory, chunk=args.chunk,
                      blas_threads=args.blas_threads)
            records.append(make_record(w, impl, measure(job), peak, env, args.max_memory))
    print(format_table(records, peak))
    if args.json:
        for written in write_outputs(records, args.json):
            print(f"wrote {written}", file=sys.stderr)
    failed = any(r["error"] for r in records if r["impl"] == "gradjax") or "error" in peak
    return 1 if failed or any(r["within_memory"] is False for r in records) else 0
