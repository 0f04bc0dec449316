"""Where does the probe's time go? Ablations of one `gradjax bench` workload.

    python benchmarks/ablate_probe.py --workload M [--chunk 16] [--inits 256] [--reps 3]

Each row is one jitted function over a chunk of seeds, built from gradjax's public pieces, and
timed like the benchmark (warm-up, then the median of --reps runs over all inits):

  rng                 draw each init's parameters (and Gaussian x, y), reduce them to a scalar
  fwd+bwd, no rng     loss and gradients (`gradjax.loss_and_grads`) of parameters made from
                      the seed by an integer hash instead of the PRNG
  rng + fwd+bwd       the two together
  probe, no liveness  `programs.chunk_program_of` with structural_zeros = False
  probe               `programs.chunk_program_of` as the benchmark runs it

followed by XLA's cost and memory analysis of the full probe per init. The shares in the last
column are of the full probe's time; they overlap (XLA fuses across the pieces), so read them
as "how fast could it be without this", not as a partition.

With --profile, the full probe also runs under the JAX profiler, and the time of every XLA:CPU
thunk is summed by the source operation it came from (the HLO metadata's op_name), in groups:
rng (threefry, normal), matmul (dot_general) and the rest by name.

    python benchmarks/ablate_probe.py --rng

measures instead the PRNG's throughput on XLA:CPU with JAX's default (rolled-loop) threefry
lowering, then with its unrolled lowering (registered through a private JAX module), and checks
that both give the same draws. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gradjax
from gradjax.bench import measure as bench
from gradjax.bench.workloads import WORKLOADS, WorkloadBucket, flops_per_init
from gradjax.nn import data, keys
from gradjax.probe.chunking import make_points, pad_points
from gradjax.probe.programs import chunk_program_of


def hashed_params(seed, sizes):
    """Unit-variance parameters from an integer hash of (seed, index): no PRNG."""
    params = []
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        idx = jnp.arange(fan_in * fan_out, dtype=jnp.uint32).reshape(fan_in, fan_out)
        bits = (idx + jnp.uint32(l) * jnp.uint32(40503)) * jnp.uint32(2654435761) + seed
        w = (bits.astype(jnp.float32) * 2.0**-32 - 0.5) * np.sqrt(12.0 / fan_in)
        params.append({"W": w, "b": jnp.zeros(fan_out)})
    return params


def ablations(bucket: WorkloadBucket, root_seed: int):
    """name -> fn(seeds[C]) for the bucket's spec at its first point."""
    spec = bucket.spec
    scale, bias_scale = bucket.scales[0], bucket.bias_scales[0]
    fixed_x = None if bucket.xs is None else jnp.asarray(bucket.xs[0], jnp.float32)
    fixed_y = None if bucket.ys is None else jnp.asarray(bucket.ys[0], jnp.float32)

    def draw(seed):
        key = keys.init_key(root_seed, seed)
        params = gradjax.init_mlp(key, spec.sizes, init=spec.init, scale=scale,
                                  bias_init=spec.bias_init, bias_scale=bias_scale)
        x, y = data.draw_batch(spec, key)
        return params, fixed_x if x is None else x, fixed_y if y is None else y

    def grads_total(params, x, y):
        loss, grads = gradjax.loss_and_grads(
            params, x, y, activation=spec.activation, output_activation=spec.output_activation,
            loss=spec.loss, norm=spec.norm,
        )
        return loss + sum(jnp.sum(g) for g in jax.tree.leaves(grads))

    def rng(seed):
        return sum(jnp.sum(a) for a in jax.tree.leaves(draw(seed)))

    def no_rng(seed):
        x = jnp.full((spec.batch, spec.sizes[0]), 0.5) if fixed_x is None else fixed_x
        y = jnp.zeros((spec.batch, spec.sizes[-1])) if fixed_y is None else fixed_y
        return grads_total(hashed_params(seed.astype(jnp.uint32), spec.sizes), x, y)

    def with_rng(seed):
        return grads_total(*draw(seed))

    points = make_points(spec, bucket.scales[:1], bucket.bias_scales[:1],
                         None if bucket.xs is None else bucket.xs[:1],
                         None if bucket.ys is None else bucket.ys[:1])

    def probe(structural_zeros: bool):
        fn = chunk_program_of(dataclasses.replace(spec, structural_zeros=structural_zeros))
        return lambda seeds: fn(np.uint32(root_seed), seeds, np.ones(len(seeds), bool), *points)

    padded, n_points = pad_points(points)
    points = (padded, np.int32(n_points))  # what `chunk_program_of` takes after seeds and valid
    vmapped = {name: jax.jit(jax.vmap(f)) for name, f in
               (("rng", rng), ("fwd+bwd, no rng", no_rng), ("rng + fwd+bwd", with_rng))}
    return {**vmapped, "probe, no liveness": probe(False), "probe": probe(True)}, points


