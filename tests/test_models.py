"""Model families: the plug-in contract (options from the factory's signature, validation,
import from the sweep's folder, scales on the leaves, per-leaf rows), the generic probe against
numpy backprop, the built-in resmlp against numpy, and the MLP run through the generic probe
against the MLP's own probe."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import programs_built, run_plugin

import gradjax
from gradjax.run.engine import execute_sweep
from gradjax.sweep import SweepError, load_sweep

TOY = '''
import jax
import jax.numpy as jnp


def two_layer(in_dim: int, out_dim: int, hidden: int = 4, gain: float = 1.0):
    """tanh(x K + c) * gain -> H; params a dict, one tap."""
    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"dense": {"kernel": jax.random.normal(k1, (in_dim, hidden)),
                          "bias": jax.random.normal(k2, (hidden,))},
                "head": {"kernel": jax.random.normal(k3, (hidden, out_dim))}}

    def apply(p, x):
        z = x @ p["dense"]["kernel"] + p["dense"]["bias"][None, :]
        return (gain * jnp.tanh(z)) @ p["head"]["kernel"], {"hidden": z}

    return init, apply


def scaled_itself(in_dim: int, out_dim: int, scale: float = 1.0):
    """Takes `scale` itself and applies it to nothing but the output."""
    def init(key):
        return {"w": jax.random.normal(key, (in_dim, out_dim)), "c": jnp.ones(out_dim)}

    def apply(p, x):
        return scale * (x @ p["w"] + p["c"][None, :])

    return init, apply


def no_kind(in_dim: int, out_dim: int, mystery=None):
    raise AssertionError("never called")


def clashes(in_dim: int, out_dim: int, seed: int = 0):
    raise AssertionError("never called")


def catch_all(in_dim: int, out_dim: int, **options):
    raise AssertionError("never called")


def bad_default(in_dim: int, out_dim: int, activation: str = "nope"):
    raise AssertionError("never called")


def flat_logits(in_dim: int, out_dim: int):
    """Logits [batch] instead of [batch, out_dim]: mse would broadcast them silently."""
    def init(key):
        return {"w": jax.random.normal(key, (in_dim,))}

    return init, lambda p, x: x @ p["w"]


def with_a_counter(in_dim: int, out_dim: int):
    """An integer leaf beside the float ones: carried along, no gradient, no row."""
    def init(key):
        return {"w": jax.random.normal(key, (in_dim, out_dim)), "steps": jnp.int32(3)}

    return init, lambda p, x: (x @ p["w"]) * p["steps"]
'''
X = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]]
Y = [[1.0, -1.0], [0.0, 0.5]]


def toy_sweep(tmp_path, body: str, model: str = "toy:two_layer", seeds: int = 4):
    (tmp_path / "toy.py").write_text(TOY)
    path = tmp_path / "toy.toml"
    path.write_text(textwrap.dedent(f"""
        name = "toy"
        seeds = {seeds}
        root_seed = 3
        [defaults]
        model = "{model}"
        in_dim = 3
        out_dim = 2
        inputs = {X}
        targets = {Y}
    """) + textwrap.dedent(body))
    return path


def toy_numpy(params, x, y, gain):
    """Loss, leaf gradients and the tap of `two_layer` by hand, in float64."""
    k, c, h = (np.asarray(a, np.float64) for a in (params["dense"]["kernel"],
                                                   params["dense"]["bias"],
                                                   params["head"]["kernel"]))
    z = x @ k + c
    a = gain * np.tanh(z)
    out = a @ h
    loss = 0.5 * np.mean(np.sum((out - y) ** 2, axis=1))
    d_out = (out - y) / len(x)
    dz = (d_out @ h.T) * gain * (1 - np.tanh(z) ** 2)
    grads = {"['dense']['bias']": dz.sum(0), "['dense']['kernel']": x.T @ dz,
             "['head']['kernel']": a.T @ d_out}
    return loss, grads, z


def test_plugin_per_leaf_rows_match_numpy_backprop(tmp_path):
    path = toy_sweep(tmp_path, """
        [grid]
        scale = [0.5, 2.0]
        bias_scale = [0.0, 1.5]
        gain = [1.0, 3.0]
    """)
    sweep = load_sweep(path)
    report = execute_sweep(sweep, tmp_path / "out", quiet=True, devices=1)
    assert programs_built(report) == 1  # scale, bias_scale and the float option gain are traced
    rows = gradjax.load(tmp_path / "out", "per_seed")
    summary = gradjax.load(tmp_path / "out")
    init, _ = sweep.cells[0].family.factory(in_dim=3, out_dim=2)
    x, y = np.asarray(X), np.asarray(Y)
    for cell in sweep.cells:
        o = cell.options
        per_seed = {}
        for seed in range(sweep.seeds):
            raw = init(gradjax.init_key(sweep.root_seed, seed))
            params = jax.tree.map(
                lambda a, o=o: a * (o["scale"] if a.ndim == 2 else o["bias_scale"]), raw)
            loss, grads, z = toy_numpy(params, x, y, o["gain"])
            got = rows[(rows.cell == cell.index) & (rows.seed == seed)].set_index("param")
            assert sorted(got.index) == sorted([*grads, "taps['hidden']"])
            for param, g in grads.items():
                row = got.loc[param]
                assert row["n"] == g.size and row["layer_from_output"] == row["layer"] - 3
                np.testing.assert_allclose(row["grad_var"], g.var(), rtol=2e-5, atol=1e-30)
                np.testing.assert_allclose(row["grad_sq_norm"], np.sum(g**2), rtol=2e-5)
                np.testing.assert_allclose(row["grad_mean"], g.mean(), rtol=1e-4, atol=1e-6)
                assert np.isnan(row["preact_var"]) and np.isnan(row["grad_frac_underflow"])
                per_seed.setdefault(param, []).append(g)
            # dense's kernel and bias share layer 1, head is the output layer
            assert list(got.loc[["['dense']['kernel']", "['dense']['bias']",
                                 "['head']['kernel']", "taps['hidden']"], "layer"]) == [1, 1, 2, 1]
            tap = got.loc["taps['hidden']"]
            np.testing.assert_allclose(tap["preact_var"], z.var(), rtol=2e-5)
            np.testing.assert_allclose(tap["loss_value"], loss, rtol=2e-5)
            assert np.isnan(tap["grad_var"]) and np.isnan(tap["act_frac_dead"])  # no activation
        cell_rows = summary[summary.cell == cell.index].set_index("param")
        for param, gs in per_seed.items():
            across = np.mean(np.var(np.stack(gs), axis=0))
            np.testing.assert_allclose(cell_rows.loc[param, "grad_var_across_seeds"], across,
                                       rtol=1e-4, atol=1e-12)
        assert np.isnan(cell_rows.loc["taps['hidden']", "grad_var_across_seeds"])
        assert cell_rows["theory_chi1"].isna().all()
    assert summary["hidden"].eq(4).all() and summary["width"].isna().all()


def test_a_factory_that_takes_scale_gets_it_and_its_leaves_are_not_scaled(tmp_path):
    path = toy_sweep(tmp_path, """
        bias_scale = 0.0
        [grid]
        scale = [1.0, 2.0]
    """, model="toy:scaled_itself", seeds=2)
    execute_sweep(load_sweep(path), tmp_path / "out", quiet=True, devices=1)
    rows = gradjax.load(tmp_path / "out", "per_seed", param="['c']")
    # dL/dc = scale * mean_b (out - y) with out = scale * (x w + c): c stays ones (bias_scale
    # 0 was not applied), so the gradient is nonzero and grows faster than linearly in scale
    w = np.asarray(jax.random.normal(gradjax.init_key(3, 0), (3, 2)), np.float64)
    for scale in (1.0, 2.0):
        out = scale * (np.asarray(X) @ w + 1.0)
        expected = scale * np.mean(out - np.asarray(Y), axis=0)
        got = rows[(rows.scale == scale) & (rows.seed == 0)]
        np.testing.assert_allclose(got["grad_sq_norm"].iloc[0], np.sum(expected**2), rtol=1e-5)


@pytest.mark.parametrize(("body", "model", "field", "says"), [
    ("hiddn = 3\n", "toy:two_layer", "defaults.hiddn", "momentum, hidden, gain"),
    ('hidden = "4"\n', "toy:two_layer", "defaults.hidden", "is not an integer"),
    ("[grid]\nhidden = [2, 2]\n", "toy:two_layer", "grid.hidden[1]", "is repeated"),
    ("", "toy:no_kind", "defaults.model", "needs a default or an annotation"),
    ("", "toy:missing", "defaults.model", "has no callable 'missing'"),
    ("", "nosuchmodule_xyz:f", "defaults.model", "cannot import 'nosuchmodule_xyz'"),
    ("", "not a model", "defaults.model", 'or "package.module:factory"'),
    ("[grid]\nwidth = [2, 3]\n", "toy:two_layer", "grid.width",
     "model 'toy:two_layer' does not take width"),
    ("", "toy:clashes", "defaults.model", "would clash with the result column"),
    ("", "toy:catch_all", "defaults.model", "name each option as a keyword parameter"),
    ("", "toy:bad_default", "defaults.model", "the factory's default for activation"),
    ("[grid]\nbias_scale = [0.5, 1.0]\n", "toy:scaled_itself", "grid.bias_scale",
     "does not take bias_scale"),
])
def test_plugin_options_are_validated_like_built_in_ones(tmp_path, body, model, field, says):
    path = toy_sweep(tmp_path, body, model=model)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert err.value.field == field and says in err.value.line()
    assert len(err.value.line().splitlines()) == 1


def test_unknown_keys_are_rejected_and_defaults_a_model_does_not_take_are_dropped(tmp_path):
    path = toy_sweep(tmp_path, """
        width = 7
        [[cases]]
        label = "mlp"
        model = "mlp"
        depth = 1
        activation = "tanh"
        [[cases]]
        label = "toy"
        hidden = 5
    """)
    sweep = load_sweep(path)
    by_label = {c.label: c for c in sweep.cells}
    assert by_label["mlp"].options["width"] == 7 and by_label["mlp"].options["hidden"] is None
    assert by_label["toy"].options["width"] is None and by_label["toy"].options["hidden"] == 5
    assert by_label["toy"].options["gain"] == 1.0  # the factory's default
    assert [o.name for o in sweep.extra_options] == ["hidden", "gain"]


def test_the_sweep_folder_comes_before_installed_modules(tmp_path):
    (tmp_path / "json.py").write_text(TOY)  # shadows the standard library's json
    path = toy_sweep(tmp_path, "", model="json:two_layer")
    assert load_sweep(path).cells[0].options["hidden"] == 4
    import json

    assert hasattr(json, "dumps")  # nothing outside the parser sees the sweep's module


def test_an_int_option_of_a_plugin_makes_buckets_and_compiles_once_per_value(tmp_path):
    path = toy_sweep(tmp_path, "[grid]\nhidden = [2, 3]\n", seeds=2)
    report = execute_sweep(load_sweep(path), tmp_path / "out", quiet=True, devices=1)
    assert programs_built(report) == 2
    n = gradjax.load(tmp_path / "out", "per_seed", param="['dense']['kernel']", seed=0)["n"]
    assert list(n) == [6, 9]


RESMLP = """
name = "res"
seeds = 3
root_seed = 11
[defaults]
model = "resmlp"
in_dim = 2
width = 3
depth = 1
out_dim = 1
activation = "tanh"
init = "glorot_normal"
inputs = [[0.5, -1.5], [2.0, 0.25]]
targets = [[1.0], [-0.5]]
[grid]
branch_scale = [0.0, 0.7]
scale = [0.5, 1.5]
"""


def resmlp_numpy(params, x, y, alpha):
    (w1, b1), (w2, b2), (w3, b3) = (
        (np.asarray(p["W"], np.float64), np.asarray(p["b"], np.float64)) for p in params)
    h1 = x @ w1 + b1
    z2 = h1 @ w2 + b2
    h2 = h1 + alpha * np.tanh(z2)
    out = h2 @ w3 + b3
    d_out = (out - y) / len(x)
    dh2 = d_out @ w3.T
    dz2 = dh2 * alpha * (1 - np.tanh(z2) ** 2)
    dh1 = dh2 + dz2 @ w2.T
    grads = {1: (x.T @ dh1, dh1.sum(0)), 2: (h1.T @ dz2, dz2.sum(0)), 3: (h2.T @ d_out,
                                                                       d_out.sum(0))}
    return grads, z2, dz2


def test_resmlp_matches_numpy_and_its_branch_scale_is_traced(tmp_path):
    path = tmp_path / "res.toml"
    path.write_text(RESMLP)
    sweep = load_sweep(path)
    report = execute_sweep(sweep, tmp_path / "out", quiet=True, devices=1)
    assert programs_built(report) == 1
    rows = gradjax.load(tmp_path / "out", "per_seed")
    x, y = np.asarray([[0.5, -1.5], [2.0, 0.25]]), np.asarray([[1.0], [-0.5]])
    for cell in sweep.cells:
        o = cell.options
        for seed in range(sweep.seeds):
            params = gradjax.init_mlp(gradjax.init_key(11, seed), (2, 3, 3, 1),
                                      init="glorot_normal", scale=o["scale"])
            grads, z2, dz2 = resmlp_numpy(params, x, y, o["branch_scale"])
            got = rows[(rows.cell == cell.index) & (rows.seed == seed)]
            for layer, (gw, gb) in grads.items():
                for param, g in (("W", gw), ("b", gb)):
                    row = got[(got.layer == layer) & (got.param == param)].iloc[0]
                    np.testing.assert_allclose(row["grad_sq_norm"], np.sum(g**2), rtol=2e-5,
                                               atol=1e-30)
                    if o["branch_scale"] == 0 and layer == 2:
                        assert row["grad_frac_zero"] == 1  # the branch is cut: exact zeros
            tap = got[got.param == "taps['layer2']"].iloc[0]
            assert tap["layer"] == 2 and tap["layer_from_output"] == -2
            np.testing.assert_allclose(tap["preact_var"], z2.var(), rtol=2e-5)
            np.testing.assert_allclose(tap["act_deriv_mean"], np.mean(1 - np.tanh(z2) ** 2),
                                       rtol=2e-5)
            # dL/dz of the block inside the scan over blocks: mean over the batch of |dz2_b|^2
            np.testing.assert_allclose(tap["delta_sq_norm"], np.mean(np.sum(dz2**2, axis=1)),
                                       rtol=2e-5, atol=1e-30)


MLP_BOTH = """
name = "both"
seeds = 4
[defaults]
in_dim = 3
width = 5
depth = 2
out_dim = 2
batch = 3
activation = "relu"
structural_zeros = false
[grid]
scale = [0.5, 2.0]
[[cases]]
label = "own probe"
model = "mlp"
[[cases]]
label = "generic probe"
model = "gradjax.nn.models.mlp:factory"
"""


def test_the_mlp_through_the_generic_probe_agrees_with_its_own_probe(tmp_path):
    path = tmp_path / "both.toml"
    path.write_text(MLP_BOTH)
    execute_sweep(load_sweep(path), tmp_path / "out", quiet=True, devices=1)
    rows = gradjax.load(tmp_path / "out", "per_seed")
    own = rows[rows.label == "own probe"].set_index(["scale", "seed", "layer", "param"])
    generic = rows[rows.label == "generic probe"].copy()
    leaves = ~generic.param.str.startswith("taps")
    # parameters laid out as a list of {"W", "b"} layers are named and numbered like the MLP's
    assert set(generic.loc[leaves, "param"]) == {"W", "b"}
    generic = generic.set_index(["scale", "seed", "layer", "param"])
    params = generic[leaves.to_numpy()]
    assert len(params) == len(own) and set(params.index) == set(own.index)
    for stat in ("grad_var", "grad_sq_norm", "grad_max_abs", "grad_frac_zero", "grad_cv",
                 "grad_unit_cos_sq", "loss_value"):
        np.testing.assert_allclose(params[stat], own.loc[params.index, stat], rtol=1e-4,
                                   atol=1e-7, err_msg=stat)
    taps = generic[generic.index.get_level_values("param").str.startswith("taps")]
    assert len(taps) == 2 * 4 * 2  # scales x seeds x hidden layers
    for (scale, seed, layer, _), tap in taps.iterrows():
        mine = own.loc[(scale, seed, layer, "W")]
        for stat in ("preact_var", "preact_mean", "act_frac_dead", "act_deriv_mean"):
            np.testing.assert_allclose(tap[stat], mine[stat], rtol=1e-4, atol=1e-7)


def test_the_five_line_flax_example_of_the_docs_runs_as_a_sweep(tmp_path):
    from pathlib import Path

    docs = (Path(__file__).parents[1] / "docs" / "extending.md").read_text()
    section = docs.split("## Your Flax or Equinox model in five lines")[1]
    code = section.split("```python\n")[1].split("```")[0]
    rows = run_plugin(tmp_path, "mymodels", code, "mymodels:mlp",
                      "hidden = 3\nin_dim = 4\nout_dim = 2\nbatch = 2\n")
    kernels = rows[rows.param.str.contains("kernel")]
    assert sorted(kernels["n"]) == [3 * 2, 4 * 3]
    assert (kernels["grad_sq_norm"] > 0).all() and rows["loss_value"].nunique() == 1


def test_the_shipped_plugin_sweep_runs_its_equinox_and_flax_models(tmp_path):
    import dataclasses
    from pathlib import Path

    sweep = load_sweep(Path(__file__).parents[1] / "examples" / "plugin_models.toml")
    models = {c.options["model"] for c in sweep.cells}
    assert models == {"mlp", "resmlp", "conv_eqx:conv_net", "transformer_nnx:transformer_block"}
    plugins = tuple(c for c in sweep.cells if ":" in c.options["model"] and c.options["scale"] == 1)
    execute_sweep(dataclasses.replace(sweep, cells=plugins, seeds=2), tmp_path / "out", quiet=True,
              devices=1)
    summary = gradjax.load(tmp_path / "out")
    conv = summary[summary.model == "conv_eqx:conv_net"]
    assert set(conv.param) >= {".conv1.weight", "taps['conv1']", "taps['conv2']"}
    assert conv["width"].isna().all() and (conv["channels"] == 4).all()
    relu_taps = conv[conv.param.str.startswith("taps")]
    assert relu_taps["act_frac_dead_mean"].between(0, 1).all()  # relu: dead units counted
    block = summary[summary.model == "transformer_nnx:transformer_block"]
    assert (block.loc[~block.param.str.startswith("taps"), "grad_sq_norm_p50"] > 0).all()


def test_a_model_whose_logits_are_misshaped_is_refused_before_anything_is_written(tmp_path):
    path = toy_sweep(tmp_path, "", model="toy:flat_logits")
    with pytest.raises(SweepError) as err:
        execute_sweep(load_sweep(path), tmp_path / "out", quiet=True, devices=1)
    assert err.value.field == "defaults.model" and "expected (batch, out_dim) = (2, 2)" in str(
        err.value)
    assert not (tmp_path / "out").exists()


def test_integer_leaves_ride_along_and_an_edited_model_is_another_sweep(tmp_path):
    path = toy_sweep(tmp_path, "", model="toy:with_a_counter", seeds=2)
    execute_sweep(load_sweep(path), tmp_path / "out", quiet=True, devices=1)
    rows = gradjax.load(tmp_path / "out", "per_seed", seed=0)
    assert list(rows.param) == ["['w']"] and (rows.grad_sq_norm > 0).all()
    (tmp_path / "toy.py").write_text(TOY + "\n# edited\n")
    from gradjax.nn import models
    from gradjax.results.layout import ResultsError

    models.resolve.cache_clear()
    with pytest.raises(ResultsError, match="plug-in model's source changed"):
        execute_sweep(load_sweep(path), tmp_path / "out", quiet=True, devices=1)


def test_report_draws_a_plug_in_folder(tmp_path, capsys):
    import argparse

    from gradjax.analysis import report

    path = toy_sweep(tmp_path, "", seeds=2)
    execute_sweep(load_sweep(path), tmp_path / "out", quiet=True, devices=1)
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.main(parser.parse_args([str(tmp_path / "out")])) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "out" / "report" / "profiles.png").stat().st_size > 0


def test_losses_and_drawn_data_work_for_plugins_as_for_the_mlp(tmp_path):
    from gradjax.nn import keys

    path = toy_sweep(tmp_path, """
        loss = "softmax_cross_entropy"
        batch = 3
    """, seeds=2)
    fixed = f"inputs = {X}\ntargets = {Y}\n"
    path.write_text(path.read_text().replace(
        fixed, 'inputs = "gaussian"\ntargets = "random_labels"\n'))
    sweep = load_sweep(path)
    execute_sweep(sweep, tmp_path / "out", quiet=True, devices=1)
    rows = gradjax.load(tmp_path / "out", "per_seed", param="['head']['kernel']")
    init, _ = sweep.cells[0].family.factory(in_dim=3, out_dim=2)
    for seed in range(2):
        key = gradjax.init_key(3, seed)
        x = np.asarray(jax.random.normal(keys.data_key(key, keys.INPUTS), (3, 3)), np.float64)
        labels = jax.random.randint(keys.data_key(key, keys.TARGETS), (3,), 0, 2)
        y = np.eye(2)[np.asarray(labels)]
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), init(key))
        logits = np.tanh(x @ p["dense"]["kernel"] + p["dense"]["bias"]) @ p["head"]["kernel"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -np.mean(np.sum(y * log_softmax, axis=1))
        np.testing.assert_allclose(rows.loc[rows.seed == seed, "loss_value"].iloc[0], loss,
                                   rtol=1e-5)


def test_a_plugin_sweep_resumes_to_the_same_numbers_in_float64(tmp_path, monkeypatch):
    from gradjax.run import pack_work

    path = toy_sweep(tmp_path, 'dtype = "float64"\n[grid]\ngain = [0.5, 2.0]\n', seeds=6)
    sweep = load_sweep(path)
    execute_sweep(sweep, tmp_path / "straight", quiet=True, devices=1, chunk=2)
    original = pack_work.PackRun.checkpoint

    def checkpoint_then_die(self, done, moments):
        original(self, done, moments)
        raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(pack_work.PackRun, "checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        execute_sweep(sweep, tmp_path / "resumed", quiet=True, devices=1, chunk=2)
    monkeypatch.undo()
    assert not list((tmp_path / "resumed" / "summary").glob("*.parquet"))
    execute_sweep(sweep, tmp_path / "resumed", quiet=True, devices=1, chunk=2)
    straight = gradjax.load(tmp_path / "straight", "per_seed")
    resumed = gradjax.load(tmp_path / "resumed", "per_seed")
    pd.testing.assert_frame_equal(resumed, straight)
    assert straight["grad_var"].dtype == np.float64 and straight["grad_cv"].dtype == np.float64
    init, _ = sweep.cells[0].family.factory(in_dim=3, out_dim=2)
    with jax.enable_x64(True):
        raw = init(gradjax.init_key(3, 5))
    _, grads, _ = toy_numpy(raw, np.asarray(X), np.asarray(Y), 0.5)
    row = straight[(straight.seed == 5) & (straight.gain == 0.5)
                   & (straight.param == "['head']['kernel']")].iloc[0]
    np.testing.assert_allclose(row["grad_var"], grads["['head']['kernel']"].var(), rtol=1e-10)


def test_layers_follow_the_forward_pass_whatever_the_names_and_the_preparation():
    """`layer_order.layer_numbers` on plain JAX: leaves cast and broadcast up front in reverse
    order, a jitted inner layer, and root-level leaves; taps take the producing layer."""
    from gradjax.nn.layer_order import layer_numbers

    params = {"a_out": jnp.ones((4, 2)), "b_mid": {"w": jnp.ones((4, 4)), "c": jnp.ones(4)},
              "z_in": {"w": jnp.ones((3, 4))}}

    @jax.jit
    def dense(w, h):
        return h @ w

    def apply(p, x):
        p = jax.tree.map(lambda a: (a * 2).astype(jnp.float32), p)  # every leaf first, a..z
        bias = jnp.broadcast_to(p["b_mid"]["c"], (x.shape[0], 4))
        first = jnp.tanh(dense(p["z_in"]["w"], x))
        second = first @ p["b_mid"]["w"] + bias
        return jnp.tanh(second) @ p["a_out"], {"second": second, "first": first}

    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [path for path, _ in flat]
    leaf, taps, n = layer_numbers(
        lambda ls, x, _: apply(jax.tree.unflatten(jax.tree.structure(params), ls), x),
        [leaf for _, leaf in flat], jax.ShapeDtypeStruct((2, 3), jnp.float32), paths,
        ["first", "second"])
    names = [jax.tree_util.keystr(p) for p in paths]
    assert dict(zip(names, leaf.tolist(), strict=True)) == {
        "['a_out']": 3, "['b_mid']['c']": 2, "['b_mid']['w']": 2, "['z_in']['w']": 1}
    assert taps.tolist() == [1, 2] and n == 3


UNTYPED = '''
import jax
import jax.numpy as jnp


def tiny_resnet(in_dim, out_dim, width, blocks):
    """No annotations, no defaults: `blocks` is an int because the sweep writes 2."""
    def init(key):
        keys = jax.random.split(key, blocks + 2)
        return {"stem": jax.random.normal(keys[0], (in_dim, width)),
                "blocks": [jax.random.normal(k, (width, width)) / width for k in keys[1:-1]],
                "head": jax.random.normal(keys[-1], (width, out_dim))}

    def apply(p, x):
        h = x @ p["stem"]
        for w in p["blocks"]:
            h = h + jnp.tanh(h @ w)
        return h @ p["head"]

    return init, apply
'''


def test_a_factory_parameter_without_annotation_takes_its_kind_from_the_sweep(tmp_path):
    (tmp_path / "untyped.py").write_text(UNTYPED)
    body = ('name = "untyped"\nseeds = 2\n[defaults]\nmodel = "untyped:tiny_resnet"\n'
            'in_dim = 3\nout_dim = 1\nwidth = 4\nblocks = 2\n')
    (tmp_path / "ok.toml").write_text(body)
    sweep = load_sweep(tmp_path / "ok.toml")
    assert [o.kind for o in sweep.extra_options if o.name == "blocks"] == ["int"]
    execute_sweep(sweep, tmp_path / "out", quiet=True, devices=1)
    rows = gradjax.load(tmp_path / "out", "per_seed")
    assert rows["blocks"].tolist() == [2] * len(rows)
    assert rows["param"].str.startswith("['blocks']").sum() == 2 * 2  # 2 blocks x 2 seeds
    (tmp_path / "mixed.toml").write_text(body.replace("blocks = 2\n", "") +
                                         '[grid]\nblocks = [2, "two"]\n')
    with pytest.raises(SweepError) as err:
        load_sweep(tmp_path / "mixed.toml")
    assert "takes values of several kinds (int, text)" in err.value.line()
