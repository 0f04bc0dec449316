"""The `gradjax` command line (also `python -m gradjax`).

  gradjax run SWEEP.toml [--out DIR|URI] [--seeds N] [--max-memory 2GB] [--overwrite]
                         [--quiet] [--no-cache] [--shard I/N] [--seed-block N]
                         [--executor local|ray [--address ADDR]] [--distributed ...]
  gradjax validate SWEEP.toml [--max-memory 2GB] [--estimate]
  gradjax summary DIR [--by activation,scale] [--layer L] [--where OPTION=VALUE] [--pool]
  gradjax findings DIR
  gradjax bench ... / gradjax report ...   (options from `gradjax.bench.measure` /
  `gradjax.analysis.report`)

Exit status: 0 on success, 2 for a bad sweep file, command line or results folder (one
`error: ...` line on stderr), 130 when interrupted. `bench` and `report` are imported only when
chosen, so their optional dependencies (matplotlib, psutil) matter only there.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import signal
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gradjax.results import storage
from gradjax.results.inert import inert_lines
from gradjax.results.remote import is_remote, output_folder, pull, push
from gradjax.run.preflight import check_sweep
from gradjax.spec import OPTION_TABLE, OPTIONS
from gradjax.sweep import MAX_SEEDS, SweepError, budget, load_sweep

EXTERNAL: dict[str, tuple[str, str]] = {
    "bench": ("gradjax.bench.measure", "time gradjax against the baselines"),
    "report": ("gradjax.analysis.report", "plots and mean-field comparison of a results folder"),
}
RESULTS = storage.RESULTS
# the default columns of `gradjax summary`: summary column -> short header
SUMMARY_COLUMNS: dict[str, str] = {
    "grad_sq_norm_p50": "sq_norm",
    "delta_sq_norm_p50": "dz_sq_norm",
    "grad_frac_zero_mean": "frac_zero",
    "frac_seeds_all_zero": "born_dead",
    "grad_cv_p50": "cv",
    "grad_unit_cos_sq_mean": "unit_cos_sq",
    "grad_var_across_seeds": "var_seeds",
}


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
    """Options that do not go together, as one error line's text."""
    if args.shard != (1, 1) and args.distributed:
        return "--shard and --distributed: the multi-host job sets each process's shard"
    if args.executor == "ray" and (args.shard != (1, 1) or args.distributed):
        return "--executor ray with --shard or --distributed: Ray splits the work itself"
    if args.overwrite and (args.shard != (1, 1) or args.distributed):
        return ("--overwrite with shards: each would discard the others' work; clear the "
                "folder once (or run with --overwrite once), then start the shards")
    if args.address and args.executor != "ray":
        return "--address is the Ray cluster's: use it with --executor ray"
    return None


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
    except storage.ResultsError as err:
        return _error(str(err))
    from gradjax.run import engine  # the compute stack (JAX) only for the commands that compute

    cache = None if args.no_cache else engine.enable_compile_cache()
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
    except storage.ResultsError as err:
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
    engine = sys.modules.get("gradjax.run.engine")
    if engine is not None and engine.busy_threads():
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


def option_columns(frame: pd.DataFrame) -> list[str]:
    """The option columns of a results table: gradjax's and any plug-in's (they sit between
    `label` and `layer`, `gradjax.results.storage`'s schemas)."""
    columns = list(frame.columns)
    return columns[columns.index("label") + 1 : columns.index("layer")]


def varying_options(frame: pd.DataFrame) -> list[str]:
    """The option columns (and label) that differ between the cells of a summary frame."""
    cells = frame.drop_duplicates("cell")
    options = [c for c in option_columns(frame) if c != "seed"]
    return [c for c in ("label", *options) if cells[c].nunique(dropna=False) > 1]


def models(frame: pd.DataFrame) -> pd.Series:
    """Each row's model ("mlp" for folders written before models were an option)."""
    return frame["model"] if "model" in frame else pd.Series("mlp", index=frame.index)


