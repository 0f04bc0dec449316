"""The accelerator check, one command (`make bench-gpu`), sized to finish within 8 minutes.

    python benchmarks/gpu_check.py [--out results/gpu_check] [--seeds 256]

1. TF32's effect on the statistics (`gradjax.bench.precision`): the bench's M bucket (depth
   10, width 128, batch 64, tanh) at three scales, the same inits at `default` matmul
   precision against `highest`, which is what `gradjax run` uses.
2. `gradjax bench --workload all --sweep sweeps/bench_grid.toml`, in a child process, with
   whatever time is left.

It prints both and writes `precision.json` and `bench.json` (the bench's records) to `--out`.
It runs on any device. On a CPU the precision effect is 0, because both precisions are full
float32 there. docs/performance.md says which machine gave each figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax

from gradjax.bench.precision import precision_effect
from gradjax.bench.workloads import WORKLOADS

BUDGET_S = 8 * 60
SCALES = (0.5, 1.0, 2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check"))
    parser.add_argument("--seeds", type=int, default=256)
    args = parser.parse_args()
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind} (x{jax.device_count()}), "
          f"jax {jax.__version__}")
    effect = precision_effect(WORKLOADS["M"].buckets[0].spec, SCALES, args.seeds, chunk=64)
    (args.out / "precision.json").write_text(json.dumps(
        {"device": device.device_kind, "seeds": args.seeds, "scales": SCALES,
         "effect": effect}, indent=1))
    print(f"TF32 (default) against highest, M bucket, {args.seeds} inits x {len(SCALES)} "
          "scales: |default / highest - 1|")
    for name, row in effect.items():
        print(f"  {name:15s} median {row['median']:.2e}  p99 {row['p99']:.2e}  "
              f"max {row['max']:.2e}  ({row['n']} values)")
    left = BUDGET_S - (time.monotonic() - start)
    bench = [sys.executable, "-m", "gradjax", "bench", "--workload", "all", "--sweep",
             "sweeps/bench_grid.toml", "--json", str(args.out / "bench.json")]
    try:
        code = subprocess.run(bench, timeout=max(left, 1), check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"error: the bench ran past the {BUDGET_S} s budget", file=sys.stderr)
        return 1
    print(f"gpu check: {time.monotonic() - start:.0f} s of {BUDGET_S} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