def time_rows(fns, n_inits: int, chunk: int, reps: int) -> dict[str, tuple[float, float]]:
    """name -> (first call seconds, median inits/s)."""
    chunks = [np.arange(s, s + chunk, dtype=np.int32) for s in range(0, n_inits, chunk)]
    out = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(chunks[0]))
        first = time.perf_counter() - start

        def run(fn=fn):
            jax.block_until_ready([fn(c) for c in chunks])

        walls, _ = bench.timed_reps(run, reps)
        out[name] = (first, len(chunks) * chunk / statistics.median(walls))
        print(f"  {name:20s} first call {first:6.2f} s  {out[name][1]:12.1f} inits/s",
              flush=True)
    return out


def cost_per_init(bucket: WorkloadBucket, points, chunk: int) -> dict[str, float]:
    compiled = chunk_program_of(bucket.spec).lower(
        np.uint32(0), np.zeros(chunk, np.int32), np.ones(chunk, bool), *points
    ).compile()
    cost, mem = compiled.cost_analysis(), compiled.memory_analysis()
    if isinstance(cost, list):  # older jax returned one dict per computation
        cost = cost[0]
    return {
        "XLA flops": cost.get("flops", float("nan")) / chunk,
        "useful flops (6*batch*sum fan_in*fan_out)": flops_per_init(bucket.spec),
        "transcendentals": cost.get("transcendentals", float("nan")) / chunk,
        "bytes accessed": cost.get("bytes accessed", float("nan")) / chunk,
        "temp bytes": mem.temp_size_in_bytes / chunk if mem is not None else float("nan"),
    }


def _group(instruction: str, op_name: str | None) -> str:
    """A thunk's group: by its source operation, or by its HLO kind when XLA dropped that."""
    if op_name is None:
        kind = instruction.rsplit(".", 1)[0]
        return "matmul (dot_general)" if kind == "dot" else f"[{kind}]"
    if re.search(r"threefry|random|_normal|_uniform|init_key", op_name):
        return "rng (threefry, normal)"
    if "dot_general" in op_name:
        return "matmul (dot_general)"
    return re.sub(r"\d+", "#", "/".join(op_name.split("/")[-2:]))


