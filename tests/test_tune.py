"""`gradjax tune`'s critical criterion: its math against closed forms, and whole tunes against
mean-field theory's critical point of a ReLU network (sigma_w^2 = 2 with zero bias) and of a
deep linear plug-in (scale 1)."""

import importlib
import math
import textwrap
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import gradjax
from gradjax import cli
from gradjax.prescribe import critical, tune
from gradjax.run import engine
from gradjax.sweep import load_sweep, parse_sweep

LADDER = np.array([0.5, 0.7, 1.0, 1.4, 2.0, 2.8])


def test_crossing_of_a_line_in_log_scale_is_exact():
    # ReLU with zero bias: chi = sigma_w^2 / 2 = scale^2 / 2, so ln chi is linear in ln scale
    log_chi = 2 * np.log(LADDER) - math.log(2)
    assert critical.crossing(LADDER[::-1], log_chi[::-1]) == pytest.approx(math.sqrt(2), 1e-12)
    gaps = log_chi.copy()
    gaps[[1, 4]] = np.nan  # unmeasured points are skipped, not read as zero
    assert critical.crossing(LADDER, gaps) == pytest.approx(math.sqrt(2), 1e-12)


def test_no_bracket_is_nan_and_an_exact_zero_is_its_scale():
    assert math.isnan(critical.crossing(LADDER, np.log(LADDER) + 5))
    assert math.isnan(critical.crossing(LADDER, np.full(LADDER.size, np.nan)))
    exact = np.log(LADDER) - math.log(1.4)
    assert critical.crossing(LADDER, exact) == 1.4


def test_chi_of_a_geometric_profile_is_its_ratio():
    layers = np.arange(1, 10)
    for chi in (0.5, 1.0, 3.0):
        profile = 1e-20 * chi ** (9 - layers)  # |dL/dz_l|^2 ~ chi^(L - l), tiny on purpose
        assert critical.chi_of_profile(layers, profile) == pytest.approx(chi, rel=1e-9)
        # a shallow net (4 layers: one middle layer) is fitted on all but the output layer
        shallow = 3.0 * chi ** (4 - layers[:4])
        shallow[-1] = 1e9  # the output layer's dL/dz is the loss's, left out
        assert critical.chi_of_profile(layers[:4], shallow) == pytest.approx(chi, rel=1e-9)
    assert math.isnan(critical.chi_of_profile(layers[:2], np.ones(2)))  # one layer to fit
    assert math.isnan(critical.chi_of_profile(layers, np.zeros(9)))  # all dead


def test_zoomed_grid_keeps_the_bracket_and_the_spread():
    grid = critical.zoomed_grid(LADDER, 1.2, (0.9, 1.5), 7)
    assert grid[0] == pytest.approx(0.9) and grid[-1] == pytest.approx(1.5)
    assert np.allclose(np.diff(np.log(grid)), np.log(1.5 / 0.9) / 6)
    narrow = critical.zoomed_grid(LADDER, 1.2, (math.nan, math.nan), 5)
    assert narrow[0] == pytest.approx(1.0) and narrow[-1] == pytest.approx(1.4)


RELU = """
name = "relu_critical"
seeds = {seeds}
root_seed = 2
[defaults]
in_dim = 16
width = {width}
depth = 8
out_dim = 1
activation = "relu"
init = "fan_in_normal"
bias_init = "zeros"
inputs = "gaussian"
targets = "gaussian"
[grid]
scale = [1.0, 2.0]
"""


