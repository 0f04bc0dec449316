"""Every model gets the report and findings the MLP gets: a Flax NNX CNN's folder, its modules
named against their forward order, is drawn and described layer by layer in forward order,
each layer by its kernel (the largest leaf of the module), with its tap's statistics."""

import argparse

import numpy as np
import pytest

import gradjax
from gradjax.analysis import report
from gradjax.analysis.findings import findings_text
from gradjax.results.layers import layer_rows
from gradjax.run.engine import execute_sweep
from gradjax.sweep import load_sweep

CNN = '''
import jax
import jax.numpy as jnp
from flax import nnx

from gradjax.nn.adapters.flax_nnx import from_nnx


class CNN(nnx.Module):
    def __init__(self, channels, out_dim, rngs):
        self.conv_a = nnx.Conv(1, channels, kernel_size=(3, 3), rngs=rngs)
        self.conv_b = nnx.Conv(channels, 4, kernel_size=(3, 3), rngs=rngs)
        self.head = nnx.Linear(4, out_dim, rngs=rngs)

    def __call__(self, x):
        a = self.conv_a(x.reshape(-1, 6, 6, 1))
        b = self.conv_b(jax.nn.relu(a))
        return self.head(jnp.mean(jax.nn.relu(b), axis=(1, 2))), {"conv_a": a, "conv_b": b}


def cnn(in_dim: int, out_dim: int, channels: int):
    return from_nnx(lambda rngs: CNN(channels, out_dim, rngs))
'''

SWEEP = '''name = "cnn"
seeds = 4

[defaults]
model = "cnn_nnx:cnn"
in_dim = 36
out_dim = 2
batch = 2
activation = "relu"
inputs = "gaussian"
targets = "gaussian"

[grid]
channels = [2, 3]
scale = [0.5, 1.0, 2.0]
'''
KERNELS = ["['conv_a']['kernel']", "['conv_b']['kernel']", "['head']['kernel']"]


@pytest.fixture(scope="module")
def cnn_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    (folder / "cnn_nnx.py").write_text(CNN)
    (folder / "cnn.toml").write_text(SWEEP)
    execute_sweep(load_sweep(folder / "cnn.toml"), folder / "out", quiet=True, devices=1)
    return folder / "out"


def test_layer_rows_are_the_kernels_in_forward_order_with_their_taps_statistics(cnn_folder):
    summary = gradjax.load(cnn_folder)
    rows = layer_rows(summary)
    assert rows.groupby("cell")["param"].apply(list).map(KERNELS.__eq__).all()
    assert rows.groupby("cell")["layer"].apply(list).map([1, 2, 3].__eq__).all()
    for layer, tap in ((1, "taps['conv_a']"), (2, "taps['conv_b']")):
        want = gradjax.load(cnn_folder, param=tap)["preact_var_p50"].to_numpy()
        got = rows[rows["layer"] == layer]["preact_var_p50"].to_numpy()
        np.testing.assert_array_equal(got, want)
        assert np.isfinite(got).all()


def test_findings_describe_every_layer_of_the_plug_in(cnn_folder):
    lines = findings_text(cnn_folder).splitlines()
    first = lines.index(next(line for line in lines if line.startswith("scale 0.5, channels 2")))
    assert [line.split(":")[0].strip() for line in lines[first + 1 : first + 4]] == [
        f"layer {k} {name}" for k, name in enumerate(KERNELS, 1)]
    kernels = gradjax.load(cnn_folder, channels=2, scale=0.5)
    norms = kernels.set_index("param")["grad_sq_norm_p50"]
    ratio = norms[KERNELS[0]] / norms[KERNELS[-1]]
    assert f"  |dL/dW|^2 (median over inits) at layer 1 is {ratio:.3g} x the output layer's" in (
        lines[first + 4])


def test_report_draws_the_plug_in_folder(cnn_folder, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    out = tmp_path / "r"
    assert report.main(parser.parse_args([str(cnn_folder), "--out", str(out),
                                          "--heatmap-axes", "channels,scale"])) == 0
    drawn = {p.name for p in out.iterdir()}
    assert {"profiles.png", "histograms.png", "report.html",
            "heatmap-grad_var.png"} <= drawn, drawn
    assert "wrote" in capsys.readouterr().out
