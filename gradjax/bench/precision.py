"""TF32's effect on the statistics: the same inits' chunk program with JAX's `default` matmul
precision (TF32 on recent NVIDIA GPUs: 10 mantissa bits, a relative error near 1e-3 per
product) against `highest`, the precision every `gradjax run` program uses
(`gradjax.probe.programs.MATMUL_PRECISION`). On a CPU both are full float32 and the effect is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gradjax.probe import chunking, programs
from gradjax.spec import ProbeSpec

COMPARED = ("grad_var", "grad_sq_norm", "delta_sq_norm", "preact_var")


def precision_effect(spec: ProbeSpec, scales: Sequence[float], seeds: int, chunk: int,
                     stats: Sequence[str] = COMPARED) -> dict[str, dict[str, float]]:
    """How far `default` precision moves each statistic from `highest`.

    Args:
        spec: the bucket (Gaussian or drawn data, so no fixed inputs are needed).
        scales: its scale points (bias scale 0 at each).
        seeds: inits 0 .. seeds - 1, the same at both precisions.
        chunk: seeds per compiled chunk.
        stats: the statistics compared (per-seed values of every layer and point).

    Returns:
        For each statistic, over its finite nonzero values at `highest`: the median, 99th
        percentile and maximum of |value(default) / value(highest) - 1|, and `n`, the values
        compared (NaN statistics where none are).
    """
    points = chunking.make_points(spec, list(scales), [0.0] * len(scales))
    values = {}
    for precision in ("highest", "default"):
        parts = [found for _, found, _ in programs.run_seeds(
            spec, points, np.arange(seeds), chunk=chunk, matmul_precision=precision)]
        values[precision] = {k: np.concatenate([p[k].reshape(-1) for p in parts]) for k in stats}
    out = {}
    for name in stats:
        ref, alt = values["highest"][name], values["default"][name]
        kept = np.isfinite(ref) & (ref != 0)
        rel = np.abs(alt[kept] / ref[kept] - 1)
        if rel.size == 0:
            out[name] = {"median": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
            continue
        out[name] = {"median": float(np.median(rel)), "p99": float(np.quantile(rel, 0.99)),
                     "max": float(rel.max()), "n": int(rel.size)}
    return out
