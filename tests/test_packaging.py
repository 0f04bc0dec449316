"""The project's own files agree with each other: packaging metadata, the Makefile, the README."""

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import UNUSED_DAYS, prune_unused

ROOT = Path(__file__).parents[1]


def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project["license"], str) and re.fullmatch(r"[A-Za-z0-9.\-]+",
                                                                project["license"])


def test_makefile_and_readme_state_the_python_pyproject_requires():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = re.fullmatch(r">=\s*(3\.\d+)", project["requires-python"].split("#")[0].strip())
    assert version
    for name in ("Makefile", "README.md"):
        stated = set(re.findall(r"Python >= (3\.\d+)", (ROOT / name).read_text()))
        assert stated == {version.group(1)}, name


def test_readme_starts_with_make_run_and_make_test():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in block.strip().splitlines()] == [
        ["make", "run"], ["make", "test"]]


def test_the_readme_library_snippet_reproduces_the_number_it_stands_beside(capsys):
    """The snippet, on 200 of its 1,000 inits (for time), prints a median W2 grad_cv within
    the seeds' spread of the figure the README gives for the sweep, and a 4-row frame."""
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```python")[1:]
    snippet = next(b.split("```", 1)[0] for b in blocks if "grad_stats(" in b)
    assert "range(1000)" in snippet
    namespace: dict = {}
    exec(compile(snippet.replace("range(1000)", "range(200)"), "README.md", "exec"),  # noqa: S102
         namespace)
    median = float(capsys.readouterr().out.splitlines()[0])
    stated = re.search(r"\(`grad_cv`, median over inits\) is ([0-9.]+)", readme).group(1)
    assert median == pytest.approx(float(stated), rel=0.15)
    assert len(namespace["gradjax"].stats_frame(namespace["stats"][0])) == 4


def test_the_readme_plugin_snippet_gives_per_leaf_rows_in_forward_order(capsys):
    """Five lines: an (init, apply) pair's statistics per leaf, `out` after `hidden` although
    the names sort the same way round, and grad_sq_norm equal to numpy's of jax.grad."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python")[1:]]
    snippet = next(b for b in blocks if "grad_stats((init, apply)" in b)
    assert len(snippet.strip().splitlines()) == 5
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102
    stats, init, apply = namespace["stats"], namespace["init"], namespace["apply"]
    assert list(stats["param"]) == ["['hidden']", "['out']"]
    assert list(stats["layer"]) == [1, 2] and list(stats["layer_from_output"]) == [-2, -1]
    x, y = jnp.ones((4, 2)), jnp.ones((4, 1))
    grads = jax.grad(lambda p: 0.5 * jnp.mean(jnp.sum((apply(p, x) - y) ** 2, axis=1)))(
        init(jax.random.key(0)))
    want = [float(np.sum(np.square(np.asarray(grads[k], np.float64)))) for k in ("hidden", "out")]
    np.testing.assert_allclose(stats["grad_sq_norm"], want, rtol=1e-5)
    assert "[2 rows x" in capsys.readouterr().out  # the frame was printed


@pytest.mark.integration
def test_xdist_groups_run_on_one_worker(tmp_path):
    """`make test` runs `--dist loadgroup`: tests of one `xdist_group` share one worker, so a
    session fixture they share is computed once. Some pytest and pytest-xdist releases
    together silently stop grouping (pyproject's pin says which)."""
    (tmp_path / "test_grouped.py").write_text(
        "import pytest\n"
        "@pytest.mark.xdist_group('g')\n"
        "@pytest.mark.parametrize('i', range(6))\n"
        "def test_one(i):\n"
        "    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-n", "2", "--dist", "loadgroup",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "-c", "/dev/null", str(tmp_path / "test_grouped.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    workers = re.findall(r"\[(gw\d+)\].*PASSED", run.stdout)
    assert len(workers) == 6 and len(set(workers)) == 1, run.stdout


def test_the_suite_s_compile_cache_drops_only_programs_unread_for_two_weeks(tmp_path):
    old, recent = tmp_path / "old-cache", tmp_path / "recent-cache"
    for path, days in ((old, UNUSED_DAYS + 1), (recent, UNUSED_DAYS - 1)):
        path.write_bytes(b"program")
        then = time.time() - days * 86400
        os.utime(path, (then, then))
    prune_unused(tmp_path, UNUSED_DAYS)
    assert not old.exists() and recent.exists()
    prune_unused(tmp_path / "missing", UNUSED_DAYS)  # no cache yet: nothing to do
