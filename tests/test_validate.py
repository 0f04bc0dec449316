"""`gradjax validate` refuses what `gradjax run` refuses before it writes, with the same line
(both call `preflight.check_sweep`), and `validate --estimate` plans the programs and chunks
the run then compiles and computes."""

import textwrap

import pytest
from conftest import programs_built, tiny_sweep_text

from gradjax import cli
from gradjax.probe import programs
from gradjax.run.engine import execute_sweep
from gradjax.run.estimate import estimate_run
from gradjax.sweep import parse_sweep
from gradjax.sweep.budget import parse_bytes

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


def test_validate_estimate_plans_the_programs_and_chunks_the_run_compiles(tmp_path):
    """The estimate prices the run's own first plans (`plan.first_plan`): as many programs
    and chunks as the run then compiles and computes. The budget is below the process's own
    footprint, so a CPU run plans its smallest chunk (2 seeds of 1 point), not what the whole
    budget would hold (all 4 seeds of both points): 2 programs (one per bucket), 8 chunks."""
    text = tiny_sweep_text(name="two", seeds=4,
                           grid={"activation": ["relu", "tanh"], "scale": [0.5, 1.0]})
    sweep = parse_sweep(text, "two.toml")
    budget = parse_bytes("64MB")
    guess = estimate_run(sweep, budget, devices=1)
    programs.clear_compiled()  # (another test of this process may have compiled them)
    report = execute_sweep(sweep, tmp_path / "out", max_memory=budget, quiet=True, devices=1)
    assert (guess.programs, guess.chunks) == (programs_built(report), 4 * 2) == (2, 8)
    assert guess.compile_s > 0 and guess.compute_s > 0