def weight_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The MLP's W rows and every other model's parameter rows (not its taps)."""
    other = (models(frame) != "mlp") & ~frame["param"].str.startswith("taps[")
    return frame[(frame["param"] == "W") | other]


def summary_columns(frame: pd.DataFrame, stats: Sequence[str] | None) -> dict[str, str]:
    """Summary column -> header: SUMMARY_COLUMNS, or the chosen columns (a statistic's bare name
    means its median over inits, `<stat>_p50`)."""
    if not stats:  # (a folder written before a statistic existed lacks its column)
        return {c: short for c, short in SUMMARY_COLUMNS.items() if c in frame.columns}
    chosen = {}
    for name in stats:
        column = name if name in frame.columns else f"{name}_p50"
        if column not in frame.columns or column in OPTIONS or frame[column].dtype == object:
            allowed = ", ".join(c for c in frame.columns
                                if c.endswith(("_p50", "_mean")) or c in SUMMARY_COLUMNS)
            raise ValueError(f"--stat: unknown statistic {name!r}; allowed: {allowed}")
        chosen[column] = column
    return chosen


MAX_SHOWN_VALUES = 6  # an error line names at most this many of an option's values


def _values_text(values: Sequence) -> str:
    shown = [f"{v:g}" if isinstance(v, float) else str(v) if v != "" else '""'
             for v in values[:MAX_SHOWN_VALUES]]
    return ", ".join(shown) + (", ..." if len(values) > MAX_SHOWN_VALUES else "")


def _distinct(column: pd.Series) -> list:
    values = list(column.drop_duplicates())
    try:
        return sorted(values)
    except TypeError:  # (mixed types, e.g. None beside strings)
        return values


def where_rows(frame: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """The rows whose option equals the value of each `OPTION=VALUE` (numbers compared as
    numbers, 8 = 8.0); a filter that names no option or matches no row is a ValueError."""
    allowed = ["label", *option_columns(frame)]
    for item in where:
        key, sep, text = (part.strip() for part in item.partition("="))
        if not sep or key not in allowed:
            raise ValueError(f"--where {item!r}: not OPTION=VALUE with an option of "
                             f"{', '.join(allowed)}")
        column = frame[key]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            match = column.astype(str).str.lower() == text.lower()
        else:
            try:
                match = pd.Series(np.isclose(column.to_numpy(np.float64), float(text)),
                                  index=frame.index)
            except ValueError:
                match = pd.Series(False, index=frame.index)
        if not match.any():
            raise ValueError(f"--where {key}={text}: matches no row; values present: "
                             f"{_values_text(_distinct(column))}")
        frame = frame[match]
    return frame


def pooled_options(frame: pd.DataFrame, by: Sequence[str]) -> dict[str, list]:
    """The options (and label) outside `by` that take more than one value among the cells of
    one group of `by`: what a median over a group's cells would pool, with their values."""
    if "cell" in by:
        return {}
    cells = frame.drop_duplicates("cell")
    pooled = {}
    for column in varying_options(frame):
        if column in by:
            continue
        spread = cells.groupby(list(by), dropna=False)[column].nunique(dropna=False)
        if spread.max() > 1:
            pooled[column] = _distinct(cells[column])
    return pooled


def _pool_error(pooled: dict[str, list]) -> str:
    """One line: which options would be pooled, and the three ways out."""
    if len(pooled) == 1:
        ((column, values),) = pooled.items()
        return (f"{column} varies ({_values_text(values)}) and is not in --by: add it to --by, "
                f"fix it with --where {column}=VALUE, or pass --pool to pool over it")
    named = [f"{c} ({_values_text(v)})" for c, v in pooled.items()]
    what = ", ".join(named[:-1]) + f" and {named[-1]}"
    return (f"{what} vary and are not in --by: add them to --by, fix them with --where "
            "OPTION=VALUE, or pass --pool to pool over them")


def summary_text(frame: pd.DataFrame, by: Sequence[str] | None, layer: int | None,
                 stats: Sequence[str] | None = None, *, pool: bool = False,
                 where: Sequence[str] = ()) -> str:
    """A compact table of the W rows: per group of `by` values and layer, the median over the
    group's cells of a few summary columns. `layer` < 0 counts from the output layer. A group
    pools cells that differ in an option outside `by` only with `pool` (else ValueError naming
    the options): a median over depths 2 and 8 reads as one depth's value."""
    frame = where_rows(frame, where)
    by = list(by) if by else (varying_options(frame) or ["cell"])
    unknown = [c for c in by if c not in frame.columns]
    if unknown:
        raise ValueError(f"--by: unknown column(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(['cell', 'label', *option_columns(frame)])}")
    pooled = pooled_options(frame, by)
    if pooled and not pool:
        raise ValueError(_pool_error(pooled))
    columns = summary_columns(frame, stats)
    rows = weight_rows(frame)
    keys = [*by, "layer"] + (["param"] if rows["param"].nunique() > 1 else [])
    if layer is not None:
        rows = rows[rows["layer" if layer > 0 else "layer_from_output"] == layer]
        if rows.empty:
            raise ValueError(f"--layer {layer}: no such layer in these cells")
    table = rows.groupby(keys, sort=True, dropna=False).agg(
        cells=("cell", "nunique"), seeds=("seeds", "median"),
        **{short: (col, "median") for col, short in columns.items()},
    ).reset_index()
    table["seeds"] = table["seeds"].round().astype("int64")
    if (table["cells"] == 1).all():
        table = table.drop(columns="cells")
        how = "one cell per row"
    else:
        over = "; ".join(f"{c} {_values_text(v)}" for c, v in pooled.items())
        how = ("each row is the median over its `cells`"
               + (f" (--pool: pooled over {over})" if over else " (the same options)"))
    text = table.to_string(index=False, float_format=lambda v: f"{v:.3g}")
    legend = ", ".join(f"{short} = {col}" for col, short in columns.items() if short != col)
    what = "W rows" if (rows["param"] == "W").all() else "Parameter rows (W for the MLP)"
    return (f"{what} by {', '.join(keys[:-1])} and {keys[-1]}; {how}.\n{text}\n"
            + (f"{legend}. " if legend else "")
            + "_p50: median over inits; load() gives every column.")


