"""The `gradjax` command line (also `python -m gradjax`).

  gradjax run SWEEP.toml [--out DIR|URI] [--seeds N] [--max-memory 2GB] [--overwrite]
                         [--quiet] [--no-cache] [--shard I/N] [--seed-block N]
                         [--executor local|ray [--address ADDR]] [--distributed ...]
  gradjax validate SWEEP.toml [--max-memory 2GB] [--estimate]
  gradjax summary DIR [--by activation,scale] [--layer L] [--where OPTION=VALUE] [--pool]
  gradjax findings DIR
  gradjax bench ... / gradjax report ...   (options from `gradjax.bench.command` /
  `gradjax.analysis.report`)

Exit status: 0 on success, 2 for a bad sweep file, command line or results folder (one
`error: ...` line on stderr), 130 when interrupted. `bench` and `report` are imported only when
chosen, so their optional dependencies (matplotlib, psutil) matter only there.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import types
from collections.abc import Sequence
from pathlib import Path

from gradjax.analysis.findings import findings_text
from gradjax.analysis.summary_table import summary_text
from gradjax.results import files, layout, reading, results_folder
from gradjax.results.remote import is_remote, output_folder, pull, push
from gradjax.run import launch_options
from gradjax.run.preflight import check_sweep
from gradjax.spec import OPTION_TABLE
from gradjax.sweep import MAX_SEEDS, SweepError, budget, load_sweep

EXTERNAL: dict[str, tuple[str, str]] = {
    "bench": ("gradjax.bench.command", "time gradjax against the baselines"),
    "report": ("gradjax.analysis.report", "plots and mean-field comparison of a results folder"),
    "tune": ("gradjax.prescribe.command", "prescribe an init: the critical scale, or per-layer "
                                     "multipliers (LSUV's unit variance, equal gradients)"),
}
RESULTS = layout.RESULTS


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _seeds(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{text} is not in 1..{MAX_SEEDS}")
    return value


def _shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 1 <= I <= N (e.g. 3/8)")
    return int(i), int(n)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _run_options_error(args: argparse.Namespace) -> str | None:
    """Options that do not go together, as one error line's text (`launch_options`)."""
    return launch_options.conflict(shard=args.shard, distributed=args.distributed,
                                   executor=args.executor, overwrite=args.overwrite,
                                   address=args.address)


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        sweep = load_sweep(args.sweep)
    except SweepError as err:
        print(err.line(), file=sys.stderr)
        return 2
    problem = _run_options_error(args)
    if problem:
        return _error(problem)
    if args.seeds is not None:
        sweep = sweep.with_seeds(args.seeds)
    try:
        out = output_folder(args.out, RESULTS, sweep.name)
    except layout.ResultsError as err:
        return _error(str(err))
    from gradjax.run import executables  # the compute stack (JAX) only for commands that compute

    cache = None if args.no_cache else executables.enable_compile_cache()
    if args.no_cache:
        executables.disable_compile_cache()
    remote = args.out if args.out and is_remote(args.out) else None
    try:
        if remote:
            pulled = pull(remote, out)
            _say(args, f"staging {remote} in {out}" + (f" ({pulled} files pulled)"
                                                        if pulled else ""))
        _run(args, sweep, out, cache)
        if remote:
            _say(args, f"pushed {push(out, remote)} files to {remote}")
    except SweepError as err:
        print(err.line(), file=sys.stderr)
        return 2
    except layout.ResultsError as err:
        return _error(str(err))
    except OSError as err:  # a full disk, a read-only folder: nothing finished is harmed
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        problem = (err.strerror or str(err)).splitlines()[0]
        return _error(f"writing the results in {out} failed ({problem}{where}); what was "
                      "finished is kept: fix it and run the same command again to resume")
    except KeyboardInterrupt:
        return _interrupted(out)
    return 0


