"""The fault campaign, long version (tests/test_faults.py and tests/test_scale_out.py are the
small ones): SIGKILL at random points of a multi-bucket sweep until it completes, two shards with
one killed, a full disk (a small tmpfs when this machine lets us mount one, else a file-size
limit), a read-only folder, damaged files, and malformed sweep files. Prints what happened and
the counts; exits 1 if any outcome differs from a straight run.

  python benchmarks/fault_campaign.py [--kills 20] [--seed 0] [--fuzz 1000] [--work DIR]
                                      [--sections kills,shards,storage,extremes,fuzz]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

import gradjax
from gradjax import cli

SWEEP = """
name = "campaign"
seeds = 400
root_seed = 3

[defaults]
in_dim = 3
depth = 2
out_dim = 1
inputs = [[0.5, -0.7, 0.1], [1.0, 0.25, -2.0]]
targets = 0.5

[grid]
width = [3, 5]
activation = ["relu", "tanh"]
scale = [0.5, 1.0, 2.0]
"""
ARGS = ("--max-memory", "16KB", "--seed-block", "100", "--quiet")


def gradjax_run(sweep: Path, out: Path, *extra: str, preexec=None, env=None):
    return subprocess.Popen([sys.executable, "-m", "gradjax", "run", str(sweep), "--out",
                             str(out), *ARGS, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
                            env={**os.environ, **(env or {})})


def completed(proc) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=1800)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def same(a: Path, b: Path) -> str:
    """'' if the per-seed tables are identical with no duplicates and no work files are left,
    else what differs."""
    x, y = gradjax.load(a, "per_seed"), gradjax.load(b, "per_seed")
    if x.duplicated(["cell", "seed", "layer", "param"]).any():
        return "duplicate rows"
    try:
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    except AssertionError as err:
        return f"per-seed tables differ: {str(err).splitlines()[0]}"
    left = [p for p in a.rglob("*") if p.name.endswith(".tmp") or "packs" in p.parts]
    if left or not (a / "manifest.json").exists():
        return f"leftovers {left[:3]} or no manifest"
    return ""


def kills(sweep: Path, work: Path, straight: Path, n: int, rng: random.Random,
          wall: float) -> tuple[int, int, str]:
    """SIGKILL runs at random points until `n` kills are done; a folder whose run completes
    before its next kill is checked against the straight run, and the next kill starts a new
    folder. Returns (kills, folders completed, first problem)."""
    done = rounds = 0
    while done < n:
        out = work / f"killed-{rounds}"
        while True:
            proc = gradjax_run(sweep, out)
            time.sleep(rng.uniform(0.5, max(wall / 3, 1.0)))
            if proc.poll() is not None or done >= n:
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            done += 1
        final = completed(proc)  # the run that was not killed, to its end
        if final.returncode:
            return done, rounds, final.stderr[-300:]
        rounds += 1
        problem = same(out, straight)
        if problem:
            return done, rounds, problem
    return done, rounds, ""


def shards(sweep: Path, work: Path, straight: Path, rng: random.Random, wall: float) -> str:
    out = work / "shards"
    first, second = gradjax_run(sweep, out, "--shard", "1/2"), gradjax_run(sweep, out,
                                                                            "--shard", "2/2")
    time.sleep(rng.uniform(0.3, max(wall / 2, 1.0)))
    first.send_signal(signal.SIGKILL)
    first.communicate()
    if completed(second).returncode or completed(gradjax_run(sweep, out, "--shard",
                                                              "1/2")).returncode:
        return "a shard failed"
    return same(out, straight)


@contextlib.contextmanager
def small_disk(work: Path, size: str = "256k"):
    """A tmpfs of `size` if this machine lets us mount one, else None."""
    mount = work / "tmpfs"
    mount.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True).returncode == 0
    try:
        yield mount if ok else None
    finally:
        if ok:
            subprocess.run(["umount", str(mount)], check=False)


def full_disk(sweep: Path, work: Path, straight: Path) -> str:
    with small_disk(work) as mount:
        if mount is not None:
            how, out, preexec = "tmpfs of 256 KiB", mount / "out", None
        else:
            def preexec():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
            how, out = "file-size limit of 20 kB (no tmpfs here)", work / "full"
        full = completed(gradjax_run(sweep, out, preexec=preexec))
        lines = full.stderr.strip().splitlines()
        if full.returncode != 2 or len(lines) != 1:
            return f"{how}: exit {full.returncode}, stderr {full.stderr[-300:]!r}"
        print(f"  full disk ({how}): {lines[0]}")
        if mount is not None:  # "the fix": move the folder to a disk with room
            shutil.copytree(out, work / "full", symlinks=True)
            out = work / "full"
    if completed(gradjax_run(sweep, out)).returncode:
        return "the re-run after the fix failed"
    return same(out, straight)


def read_only(sweep: Path, work: Path, straight: Path) -> str:
    out = work / "readonly"
    shutil.copytree(straight, out)
    (out / "manifest.json").unlink()
    for summary in sorted((out / "summary").iterdir())[:3]:
        summary.unlink()  # three cells to finish again
    # root writes anywhere: make the files immutable instead (chattr +i)
    lock, unlock = (["chattr", "-R", "+i"], ["chattr", "-R", "-i"]) if os.geteuid() == 0 else (
        ["chmod", "-R", "a-w"], ["chmod", "-R", "u+w"])
    subprocess.run([*lock, str(out)], check=True)
    try:
        proc = completed(gradjax_run(sweep, out, "--no-cache"))
    finally:
        subprocess.run([*unlock, str(out)], check=True)
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 2 or len(lines) != 1:
        return f"exit {proc.returncode}, stderr {proc.stderr[-300:]!r}"
    print(f"  read-only folder: {lines[0]}")
    if completed(gradjax_run(sweep, out)).returncode:
        return "the re-run after the fix failed"
    return same(out, straight)


EXTREMES = """
name = "extremes"
seeds = 64