def _cmd_summary(args: argparse.Namespace) -> int:
    by = [c.strip() for c in args.by.split(",") if c.strip()] if args.by else None
    try:
        stats = [c.strip() for c in args.stat.split(",") if c.strip()] if args.stat else None
        print(summary_text(storage.load(args.dir, "summary"), by, args.layer, stats,
                           pool=args.pool, where=args.where or ()))
    except (FileNotFoundError, ValueError) as err:
        return _error(str(err))
    return 0


BIAS_SCALED = ("normal", "constant")  # the bias inits that use bias_scale
UNIT_COS_SQ = "grad_unit_cos_sq"  # 1 = every unit's gradient parallel up to sign
PROFILE_ROWS = 4  # deeper cells show their first and last two layers


def _option_text(row: pd.Series, names: Sequence[str]) -> str:
    """`name value` for each option, bias_scale only where the bias init uses it."""
    leaky = "leaky_relu" in (row["activation"], row["output_activation"])
    shown = [n for n in names if (n != "bias_scale" or row["bias_init"] in BIAS_SCALED)
             and (n != "leaky_slope" or leaky) and not pd.isna(row[n])
             and (n, row[n]) != ("model", "mlp")]
    return ", ".join(f"{n} {row[n]:g}" if isinstance(row[n], float) else f"{n} {row[n]}"
                     for n in shown)


def _cell_name(row: pd.Series, varying: Sequence[str]) -> str:
    """A cell's label (if any) and the options that vary between the sweep's cells."""
    options = _option_text(row, varying)
    if row["label"]:
        return f"{row['label']}" + (f" ({options})" if options else "")
    return options or "The sweep's only cell"


def _find_cell(cells: pd.DataFrame, **options) -> pd.Series | None:
    match = cells
    for key, value in options.items():
        same = np.isclose(match[key], value) if isinstance(value, float) else match[key] == value
        match = match[same]
    return None if match.empty else match.iloc[0]


def _profile_lines(rows: pd.DataFrame) -> list[str]:
    """W rows of one cell: every layer, or the first and last two of a deep cell, then how
    |dL/dz|^2 changes from the output layer down to layer 1."""
    shown = rows if len(rows) <= PROFILE_ROWS else pd.concat([rows.iloc[:2], rows.iloc[-2:]])
    lines = []
    for i, (_, r) in enumerate(shown.iterrows()):
        if i == 2 and len(rows) > PROFILE_ROWS:
            lines.append(f"  ... {len(rows) - PROFILE_ROWS} more layers "
                         "(gradjax summary DIR --layer L shows any layer)")
        cos = r.get(f"{UNIT_COS_SQ}_mean", math.nan)
        lines.append(
            f"  W{r['layer']}: exact zeros {r['grad_frac_zero_mean']:.1%} of entries, "
            f"born dead {r['frac_seeds_all_zero']:.2%} of inits, grad_cv median "
            f"{r['grad_cv_p50']:.3g}"
            + ("" if np.isnan(cos) else f", squared unit cosine mean {cos:.3f}")
        )
    first, last = rows.iloc[0]["delta_sq_norm_p50"], rows.iloc[-1]["delta_sq_norm_p50"]
    if len(rows) > 1 and last > 0 and np.isfinite(first / last):
        lines.append(f"  |dL/dz|^2 (median over inits) at layer 1 is {first / last:.3g} x the "
                     "output layer's" + _trend(first / last))
    return lines