@pytest.mark.integration
def test_critical_relu_recovers_sigma_w_squared_2_and_a_rerun_computes_nothing(tmp_path):
    """Mean field: chi_1 = sigma_w^2 E[relu'(z)^2] = sigma_w^2 / 2 with zero bias, for any q, so
    the critical fan-in scale is sqrt(2). At width 128 the measured point sits within ~2 % of
    it (the loss couples the forward and backward passes at finite width)."""
    sweep = parse_sweep(RELU.format(seeds=64, width=128), str(tmp_path / "relu.toml"))
    table = tune(sweep, tmp_path / "tune", points=7, zoom_rounds=1, train_steps=0)
    assert len(table) == 1  # the two scales are one cell to tune
    assert sorted(p.name for p in (tmp_path / "tune" / "rounds").iterdir()) == [
        "0-0", "0-1", "0-check"]  # the first grid, one zoom round, the check
    row = table.iloc[0]
    assert row["critical_scale"] ** 2 == pytest.approx(2.0, rel=0.04)
    assert row["multiplier"] == pytest.approx(row["critical_scale"] / 1.0)
    assert row["multiplier_p05"] < row["multiplier"] < row["multiplier_p95"]
    assert row["inits_crossing"] >= 0.9 * row["inits"] and row["inits"] == 64
    assert row["criterion"] == "critical" and row["param"] is None and row["layer"] is None
    # the check, against mean field at scale s: E|dL/dz_l|^2 shrinks by chi = s^2 / 2 per
    # layer, 2^-8 over the 9 layers at s = 1, flat at the critical scale. With one example,
    # |dL/dW_l|^2 = |h_(l-1)|^2 |dL/dz_l|^2, and |h_l|^2 = width s^2 / 2 (s^2 / 2)^(l-1) for
    # |x|^2 = in_dim: the forward pass grows what the backward pass shrinks, and the first
    # over last is 16 / (64 s^2 (s^2/2)^7) (s^2/2)^8 = 1/8 at any s. The weight gradients are
    # not balanced better, and the row says so.
    assert row["dz_ratio_before"] == pytest.approx(2.0 ** -8, rel=0.6)
    assert row["dz_ratio_after"] == pytest.approx(1.0, rel=0.5)
    assert row["grad_ratio_before"] == pytest.approx(1 / 8, rel=0.5)
    assert row["grad_ratio_after"] == pytest.approx(1 / 8, rel=0.5)
    assert not row["improved"] and math.isnan(row["frac_loss_halved_after"])
    loaded = gradjax.load(tmp_path / "tune", "tune")
    assert loaded["critical_scale"].tolist() == table["critical_scale"].tolist()
    reports = []

    def counted(one_round, folder):
        reports.append(engine.execute_sweep(one_round, folder, quiet=True))

    tune(sweep, tmp_path / "tune", points=7, zoom_rounds=1, train_steps=0, run=counted)
    assert reports and sum(r.inits for r in reports) == 0  # every round resumed as finished


def plug_in_sweep(tmp_path: Path, module: str, source: str, factory: str, seeds: int,
                  options: str) -> Path:
    """A sweep file of one plug-in cell (`module.py` written beside it from `source`), on
    Gaussian inputs and targets, with `options` (TOML lines) in its defaults."""
    (tmp_path / f"{module}.py").write_text(source)
    sweep = tmp_path / f"{module}.toml"
    sweep.write_text(textwrap.dedent(f"""
        name = "{module}"
        seeds = {seeds}
        [defaults]
        model = "{module}:{factory}"
        inputs = "gaussian"
        targets = "gaussian"
    """) + textwrap.dedent(options))
    return sweep


LINEAR = '''
import jax
import jax.numpy as jnp


def deep_linear(in_dim: int, out_dim: int, width: int = 32, depth: int = 6):
    """x -> width x depth -> out, no activation; every kernel N(0, 1 / fan_in); a tap per
    layer's pre-activation."""
    sizes = [in_dim] + [width] * depth + [out_dim]

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"kernel": jax.random.normal(k, (a, b)) / jnp.sqrt(a)}
                for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def apply(params, x):
        taps = {}
        for i, layer in enumerate(params):
            x = x @ layer["kernel"]
            taps[f"z{i + 1}"] = x
        return x, taps

    return init, apply
'''


