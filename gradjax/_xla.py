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
