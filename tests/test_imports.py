"""Imports run downhill: reading results, sweep files and --help need no JAX; the names in
`gradjax.spec` are exactly the ones the compute modules implement."""

import subprocess
import sys

import pytest
from conftest import tiny_sweep_text

import gradjax
from gradjax import cli, spec
from gradjax.nn import initializers, losses, network
from gradjax.nn.activations import get_activation

READ_WITHOUT_JAX = """
import sys
import gradjax
from gradjax.cli import main
folder, sweep = sys.argv[1], sys.argv[2]
frame = gradjax.load(folder, layer=-1)
assert len(frame) > 0
for argv in (["validate", sweep], ["summary", folder], ["findings", folder]):
    assert main(argv) == 0, argv
try:
    main(["--help"])
except SystemExit:
    pass
print("JAX LOADED" if "jax" in sys.modules else "NO JAX")
"""


@pytest.mark.integration  # a whole `gradjax run` first
def test_reading_results_validate_summary_findings_and_help_load_no_jax(tmp_path):
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(tiny_sweep_text())
    assert cli.main(["run", str(sweep), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = subprocess.run([sys.executable, "-c", READ_WITHOUT_JAX, str(tmp_path / "out"),
                          str(sweep)], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "NO JAX", out.stdout + out.stderr


def test_compute_names_load_on_first_use():
    assert gradjax.grad_stats.__module__ == "gradjax.probe.api"
    assert gradjax.run_sweep.__module__ == "gradjax.run.library"
    assert gradjax.tune.__module__ == "gradjax.prescribe.tuning"
    with pytest.raises(AttributeError, match="no attribute 'grad_statz'"):
        gradjax.grad_statz  # noqa: B018


def test_the_spec_names_are_exactly_what_the_compute_modules_implement():
    for name in spec.ACTIVATIONS:
        assert callable(get_activation(name))
    with pytest.raises(ValueError):
        get_activation("relu6")
    assert tuple(initializers.WEIGHT_DRAWS) == spec.WEIGHT_INITS
    assert tuple(initializers.BIAS_DRAWS) == spec.BIAS_INITS
    for name in spec.LOSSES:
        assert callable(losses.loss_fn(name))
    assert network.NORMS is spec.NORMS
