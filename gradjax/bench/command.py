"""`gradjax bench`'s command line: its options (`add_arguments`) and the run (`main`).

`main` measures the matmul peak once, then every chosen workload (built-in, `--workload`, or a
sweep file, `--sweep`) with every chosen implementation (`--impl`), each in a process of its own
unless `--in-process`; it prints the table and writes the records (`--json`). It only ties the
options to the measuring (`gradjax.bench.measure`), the workloads (`gradjax.bench.workloads`)
and the records and table (`gradjax.bench.record`), which need no command line of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from gradjax.bench.measure import IMPLS, Job, run_isolated, run_job
from gradjax.bench.record import environment, format_table, make_record, write_outputs
from gradjax.bench.workloads import WORKLOADS, Workload, sweep_workload
from gradjax.sweep.budget import size_argument


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `gradjax bench`."""
    parser.add_argument("--workload", default="all", choices=(*WORKLOADS, "all", "none"),
                        help="built-in workload(s) to run (default: all; none with --sweep)")
    parser.add_argument("--sweep", metavar="FILE", help="also benchmark a sweep file")
    parser.add_argument("--json", metavar="OUT", help="write the records as JSON (and Parquet)")
    parser.add_argument("--reps", type=_positive, default=5,
                        help="timed repetitions after warm-up (default 5)")
    parser.add_argument("--impl", default=",".join(IMPLS),
                        help=f"comma-separated implementations (default {','.join(IMPLS)})")
    parser.add_argument("--inits", type=_positive,
                        help="override each workload's number of inits (seeds)")
    parser.add_argument("--chunk", type=_positive,
                        help="seeds per gradjax / numpy_vec / torch_func chunk (default: per "
                             "workload)")
    parser.add_argument("--max-memory", type=size_argument, metavar="SIZE",
                        help="memory budget per measurement, e.g. 2GiB: chunks shrink to fit, "
                             "and each measured peak RSS is checked against it")
    parser.add_argument("--matmul-n", type=_positive, default=2048,
                        help="size of the square f32 matmul that measures the peak")
    parser.add_argument("--blas-threads", type=_positive, metavar="N",
                        help="BLAS threads of the numpy peers and torch threads of torch_func "
                             "(default: their own choice); 1 avoids OpenBLAS's collapse when "
                             "another process holds a core")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (faster; peak RSS is then the process's "
                             "peak so far, not each measurement's own)")


def _workloads(args: argparse.Namespace) -> list[Workload]:
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    chosen = [WORKLOADS[n] for n in names if n in WORKLOADS]
    if args.sweep:
        chosen.append(sweep_workload(args.sweep))
    if args.inits:
        chosen = [
            dataclasses.replace(w, n_inits=args.inits, chunk=min(w.chunk, args.inits),
                                loop_inits=min(w.loop_inits, args.inits))
            for w in chosen
        ]
    return chosen


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 on success, 1 if a measurement failed or broke --max-memory."""
    impls = [i.strip() for i in args.impl.split(",") if i.strip()]
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        print(f"error: --impl: unknown {', '.join(unknown)}; allowed: {', '.join(IMPLS)}",
              file=sys.stderr)
        return 2
    try:
        workloads = _workloads(args)
    except ValueError as err:  # includes gradjax.sweep.SweepError
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not workloads:
        print("error: nothing to run: --workload none needs --sweep", file=sys.stderr)
        return 2
    if args.in_process and args.blas_threads:
        print("error: --blas-threads needs the measurements in their own processes "
              "(drop --in-process)", file=sys.stderr)
        return 2
    measure = run_job if args.in_process else run_isolated
    env = environment()
    if env["load_avg_1m"] is not None and env["load_avg_1m"] > env["threads"] / 2:
        print(f"warning: the machine is busy (load average {env['load_avg_1m']:.1f} on "
              f"{env['threads']} threads): figures will be low and noisy; see cpu/wall",
              file=sys.stderr)
    peak = measure(Job("peak", reps=args.reps, matmul_n=args.matmul_n))
    records = []
    for w in workloads:
        for impl in impls:
            print(f"measuring {w.name} {impl} ...", file=sys.stderr, flush=True)
            job = Job(impl, w, reps=args.reps, max_memory=args.max_memory, chunk=args.chunk,
                      blas_threads=args.blas_threads)
            records.append(make_record(w, impl, measure(job), peak, env, args.max_memory))
    print(format_table(records, peak))
    if args.json:
        for written in write_outputs(records, args.json):
            print(f"wrote {written}", file=sys.stderr)
    failed = any(r["error"] for r in records if r["impl"] == "gradjax") or "error" in peak
    return 1 if failed or any(r["within_memory"] is False for r in records) else 0
