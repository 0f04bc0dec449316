"""The XLA settings gradjax applies on import change speed, never numbers."""

import json
import os
import subprocess
import sys

import gradjax

DRAW = """
import json, jax, gradjax
from gradjax.nn import keys
from gradjax.nn import network
key = keys.init_key(0, 12)
params = network.init_mlp(key, (5, 7, 7, 7, 2), init="he_normal")
x = jax.random.normal(keys.data_key(key, keys.INPUTS), (3, 5))
leaves = [a.tolist() for a in jax.tree.leaves(params)] + [x.tolist()]
print(json.dumps({"unrolled": gradjax.UNROLLED_THREEFRY, "draws": leaves}))
"""


def _draws(**env):
    out = subprocess.run([sys.executable, "-c", DRAW], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_unrolled_threefry_draws_the_same_bits_as_jax_default():
    fast, default = _draws(), _draws(GRADJAX_ROLLED_THREEFRY="1")
    assert fast["unrolled"] is gradjax.UNROLLED_THREEFRY
    assert default["unrolled"] is False
    assert fast["draws"] == default["draws"]


def test_reduction_pinning_and_scheduler_flags_are_set():
    assert "--xla_cpu_experimental_ynn_fusion_type=" in os.environ["XLA_FLAGS"]
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in os.environ["XLA_FLAGS"]
