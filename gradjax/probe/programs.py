"""The compiled chunk programs of every model family, and the process's one cache of them.

`chunk_program_of` is the one chunk program (`gradjax.probe.chunking.chunk_program`) with the
bucket's kernel (`kernel_of`); `compiled_chunk` compiles it for one chunk size, point shapes
and device, and keeps it, so `gradjax run`, `gradjax bench` and `run_seeds` never compile the
same program twice in a process; a family of gradjax's own code also finds it in the program
store (`gradjax.probe.program_store`) without tracing it. `run_seeds` is the probe alone, chunk
by chunk, for tests and notebooks.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from gradjax.probe import chunking, mlp_probe, program_store, tree_probe
from gradjax.probe.compile_cache import compile_fresh
from gradjax.probe.kernel import ProbeKernel
from gradjax.probe.stats import to_host
from gradjax.spec import MIN_ARRAY_AXIS, ProbeSpec, capabilities


def kernel_of(spec: ProbeSpec) -> ProbeKernel:
    """The kernel that runs the bucket: the layered kernel (`gradjax.probe.mlp_probe`) for a
    family that declares `layered_probe`, the pytree kernel (`gradjax.probe.tree_probe`) for
    any other model."""
    return mlp_probe.KERNEL if capabilities(spec.model).layered_probe else tree_probe.KERNEL


@functools.cache
def chunk_program_of(spec: ProbeSpec, with_moments: bool = False):
    """The bucket's chunk function, jitted: (root_seed, seeds[C], valid[C], points, P) ->
    (stats [C, P, ...], moments or None): `chunking.chunk_program` with `kernel_of(spec)`.
    One jitted function per bucket, so each shape is traced once for all devices."""
    program = functools.partial(chunking.chunk_program, kernel_of(spec), spec, with_moments)
    return jax.jit(program)


_COMPILED: dict[tuple, Any] = {}  # the process's one cache of compiled chunk programs

# Every matmul of a chunk program in full float32. NVIDIA GPUs otherwise multiply float32 in
# TF32 (10 mantissa bits: a relative error near 1e-3 per product, four orders of magnitude
# above float32 rounding), which would move grad_var and every statistic built on products
# of parameters with activations; on CPU the setting changes nothing (tests/test_golden.py).
MATMUL_PRECISION = "highest"


def compiled_chunk(spec: ProbeSpec, with_moments: bool, chunk: int, points, device,
                   compiler_options: Mapping[str, Any] | None = None,
                   matmul_precision: str = MATMUL_PRECISION) -> tuple[Any, str]:
    """(the chunk function compiled for `chunk` seeds and these points' shapes on `device`,
    where it came from: "memory" (this process had it), "program store", "compiled" (by XLA,
    for the program store) or "jax" (through JAX's persistent cache: a hit or a compile)).
    Every compiled chunk program of the process, for `gradjax run`, `gradjax bench` and
    `run_seeds` alike, comes from here and is kept. `compiler_options` are XLA's for this
    program (e.g. `xla_backend_optimization_level`); `matmul_precision` is JAX's for its
    matmuls (`MATMUL_PRECISION` unless a measurement of another asks)."""
    leaves, tree = jax.tree.flatten(points)
    options = dict(compiler_options or {})
    key = (spec, with_moments, chunk, tree, tuple((a.shape, str(a.dtype)) for a in leaves),
           device.id, tuple(sorted(options.items())), matmul_precision)
    if key in _COMPILED:
        return _COMPILED[key], "memory"
    stored = capabilities(spec.model).gradjax_code
    name = program_store.program_name(*key[:3], str(tree), *key[4:],
                                      device=device) if stored else ""
    program = program_store.load(name, device) if stored else None
    origin = "program store"
    if program is None:
        on = functools.partial(jax.device_put, device=device)
        with jax.default_matmul_precision(matmul_precision):
            lowered = chunk_program_of(spec, with_moments).lower(
                np.uint32(0), on(np.zeros(chunk, np.int32)), on(np.zeros(chunk, bool)),
                on(points), np.int32(leaves[0].shape[0]),
            )
        if stored and program_store.store_folder() is not None:
            program, fresh = compile_fresh(lowered, options)
            if fresh:
                program_store.save(name, program)
            origin = "compiled"
        else:
            program, origin = lowered.compile(options or None), "jax"
    _COMPILED[key] = program
    return program, origin


def clear_compiled() -> None:
    """Forget every compiled chunk program and jitted chunk function (tests that count traces
    start from here)."""
    _COMPILED.clear()
    chunk_program_of.cache_clear()


def run_seeds(
    spec: ProbeSpec,
    points: dict[str, jax.Array],
    seeds: np.ndarray,
    *,
    root_seed: int = 0,
    chunk: int = 256,
    with_moments: bool = False,
    compiler_options: Mapping[str, Any] | None = None,
    matmul_precision: str = MATMUL_PRECISION,
):
    """Yield (seed_slice, stats as numpy [c, P, ...], moments) chunk by chunk, on the first
    device: the probe alone, for tests and notebooks (`gradjax run` and `gradjax bench` run
    `gradjax.run.engine`'s host loop over the same compiled programs).

    Every chunk is compiled at the same shape [chunk] (at least MIN_ARRAY_AXIS); the last one is
    padded with masked seeds, so a run compiles once whatever the number of seeds.
    `compiler_options` go to XLA and `matmul_precision` to JAX (`compiled_chunk`).

    moments (with_moments=True) = {"n": valid seeds, "moments": [per layer {"W": {"mean", "m2"},
    "b": {...}}]}, each array [P, *param shape]: the chunk's per-entry mean and sum of squared
    deviations across seeds, to be merged across chunks with Chan's formula.
    """
    points, n_points = chunking.pad_points(points)
    chunk = max(chunk, MIN_ARRAY_AXIS)
    device = jax.devices()[0]
    fn, _ = compiled_chunk(spec, with_moments, chunk, points, device, compiler_options,
                           matmul_precision)
    points = jax.device_put(points, device)
    seeds = np.asarray(seeds, np.int32)
    for start in range(0, len(seeds), chunk):
        part = seeds[start : start + chunk]
        valid = np.zeros(chunk, bool)
        valid[: len(part)] = True
        padded = np.zeros(chunk, np.int32)
        padded[: len(part)] = part
        stats, moments = fn(np.uint32(root_seed), padded, valid, points, np.int32(n_points))
        n = len(part)
        stats = {k: v[:n, :n_points] for k, v in to_host(stats).items()}
        moments = chunking.moments_by_layer(chunking.moments_to_host(moments), n_points)
        yield slice(start, start + n), stats, moments
