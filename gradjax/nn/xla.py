"""XLA settings gradjax needs for reproducible numbers; applied before JAX picks a backend.

XLA:CPU sends reductions of >= 4096 elements to a YNNPACK fusion that sums in a different
order, and whether a reduction qualifies depends on the vmapped chunk shape; per-seed numbers
would then depend on the chunk size. Turning that fusion type off makes every reduction use the
same kernel whatever the chunk (tested in tests/test_probe.py).

XLA:CPU's concurrency-optimized scheduler runs independent ops at once; jaxlib's LAPACK QR
kernel (behind the `orthogonal` init) then waits on XLA's intra-op thread pool from inside that
pool and can deadlock (seen with jaxlib 0.10.2: every thread in futex wait). The plain scheduler
avoids it and gives the same numbers. Set GRADJAX_KEEP_XLA_FLAGS=1 to leave XLA_FLAGS alone.
"""

from __future__ import annotations

import os
import sys

_FLAGS = {
    "xla_cpu_experimental_ynn_fusion_type": "--xla_cpu_experimental_ynn_fusion_type=",
    "xla_cpu_enable_concurrency_optimized_scheduler":
        "--xla_cpu_enable_concurrency_optimized_scheduler=false",
}


_PINNED: dict[str, str | None] = {}  # XLA_FLAGS as JAX's backend will read them


def pin_reductions() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if not os.environ.get("GRADJAX_KEEP_XLA_FLAGS"):
        for name, flag in _FLAGS.items():
            if name not in flags:
                flags = f"{flags} {flag}".strip()
        os.environ["XLA_FLAGS"] = flags
    bridge = sys.modules.get("jax._src.xla_bridge")  # not imported: `import gradjax` loads no JAX
    started = bridge is not None and bridge.backends_are_initialized()
    _PINNED["flags"] = None if started else flags


def flags_in_effect() -> str | None:
    """The XLA_FLAGS JAX's backend started with, as `pin_reductions` left them; None where
    the backend had started before gradjax was imported (the flags in effect are unknown)."""
    return _PINNED.get("flags")


def unroll_threefry_on_cpu() -> bool:
    """Lower threefry2x32 on CPU with JAX's unrolled (GPU/TPU) rule instead of its rolled loop.

    The bits are identical (tests/test_xla.py); normals come 2-4x faster, and random draws are
    a large share of small probes (docs/performance.md). This goes through a private JAX
    module, so it is skipped if that moved; GRADJAX_ROLLED_THREEFRY=1 keeps JAX's default.
    Returns whether the unrolled rule is in place.
    """
    if os.environ.get("GRADJAX_ROLLED_THREEFRY"):
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return False
    rule = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    if rule is None:
        return False
    mlir.register_lowering(threefry2x32.threefry2x32_p, rule, platform="cpu")
    return True
