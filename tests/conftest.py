"""Strict JAX hygiene for every test: rank promotion raises, warnings are errors (pyproject),
and the CPU shows two devices so sharded code paths run in CI; `tiny_sweep_text`, the small
sweep that test_cli, test_engine and test_storage run; and the `integration` marker on the
modules that go through whole runs (single tests elsewhere that run a whole command carry it
themselves; `make test-fast` leaves them all out)."""

import contextlib
import json
import os
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

# The suite compiles hundreds of small programs, and compiling is most of its time. LLVM at -O0
# compiles them about 1.5x faster. Its numbers differ from the default level's by float32
# rounding (amplified by statistics that cancel, like the variance of nearly equal entries),
# which every test's tolerance or like-for-like comparison allows. The recorded numbers
# (`make test-slow`, tests/test_golden.py) run at the default level.
if not os.environ.get("GRADJAX_TEST_DEFAULT_OPT"):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 2)

# Many tests compile the same small programs, in two workers, in the `gradjax` processes they
# start and run after run. They share one persistent compile cache, so each program is
# compiled once: XDG_CACHE_HOME points every process the suite starts at it
# (`gradjax.results.files.user_cache_dir`). It lives in the user's cache folder, not in the
# clone, so every clone and worktree on the machine (and CI's fresh clone) reuses it;
# GRADJAX_TEST_CACHE_HOME moves it. A loaded program is the one compiled, and its key is the
# program itself, so no number depends on the cache; a test that counts compiles gives its
# processes a cache of their own. The folder is exported as GRADJAX_TEST_CACHE_HOME too: xdist's
# workers inherit the XDG_CACHE_HOME set here, and would otherwise nest a second cache inside it
# that the serial run of `make test` (`-m alone`) and `pytest -n 0` never see. (Like every
# GRADJAX_ variable it enters the program store's names, so the suite's programs are its own.)
_USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
TEST_CACHE_HOME = Path(os.environ.get("GRADJAX_TEST_CACHE_HOME", _USER_CACHE / "gradjax-tests"))
os.environ["GRADJAX_TEST_CACHE_HOME"] = str(TEST_CACHE_HOME)
os.environ["XDG_CACHE_HOME"] = str(TEST_CACHE_HOME)

import gradjax  # noqa: E402  (sets the XLA flags before the backend starts)
from gradjax.results.files import user_cache_dir  # noqa: E402
from gradjax.run import executables  # noqa: E402

TEST_XLA_CACHE = user_cache_dir()  # under TEST_CACHE_HOME
# on from the start: session and module fixtures are set up before `shared_compile_cache`
executables.enable_compile_cache(TEST_XLA_CACHE)

# modules whose tests run whole sweeps (subprocesses, resumes, shards, Ray, object stores):
# `make test-fast` (-m "not integration") is the math and unit tests without them
INTEGRATION_MODULES = frozenset({
    "test_adapters", "test_cli", "test_engine", "test_faults", "test_growth", "test_inert",
    "test_interrupt", "test_models", "test_notebook", "test_plugin_report", "test_ray",
    "test_remote", "test_resume", "test_scale_out", "test_training", "test_validate",
})


UNUSED_DAYS = 14  # a program no run of the suite loaded for this long is of an older version


def pytest_sessionstart(session):
    """Before the suite (once, not in each xdist worker), `prune_unused` the suite's compile
    cache: programs of earlier versions of the code are never asked for again, and a whole
    suite's programs take ~125 MB. JAX's own size limit (jax_compilation_cache_max_size)
    cannot be used: the `gradjax` processes the suite starts write entries without the
    access-time records it needs."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        prune_unused(TEST_XLA_CACHE, UNUSED_DAYS)


def prune_unused(folder: Path, days: float) -> None:
    """Delete the files of `folder` that nothing has read for `days` (by access time)."""
    if not folder.is_dir():
        return
    cutoff = time.time() - days * 86400
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):
            if entry.is_file() and entry.stat().st_atime < cutoff:
                entry.unlink()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in INTEGRATION_MODULES:
            item.add_marker(pytest.mark.integration)


def _suite_cache_on() -> None:
    if jax.config.jax_compilation_cache_dir != str(TEST_XLA_CACHE) or not (
            jax.config.jax_enable_compilation_cache):
        executables.enable_compile_cache(TEST_XLA_CACHE)


@pytest.fixture(autouse=True)
def shared_compile_cache():
    """Every test starts and ends with the suite's persistent compile cache on (a test that ran
    `gradjax run` in-process may have pointed JAX at its own, or turned it off); ending with it
    on matters to the next module or session fixture, which is set up before this fixture
    runs for the next test."""
    _suite_cache_on()
    yield
    _suite_cache_on()


@pytest.fixture
def x64():
    """Run a test with float64 enabled, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def programs_built(report) -> int:
    """The chunk programs a run needed: compiled, or loaded from the suite's shared compile
    cache (which another test, or an earlier run of the suite, may have filled)."""
    return report.compiled + report.from_cache


