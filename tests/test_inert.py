"""A plug-in's bucket line names what its factory takes and nothing of the MLP's; an option
that changes nothing (bias_scale on zero biases) is named once in the run log and in
findings; `inert_options` holds the other options fixed."""

import textwrap

import numpy as np
import pandas as pd

import gradjax
from gradjax.cli import findings_text
from gradjax.results.inert import inert_lines, inert_options
from gradjax.run.engine import execute_sweep
from gradjax.sweep import load_sweep

ZERO_BIAS = '''
import jax
import jax.numpy as jnp


def zero_bias(in_dim: int, out_dim: int, hidden: int = 4):
    """tanh MLP whose biases start at 0, as Flax NNX's Linear: bias_scale multiplies zeros."""
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"hidden": {"kernel": jax.random.normal(k1, (in_dim, hidden)),
                           "bias": jnp.zeros(hidden)},
                "out": {"kernel": jax.random.normal(k2, (hidden, out_dim)),
                        "bias": jnp.zeros(out_dim)}}

    def apply(p, x):
        h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"][None, :])
        return h @ p["out"]["kernel"] + p["out"]["bias"][None, :]

    return init, apply
'''


def test_a_plugin_bucket_says_what_its_factory_takes_and_an_unused_option_is_named(tmp_path):
    (tmp_path / "zb.py").write_text(ZERO_BIAS)
    path = tmp_path / "zb.toml"
    path.write_text(textwrap.dedent("""
        name = "zb"
        seeds = 4
        [defaults]
        model = "zb:zero_bias"
        in_dim = 3
        out_dim = 2
        batch = 2
        [grid]
        scale = [0.5, 1.0]
        bias_scale = [0.5, 2.0]
    """))
    log: list[str] = []
    execute_sweep(load_sweep(path), tmp_path / "out", devices=1, log=log.append)
    bucket = next(line for line in log if line.startswith("bucket 1/1"))
    assert bucket.startswith(
        "bucket 1/1 model zb:zero_bias (in_dim 3, out_dim 2, hidden 4; scale and bias_scale "
        "multiplied onto its leaves), output_activation linear, loss mse, dtype float32, "
        "batch 2, inputs gaussian, targets gaussian, per_example False, optimizer none "
        "(step 0): 4 cells"), bucket
    for mlp_only in ("init ", "bias_init", "activation None", "norm", "structural_zeros"):
        assert mlp_only not in bucket.split(":")[0], bucket
    # the independent fact: the per-seed numbers of the two bias_scales are the same
    rows = gradjax.load(tmp_path / "out", "per_seed")
    stats = ["loss_value", "grad_sq_norm", "grad_var"]
    for scale in (0.5, 1.0):
        a, b = (rows[(rows.scale == scale) & (rows.bias_scale == s)]
                .sort_values(["seed", "layer", "param"])[stats].to_numpy() for s in (0.5, 2.0))
        np.testing.assert_array_equal(a, b)
    said = [line for line in log if line.startswith("Changes nothing here")]
    assert said == ["Changes nothing here: bias_scale (0.5, 2). Cells that differ only in it "
                    "have identical statistics in every row: the model does not use it "
                    "(biases initialized to 0 stay 0 whatever bias_scale)."]
    assert said[0] in findings_text(tmp_path / "out").splitlines()


def _frame(cells: list[dict], values: list[float]) -> pd.DataFrame:
    """A summary-shaped frame: one row per cell, options a and b, one statistic."""
    frame = pd.DataFrame(cells)
    frame.insert(0, "cell", range(len(cells)))
    frame.insert(1, "label", "")
    frame["layer"], frame["param"], frame["seeds"] = 1, "W", 4
    frame["grad_var_p50"] = values
    return frame


def test_an_option_is_inert_only_where_every_other_option_is_held_fixed():
    grid = [{"a": a, "b": b} for a in (1.0, 2.0) for b in ("x", "y")]
    # a changes nothing at b = x and b = y; b changes the numbers
    assert inert_options(_frame(grid, [1.0, 5.0, 1.0, 5.0])) == {"a": [1.0, 2.0]}
    # a changes nothing at b = x but does at b = y: not inert; b is inert at neither a
    assert inert_options(_frame(grid, [1.0, 5.0, 1.0, 6.0])) == {}
    # NaN equals NaN (a statistic that does not apply), and nothing varies: no line
    assert inert_options(_frame(grid, [np.nan, 5.0, np.nan, 5.0])) == {"a": [1.0, 2.0]}
    assert inert_lines(_frame(grid[:1], [1.0])) == []