@pytest.mark.integration
def test_critical_deep_linear_plug_in_is_scale_1_from_the_command_line(tmp_path, capsys):
    """A linear network multiplies E|dL/dz|^2 by scale^2 per layer (equal widths): critical at
    scale 1, whatever the scale the sweep starts from."""
    sweep = plug_in_sweep(tmp_path, "linear", LINEAR, "deep_linear", seeds=48, options="""
        in_dim = 8
        out_dim = 1
        width = 64
        depth = 8
        scale = 3.0
    """)
    out = tmp_path / "tuned"
    assert cli.main(["tune", str(sweep), "--out", str(out), "--points", "7",
                     "--zoom-rounds", "2"]) == 0
    text = capsys.readouterr().out
    row = gradjax.load(out, "tune").iloc[0]
    assert sorted(p.name for p in (out / "rounds").iterdir()) == [
        "0-0", "0-1", "0-2", "0-check"]  # round 2 zooms on the points of rounds 0 and 1
    assert row["critical_scale"] == pytest.approx(1.0, rel=0.03)
    assert row["multiplier"] == pytest.approx(row["critical_scale"] / 3.0)
    assert f"critical scale {row['critical_scale']:.4g}" in text
    # the check trains the same inits 20 sgd steps: at scale 3 a linear net's gradients grow
    # 9-fold per layer towards the input and the loss blows up; at the critical scale it falls
    assert row["train_steps"] == 20
    assert row["frac_loss_halved_before"] <= 0.1 < 0.5 <= row["frac_loss_halved_after"]
    assert (f"loss halved within 20 steps: {row['frac_loss_halved_before']:.0%} of inits -> "
            f"{row['frac_loss_halved_after']:.0%}") in text
    assert load_sweep(sweep).cells[0].options["model"] == row["model"]