@contextlib.contextmanager
def counting_calls(monkeypatch, module, name: str):
    """Count the calls of `module.name` while the block runs, through a wrapper put in its
    place. A jitted function's Python body runs once per trace, so around code that jits it
    this counts traces (equinox's `assert_max_traces`, without a counter in traced code); the
    program store, which loads programs without tracing them, is off meanwhile."""
    calls: list[int] = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    from gradjax.probe import program_store, programs  # (programs holds the wrapped function)

    programs.clear_compiled()
    monkeypatch.setattr(module, name, counted)
    try:
        with program_store.suspended():
            yield calls
    finally:
        programs.clear_compiled()


# --------------------------------------------------------------------------- tiny sweeps

TINY_SWEEP: dict = {
    "name": "tiny",
    "seeds": 6,
    "defaults": {
        "in_dim": 2,
        "width": 3,
        "depth": 1,
        "out_dim": 1,
        "activation": "relu",
        "inputs": [[0.5, -0.7]],
        "targets": [[1.0]],
    },
    "grid": {"scale": [0.5, 1.0]},
}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, for the plain strings used here
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _table(items: dict) -> list[str]:
    return [f"{key} = {_toml_value(value)}" for key, value in items.items()]


def tiny_sweep_text(**overrides) -> str:
    """TOML text of a tiny sweep (2 -> 3 -> 1 ReLU MLP on one fixed example, a grid over scale):
    TINY_SWEEP with `overrides`. A dict is merged into the table of that name
    (defaults={"dtype": "float64"} adds one option, grid={"scale": [...]} replaces the axis),
    anything else replaces the key, None removes it; cases=[{...}, ...] adds [[cases]] tables.
    The same overrides always give the same text (sweep hashes and copies compare equal)."""
    sweep = {key: dict(value) if isinstance(value, dict) else value
             for key, value in TINY_SWEEP.items()}
    for key, value in overrides.items():
        if value is None:
            sweep.pop(key, None)
        elif isinstance(value, dict) and isinstance(sweep.get(key), dict):
            sweep[key].update(value)
            for option in [k for k, v in sweep[key].items() if v is None]:
                del sweep[key][option]
        else:
            sweep[key] = value
    top = {k: v for k, v in sweep.items() if k not in ("defaults", "grid", "cases")}
    lines = _table(top)
    for name in ("defaults", "grid"):
        if name in sweep:
            lines += ["", f"[{name}]", *_table(sweep[name])]
    for case in sweep.get("cases", ()):
        lines += ["", "[[cases]]", *_table(case)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------- the sweep of the scale-out tests

SHARDS_SWEEP = """
name = "shards"
seeds = 240
root_seed = 5

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
SHARDS_CELLS, SHARDS_SEEDS = 4, 240


@pytest.fixture(scope="session")
def shards_single(tmp_path_factory):
    """SHARDS_SWEEP run once, in this process, in one chunk per bucket: what shards, Ray
    tasks and multi-host processes must add up to."""
    from gradjax.run import engine
    from gradjax.sweep import parse_sweep

    out = tmp_path_factory.mktemp("single") / "single"
    engine.execute_sweep(parse_sweep(SHARDS_SWEEP, "shards.toml"), out, quiet=True)
    return out


def assert_same_results(a, b) -> None:
    """Two results folders (or URIs) hold the same per-seed table bit for bit, and the same
    summary, but grad_var_across_seeds, whose per-chunk moments are float32 sums over however
    the seeds were grouped, to 1e-6."""
    pd.testing.assert_frame_equal(gradjax.load(a, "per_seed"), gradjax.load(b, "per_seed"),
                                  check_exact=True)
    sa, sb = gradjax.load(a), gradjax.load(b)
    np.testing.assert_allclose(sa.pop("grad_var_across_seeds"),
                               sb.pop("grad_var_across_seeds"), rtol=1e-6)
    pd.testing.assert_frame_equal(sa, sb, check_exact=True)


def assert_same_as_single(out, single) -> None:
    """`out` is complete (manifest, no work files left) and holds `single`'s per-seed table
    bit for bit, once per (cell, seed), and its across-seed variances to float32 rounding
    (their per-chunk moments group the seeds otherwise)."""

    a, b = gradjax.load(out, "per_seed"), gradjax.load(single, "per_seed")
    rows = SHARDS_CELLS * SHARDS_SEEDS * 4
    assert len(a) == rows and not a.duplicated(["cell", "seed", "layer", "param"]).any()
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    np.testing.assert_allclose(gradjax.load(out)["grad_var_across_seeds"],
                               gradjax.load(single)["grad_var_across_seeds"], rtol=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"]["per_seed"] == rows
    assert not list(out.rglob("*.tmp"))
    assert not (out / ".work" / "packs").exists() and not (out / ".work" / "locks").exists()


def run_plugin(folder, module: str, source: str, model: str, defaults: str) -> pd.DataFrame:
    """Write plug-in `module` (its `source`) and a 2-seed sweep of `model` with the TOML lines
    `defaults` into `folder`, run it in-process, and return seed 0's per-seed rows."""
    from gradjax.run.engine import execute_sweep
    from gradjax.sweep import load_sweep

    (folder / f"{module}.py").write_text(source)
    path = folder / f"{module}.toml"
    path.write_text(f'name = "{module}"\nseeds = 2\n[defaults]\nmodel = "{model}"\n{defaults}')
    execute_sweep(load_sweep(path), folder / "out", quiet=True, devices=1)
    return gradjax.load(folder / "out", "per_seed", seed=0)
