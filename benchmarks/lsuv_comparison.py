"""gradjax's `unit-variance` against LSUV's own procedure, transcribed in numpy, on the same inits.

    python benchmarks/lsuv_comparison.py [--seeds 64] [--depth 8] [--width 64] [--batch 16]

A tanh MLP with random biases (so one pass per layer is not exact), fan-in normal weights at
scale 0.3 (gradients vanish there). For each init, the multipliers of every hidden layer by:
- gradjax (`gradjax.prescribe.layerwise.unit_variance`: UNIT_VARIANCE_PASSES passes per layer);
- tests/reference.py's transcription of the paper's Algorithm 1 with its own stopping rule
  (|Var - 1| < 0.1, at most 10 passes), and with the rule off and as many passes as gradjax.
Prints the medians over inits per layer, the largest per-init difference from the exact
transcription, and the variance every layer ends at under each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

import gradjax
from gradjax.prescribe import layerwise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import ACTS, lsuv_multipliers  # noqa: E402  (the tests' numpy reference)


def final_variances(params, x, factors, activation: str) -> np.ndarray:
    """Var(z_l) of every hidden layer with each W_l times factors[l]."""
    phi, out, h = ACTS[activation][0], [], x
    for l, p in enumerate(params[:-1]):
        z = h @ (np.asarray(p["W"], np.float64) * factors[l]) + p["b"]
        out.append(np.var(z))
        h = phi(z)
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    doc = {"name": "lsuv", "seeds": args.seeds, "defaults": {
        "in_dim": 16, "width": args.width, "depth": args.depth, "out_dim": 1,
        "activation": "tanh", "batch": args.batch, "init": "fan_in_normal", "scale": 0.3,
        "bias_init": "normal", "bias_scale": 0.3}}
    model = layerwise.cell_model(gradjax.sweep_from_dict(doc))
    began = time.perf_counter()
    ours = layerwise.multipliers("unit-variance", model, root_seed=0, seeds=args.seeds)[0]
    wall = time.perf_counter() - began
    exact, paper, v_ours, v_paper = [], [], [], []
    for seed in range(args.seeds):
        floats, rebuild, _, x, _ = layerwise.init_problem(model, gradjax.init_key(0, seed))
        params = jax.tree.map(np.asarray, rebuild(floats))
        x = np.asarray(x, np.float64)
        exact.append(lsuv_multipliers(params, x, "tanh", args.depth, tol=0,
                                      t_max=layerwise.UNIT_VARIANCE_PASSES))
        paper.append(lsuv_multipliers(params, x, "tanh", args.depth))
        v_ours.append(final_variances(params, x, ours[seed], "tanh"))
        v_paper.append(final_variances(params, x, paper[-1], "tanh"))
    exact, paper = np.array(exact), np.array(paper)
    print(f"tanh MLP depth {args.depth}, width {args.width}, batch {args.batch}, "
          f"{args.seeds} inits; gradjax: {wall:.1f} s for all inits (one compiled call)")
    print("layer | gradjax median | LSUV (tol 0.1) median | LSUV 5-95 % | "
          "gradjax Var(z) median | LSUV Var(z) median")
    for l in range(args.depth):
        lo, hi = np.percentile(paper[:, l], [5, 95])
        print(f"{l + 1} | {np.median(ours[:, l]):.4f} | {np.median(paper[:, l]):.4f} | "
              f"{lo:.3f}-{hi:.3f} | {np.median(np.array(v_ours)[:, l]):.4f} | "
              f"{np.median(np.array(v_paper)[:, l]):.4f}")
    print(f"largest per-init relative difference from the transcription without the stopping "
          f"rule: {np.max(np.abs(ours[:, :args.depth] / exact[:, :args.depth] - 1)):.2e}")


if __name__ == "__main__":
    main()
