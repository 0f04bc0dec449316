"""XLA settings gradjax needs for reproducible numbers; applied before JAX picks a backend.

XLA:CPU sends reductions of >= 4096 elements to a YNNPACK fusion that sums in a different
order, and whether a reduction qualifies depends on the vmapped chunk shape; per-seed numbers
would then depend on the chunk size. Turning that fusion type off makes every reduction use the
same kernel whatever the chunk (tested in tests/test_probe.py). Set GRADJAX_KEEP_XLA_FLAGS=1 to
leave XLA_FLAGS alone.
"""

from __future__ import annotations

import os

_YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="


def pin_reductions() -> None:
    if os.environ.get("GRADJAX_KEEP_XLA_FLAGS"):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_YNN_OFF}".strip()


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
