"""`--executor ray` on a local Ray (two CPUs): the numbers of a single run, also when a worker
is SIGKILLed in the middle of its task (Ray retries it; the pack's checkpoint makes the retry
compute each seed once)."""

import os
import re
import signal
import threading
import time

import psutil
import pytest
import ray
from conftest import SHARDS_SWEEP, TEST_CACHE_HOME, assert_same_as_single

from gradjax import cli
from gradjax.run.ray_executor import run_on_ray
from gradjax.sweep import load_sweep

TIMEOUT = 240
# ray.init starts its processes with fork + exec from this (JAX-threaded) process; JAX warns
# at every fork, though nothing runs in the child before exec
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


def start_ray() -> None:
    """A local Ray of two CPUs whose workers start with the suite's cache folder."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"XDG_CACHE_HOME": str(TEST_CACHE_HOME)}})


@pytest.fixture
def local_ray():
    start_ray()
    yield
    ray.shutdown()


def sweep_file(tmp_path):
    path = tmp_path / "shards.toml"
    path.write_text(SHARDS_SWEEP)
    return load_sweep(path)


def ray_task_workers() -> list[psutil.Process]:
    """Ray's worker processes that are running a gradjax task (Ray titles them ray::_task)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any("ray::_task" in part for part in (proc.info["cmdline"] or ())):
            found.append(proc)
    return found


def test_a_worker_killed_mid_task_is_retried_and_nothing_is_lost(local_ray, shards_single,
                                                                 tmp_path):
    """Also: Ray tasks write the numbers of a single run, the CLI sends nothing for a
    finished folder, and the same sweep in fresh workers compiles no program."""
    # a compile cache of its own: the second run below counts what it loads from it
    out, result, cache = tmp_path / "out", {}, tmp_path / "cache"
    sweep = sweep_file(tmp_path)

    def drive():
        result["inits"] = run_on_ray(sweep, out, seed_block=120, max_memory=16 * 1024,
                                     cache=cache, log=lambda line: None)

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + TIMEOUT
    while not list(out.glob(".work/packs/*/state.npz")):  # a task is midway
        assert driver.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    workers = ray_task_workers()
    assert workers
    os.kill(workers[0].pid, signal.SIGKILL)
    driver.join(TIMEOUT)
    assert not driver.is_alive()
    # the retry counts what it computed: not the seeds the killed attempt checkpointed
    assert result["inits"] <= 4 * 240
    assert_same_as_single(out, shards_single)
    assert cli.main(["run", str(tmp_path / "shards.toml"), "--out", str(out), "--executor",
                     "ray", "--quiet", "--no-cache"]) == 0  # (the cache would stay on here)
    assert_same_as_single(out, shards_single)
    # the same sweep into a new folder, in fresh worker processes (Ray reuses a worker, which
    # would hold the programs in memory): every program the first run compiled is loaded
    ray.shutdown()
    start_ray()
    log = []
    run_on_ray(sweep, tmp_path / "again", seed_block=120, max_memory=16 * 1024, cache=cache,
               log=log.append)
    assert re.search(r"compiled 0 chunk programs, loaded [1-9]\d* from the persistent compile "
                     r"cache, 0 already compiled in the worker", log[-1]), log[-1]
    assert_same_as_single(tmp_path / "again", shards_single)