def test_an_unknown_criterion_is_one_error_line(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text(RELU.format(seeds=4, width=4))
    assert cli.main(["tune", str(sweep), "--criterion", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "invalid choice: 'nope'" in err[-1] and "critical" in err[-1]
    assert not (tmp_path / "results").exists()


def test_rescale_multiplies_the_weights_and_leaves_the_biases():
    params = {"dense": {"kernel": np.full((2, 3), 0.5, np.float32),
                        "bias": np.ones(3, np.float32)},
              "head": [np.full((3, 1, 2), -1.0, np.float32)]}
    table = pd.DataFrame({"cell": [0, 1], "criterion": "critical", "layer": [None, None],
                          "multiplier": [1.5, 4.0]})
    scaled = gradjax.rescale(params, table.iloc[0])
    np.testing.assert_array_equal(scaled["dense"]["kernel"], np.full((2, 3), 0.75))
    np.testing.assert_array_equal(scaled["dense"]["bias"], np.ones(3))
    np.testing.assert_array_equal(scaled["head"][0], np.full((3, 1, 2), -1.5))
    with pytest.raises(ValueError, match=r"got 2 rows \(cells \[0, 1\]\)"):
        gradjax.rescale(params, table)


def test_rescale_by_layer_multiplies_each_named_leaf():
    params = [{"kernel": np.ones((2, 3), np.float32), "bias": np.ones(3, np.float32)},
              {"kernel": np.ones((3, 1), np.float32)}]
    table = pd.DataFrame({"cell": 0, "criterion": "unit-variance", "layer": [1, 2],
                          "param": ["[0]['kernel']", "[1]['kernel']"], "multiplier": [0.5, 3.0]})
    scaled = gradjax.rescale(params, table)
    np.testing.assert_array_equal(scaled[0]["kernel"], np.full((2, 3), 0.5))
    np.testing.assert_array_equal(scaled[0]["bias"], np.ones(3))
    np.testing.assert_array_equal(scaled[1]["kernel"], np.full((3, 1), 3.0))
    with pytest.raises(ValueError, match=r"no leaf \[0\]\['kernel'\], .*their leaves: \['W'\]"):
        gradjax.rescale({"W": np.ones((2, 2))}, table)


def test_a_cell_at_scale_zero_is_one_error_line_and_nothing_is_written(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text(RELU.format(seeds=4, width=4).replace("[1.0, 2.0]", "[0.0, 2.0]"))
    out = tmp_path / "tuned"
    assert cli.main(["tune", str(sweep), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: cell 0: scale 0.0: tune starts from a positive scale"]
    assert not out.exists()


SHALLOW = '''
import jax
import jax.numpy as jnp


def one_hidden(in_dim: int, out_dim: int):
    """tanh(x K) H: one tap, too shallow for a slope."""
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"K": jax.random.normal(k1, (in_dim, 4)), "H": jax.random.normal(k2, (4, out_dim))}

    def apply(params, x):
        z = x @ params["K"]
        return jnp.tanh(z) @ params["H"], {"hidden": z}

    return init, apply
'''


@pytest.mark.integration
def test_a_model_too_shallow_for_a_slope_says_so_after_one_round(tmp_path, capsys):
    sweep = plug_in_sweep(tmp_path, "shallow", SHALLOW, "one_hidden", seeds=4, options="""
        in_dim = 3
        out_dim = 1
    """)
    out = tmp_path / "tuned"
    assert cli.main(["tune", str(sweep), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == (
        "every cell: too shallow to measure chi: 1 layer(s) with dL/dz (taps), the critical "
        "criterion needs 3")
    row = gradjax.load(out, "tune").iloc[0]
    assert math.isnan(row["critical_scale"]) and not row["improved"]
    assert sorted(p.name for p in (out / "rounds").iterdir()) == ["0-0"]


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("module", ["deep_cnn_eqx", "deep_cnn_nnx"])
def test_the_deep_cnn_examples_draw_fan_in_normal_kernels_and_zero_biases(module, monkeypatch):
    """What their docstrings promise, so that a sweep's scale is sigma_w: each kernel's entries
    have variance 1 / fan_in (fan_in = 9 x input channels), the biases are zero, and there is
    one tap per convolution."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    init, apply = importlib.import_module(module).deep_cnn(in_dim=64, channels=8, depth=4)
    params = init(jax.random.key(0))
    leaves = [(jax.tree_util.keystr(p), np.asarray(a))
              for p, a in jax.tree_util.tree_leaves_with_path(params)]
    kernels = [a for _, a in leaves if a.ndim == 4]
    biases = [a for p, a in leaves if "convs" in p and "bias" in p]
    assert len(kernels) == 4 and len(biases) == 4
    # sum of squares over the expected variance, pooled over the kernels: ~ chi^2 / its dof
    pooled = sum(np.sum(k.astype(np.float64) ** 2) * (k.size // 8) for k in kernels) / sum(
        k.size for k in kernels)
    assert pooled == pytest.approx(1.0, rel=0.1)  # 1,800 entries: 3.3 % standard error
    assert all(not b.any() for b in biases)
    _, taps = apply(params, np.ones((2, 64), np.float32))
    assert sorted(taps) == ["conv1", "conv2", "conv3", "conv4"]


def test_the_four_model_tune_sweep_validates(capsys):
    assert cli.main(["validate", str(EXAMPLES / "tune_models.toml")]) == 0
    assert "4 cells in 4 compiled bucket(s)" in capsys.readouterr().out


# ------------------------------------------------------------------- the per-layer criteria

SCALES = [3.0, 0.5, 2.0, 0.7, 1.5, 0.25, 1.0]  # a deep linear net's layers, all different


def linear_model(tmp_path: Path, seeds: int, width: int, layer_scale=SCALES, batch: int = 1):
    """The deep linear plug-in at per-layer scales `layer_scale`, as `layerwise` sees it."""
    from gradjax.prescribe import layerwise

    sweep = plug_in_sweep(tmp_path, "linear", LINEAR, "deep_linear", seeds=seeds, options=f"""
        in_dim = 8
        out_dim = 2
        width = {width}
        depth = {len(layer_scale) - 1}
        batch = {batch}
        layer_scale = {list(layer_scale)}
    """)
    return layerwise, layerwise.cell_model(load_sweep(sweep)), sweep


@pytest.mark.integration
def test_layer_scale_multiplies_each_layers_weights_in_forward_order(tmp_path):
    """|W_l|^2 of the same inits grows by layer_scale[l]^2, the biases not at all, in the MLP's
    own probe and in the generic one (resmlp), two lists of one length in one compiled program;
    a list of the wrong length is refused."""
    for model, layers in (("mlp", 4), ("resmlp", 5)):  # the MLP stacks its 2 middle layers
        factors, ones = [2.0, 0.5, 3.0, 1.5, 0.7][:layers], [1.0] * layers
        doc = {"name": "ls", "seeds": 3, "per_seed": True,
               "defaults": {"model": model, "in_dim": 3, "out_dim": 2, "width": 5, "depth": 3,
                            "activation": "tanh", "bias_init": "normal"},
               "grid": {"layer_scale": [ones, factors]}}
        assert len(gradjax.sweep_from_dict(doc).buckets()) == 1
        gradjax.run_sweep(doc, tmp_path / model)
        rows = gradjax.load(tmp_path / model, "per_seed")
        norms = rows.groupby(["layer_scale", "seed", "layer", "param"])["param_sq_norm"].first()
        ratio = (norms[json_list(factors)] / norms[json_list(ones)]).groupby(
            ["layer", "param"]).mean()
        for layer, factor in enumerate(factors, 1):
            assert ratio[(layer, "W")] == pytest.approx(factor**2, rel=1e-5)
            assert ratio[(layer, "b")] == pytest.approx(1.0, rel=1e-6)
        doc["grid"]["layer_scale"] = [[1.0, 2.0]]
        with pytest.raises(gradjax.sweep.SweepError,
                           match=rf"grid.layer_scale: 2 numbers for a model of {layers} layers"):
            gradjax.run_sweep(doc, tmp_path / f"{model}-bad")
        assert not (tmp_path / f"{model}-bad").exists()


def json_list(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def test_unit_variance_of_a_deep_linear_net_is_the_inverse_of_its_layer_scales(tmp_path):
    """LSUV on z_l = z_{l-1} (c_l W_l), W_l ~ N(0, 1/fan_in), x ~ N(0, I): once the layers
    before are normalized, Var(z_l) = c_l^2 chi^2 / dof, so 1/m_l^2 estimates c_l^2 without
    bias. The mean over inits of 1/m_l^2 is c_l^2 within the inits' standard error (the
    output layer, 2 values of one example, is measured too: its variance is over 2 numbers)."""
    layerwise, model, _ = linear_model(tmp_path, seeds=128, width=64)
    m, _ = layerwise.multipliers("unit-variance", model, root_seed=0, seeds=128)
    inverse_sq = 1 / m[:, :-1] ** 2
    mean, error = inverse_sq.mean(0), inverse_sq.std(0) / math.sqrt(len(m))
    assert np.all(error < 0.1 * mean)
    assert np.all(np.abs(mean - np.square(SCALES[:-1])) < 3 * error)


def test_unit_variance_is_lsuv_transcribed_in_numpy(tmp_path):
    """The same inits through tests/reference.py's transcription of the paper's Algorithm 1,
    on a tanh MLP with random biases (so a pass is not exact): with the paper's stopping rule
    turned off and as many passes, the multipliers agree per init; with the paper's own rule
    (|Var - 1| < 0.1, at most 10 passes), which stops up to sqrt(1.1) - 1 = 5 % short per
    layer, the medians over inits agree within 7 %."""
    from reference import lsuv_multipliers

    from gradjax.prescribe import layerwise

    doc = {"name": "lsuv", "seeds": 24, "defaults": {
        "in_dim": 6, "width": 32, "depth": 4, "out_dim": 1, "activation": "tanh", "batch": 16,
        "init": "normal", "scale": 0.3, "bias_init": "normal", "bias_scale": 0.5}}
    model = layerwise.cell_model(gradjax.sweep_from_dict(doc))
    m, _ = layerwise.multipliers("unit-variance", model, root_seed=0, seeds=24)
    ours, paper = [], []
    for seed in range(24):
        floats, rebuild, _, x, _ = layerwise.init_problem(model, gradjax.init_key(0, seed))
        params = jax.tree.map(np.asarray, rebuild(floats))
        ours.append(lsuv_multipliers(params, np.asarray(x, np.float64), "tanh", layers=4, tol=0,
                                     t_max=layerwise.UNIT_VARIANCE_PASSES))
        paper.append(lsuv_multipliers(params, np.asarray(x, np.float64), "tanh", layers=4))
    np.testing.assert_allclose(m, np.array(ours), rtol=2e-4)
    np.testing.assert_allclose(np.median(m, 0), np.median(paper, 0), rtol=0.07)
    assert np.all(m[:, -1] == 1)  # the output layer has no tap


def test_equal_gradients_balances_a_deep_linear_net(tmp_path):
    """|dL/dW_l| of a linear net is proportional to the product of the other layers'
    multipliers, so each pass halves the imbalance: the multipliers bring every layer's
    |dL/dW_l|^2 within the settling factor of every other's, checked by hand-written backprop
    on the same inits, and leave the network's function unchanged (their product is 1)."""
    from reference import mlp_backprop

    layerwise, model, _ = linear_model(tmp_path, seeds=8, width=16, batch=4)
    m, holds = layerwise.multipliers("equal-gradients", model, root_seed=0, seeds=8)
    assert holds.all()
    np.testing.assert_allclose(np.prod(m, axis=1), 1.0, rtol=1e-4)
    for seed in range(8):
        floats, _, _, x, y = layerwise.init_problem(model, gradjax.init_key(0, seed))
        params = [{"W": np.asarray(w, np.float64) * m[seed, l], "b": np.zeros(w.shape[1])}
                  for l, w in enumerate(floats)]
        grads = mlp_backprop(params, np.asarray(x, np.float64), np.asarray(y, np.float64),
                             "linear")["grads"]
        sq = np.array([np.sum(g["W"] ** 2) for g in grads])
        assert sq.max() / sq.min() <= layerwise.EQUAL_SETTLED * (1 + 1e-3)
        untuned = [{"W": np.asarray(w, np.float64), "b": np.zeros(w.shape[1])} for w in floats]
        grads = mlp_backprop(untuned, np.asarray(x, np.float64), np.asarray(y, np.float64),
                             "linear")["grads"]
        sq = np.array([np.sum(g["W"] ** 2) for g in grads])
        assert sq.max() / sq.min() > 100  # what the layers' different scales did


@pytest.mark.integration
def test_tune_unit_variance_from_the_command_line_checks_itself_and_leads_findings(
        tmp_path, capsys):
    """The per-layer table (one row per kernel leaf, in forward order), its check round of the
    same inits, the printed layer_scale, a second criterion's rows beside the first's, the
    prescription at the head of `findings`, and `rescale` by the table."""
    scales = SCALES[:4]
    _, model, sweep = linear_model(tmp_path, seeds=16, width=32, layer_scale=scales)
    out = tmp_path / "tuned"
    assert cli.main(["tune", str(sweep), "--out", str(out), "--criterion", "unit-variance",
                     "--train-steps", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = gradjax.load(out, "tune", criterion="unit-variance").sort_values("layer")
    assert table["param"].tolist() == [f"[{i}]['kernel']" for i in range(len(scales))]
    assert table["layer"].tolist() == list(range(1, len(scales) + 1))
    assert table["multiplier"].iloc[1:-1].to_numpy() == pytest.approx(
        1 / np.array(scales[1:-1]), rel=0.15)
    row = table.iloc[0]
    # a linear net at scales c_l: |dL/dW_l|^2 spread by the c's, closer to even once normalized
    assert row["grad_spread_before"] > 10 * row["grad_spread_after"] and row["improved"]
    assert 0 <= row["frac_loss_halved_before"] <= 1 and row["train_steps"] == 3
    # printed as the layer_scale a sweep runs it by: the cell's own times the multipliers
    own_times_tuned = np.array(scales) * table["multiplier"].to_numpy()
    assert "unit-variance: layer_scale = [" + ", ".join(
        f"{v:.3g}" for v in own_times_tuned) + "]" in printed
    # a second criterion into the same folder keeps the first's rows
    assert cli.main(["tune", str(sweep), "--out", str(out), "--criterion", "equal-gradients",
                     "--train-steps", "0", "--quiet"]) == 0
    capsys.readouterr()
    both = gradjax.load(out, "tune")
    assert sorted(both["criterion"].unique()) == ["equal-gradients", "unit-variance"]
    balanced = both[both["criterion"] == "equal-gradients"].iloc[0]
    assert balanced["grad_spread_after"] < balanced["grad_spread_before"] / 10
    assert balanced["improved"] and math.isnan(balanced["frac_loss_halved_after"])
    assert cli.main(["findings", str(out)]) == 0
    found = capsys.readouterr().out
    assert found.startswith(f"Prescription (gradjax tune, {out}):")
    assert f"{row['inits_holding']} of 16 inits" in found
    assert "equal-gradients: layer_scale = [" in found
    key = gradjax.init_key(0, 3)
    namespace: dict = {}
    exec(LINEAR, namespace)  # the plug-in's own source, as the sweep imported it
    init, _ = namespace["deep_linear"](8, 2, 32, len(scales) - 1)
    drawn = init(key)
    tuned = gradjax.rescale(drawn, table)
    for layer, (before, after) in enumerate(zip(drawn, tuned, strict=True)):
        np.testing.assert_allclose(after["kernel"],
                                   before["kernel"] * table["multiplier"].iloc[layer], rtol=1e-6)
