"""How far the measured critical point of a deep tanh MLP sits from mean field, by width.

    python benchmarks/tune_finite_width.py [--widths 64,128,256,512,1024]
        [--seeds 64,64,64,16,16] [--depth 20] [--sigma-b2 0.05] [--max-memory 6GB]
        [--csv PATH] [--figure PATH]

For each width, `gradjax.tune` (criterion `critical`) finds the fan-in weight scale s at which
the measured |dL/dz_l|^2 keeps its size through the middle layers; s^2 is the measured critical
sigma_w^2. Beside it: mean-field theory's (`gradjax.nn.theory.critical_sigma_w2`, where chi_1
= 1 at this sigma_b^2), the relative shift, the 5-95 % range over inits, and the wall time of
each tune. With --figure, the shift against width, as in docs/tune.md. --seeds is one count or
one per width: a tune computes every statistic and the across-seed moments of every weight
entry, so wide nets get fewer inits (their per-init profiles also spread less). With --csv,
each width's row is appended to that file as it is measured, and --figure draws every row the
file holds, so widths measured in separate runs share one figure.
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

from gradjax.nn import theory
from gradjax.prescribe import tune
from gradjax.run import executables
from gradjax.sweep import budget, parse_sweep

SWEEP = """
name = "tanh_w{width}"
seeds = {seeds}
root_seed = 11
[defaults]
in_dim = 32
width = {width}
depth = {depth}
out_dim = 1
activation = "tanh"
init = "fan_in_normal"
scale = {scale}
bias_init = "normal"
bias_scale = {bias_scale}
inputs = "gaussian"
targets = "gaussian"
"""


COLUMNS = ("width", "inits", "sigma_w2", "shift", "p05", "p95", "wall_s")


def measure(width: int, seeds: int, depth: int, sigma_b2: float, start: float,
            folder: Path, max_memory: int) -> dict:
    text = SWEEP.format(width=width, seeds=seeds, depth=depth, scale=start,
                        bias_scale=math.sqrt(sigma_b2))
    sweep = parse_sweep(text, str(folder / f"tanh_w{width}.toml"))
    began = time.perf_counter()
    row = tune(sweep, folder / f"w{width}", max_memory=max_memory).iloc[0]
    return {"width": width, "inits": seeds, "sigma_w2": row["critical_scale"] ** 2,
            "p05": (row["multiplier_p05"] * start) ** 2,
            "p95": (row["multiplier_p95"] * start) ** 2,
            "wall_s": time.perf_counter() - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,128,256,512,1024")
    parser.add_argument("--seeds", default="64,64,64,16,16")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--sigma-b2", type=float, default=0.05)
    parser.add_argument("--max-memory", type=budget.size_argument, default=6 * 1024**3,
                        metavar="SIZE", help="the rounds' memory budget (width 1024 needs >2GB)")
    parser.add_argument("--csv", type=Path, help="append each width's row to this file")
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    executables.enable_compile_cache()
    theory_w2 = theory.critical_sigma_w2("tanh", args.sigma_b2)
    widths = [int(w) for w in args.widths.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    seeds = seeds * len(widths) if len(seeds) == 1 else seeds
    print(f"tanh, depth {args.depth}, sigma_b^2 {args.sigma_b2}: mean-field critical "
          f"sigma_w^2 = {theory_w2:.4f}")
    print(f"{'width':>6} {'inits':>6} {'measured':>9} {'shift':>7} {'5 %':>7} {'95 %':>7} "
          f"{'tune s':>7}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, inits in zip(widths, seeds, strict=True):
            row = measure(width, inits, args.depth, args.sigma_b2, math.sqrt(theory_w2),
                          Path(tmp), args.max_memory)
            row["shift"] = row["sigma_w2"] / theory_w2 - 1
            rows.append(row)
            if args.csv:
                append(args.csv, row)
            print(f"{width:>6} {inits:>6} {row['sigma_w2']:>9.4f} {row['shift']:>+7.1%} "
                  f"{row['p05']:>7.3f} {row['p95']:>7.3f} {row['wall_s']:>7.1f}", flush=True)
    if args.figure:
        draw(read(args.csv) if args.csv else rows, theory_w2, args)


def append(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in COLUMNS})


def read(path: Path) -> list[dict]:
    with path.open() as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return sorted(rows, key=lambda r: r["width"])


def draw(rows: list[dict], theory_w2: float, args: argparse.Namespace) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    widths = [r["width"] for r in rows]
    ax.fill_between(widths, [r["p05"] for r in rows], [r["p95"] for r in rows], alpha=0.2,
                    label="5-95 % of per-init crossings")
    ax.plot(widths, [r["sigma_w2"] for r in rows], "o-", label="measured (mean over inits)")
    ax.axhline(theory_w2, color="k", ls="--", label=f"mean field: {theory_w2:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width")
    ax.set_ylabel(r"critical $\sigma_w^2$")
    inits = ", ".join(f"{r['inits']:.0f}" for r in rows)
    ax.set_title(f"tanh, depth {args.depth}, $\\sigma_b^2$ = {args.sigma_b2}, inits per width: "
                 f"{inits}", fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(args.figure)


if __name__ == "__main__":
    main()
