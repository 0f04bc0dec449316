"""`gradjax tune SWEEP.toml`: the command line of `gradjax.prescribe.tuning.tune`."""

from __future__ import annotations

import argparse
import sys

from gradjax.analysis.prescription import prescription_text
from gradjax.prescribe.search import POINTS, ZOOM_ROUNDS
from gradjax.prescribe.tuning import CRITERIA, TRAIN_STEPS, tune, tune_folder
from gradjax.results import layout
from gradjax.run import executables
from gradjax.sweep import SweepError, budget, load_sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradjax tune`."""
    parser.add_argument("sweep", help="the sweep file (TOML): each cell is tuned from its scale")
    parser.add_argument("--out", help="the tune's folder (default: results/<name>-tune)")
    parser.add_argument("--criterion", default="critical", choices=CRITERIA,
                        help="critical: the global weight scale at which |dL/dz|^2 keeps its "
                             "size from layer to layer; unit-variance: per layer, LSUV's "
                             "pre-activation variance 1; equal-gradients: per layer, every "
                             "|dL/dW_l|^2 within a factor 2 (docs/tune.md)")
    parser.add_argument("--points", type=int, default=POINTS,
                        help=f"critical: scales per zoom round (default {POINTS})")
    parser.add_argument("--zoom-rounds", type=int, default=ZOOM_ROUNDS,
                        help=f"critical: zoom rounds after the first grid (default {ZOOM_ROUNDS})")
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
