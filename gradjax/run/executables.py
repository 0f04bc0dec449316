"""Compiling a bucket's chunk program for a chunk size and its devices (`build_executable`,
which says whether it was compiled or loaded), and turning the persistent compile cache on and
off (`enable_compile_cache`; the program store inside it follows)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache

from gradjax.probe.compile_cache import cache_events
from gradjax.probe.programs import compiled_chunk
from gradjax.results import files
from gradjax.spec import ProbeSpec
from gradjax.sweep.budget import (
    release_free_memory,
)


def enable_compile_cache(path: Path | None = None) -> Path:
    """Turn on JAX's persistent compilation cache (every program, however quick to compile),
    in a folder only this user can read or write (0700)."""
    path = files.private_folder(files.user_cache_dir() if path is None else Path(path))
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()  # JAX decides once per process unless told to look again
    return path


def disable_compile_cache() -> None:
    """Turn JAX's persistent compilation cache off, even where the environment turned it on
    (JAX_COMPILATION_CACHE_DIR): `--no-cache` compiles every program."""
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()


def compile_cache_on() -> bool:
    """Whether compiled programs are read from and written to a persistent cache."""
    return bool(jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir)


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
    source: str  # "compiled", "compile cache" (JAX's or the program store) or "memory"
    options: tuple = ()  # XLA's compiler options it was compiled with, as sorted items

    @property
    def local(self) -> int:
        return self.chunk // len(self.devices)


def build_executable(spec: ProbeSpec, points: dict, chunk: int, devices: Sequence,
                     compiler_options: Mapping[str, Any] | None = None) -> Executable:
    """The bucket's chunk function compiled for this shape with XLA's `compiler_options`
    (`programs.compiled_chunk`, which keeps every program of the process).

    With several devices each gets its own copy of the single-device program, compiled for
    C / devices seeds, rather than one SPMD program: XLA partitions an SPMD program's
    reductions differently, while the per-device program is exactly what one device runs with
    a smaller chunk, so per-seed numbers do not depend on the device count.
    """
    n_points = int(points["scale"].shape[0])
    local = chunk // len(devices)
    events = cache_events()
    hits, misses, start = events.hits, events.misses, time.perf_counter()
    fns, peak, origins = [], 0, set()
    for device in devices:
        fn, origin = compiled_chunk(spec, True, local, points, device, compiler_options)
        origins.add(origin)
        memory = fn.memory_analysis()
        # arguments, XLA's temporaries, and the outputs twice (one chunk in flight while the
        # previous one is copied to the host)
        peak += (memory.argument_size_in_bytes + memory.temp_size_in_bytes
                 + 2 * memory.output_size_in_bytes)
        fns.append(fn)
    fresh = origins != {"memory"}
    through_jax = events.hits > hits and events.misses == misses if "jax" in origins else True
    cached = "compiled" not in origins and through_jax
    source = ("compile cache" if cached else "compiled") if fresh else "memory"
    if fresh:
        release_free_memory()  # the compiler's freed memory, kept by the C heap otherwise
    return Executable(tuple(fns), tuple(devices), chunk, n_points, int(peak),
                      time.perf_counter() - start if fresh else 0.0, source,
                      tuple(sorted((compiler_options or {}).items())))
