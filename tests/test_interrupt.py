"""Ctrl-C: one SIGINT or several stop a run cleanly (one line, exit 130), soon, keeping every
finished chunk, and the same command resumes it; the progress line's counts."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import tiny_sweep_text

import gradjax
from gradjax.run import pack_work
from gradjax.run.engine import execute_sweep
from gradjax.run.interrupt import Interrupted
from gradjax.run.progress import progress_line
from gradjax.sweep import parse_sweep

SEEDS = 400
SWEEP = f"""
name = "ctrlc"
seeds = {SEEDS}
root_seed = 5

[defaults]
in_dim = 3
width = 8
out_dim = 1
batch = 2
activation = "tanh"

[grid]
depth = [1, 2]
"""
TIMEOUT = 240


def gradjax_run(sweep, out, env, budget: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gradjax", "run", str(sweep), "--out", str(out),
         "--max-memory", budget],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def test_two_sigints_stop_cleanly_soon_and_the_run_resumes(tmp_path):
    """Interrupted while the first bucket runs (its first checkpoint just written) and, most
    likely, the depth-2 bucket compiles in the background: the case that aborted the process
    (`terminate called after throwing an instance of ''`, exit 134) when SIGINT came twice."""
    sweep, out = tmp_path / "ctrlc.toml", tmp_path / "out"
    sweep.write_text(SWEEP)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = gradjax_run(sweep, out, env, "256KB")  # chunks of 2 seeds: many checkpoints
    deadline = time.monotonic() + TIMEOUT
    while not list(out.glob(".work/packs/*/state.npz")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # at once, while it stops
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # and again a second later if it still runs
    _, err = proc.communicate(timeout=TIMEOUT)
    stopped_s = time.monotonic() - first
    print(f"first SIGINT to exit: {stopped_s:.2f} s")
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        f"interrupted: the finished chunks are kept; run the same command again to resume "
        f"into {out}"]
    assert stopped_s < 10  # about 0.3 s on an idle machine; generous for a loaded one

    resumed = gradjax_run(sweep, out, env, "2GB")  # larger chunks: the same numbers, sooner
    log, err = resumed.communicate(timeout=TIMEOUT)
    assert resumed.returncode == 0, err
    done = re.search(r"([\d,]+) inits in", log)
    assert done and int(done.group(1).replace(",", "")) < 2 * SEEDS, log  # resumed
    rows = gradjax.load(out, "per_seed", param="W", layer=1)
    for cell in (0, 1):
        np.testing.assert_array_equal(np.sort(rows.loc[rows.cell == cell, "seed"]),
                                      np.arange(SEEDS))


def test_sigint_in_process_raises_between_chunks_after_a_checkpoint(tmp_path, monkeypatch):
    """SIGINT while a chunk's parts are written only sets a flag (nothing raised inside JAX);
    the run stops after that chunk with a checkpoint of it and raises KeyboardInterrupt; the
    resume computes only the seeds after it."""
    sweep = parse_sweep(tiny_sweep_text(seeds=40))
    original, interrupted = pack_work.PackRun.write_parts, []

    def interrupt_once(self, start, stats):
        original(self, start, stats)
        if start == 8 and not interrupted:  # the second chunk: not checkpointed by itself
            interrupted.append(start)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(pack_work.PackRun, "write_parts", interrupt_once)
    monkeypatch.setattr(pack_work, "CHECKPOINT_RATIO", 1e9)  # no checkpoint but the one at a stop
    before = signal.getsignal(signal.SIGINT)  # (a pytest-xdist worker ignores SIGINT)
    with pytest.raises(Interrupted):
        execute_sweep(sweep, tmp_path / "out", quiet=True, devices=1, chunk=8)
    assert signal.getsignal(signal.SIGINT) is before  # the run's handler is gone
    monkeypatch.undo()
    report = execute_sweep(sweep, tmp_path / "out", quiet=True, devices=1, chunk=8)
    assert report.inits == 2 * (40 - 16)  # both chunks of each of the 2 cells were kept


def test_the_progress_line_counts_cells_complete_and_in_progress():
    line = progress_line("grid", (4, 8, 24), (8_000, 24_000), 250.0, 64.0)
    assert line == ("grid: cells 4/24 complete, 8 in progress; inits 8,000/24,000 of this "
                    "run, 250 inits/s, about 1m04s left")


MEMORY_SWEEP = """
name = "budget"
seeds = 800
root_seed = 2

[defaults]
in_dim = 32
width = 128
depth = 3
out_dim = 1
batch = 16
activation = "tanh"

[grid]
scale = [0.5, 1.0]
"""


@pytest.mark.alone  # its peak RSS is measured: beside another worker it read 1.43 GB
def test_a_cpu_run_stays_within_max_memory(tmp_path):
    """The process's peak resident set (what the last log line reports, read from the kernel)
    stays within --max-memory: XLA's compiler frees some 600 MB when it ends, which the C heap
    kept (peak 1.41 GB of 1.17 GB for this bucket before, 0.92 GB after)."""
    sweep = tmp_path / "budget.toml"
    sweep.write_text(MEMORY_SWEEP)
    proc = subprocess.run(
        [sys.executable, "-m", "gradjax", "run", str(sweep), "--out", str(tmp_path / "out"),
         "--max-memory", "1200MB", "--no-cache"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stderr
    peak = re.search(r"peak RSS ([\d.]+) (MB|GB) of 1.17 GB(.*?);", proc.stdout)
    assert peak, proc.stdout
    assert peak.group(3) == "", proc.stdout[-3000:]  # no "(over --max-memory)"
    mb = float(peak.group(1)) * (1024 if peak.group(2) == "GB" else 1)
    assert mb <= 1200
