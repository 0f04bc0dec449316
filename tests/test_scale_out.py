"""Processes on one results folder: two shards started together, one SIGKILLed midway and run
again; the two processes of a multi-host JAX job. Each ends with the per-seed table of a
single run, bit for bit, no duplicate rows and no leftover work files."""

import os
import signal
import socket
import subprocess
import sys
import time

from conftest import SHARDS_SWEEP as SWEEP
from conftest import assert_same_as_single

TIMEOUT = 240


def start(sweep, out, *args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "gradjax", "run", str(sweep), "--out", str(out), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def finish(proc) -> str:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return out + err


def test_two_shards_together_one_killed_and_run_again(shards_single, tmp_path):
    single = shards_single
    sweep = tmp_path / "shards.toml"
    sweep.write_text(SWEEP)
    out, env = tmp_path / "out", {}  # the shared compile cache (conftest)
    # blocks of 100 seeds: 4 cells x 3 blocks; 16KB: a few seeds per chunk, many checkpoints
    args = ("--seed-block", "100", "--max-memory", "16KB")
    first = start(sweep, out, "--shard", "1/2", *args, env=env)
    second = start(sweep, out, "--shard", "2/2", *args, env=env)
    deadline = time.monotonic() + TIMEOUT
    while not list(out.glob(".work/packs/*/state.npz")):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    log = finish(second)
    assert "wait for other shards" in log and not (out / "manifest.json").exists()

    log = finish(start(sweep, out, "--shard", "1/2", *args, env=env))
    assert "(shard 1/2)" in log
    assert_same_as_single(out, single)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_the_processes_of_a_multi_host_jax_job_write_one_folder(shards_single, tmp_path):
    single = shards_single
    sweep = tmp_path / "shards.toml"
    sweep.write_text(SWEEP)
    out, env = tmp_path / "out", {}  # the shared compile cache (conftest)
    coordinator = f"localhost:{free_port()}"
    procs = [start(sweep, out, "--distributed", "--coordinator", coordinator,
                   "--num-processes", "2", "--process-id", str(p), "--seed-block", "100",
                   env=env) for p in range(2)]
    try:
        logs = [finish(proc) for proc in procs]
    finally:  # a failed process leaves its peer waiting for it: stop both
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert "(shard 1/2)" in logs[0] and "(shard 2/2)" in logs[1]
    assert_same_as_single(out, single)
