"""A run killed with SIGKILL mid-sweep and re-run equals a run straight through (and one under
another memory budget): per-seed numbers bit for bit, summaries to float tolerance."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import gradjax

SWEEP = """
name = "killme"
seeds = 300
root_seed = 11

[defaults]
in_dim = 2
width = 3
depth = 1
out_dim = 1
inputs = [[0.5, -0.7], [1.0, 0.25]]
targets = 0.5

[grid]
activation = ["relu", "tanh"]
scale = [0.5, 1.0]
"""
TIMEOUT = 240


def start(sweep: Path, out: Path, budget: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gradjax", "run", str(sweep), "--out", str(out),
         "--max-memory", budget],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return out


def test_killed_and_resumed_run_equals_a_straight_run(tmp_path):
    sweep = tmp_path / "killme.toml"
    sweep.write_text(SWEEP)
    env = {}  # the suite's shared compile cache (conftest)
    killed = tmp_path / "killed"
    proc = start(sweep, killed, "16KB", env)  # a few seeds per chunk: many checkpoints
    deadline = time.monotonic() + TIMEOUT
    while not list(killed.glob(".work/*/*/state.npz")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)  # reaps it and closes the pipes
    assert proc.returncode == -signal.SIGKILL
    assert len(list(killed.glob("summary/*.parquet"))) < 4  # killed mid-sweep

    log = finish(start(sweep, killed, "16KB", env))
    done = re.search(r"(\d+) cells run, (\d+) already done; ([\d,]+) inits", log)
    assert done, log
    assert int(done.group(3).replace(",", "")) < 4 * 300  # it resumed, not restarted
    assert not list(killed.rglob("*.tmp"))
    left = sorted(p.relative_to(killed) for p in (killed / ".work").rglob("*") if p.is_file())
    assert [p.name for p in left] == ["seeds-0000000000-0000000300.npz"] * 4  # no parts

    straight = tmp_path / "straight"
    log = finish(start(sweep, straight, "1GB", env))
    assert "chunk 384 seeds" in log  # one chunk (the rung that holds 300): another chunking

    a, b = gradjax.load(killed, "per_seed"), gradjax.load(straight, "per_seed")
    assert len(a) == 4 * 300 * 2 * 2
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    sa, sb = gradjax.load(killed), gradjax.load(straight)
    exact = [c for c in sa.columns if c != "grad_var_across_seeds"]
    pd.testing.assert_frame_equal(sa[exact], sb[exact], check_exact=True)
    np.testing.assert_allclose(sa["grad_var_across_seeds"], sb["grad_var_across_seeds"],
                               rtol=1e-6)