def _trend(ratio: float) -> str:
    if ratio < 1e-3:
        return ": vanishing"
    if ratio > 1e3:
        return ": exploding"
    return ""


def _seed_lines(w: pd.DataFrame, cells: pd.DataFrame, cos_exact: dict) -> list[str]:
    """What the seed's three examples show, for cells shaped like them (2-3-1, batch 1) at the
    init (step 0 of a training sweep)."""
    seed_like = cells[(cells["in_dim"] == 2) & (cells["width"] == 3) & (cells["depth"] == 1)
                      & (cells["out_dim"] == 1) & (cells["batch"] == 1)
                      & ((cells["step"] == 0) if "step" in cells else True)]
    lines = []
    relu = _find_cell(seed_like, activation="relu")
    if relu is not None:
        lines.append(
            f"* ReLU example: {relu['grad_frac_zero_mean']:.1%} of W1's gradient entries are "
            f"exactly 0 on average (a hidden unit with z <= 0 passes no gradient back, and each "
            f"is off with probability 1/2), and {relu['frac_seeds_all_zero']:.1%} of inits are "
            f"born dead: all of W1's gradient is 0 (all 3 units off, 1/8 = 12.5%)."
        )
    tiny = _find_cell(seed_like, activation="sigmoid", scale=0.01)
    ref = _find_cell(seed_like, activation="sigmoid", scale=1.0)
    if tiny is not None:
        lines.append(_tiny_init_line(w, tiny, ref))
    shares = [cos_exact[c] for c in seed_like["cell"] if not math.isnan(cos_exact[c])]
    if shares:
        lines.append(
            "* One example makes dL/dW1 = outer(x, delta1): every hidden unit's column of W1's "
            "gradient is a multiple of x, so the gradients of any two units are parallel up to "
            "sign and W1's rows are x_1 and x_2 times one shared vector, the repeated values in "
            "the seed's printouts. Measured: the mean squared cosine between units' gradients "
            f"({UNIT_COS_SQ}: 1 = parallel up to sign, 0 = orthogonal) is exactly 1 in "
            f"{min(shares):.1%} of the inits with 2 or more live units, in every such cell."
        )
    return lines


def _tiny_init_line(w: pd.DataFrame, tiny: pd.Series, ref: pd.Series | None) -> str:
    t = w[w["cell"] == tiny["cell"]].set_index("layer")
    text = (f"* Tiny init (x0.01): W2's gradient entries are nearly one value. Their spread "
            f"relative to their size (grad_cv, median over inits) is "
            f"{t.loc[2, 'grad_cv_p50']:.3g}, against {t.loc[1, 'grad_cv_p50']:.3g} for W1 "
            "under the same tiny init")
    if ref is not None:
        r = w[w["cell"] == ref["cell"]].set_index("layer")
        text += (f", and against {r.loc[2, 'grad_cv_p50']:.3g} for W2 at scale 1. Every hidden "
                 "unit sits at sigmoid(~0) = 0.5, so dL/dW2 = delta2 * a1 ~ delta2 * (0.5, 0.5, "
                 f"0.5). They are not small (mean |dL/dW2|^2 "
                 f"{t.loc[2, 'grad_sq_norm_mean']:.3g} vs {r.loc[2, 'grad_sq_norm_mean']:.3g} "
                 "at scale 1); W1's are tiny "
                 f"({t.loc[1, 'grad_sq_norm_mean']:.3g} vs "
                 f"{r.loc[1, 'grad_sq_norm_mean']:.3g}), since dL/dW1 is proportional to W2")
    return text + "."


def _cos_exact(folder: str | Path, w: pd.DataFrame) -> dict[int, float]:
    """Per cell, the fraction of inits (with 2 or more live units) whose W1 has squared unit
    cosine 1 (a rank-1 gradient); NaN where the per-seed table has no such value."""
    try:
        first = storage.load(folder, "per_seed", layer=1, param="W")
    except (FileNotFoundError, ValueError):  # per_seed = false
        first = pd.DataFrame()
    if UNIT_COS_SQ not in first:  # (or a folder written before the statistic existed)
        first = pd.DataFrame({"cell": [], UNIT_COS_SQ: []})
    exact = {}
    for cell in w["cell"].unique():
        cos = first.loc[first["cell"] == cell, UNIT_COS_SQ].to_numpy(np.float64)
        cos = cos[~np.isnan(cos)]
        exact[cell] = float(np.isclose(cos, 1.0, atol=1e-5).mean()) if cos.size else math.nan
    return exact


