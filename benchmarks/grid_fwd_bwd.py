"""The bound under `sweeps/bench_grid.toml`: `jax.grad` of the loss alone, nothing else.

    python benchmarks/grid_fwd_bwd.py

At the sweep's shapes (width 128, batch 16, depth 2 and 8, tanh / relu / sigmoid), 256 seeds x
12 scale points per bucket, vmapped over seeds and looped over points as the probe does, with
the parameters and data given (no draws, no statistics, no moments, no host work). Prints the
inits/s of each bucket and of the whole sweep (its six buckets one after the other). Whatever
`gradjax run` does on top can only be slower; see docs/performance.md.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradjax  # noqa: F401  (XLA flags before the backend starts)
from gradjax.nn.network import loss_and_grads

SEEDS, POINTS, WIDTH, BATCH = 256, 12, 128, 16


def bucket_rate(depth: int, activation: str, reps: int = 3) -> float:
    """inits/s (seed x point evaluations) of one bucket's gradients."""
    sizes = (WIDTH, *[WIDTH] * depth, 1)
    key = jax.random.key(0)
    params = [
        {"W": jax.random.normal(jax.random.fold_in(key, i), (SEEDS, a, b)) / np.sqrt(a),
         "b": jnp.zeros((SEEDS, b))}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]
    x = jax.random.normal(jax.random.fold_in(key, 99), (SEEDS, BATCH, WIDTH))
    y = jax.random.normal(jax.random.fold_in(key, 98), (SEEDS, BATCH, 1))
    scales = jnp.linspace(0.3, 3.0, POINTS)

    def one(p, x, y, s):
        scaled = [{"W": layer["W"] * s, "b": layer["b"]} for layer in p]
        return loss_and_grads(scaled, x, y, activation=activation)

    def grid(p, x, y):
        def body(i, acc):
            loss, grads = jax.vmap(lambda p, x, y: one(p, x, y, scales[i]))(p, x, y)
            return acc + jnp.sum(loss) + sum(jnp.sum(g["W"]) for g in grads)

        return jax.lax.fori_loop(0, POINTS, body, jnp.float32(0))

    run = jax.jit(grid)
    jax.block_until_ready(run(params, x, y))
    walls = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(run(params, x, y))
        walls.append(time.perf_counter() - start)
    return SEEDS * POINTS / statistics.median(walls)


def main() -> None:
    rates = {(d, a): bucket_rate(d, a) for d in (2, 8) for a in ("tanh", "relu", "sigmoid")}
    for (depth, activation), rate in rates.items():
        print(f"depth {depth} {activation}: {rate:,.0f} inits/s")
    whole = len(rates) / sum(1 / r for r in rates.values())
    print(f"bench_grid, gradients alone: {whole:,.0f} inits/s over its {len(rates)} buckets")


if __name__ == "__main__":
    main()
