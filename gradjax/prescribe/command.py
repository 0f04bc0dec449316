"""`gradjax tune SWEEP.toml`: the command line of `gradjax.prescribe.search.tune`."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from gradjax.prescribe.critical import MIN_LAYERS
from gradjax.prescribe.search import (
    CRITERIA,
    POINTS,
    START_GRID,
    TRAIN_STEPS,
    WIDEN,
    ZOOM_ROUNDS,
    tune,
    tune_folder,
)
from gradjax.results import layout
from gradjax.run import executables
from gradjax.spec import OPTION_BY_NAME
from gradjax.sweep import SweepError, budget, load_sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradjax tune`."""
    parser.add_argument("sweep", help="the sweep file (TOML): each cell is tuned from its scale")
    parser.add_argument("--out", help="the tune's folder (default: results/<name>-tune)")
    parser.add_argument("--criterion", default="critical", choices=CRITERIA,
                        help="critical: the global weight scale at which |dL/dz|^2 keeps its "
                             "size from layer to layer (docs/tune.md)")
    parser.add_argument("--points", type=int, default=POINTS,
                        help=f"scales per zoom round (default {POINTS})")
    parser.add_argument("--zoom-rounds", type=int, default=ZOOM_ROUNDS,
                        help=f"zoom rounds after the first grid (default {ZOOM_ROUNDS})")
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS,
                        help="optimizer steps the check trains the same inits for, before and "
                             f"after, with the cell's optimizer options (default {TRAIN_STEPS}; "
                             "0: no training)")
    parser.add_argument("--max-memory", type=budget.size_argument,
                        default=budget.DEFAULT_MAX_MEMORY, metavar="SIZE",
                        help="device memory budget for a chunk of each round (default: 2GB)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the prescription, no line per tuned cell")


def main(args: argparse.Namespace) -> int:
    """Tune every cell of the sweep and print the prescription; 2 on bad input."""
    if args.points < 3 or args.zoom_rounds < 0 or args.train_steps < 0:
        print("error: --points must be at least 3, --zoom-rounds and --train-steps at least 0",
              file=sys.stderr)
        return 2
    try:
        sweep = load_sweep(args.sweep)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = tune_folder(sweep, args.out)
    executables.enable_compile_cache()
    try:
        table = tune(sweep, out, criterion=args.criterion, points=args.points,
                     zoom_rounds=args.zoom_rounds, train_steps=args.train_steps,
                     max_memory=args.max_memory, quiet=True,
                     say=None if args.quiet else print)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(prescription_text(table))
    if not args.quiet:
        print(f"tune table: {out / layout.TUNE} (gradjax.load({str(out)!r}, \"tune\"))")
    return 0


def prescription_text(table: pd.DataFrame) -> str:
    """One line per tuned cell: its critical scale and the 5-95 % range over inits."""
    varying = [c for c in table.columns
               if c in OPTION_BY_NAME and table[c].astype(str).nunique() > 1]
    lines = []
    for row in table.itertuples():
        options = ", ".join(f"{c} {getattr(row, c)}" for c in varying)
        name = ", ".join(n for n in (row.label, options) if n) or "every cell"
        if row.layers_with_dz < MIN_LAYERS:
            lines.append(f"{name}: too shallow to measure chi: {row.layers_with_dz} layer(s) "
                         f"with dL/dz (taps), the critical criterion needs {MIN_LAYERS}")
            continue
        if not row.critical_scale > 0:
            low, high = START_GRID[0] / WIDEN, START_GRID[1] * WIDEN
            lines.append(f"{name}: no critical scale: the measured chi does not cross 1 from "
                         f"{low:g} to {high:g} times scale {row.from_scale:.4g}")
            continue
        lines.append(
            f"{name}: critical scale {row.critical_scale:.4g} (x{row.multiplier:.3g} of scale "
            f"{row.from_scale:.4g}); per init 5-95 %: x{row.multiplier_p05:.3g} to "
            f"x{row.multiplier_p95:.3g}; {row.inits_crossing} of {row.inits} inits cross "
            f"chi = 1 on the grid ({row.wall_s:.1f} s)")
        lines.append(
            f"  first/last layer, median over the same inits, default -> tuned: |dL/dz|^2 "
            f"{row.dz_ratio_before:.3g} -> {row.dz_ratio_after:.3g}, |dL/dW|^2 "
            f"{row.grad_ratio_before:.3g} -> {row.grad_ratio_after:.3g} "
            f"({'balanced better' if row.improved else 'weight gradients NOT balanced better'})")
        if row.train_steps > 0:
            lines.append(f"  loss halved within {row.train_steps} steps: "
                         f"{row.frac_loss_halved_before:.0%} of inits -> "
                         f"{row.frac_loss_halved_after:.0%}")
    return "\n".join(lines)
