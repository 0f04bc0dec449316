"""Training sweeps: statistics after optimizer steps, checked against closed forms (the linear
model's expected loss, weight decay's geometric rate) and against numpy (optimizer updates,
per-example gradients, teacher targets), plus the options' checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import programs_built, tiny_sweep_text
from reference import mlp_backprop

import gradjax
from gradjax.nn import data, keys
from gradjax.results import reading
from gradjax.run import engine
from gradjax.sweep import SweepError, parse_sweep

ROOT = 5


def run(tmp_path, name, text, **kwargs):
    out = tmp_path / name
    report = engine.execute_sweep(parse_sweep(text, "train.toml"), out, quiet=True, devices=1,
                              **kwargs)
    return out, report


def rows(out, **where):
    return reading.load(out, "per_seed", **where).sort_values("seed")


def params_of(seed, sizes, **init):
    """The parameters a sweep used for `seed`, rebuilt with the public API, as numpy."""
    params = gradjax.init_mlp(keys.init_key(ROOT, seed), sizes, **init)
    return [{k: np.asarray(v, np.float64) for k, v in layer.items()} for layer in params]


# ---------------------------------------------------------------------------- closed forms

X = np.array([[0.3, -1.2, 0.5], [1.0, 0.4, -0.3], [-0.6, 0.8, 1.1], [0.2, 0.2, -0.9]])
Y = np.array([[0.7], [-0.4], [1.3], [0.1]])


def expected_linear_loss(k: int, eta: float, s: float, sb: float) -> float:
    """E over inits of 0.5 mean_i (x_i w_k - y_i)^2 after k full-batch SGD steps from
    w_0 ~ N(0, diag(s^2, ..., sb^2)), the bias folded into the input:
    e_k = (I - eta H)^k (w_0 - w*), L = L* + e' H e / 2, H = X'X / n."""
    xb = np.hstack([X, np.ones((len(X), 1))])
    h = xb.T @ xb / len(X)
    w_star = np.linalg.pinv(xb) @ Y
    l_star = 0.5 * np.mean((xb @ w_star - Y) ** 2)
    a = np.linalg.matrix_power(np.eye(len(h)) - eta * h, k)
    second = np.diag([s**2] * X.shape[1] + [sb**2]) + w_star @ w_star.T  # E[(w0-w*)(w0-w*)']
    return float(l_star + 0.5 * np.trace(h @ a @ second @ a.T))


def test_linear_model_mean_loss_follows_the_closed_form(tmp_path):
    eta, s, sb, steps, seeds = 0.3, 0.8, 0.5, [0, 1, 4, 12], 3000
    text = tiny_sweep_text(
        seeds=seeds, root_seed=ROOT, steps=steps,
        defaults={"in_dim": 3, "depth": 0, "init": "normal", "bias_init": "normal",
                  "bias_scale": sb, "inputs": X.tolist(), "targets": Y.tolist(),
                  "optimizer": "sgd", "learning_rate": eta, "activation": "linear"},
        grid={"scale": [s]})
    out, _ = run(tmp_path, "linear", text)
    for k in steps:
        loss = rows(out, step=k, param="W")["loss_value"].to_numpy(np.float64)
        want = expected_linear_loss(k, eta, s, sb)
        error = loss.std() / np.sqrt(seeds)
        assert abs(loss.mean() - want) < 4 * error, (k, loss.mean(), want, error)
    # and one init exactly: numpy's own SGD on the rebuilt parameters
    w = params_of(7, (3, 1), init="normal", scale=s, bias_init="normal", bias_scale=sb)
    for _ in range(12):
        grads = mlp_backprop(w, X, Y, "linear")["grads"]
        w = [{p: w[0][p] - eta * grads[0][p] for p in ("W", "b")}]
    got = rows(out, step=12, param="W").set_index("seed").loc[7, "loss_value"]
    assert got == pytest.approx(mlp_backprop(w, X, Y, "linear")["loss"], rel=1e-5)


def test_weight_decay_shrinks_the_weights_geometrically(tmp_path):
    eta, lam = 0.5, 0.8  # |W| shrinks by 1 - eta lam = 0.6 per step: no gradient reaches W
    text = tiny_sweep_text(
        seeds=6, root_seed=ROOT, steps=[0, 1, 3, 8],
        defaults={"inputs": [[0.0, 0.0]], "optimizer": "sgd", "learning_rate": eta,
                  "weight_decay": lam}, grid={"scale": [1.0]})
    out, _ = run(tmp_path, "decay", text)
    first = rows(out, step=0, layer=1, param="W")["param_sq_norm"].to_numpy(np.float64)
    for k in (1, 3, 8):
        now = rows(out, step=k, layer=1, param="W")
        assert (now["grad_sq_norm"] == 0).all()
        ratio = now["param_sq_norm"].to_numpy(np.float64) / first
        np.testing.assert_allclose(ratio, (1 - eta * lam) ** (2 * k), rtol=1e-5)


# ---------------------------------------------------------------------------- numpy

def numpy_training(w, x, y, opt, eta, lam, beta, steps):
    """gradjax's optimizers written out in numpy (optax's sgd, sgd with momentum, adamw)."""
    m = [{p: np.zeros_like(v) for p, v in layer.items()} for layer in w]
    v = [{p: np.zeros_like(a) for p, a in layer.items()} for layer in w]
    for t in range(1, steps + 1):
        grads = mlp_backprop(w, x, y, "tanh")["grads"]
        new = []
        for layer, g, m_l, v_l in zip(w, grads, m, v, strict=True):
            out = {}
            for p in ("W", "b"):
                if opt == "adam":
                    m_l[p] = 0.9 * m_l[p] + 0.1 * g[p]
                    v_l[p] = 0.999 * v_l[p] + 0.001 * g[p] ** 2
                    m_hat, v_hat = m_l[p] / (1 - 0.9**t), v_l[p] / (1 - 0.999**t)
                    out[p] = layer[p] - eta * (m_hat / (np.sqrt(v_hat) + 1e-8) + lam * layer[p])
                else:
                    d = g[p] + lam * layer[p]
                    if opt == "momentum":
                        m_l[p] = d + beta * m_l[p]
                        d = m_l[p]
                    out[p] = layer[p] - eta * d
            new.append(out)
        w = new
    return mlp_backprop(w, x, y, "tanh")


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_optimizers_match_numpy(tmp_path, opt):
    eta, lam, beta = 0.05, 0.1, 0.7
    x = np.array([[0.5, -0.7], [0.1, 0.9], [-1.0, 0.3]])
    y = np.array([[1.0], [-0.5], [0.2]])
    text = tiny_sweep_text(
        seeds=3, root_seed=ROOT, steps=[4],
        defaults={"activation": "tanh", "inputs": x.tolist(), "targets": y.tolist(),
                  "optimizer": opt, "learning_rate": eta, "weight_decay": lam,
                  "momentum": beta, "bias_init": "normal"}, grid={"scale": [1.5]})
    out, _ = run(tmp_path, opt, text)
    for seed in range(3):
        w = params_of(seed, (2, 3, 1), scale=1.5, bias_init="normal")
        want = numpy_training(w, x, y, opt, eta, lam, beta, 4)
        got = rows(out, seed=seed, step=4).sort_values(["layer", "param"])
        assert got["loss_value"].iloc[0] == pytest.approx(want["loss"], rel=2e-5)
        for layer in (1, 2):
            g = want["grads"][layer - 1]["W"]
            row = got[(got["layer"] == layer) & (got["param"] == "W")].iloc[0]
            assert row["grad_sq_norm"] == pytest.approx(np.sum(g**2), rel=2e-4)


def test_per_example_statistics_match_numpy(tmp_path):
    x = np.array([[0.5, -0.7], [0.1, 0.9], [-1.0, 0.3], [0.4, 0.4], [0.9, -0.2]])
    y = np.array([[1.0], [-0.5], [0.2], [0.0], [0.7]])
    text = tiny_sweep_text(
        seeds=3, root_seed=ROOT,
        defaults={"activation": "tanh", "inputs": x.tolist(), "targets": y.tolist(),
                  "per_example": True, "bias_init": "normal"}, grid={"scale": [1.0]})
    out, _ = run(tmp_path, "examples", text)
    for seed in range(3):
        w = params_of(seed, (2, 3, 1), bias_init="normal")
        per = [mlp_backprop(w, x[i : i + 1], y[i : i + 1], "tanh")["grads"] for i in range(5)]
        batch = mlp_backprop(w, x, y, "tanh")["grads"]
        got = rows(out, seed=seed)
        for layer in (1, 2):
            for p in ("W", "b"):
                g = np.stack([e[layer - 1][p] for e in per])
                np.testing.assert_allclose(g.mean(axis=0), batch[layer - 1][p], atol=1e-12)
                var = g.var(axis=0)
                live = var > 0
                row = got[(got["layer"] == layer) & (got["param"] == p)].iloc[0]
                assert row["grad_noise_var"] == pytest.approx(var.mean(), rel=1e-4)
                gsnr = np.mean(g.mean(axis=0)[live] ** 2 / var[live])
                assert row["gsnr"] == pytest.approx(gsnr, rel=1e-3)
                assert row["param_sq_norm"] == pytest.approx(np.sum(w[layer - 1][p] ** 2),
                                                             rel=1e-5)


def test_teacher_targets_come_from_a_network_on_the_teacher_stream(tmp_path):
    x = np.array([[0.5, -0.7], [0.1, 0.9]])
    text = tiny_sweep_text(seeds=2, root_seed=ROOT, defaults={
        "activation": "tanh", "inputs": x.tolist(), "targets": "teacher"})
    out, _ = run(tmp_path, "teacher", text)
    for seed in range(2):
        student = params_of(seed, (2, 3, 1), scale=0.5)
        teacher = gradjax.init_mlp(keys.teacher_key(keys.init_key(ROOT, seed)), (2, 3, 1))
        teacher = [{k: np.asarray(v, np.float64) for k, v in t.items()} for t in teacher]
        y = np.tanh(x @ teacher[0]["W"] + teacher[0]["b"]) @ teacher[1]["W"] + teacher[1]["b"]
        want = mlp_backprop(student, x, y, "tanh")["loss"]
        got = rows(out, seed=seed, scale=0.5)["loss_value"].iloc[0]
        assert got == pytest.approx(want, rel=1e-5)


def test_step_zero_is_the_init_only_probe_and_later_steps_draw_fresh_batches(tmp_path):
    base = {"seeds": 4, "root_seed": ROOT,
            "defaults": {"inputs": "gaussian", "targets": "gaussian", "batch": 3}}
    init_only, _ = run(tmp_path, "init", tiny_sweep_text(**base))
    trained, report = run(tmp_path, "train", tiny_sweep_text(**base, steps=[0, 2, 5],
                                                             grid={"scale": [0.5, 1.0],
                                                                   "learning_rate": [0.0, 0.1]}))
    assert programs_built(report) == 2  # the init-only program, and one for every trained cell
    a = reading.load(init_only, "per_seed").sort_values(["scale", "seed", "layer", "param"])
    b = reading.load(trained, "per_seed", step=0, learning_rate=0.0)
    b = b.sort_values(["scale", "seed", "layer", "param"])
    np.testing.assert_array_equal(a["grad_var"].to_numpy(), b["grad_var"].to_numpy())
    # with learning_rate 0 the parameters never move: only the batch changes with the step
    still = rows(trained, step=5, learning_rate=0.0, scale=1.0, layer=1, param="W")
    start = rows(trained, step=0, learning_rate=0.0, scale=1.0, layer=1, param="W")
    np.testing.assert_array_equal(still["param_sq_norm"].to_numpy(),
                                  start["param_sq_norm"].to_numpy())
    assert (still["loss_value"].to_numpy() != start["loss_value"].to_numpy()).all()
    assert still["loss_halved_step"].isna().all()  # watched on the step-0 batch: no luck
    x5, _ = data.draw_batch(parse_sweep(tiny_sweep_text(**base), "t").cells[0].spec,
                            keys.init_key(ROOT, 0), 5)
    x0, _ = data.draw_batch(parse_sweep(tiny_sweep_text(**base), "t").cells[0].spec,
                            keys.init_key(ROOT, 0), 0)
    assert not np.array_equal(np.asarray(x5), np.asarray(x0))


def test_summary_counts_the_inits_whose_loss_halved(tmp_path):
    text = tiny_sweep_text(seeds=8, root_seed=ROOT, steps=[0, 3, 10], defaults={
        "activation": "tanh", "learning_rate": 0.5}, grid={"scale": [1.0]})
    out, _ = run(tmp_path, "halved", text)
    per_seed = reading.load(out, "per_seed", layer=1, param="W")
    summary = reading.load(out, "summary", layer=1, param="W").set_index("step")
    for step, group in per_seed.groupby("step"):
        halved = group["loss_halved_step"].to_numpy(np.float64)
        loss0 = per_seed[per_seed["step"] == 0].sort_values("seed")["loss_value"].to_numpy()
        if step == 0:  # before any update: loss_halved_step does not apply (null), and no
            # init has halved its loss: frac_loss_halved is 0
            assert np.isnan(halved).all() and summary.loc[0, "frac_loss_halved"] == 0
            continue
        assert summary.loc[step, "frac_loss_halved"] == pytest.approx(np.mean(~np.isnan(halved)))
        done = ~np.isnan(halved)
        assert (halved[done] <= step).all() and (halved[done] >= 1).all()
        now = group.sort_values("seed")["loss_value"].to_numpy()
        assert np.all(done[now < 0.5 * loss0])  # halved by now implies a step was found
        if done.any():
            assert summary.loc[step, "loss_halved_step_p50"] == np.median(halved[done])


def test_digits_minibatches_are_rows_of_the_dataset(tmp_path):
    pytest.importorskip("sklearn")
    text = tiny_sweep_text(seeds=2, root_seed=ROOT, steps=[0, 2], defaults={
        "in_dim": 64, "out_dim": 10, "inputs": "digits", "targets": "labels", "batch": 8,
        "loss": "softmax_cross_entropy", "activation": "tanh", "learning_rate": 0.1,
        "init": "fan_in_normal"}, grid={"scale": [1.0]})
    out, _ = run(tmp_path, "digits", text)
    images, labels = data.digits()
    assert images.shape == (1797, 64) and images.min() >= 0 and images.max() <= 1
    spec = parse_sweep(text, "t").cells[0].spec
    key = keys.init_key(ROOT, 1)
    chosen = jax.random.choice(data.step_key(keys.data_key(key, keys.INPUTS), 0), 1797, (8,),
                               replace=False)
    x, y = images[np.asarray(chosen)], np.eye(10)[labels[np.asarray(chosen)]]
    w = params_of(1, spec.sizes, init="fan_in_normal")
    logits = np.tanh(x @ w[0]["W"] + w[0]["b"]) @ w[1]["W"] + w[1]["b"]
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    got = rows(out, seed=1, step=0)["loss_value"].iloc[0]
    assert got == pytest.approx(-np.mean(np.sum(y * logp, axis=1)), rel=1e-5)


# ---------------------------------------------------------------------------- checks

@pytest.mark.parametrize(("overrides", "field", "says"), [
    ({"steps": [0, 0]}, "steps[1]", "is repeated"),
    ({"steps": [-1]}, "steps[0]", "not an integer in range"),
    ({"steps": 5}, "steps", "not a non-empty list"),
    ({"steps": [0, 1], "grid": {"scale": [1.0], "step": [2]}}, "grid.step", "top-level"),
    ({"defaults": {"optimizer": "lbfgs"}}, "defaults.optimizer", "sgd, momentum, adam"),
    ({"defaults": {"inputs": "digits"}}, "defaults.inputs", "in_dim = 64"),
    ({"defaults": {"targets": "labels"}}, "defaults.targets", 'inputs "digits"'),
    ({"defaults": {"per_example": True, "norm": "batchnorm", "inputs": "gaussian",
                   "targets": "gaussian", "batch": 4}}, "defaults.per_example", "batchnorm"),
])
def test_bad_training_options_name_the_field(overrides, field, says):
    with pytest.raises(SweepError) as err:
        parse_sweep(tiny_sweep_text(**overrides), "bad.toml")
    assert err.value.field == field and says in str(err.value)


def test_a_grid_over_the_learning_rate_compiles_once(tmp_path):
    text = tiny_sweep_text(seeds=2, root_seed=ROOT, steps=[3],
                           grid={"learning_rate": [0.01, 0.1, 0.5], "weight_decay": [0.0, 0.1],
                                 "momentum": [0.5, 0.9]}, defaults={"optimizer": "momentum"})
    _, report = run(tmp_path, "lr", text)
    assert programs_built(report) == 1 and report.cells == 24  # x the 2 scales of the tiny sweep


def test_the_optimizer_factory_refuses_an_unknown_name():
    from gradjax.probe import training

    with pytest.raises(ValueError, match="sgd, momentum, adam"):
        training.optimizer("rmsprop", 0.1, 0.0, 0.9)
    def square(p, t=0):
        return jnp.sum(p**2)

    run = training.train(square, square, jnp.ones(3), training.optimizer("sgd", 0.25, 0.0, 0.0),
                         2)
    np.testing.assert_allclose(np.asarray(run.params), 0.25)  # p <- p - 0.25 * 2p, twice
    assert float(run.loss0) == 3.0 and float(run.halved) == 1.0  # 3 -> 0.75 after one


def test_training_figures_draw_loss_norms_and_gsnr_against_the_step(tmp_path):
    pytest.importorskip("matplotlib")
    from gradjax.analysis import training_figures

    text = tiny_sweep_text(seeds=4, root_seed=ROOT, steps=[0, 2, 6], defaults={
        "activation": "tanh", "learning_rate": 0.3, "per_example": True, "inputs": "gaussian",
        "targets": "gaussian", "batch": 3},
        grid={"scale": [0.5, 1.0], "optimizer": ["sgd", "adam"]})
    out, _ = run(tmp_path, "figures", text)
    figures = training_figures.training_figures(reading.load(out))
    assert [f.name for f in figures] == ["training_loss", "training_grad_norm", "training_gsnr"]
    for figure in figures:
        assert figure.png.startswith(b"\x89PNG")
        assert "optimizer step" in figure.image_text
        assert "optimizer sgd" in figure.image_text and "optimizer adam" in figure.image_text
        assert "scale 0.5" in figure.image_text and "scale 1" in figure.image_text
    summary = reading.load(out)
    assert training_figures.training_figures(summary[summary["step"] == 0]) == []  # nothing trained


RESMLP = """
name = "res_train"
seeds = 4
root_seed = 5
steps = [0, 3, 12]
[defaults]
model = "resmlp"
in_dim = 2
width = 3
depth = 2
out_dim = 1
activation = "tanh"
init = "glorot_normal"
inputs = [[0.5, -1.5], [2.0, 0.25], [-0.3, 0.8]]
targets = [[1.0], [-0.5], [0.3]]
per_example = true
learning_rate = 0.05
[grid]
optimizer = ["adam"]
"""


def test_other_models_train_through_the_generic_probe(tmp_path):
    out, _ = run(tmp_path, "res", RESMLP)
    rows_ = reading.load(out, "per_seed")
    leaves = rows_[~rows_["param"].str.startswith("taps[")]
    taps = rows_[rows_["param"].str.startswith("taps[")]
    assert leaves["gsnr"].notna().mean() > 0.5 and taps["gsnr"].isna().all()
    assert taps["param_sq_norm"].isna().all()
    # the zero-initialized biases have norm 0 at the init, and have moved by step 12
    assert leaves[leaves["step"] == 12]["param_sq_norm"].gt(0).all()
    loss = {k: rows(out, step=k).drop_duplicates("seed")["loss_value"].to_numpy()
            for k in (0, 12)}
    assert (loss[12] < loss[0]).all()  # every init improves on its fixed batch


def test_training_numbers_do_not_depend_on_the_chunk(tmp_path):
    text = tiny_sweep_text(seeds=5, root_seed=ROOT, steps=[4], defaults={
        "activation": "tanh", "inputs": "gaussian", "targets": "teacher", "batch": 3,
        "per_example": True, "optimizer": "adam"})
    a, _ = run(tmp_path, "c2", text, chunk=2)
    b, _ = run(tmp_path, "c6", text, chunk=6)
    key = ["cell", "seed", "layer", "param"]
    left = reading.load(a, "per_seed").sort_values(key).drop(columns="sweep")
    right = reading.load(b, "per_seed").sort_values(key).drop(columns="sweep")
    pd.testing.assert_frame_equal(left.reset_index(drop=True), right.reset_index(drop=True),
                                  check_exact=True)