def _training_lines(cells: pd.DataFrame, varying: Sequence[str]) -> list[str]:
    """What training did, per configuration (the cells that differ only in `step`): the median
    loss over inits at each recorded step, then, by the last step, the fraction of inits whose
    loss fell below half its step-0 value and the median step at which it did. Empty for a
    folder with no step after the init."""
    if "step" not in cells or not (cells["step"] > 0).any():
        return []
    config = [c for c in varying if c != "step"]
    labels = ["label"] if cells["label"].nunique() > 1 else []
    lines = ["Training: the loss (median over inits) at each recorded step, and how many inits "
             "halved it (below half its step-0 value; median over them of the first step "
             "that did), per configuration:"]
    keys = [*labels, *config]
    groups = cells.groupby(keys, sort=False, dropna=False) if keys else [((), cells)]
    for _, rows in groups:
        rows = rows.sort_values("step")
        losses = ", ".join(f"{loss:.3g} at {'step ' if k == 0 else ''}{step}" for k, (step, loss)
                           in enumerate(zip(rows["step"], rows["loss_value_p50"], strict=True)))
        last = rows.iloc[-1]
        name = _cell_name(last, config) if keys or last["label"] else "Every init"
        lines.append(f"  {name}: loss {losses}; {_halved_text(last)}")
    return lines


def _halved_text(last: pd.Series) -> str:
    step, frac, median = last["step"], last["frac_loss_halved"], last["loss_halved_step_p50"]
    if step == 0 or np.isnan(frac):
        return "nothing trained yet"
    if frac == 0:
        return f"no init halved its loss by step {step}"
    return (f"{frac:.1%} of inits halved their loss by step {step}, at step {median:g} "
            "(median)")


def findings_text(folder: str | Path) -> str:
    """What a results folder shows: for a training sweep first what training did (the loss,
    per configuration), then the gradients cell by cell; then, for cells shaped like the
    seed's examples (2-3-1, one example), what they show in the seed's terms."""
    summary = storage.load(folder, "summary")
    inert = inert_lines(summary)  # options that change nothing, in any model's cells
    mlp = models(summary) == "mlp"
    others = summary.loc[~mlp].drop_duplicates("cell")
    note = (f"({len(others)} cells of other models ({', '.join(others['model'].unique())}) are "
            "left out here: `gradjax summary` shows their parameter rows.)")
    summary = summary[mlp]
    if summary.empty:
        return "\n".join([*inert, note])
    w = summary[summary["param"] == "W"].sort_values(["cell", "layer"])
    cells = w[w["layer"] == 1].set_index("cell", drop=False)
    varying = [c for c in varying_options(cells) if c != "label"]
    fixed = [c for c in option_columns(summary) if c not in varying]
    lines = [f"{summary['sweep'].iloc[0]}: {len(cells)} cells x {int(cells['seeds'].iloc[0]):,} "
             f"random inits each ({folder})",
             f"Every cell: {_option_text(cells.iloc[0], fixed)}", ""]
    training = _training_lines(cells, varying)
    if training:
        lines += [*training, "", "Gradients, per configuration and step:"]
    cos_exact = _cos_exact(folder, w)
    for cell, rows in w.groupby("cell"):
        lines.append(_cell_name(cells.loc[cell], varying))
        lines += _profile_lines(rows)
    lines += ["", *inert] if inert else []
    seed = _seed_lines(w, cells, cos_exact)
    if seed:
        lines += ["", "In the seed's terms:", *seed]
    else:
        lines += ["", "(The seed's own findings, the ReLU example, the tiny init and one example, "
                  "are drawn only from cells shaped like sweeps/seed_examples.toml: 2-3-1 "
                  "networks on one example. This sweep has none.)"]
    return "\n".join(lines + (["", note] if len(others) else []))


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
    """The parser; `external` is the imported `gradjax.bench.measure` or `gradjax.analysis.report`
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
                     help=f"do not use the persistent compile cache ({storage.user_cache_dir()})")
    scale = run.add_argument_group("beyond one process (docs/scale-out.md)")
    scale.add_argument("--shard", type=_shard, default=(1, 1), metavar="I/N",
                       help="compute only the I-th of N fixed shares of the work (a job array's "
                            "task); the last shard to finish completes the folder")
    scale.add_argument("--seed-block", type=_positive, metavar="N",
                       help="seeds per block of a new folder: the finest share of one cell "
                            f"(default {storage.SEED_BLOCK})")
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