[defaults]
in_dim = 3
width = 4
depth = 3
out_dim = 1
activation = "relu"

[[cases]]
label = "relu_scale_1e6"
scale = 1e6

[[cases]]
label = "relu_scale_1e-30"
scale = 1e-30

[[cases]]
label = "relu_bfloat16"
dtype = "bfloat16"

[[cases]]
label = "sigmoid_depth_200"
activation = "sigmoid"
depth = 200
"""


def extremes(work: Path) -> str:
    sweep = work / "extremes.toml"
    sweep.write_text(EXTREMES)
    proc = completed(gradjax_run(sweep, work / "extremes", "--max-memory", "2GB"))
    if proc.returncode:
        return proc.stderr[-300:]
    rows = gradjax.load(work / "extremes", "per_seed", param="W")
    for label, r in rows.groupby("label"):
        if label:
            first = r.query("layer == 1").grad_max_abs.median()
            print(f"  {label}: {int(r.grad_nonfinite.sum())} non-finite entries, "
                  f"{(r.grad_frac_underflow > 0).mean():.0%} of tensors with underflow, "
                  f"first-layer max |dL/dW| median {first:.2g}")
    return ""


def damaged(sweep: Path, work: Path, straight: Path, rng: random.Random) -> str:
    out = work / "damaged"
    shutil.copytree(straight, out)
    files = sorted(out.glob("*/*.parquet"))
    for path in rng.sample(files, 4):
        data = path.read_bytes()
        path.write_bytes(data[: rng.randrange(len(data))])
    try:
        gradjax.load(out, "per_seed")
        gradjax.load(out)
        return "a damaged file was read as data"
    except gradjax.ResultsError as err:
        print(f"  load of a damaged folder: {err}")
    if completed(gradjax_run(sweep, out)).returncode:
        return "the re-run failed"
    return same(out, straight)


def fuzz(n: int, rng: random.Random, work: Path) -> tuple[int, int, str]:
    """Random sweep files: (valid, refused with one line and exit 2, first problem)."""
    words = ["name", "seeds", "root_seed", "defaults", "grid", "cases", "steps", "per_seed",
             "bogus"]
    values = ['"x"', "3", "-1", "0.5", "nan", "[1, 2]", '["relu"]', "{ scale = 2 }", "true",
              '"../up"', "[[1.0]]", "{ width = [] }", '"a:b"', "1e400", '{ depth = "x" }']
    valid = refused = 0
    for i in range(n):
        lines = [f"{rng.choice(words)} = {rng.choice(values)}" for _ in range(rng.randint(0, 6))]
        path = work / f"fuzz-{i}.toml"
        path.write_text("\n".join(lines) + ("\n[[[" if rng.random() < 0.1 else ""))
        proc_err = _run_validate(path)
        if proc_err is None:
            valid += 1
        elif proc_err.count("\n") == 1:
            refused += 1
        else:
            return valid, refused, f"{path}: {proc_err!r}"
        path.unlink()
    return valid, refused, ""


def _run_validate(path: Path) -> str | None:
    """stderr of `gradjax validate`, None if valid (status 0); raises on another status."""
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["validate", str(path)])
    if status not in (0, 2):
        raise SystemExit(f"{path}: exit {status}")
    return None if status == 0 else err.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fuzz", type=int, default=1000)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--sections", default="kills,shards,storage,extremes,fuzz",
                        help="comma-separated: kills, shards, storage, extremes, fuzz")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.work or Path(tempfile.mkdtemp(prefix="gradjax-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    sweep = work / "campaign.toml"
    sweep.write_text(SWEEP)
    problems = {}
    run = set(args.sections.split(","))
    wall = 0.0
    if run & {"kills", "shards", "storage"}:
        start = time.perf_counter()
        if completed(gradjax_run(sweep, work / "straight")).returncode:
            raise SystemExit("the straight run failed")
        wall = time.perf_counter() - start
        print(f"straight run: {wall:.1f} s, {len(gradjax.load(work / 'straight', 'per_seed'))}"
              " per-seed rows, 4 buckets x 3 cells x 400 seeds")
    if "kills" in run:
        n, rounds, problems["kills"] = kills(sweep, work, work / "straight", args.kills, rng,
                                             wall)
        print(f"kills: {n} SIGKILLs at random points, resumed until {rounds} folder(s) "
              f"completed: {problems['kills'] or 'each identical, no duplicates, no leftovers'}")
    if "shards" in run:
        problems["shards"] = shards(sweep, work, work / "straight", rng, wall)
        print(f"two shards, one killed and run again: {problems['shards'] or 'identical'}")
    if "storage" in run:
        problems["full disk"] = full_disk(sweep, work, work / "straight")
        print(f"full disk, then a re-run: {problems['full disk'] or 'identical'}")
        problems["read-only"] = read_only(sweep, work, work / "straight")
        print(f"read-only folder, then a re-run: {problems['read-only'] or 'identical'}")
        problems["damaged"] = damaged(sweep, work, work / "straight", rng)
        print(f"4 truncated files, then a re-run: {problems['damaged'] or 'identical'}")
    if "extremes" in run:
        problems["extremes"] = extremes(work)
        print(f"numerical extremes: {problems['extremes'] or 'recorded, nothing crashed'}")
    if "fuzz" in run:
        valid, refused, problems["fuzz"] = fuzz(args.fuzz, rng, work)
        print(f"{args.fuzz} random sweep files: {valid} valid, {refused} refused with one "
              f"line and exit 2 {problems['fuzz']}")
    failed = {k: v for k, v in problems.items() if v}
    print("campaign: " + ("all outcomes as a straight run" if not failed
                          else f"FAILED: {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