def profile(bucket: WorkloadBucket, points, n_inits: int, chunk: int, top: int = 14) -> None:
    """Run the full probe under the JAX profiler; print thunk time by source operation."""
    fn = chunk_program_of(bucket.spec)
    valid = np.ones(chunk, bool)
    chunks = [np.arange(s, s + chunk, dtype=np.int32) for s in range(0, n_inits, chunk)]
    compiled = fn.lower(np.uint32(0), chunks[0], valid, *points).compile()
    names = {}
    for line in compiled.as_text().splitlines():
        found = re.match(r"\s*(?:ROOT )?%([\w.-]+) = ", line)
        if found:
            op_name = re.search(r"metadata=\{op_name=\"([^\"]*)\"", line)
            names[found.group(1)] = op_name.group(1) if op_name else None
    jax.block_until_ready(fn(np.uint32(0), chunks[0], valid, *points))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready([fn(np.uint32(0), c, valid, *points) for c in chunks])
        with gzip.open(next(Path(tmp).rglob("*.trace.json.gz"))) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    by_group: collections.Counter = collections.Counter()
    for e in events:
        name = e.get("name", "").removeprefix("end: ")
        if e.get("ph") == "X" and name in names:
            by_group[_group(name, names[name])] += e.get("dur", 0)
    total = sum(by_group.values())
    print(f"\nthunk time by source operation (all threads, {total / 1e3:.0f} ms):")
    for group, us in by_group.most_common(top):
        print(f"  {100 * us / total:5.1f}%  {group}")


def rng_throughput(n_keys: int = 16, n: int = 163_968, reps: int = 5) -> None:
    """M numbers/s of jax.random.bits / normal, rolled then unrolled threefry on CPU."""
    keys_ = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(jnp.arange(n_keys))
    draws = {}
    for lowering in ("rolled", "unrolled"):
        if lowering == "unrolled":  # JAX's GPU/TPU lowering, registered for CPU
            from jax._src.interpreters import mlir
            from jax._src.random import threefry2x32

            mlir.register_lowering(threefry2x32.threefry2x32_p,
                                   threefry2x32._threefry2x32_lowering_rule, platform="cpu")
        for name, draw in (("bits", jax.random.bits), ("normal", jax.random.normal)):
            fn = jax.jit(jax.vmap(lambda k, draw=draw: draw(k, (n,))))
            draws[lowering, name] = np.asarray(fn(keys_))
            walls, _ = bench.timed_reps(lambda fn=fn: jax.block_until_ready(fn(keys_)), reps)
            rate = n_keys * n / statistics.median(walls) / 1e6
            print(f"  threefry {lowering:8s} {name:6s} {rate:8.1f} M numbers/s", flush=True)
    same = all(np.array_equal(draws["rolled", k], draws["unrolled", k]) for k in ("bits", "normal"))
    print(f"  identical draws: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="M", choices=tuple(WORKLOADS))
    parser.add_argument("--chunk", type=int, help="seeds per call (default: the workload's)")
    parser.add_argument("--inits", type=int, help="inits per timed run (default: 4 chunks)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profile", action="store_true",
                        help="also break the probe's time down by source operation")
    parser.add_argument("--rng", action="store_true",
                        help="only measure the PRNG, rolled and unrolled threefry")
    args = parser.parse_args()
    if args.rng:
        rng_throughput()
        return
    w = WORKLOADS[args.workload]
    chunk = args.chunk or w.chunk
    n_inits = args.inits or 4 * chunk
    bucket = w.buckets[0]
    peak = bench.measure_matmul_peak()
    print(f"{w.name}: {w.description}; chunk {chunk}, {n_inits} inits; "
          f"matmul peak {peak['matmul_gflops']:.1f} GFLOP/s")
    fns, points = ablations(bucket, w.root_seed)
    rows = time_rows(fns, n_inits, chunk, args.reps)
    full = rows["probe"][1]
    flops = flops_per_init(bucket.spec)
    print(f"\n{'piece':20s} {'inits/s':>12s} {'% of peak':>10s} {'time vs probe':>14s}")
    for name, (_, rate) in rows.items():
        pct = 100 * rate * flops / 1e9 / peak["matmul_gflops"]
        print(f"{name:20s} {rate:12.1f} {pct:9.1f}% {full / rate:13.0%}")
    print("\nper init, full probe:")
    for name, value in cost_per_init(bucket, points, chunk).items():
        print(f"  {name:44s} {value:14.4g}")
    if args.profile:
        profile(bucket, points, n_inits, chunk)


if __name__ == "__main__":
    main()