def _interrupted(out: Path) -> int:
    """One line, status 130, and no more SIGINTs. Every finished chunk is on disk (the engine
    checkpoints before it stops). A compile still running in a background thread cannot be
    stopped, and the interpreter would wait for it at exit (or abort, interrupted inside
    XLA), so then the process ends at once, with its output flushed."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"interrupted: the finished chunks are kept; run the same command again to resume "
          f"into {out}", file=sys.stderr)
    interrupt = sys.modules.get("gradjax.run.interrupt")  # loaded only by a run (JAX)
    if interrupt is not None and interrupt.busy_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    signal.signal(signal.SIGINT, previous)
    return 130


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.quiet:
        print(line, file=sys.stderr)


def _run(args: argparse.Namespace, sweep, out: Path, cache: Path | None) -> None:
    from gradjax.run import engine

    if args.executor == "ray":
        from gradjax.run.ray_executor import run_on_ray

        run_on_ray(sweep, out, address=args.address, max_memory=args.max_memory,
                   overwrite=args.overwrite, seed_block=args.seed_block, cache=cache,
                   log=(lambda line: None) if args.quiet else print)
        return
    shard = args.shard
    if args.distributed:
        from gradjax.run.multihost import initialize

        shard = initialize(args.coordinator, args.num_processes, args.process_id)
    engine.execute_sweep(sweep, out, max_memory=args.max_memory, overwrite=args.overwrite,
                     quiet=args.quiet, shard=shard, seed_block=args.seed_block)


def _cmd_validate(args: argparse.Namespace) -> int:
    """Every check `gradjax run` makes before it writes (`preflight.check_sweep`, JAX only for
    plug-in models); with --estimate, the run's time and memory from a model of its cost
    (`gradjax.run.estimate`), compiling nothing."""
    try:
        sweep = load_sweep(args.sweep)
        check_sweep(sweep, args.max_memory)
    except SweepError as err:
        print(err.line(), file=sys.stderr)
        return 2
    buckets = sweep.buckets()
    print(f"ok: {args.sweep}: sweep {sweep.name!r}, {len(sweep.cells)} cells in {len(buckets)} "
          f"compiled bucket(s), {sweep.seeds:,} seeds each "
          f"({len(sweep.cells) * sweep.seeds:,} inits); results go to {RESULTS / sweep.name}")
    if not args.estimate:
        print("time and memory: run `gradjax validate --estimate` to estimate them (it compiles "
              "nothing)")
        return 0
    from gradjax.run.estimate import estimate_run

    guess = estimate_run(sweep, args.max_memory)
    print(f"estimate (a model of the run's cost, nothing compiled; docs/sweeps.md): about "
          f"{guess.total_s:.2g} s: {guess.start_s:.2g} s starting, {guess.compile_s:.2g} s "
          f"compiling {guess.programs} program(s) (less with the persistent compile cache "
          f"warm), {guess.compute_s:.2g} s computing {guess.chunks} chunk(s), Parquet writes "
          f"of a large sweep not included; device memory about "
          f"{budget.format_bytes(guess.device_bytes)} per chunk (budget "
          f"{budget.format_bytes(args.max_memory)}), across-seed moments "
          f"{budget.format_bytes(guess.host_bytes)} on the host; seconds of the reference "
          f"machine (2 CPU cores); the estimate took {guess.wall_s:.2g} s")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else None
    try:
        stats = [c.strip() for c in args.stat.split(",") if c.strip()] if args.stat else None
        print(summary_text(reading.load(args.dir, "summary"), by, args.layer, stats,
                           pool=args.pool, where=args.where or ()))
    except (FileNotFoundError, ValueError) as err:
        return _error(str(err))
    return 0


def _cmd_findings(args: argparse.Namespace) -> int:
    try:
        print(findings_text(args.dir))
    except (FileNotFoundError, ValueError) as err:
        return _error(str(err))
    return 0


def options_help() -> str:
    """The sweep-file options, one line each, from `gradjax.spec.OPTION_TABLE`."""
    lines = ["sweep-file options ([defaults], [grid] axes or [[cases]] overrides):"]
    for o in OPTION_TABLE:
        lines.append(f"  {o.name}: {o.doc}; {o.allowed()}; default {o.default_text()}")
    return "\n".join(lines)


def build_parser(external: types.ModuleType | None = None) -> argparse.ArgumentParser:
    """The parser; `external` is the imported `gradjax.bench.command` or `gradjax.analysis.report`
    module when that subcommand was chosen (the others get a placeholder parser)."""
    parser = argparse.ArgumentParser(
        prog="gradjax", description="Gradient statistics over thousands of random inits.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run (or resume) a sweep file", epilog=options_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("sweep", help="the sweep file (TOML)")
    run.add_argument("--out", help="results folder (default: results/<name>), or a pyarrow "
                                   "filesystem URI (file://, s3://, gs://)")
    run.add_argument("--seeds", type=_seeds, help="inits per cell, instead of the file's seeds")
    run.add_argument("--max-memory", type=budget.size_argument,
                     default=budget.DEFAULT_MAX_MEMORY,
                     metavar="SIZE", help="device memory budget for a chunk (default: 2GB)")
    run.add_argument("--overwrite", action="store_true", help="discard earlier results")
    run.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    run.add_argument("--no-cache", action="store_true",
                     help=f"do not use the persistent compile cache ({files.user_cache_dir()})")
    scale = run.add_argument_group("beyond one process (docs/scale-out.md)")
    scale.add_argument("--shard", type=_shard, default=(1, 1), metavar="I/N",
                       help="compute only the I-th of N fixed shares of the work (a job array's "
                            "task); the last shard to finish completes the folder")
    scale.add_argument("--seed-block", type=_positive, metavar="N",
                       help="seeds per block of a new folder: the finest share of one cell "
                            f"(default {results_folder.SEED_BLOCK})")
    scale.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="ray: send the work as Ray tasks (the optional ray extra)")
    scale.add_argument("--address", help="the Ray cluster to join (default: a running one, "
                                          "else a local Ray)")
    scale.add_argument("--distributed", action="store_true",
                       help="join a multi-host JAX job (jax.distributed.initialize); each "
                            "process computes its share")
    scale.add_argument("--coordinator", help="with --distributed: HOST:PORT of process 0 "
                                             "(default: from the cluster's environment)")
    scale.add_argument("--num-processes", type=_positive, help="with --distributed")
    scale.add_argument("--process-id", type=int, help="with --distributed")
    run.set_defaults(handler=_cmd_run)

    validate = sub.add_parser("validate", help="check a sweep file, run nothing")
    validate.add_argument("sweep")
    validate.add_argument("--max-memory", type=budget.size_argument,
                          default=budget.DEFAULT_MAX_MEMORY,
                          metavar="SIZE", help="the device memory budget run will use")
    validate.add_argument("--estimate", action="store_true",
                          help="estimate the run's time and memory from a model of its cost "
                          "(compiles nothing, writes nothing)")
    validate.set_defaults(handler=_cmd_validate)

    summary = sub.add_parser("summary", help="print a compact table of a results folder")
    summary.add_argument("dir")
    summary.add_argument("--by", help="comma-separated columns to group by "
                         "(default: the options that vary)")
    summary.add_argument("--layer", type=int, help="only this layer (1 = first; -1 = output)")
    summary.add_argument("--stat", help="comma-separated summary columns to print, e.g. "
                         "grad_var_p50,delta_sq_norm_mean (a bare statistic means its _p50)")
    summary.add_argument("--where", action="append", metavar="OPTION=VALUE",
                         help="only the cells with this option value (repeatable), e.g. "
                         "depth=8")
    summary.add_argument("--pool", action="store_true",
                         help="let a row take the median over cells that differ in options "
                         "outside --by (refused otherwise)")
    summary.set_defaults(handler=_cmd_summary)

    findings = sub.add_parser("findings", help="what a results folder shows, cell by cell, "
                              "and in the seed's terms for cells shaped like its examples")
    findings.add_argument("dir")
    findings.set_defaults(handler=_cmd_findings)

    for name, (module_name, text) in EXTERNAL.items():
        ext = sub.add_parser(name, help=text)
        if external is not None and external.__name__ == module_name:
            external.add_arguments(ext)
            ext.set_defaults(handler=external.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    external = None
    if command in EXTERNAL:  # imported only now, so its optional dependencies matter only here
        try:
            external = importlib.import_module(EXTERNAL[command][0])
        except ImportError as err:
            return _error(f"gradjax {command} is unavailable here: {err}")
    try:
        args = build_parser(external).parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error (status 2)
        return int(exit_.code or 0)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:  # before a run started (importing JAX), or another command
        print("interrupted", file=sys.stderr)
        return 130
