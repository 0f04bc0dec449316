"""The device memory budget without JAX: sizes as users write them, and what a chunk of seeds
needs, estimated from its shape (`gradjax.run.engine` then checks the estimate against XLA's own
memory analysis of the compiled program).

One size parser for every command: K, M, G, T are powers of 1024 and a bare number is bytes.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys

from gradjax.spec import MIN_ARRAY_AXIS, ProbeSpec, capabilities
from gradjax.spec.option import DTYPE_BYTES
from gradjax.sweep.model import SHAPE_OPTIONS, Sweep
from gradjax.sweep.values import SweepError

DEFAULT_MAX_MEMORY = 2 * 1024**3
# Device bytes per seed, in units of the parameter count and of batch x sum(sizes), and per
# (seed, point) for the statistics: see `estimate_bytes`. Fitted to XLA's memory analysis with
# some margin; XLA's own figure is what the budget is finally checked against.
PARAM_COPIES, ACTIVATION_COPIES, STAT_BYTES = 12, 24, 256
SIZE_OPTIONS = (*SHAPE_OPTIONS, "batch")
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kmgt])i?)?b?\s*", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'2GB' -> 2 * 1024**3: K, M, G, T (optionally with i and/or B) are powers of 1024."""
    match = _SIZE.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a size like 512MB or 2GB")
    suffix = (match.group(2) or "").lower()
    factor = 1024 ** ("kmgt".index(suffix) + 1) if suffix else 1
    return int(float(match.group(1)) * factor)


def size_argument(text: str) -> int:
    """`parse_bytes` for argparse's `type=`: a bad size is a usage error (exit 2)."""
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def param_count(spec: ProbeSpec) -> int:
    """The MLP's parameter count (other models: `gradjax.probe.tree_probe.param_count`, which
    `gradjax.run.engine` passes as `n_params`)."""
    return sum(a * b + b for a, b in zip(spec.sizes[:-1], spec.sizes[1:], strict=True))


def estimate_bytes(spec: ProbeSpec, chunk: int, points: int, n_params: int | None = None
                   ) -> int:
    """Estimated device bytes of a chunk of `chunk` seeds by `points` points.

    The probe handles one point at a time for all of the chunk's seeds, so per seed it holds one
    point's params, gradients, liveness masks and moment temporaries (PARAM_COPIES x the
    parameter count) and its activations; per point it returns the chunk's moments (mean and
    M2 of every parameter, twice over with one chunk in flight); per (seed, point) the stats.
    """
    itemsize = max(DTYPE_BYTES[spec.dtype], 4)
    n_params = param_count(spec) if n_params is None else n_params
    per_seed = itemsize * (PARAM_COPIES * n_params
                           + ACTIVATION_COPIES * spec.batch * sum(spec.sizes)) + 512
    per_point = 4 * itemsize * n_params
    return chunk * per_seed + points * per_point + chunk * points * STAT_BYTES


def check_budget(sweep: Sweep, budget: int) -> None:
    """Raise `SweepError` for the first MLP bucket whose smallest chunk (MIN_ARRAY_AXIS seeds, one
    point) the estimate puts over `budget` bytes: its run could not start. Writes nothing.
    Other models' sizes are known only to JAX: the engine plans them from XLA's analysis."""
    for bucket in sweep.buckets():
        if not capabilities(bucket.spec.model).shapes_from_options:
            continue
        need = estimate_bytes(bucket.spec, MIN_ARRAY_AXIS, 1)
        if need > budget:
            cell = bucket.cells[0]
            sizes = {k: cell.options[k] for k in SIZE_OPTIONS}
            largest = max(("width", "in_dim", "out_dim", "batch"), key=lambda k: sizes[k])
            shown = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
            raise SweepError(
                sweep.source, cell.field(largest),
                f"cell {cell.index} ({shown}) needs about {format_bytes(need)} of device memory "
                f"for its smallest chunk ({MIN_ARRAY_AXIS} seeds), over the budget of "
                f"{format_bytes(budget)}",
                "sizes whose smallest chunk fits --max-memory (or a larger --max-memory)")


def resident_bytes() -> int:
    """This process's resident set size now, in bytes (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


@functools.cache
def process_footprint() -> int:
    """The resident set when first asked (after JAX's backend started), kept for the process:
    what a CPU run reserves for the process itself. Kept, not re-read, so that every run of a
    process plans the same chunks and reuses its compiled programs."""
    return resident_bytes()


@functools.cache
def _libc_trim():
    """glibc's malloc_trim, or None (another C library, or not Linux)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim). XLA's compiler
    frees hundreds of MB when a compile ends (about 600 MB for a width-128 depth-3 MLP's chunk
    program, measured), which glibc otherwise keeps in the process's resident set: on a CPU
    backend, memory the budget's chunks would then not have."""
    trim = _libc_trim()
    if trim is not None:
        trim(0)


def peak_resident_bytes() -> int | None:
    """This process's peak resident set size so far, in bytes (None where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def host_reserve(spec: ProbeSpec, points: int, n_params: int | None = None) -> int:
    """Host bytes a pack holds beside its device buffers: the float64 moments merged so far,
    the chunk's moments being merged into them, and the checkpoint being written (three
    copies). On a CPU backend device memory is host memory, so the engine plans a bucket's
    chunk in the budget left after this and the process's resident set."""
    return 3 * moment_bytes(spec, points, n_params)


def moment_bytes(spec: ProbeSpec, points: int, n_params: int | None = None) -> int:
    """Host memory of a pack's merged float64 per-entry mean and M2."""
    return 16 * points * (param_count(spec) if n_params is None else n_params)
