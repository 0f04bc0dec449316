"""`gradjax validate` refuses what `gradjax run` refuses before it writes, with the same line
(both call `preflight.check_sweep`), and `validate --estimate` compiles exactly the programs
the run then loads from the persistent compile cache."""

import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import tiny_sweep_text

from gradjax import cli

PLUGINS = '''
import jax.numpy as jnp


def raises(in_dim: int, out_dim: int):
    raise RuntimeError("no layer called stem")


def flat_logits(in_dim: int, out_dim: int):
    """Logits [batch] instead of [batch, out_dim]."""
    return (lambda key: {"w": jnp.ones(in_dim)}), (lambda p, x: x @ p["w"])
'''


@pytest.mark.parametrize("model, says", [
    ("validate_plugins:raises", "fails: RuntimeError: no layer called stem"),
    ("validate_plugins:flat_logits",
     "apply returned logits of shape (1,); expected (batch, out_dim) = (1, 2)"),
])
def test_validate_refuses_a_failing_plugin_with_the_line_run_gives(tmp_path, capsys, model,
                                                                   says):
    (tmp_path / "validate_plugins.py").write_text(PLUGINS)
    sweep = tmp_path / "bad.toml"
    sweep.write_text(textwrap.dedent(f"""
        name = "bad"
        seeds = 4
        [defaults]
        model = "{model}"
        in_dim = 3
        out_dim = 2
        inputs = [[0.5, -1.0, 2.0]]
        targets = [[1.0, 0.0]]
    """))
    assert cli.main(["validate", str(sweep)]) == 2
    validated = capsys.readouterr()
    out = tmp_path / "out"
    assert cli.main(["run", str(sweep), "--out", str(out), "--quiet", "--no-cache"]) == 2
    ran = capsys.readouterr().err.strip().splitlines()
    assert validated.out == "" and validated.err.strip().splitlines() == ran
    assert len(ran) == 1 and "defaults.model" in ran[0] and says in ran[0], ran
    assert not out.exists()


def test_a_run_after_validate_estimate_compiles_no_program(tmp_path):
    """Two processes, as a user runs them, sharing one compile cache folder: the run plans
    with the estimate's planner and budget, so it finds every program in the cache. The budget
    is below the process's own footprint, so a CPU run plans its smallest chunk (2 seeds of 1
    point), not what the whole budget would hold (all 4 seeds of both points)."""
    sweep = tmp_path / "two.toml"
    sweep.write_text(tiny_sweep_text(name="two", seeds=4, grid={"activation": ["relu", "tanh"]}))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    budget = ("--max-memory", "64MB")

    def gradjax(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gradjax", *args], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    estimate = re.search(r"compiling (\d+) program\(s\) \((\d+) compiled now",
                         gradjax("validate", str(sweep), "--estimate", *budget))
    programs = int(estimate.group(1))
    assert programs >= 2 and int(estimate.group(2)) == programs  # one bucket, one program
    ran = gradjax("run", str(sweep), "--out", str(tmp_path / "out"), *budget)
    assert (f"compiled 0 chunk programs, loaded {programs} from the persistent compile cache, "
            "0 cache misses in all") in ran, ran
