"""Every statistic against numpy: tensor reductions, unit cosine, and a full deep net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import mean_squared_cosine, mlp_backprop

import gradjax
from gradjax.nn import network
from gradjax.probe import backprop, liveness, stats
from gradjax.probe import mlp_probe as probe
from gradjax.probe.stats import tensor_stats, to_host, unit_cos_sq, unit_cos_sq_of_factors


def test_tensor_stats_match_numpy():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((7, 5)).astype(np.float32)
    g[rng.random(g.shape) < 0.3] = 0
    got = {k: float(v) for k, v in to_host(tensor_stats(jnp.asarray(g))).items()}
    d = g.astype(np.float64).ravel()
    assert got["grad_mean"] == pytest.approx(d.mean(), abs=1e-6)
    assert got["grad_var"] == pytest.approx(d.var(), rel=1e-5)
    assert got["grad_sq_norm"] == pytest.approx(np.sum(d**2), rel=1e-5)
    assert got["grad_max_abs"] == pytest.approx(np.abs(d).max())
    assert got["grad_mean_abs"] == pytest.approx(np.abs(d).mean(), rel=1e-6)
    assert got["grad_cv"] == pytest.approx(d.std() / np.abs(d).mean(), rel=1e-5)
    assert got["grad_frac_zero"] == pytest.approx(np.mean(d == 0))
    assert got["grad_nonfinite"] == 0


def test_all_zero_tensor_has_nan_cv_and_counts_nonfinite():
    z = tensor_stats(jnp.zeros((3, 4)))
    assert np.isnan(z["grad_cv"]) and z["grad_frac_zero"] == 1
    bad = tensor_stats(jnp.array([1.0, jnp.inf, jnp.nan]))
    assert bad["grad_nonfinite"] == 2


def _rank(r: int, shape: tuple[int, int], rng) -> np.ndarray:
    """A random [fan_in, fan_out] matrix of rank r, columns of random signs and sizes."""
    return rng.standard_normal((shape[0], r)) @ rng.standard_normal((r, shape[1]))


@pytest.mark.parametrize("shape", [(6, 5), (9, 4), (3, 8)])  # either side the smaller
@pytest.mark.parametrize("magnitude", [1.0, 1e-30, 1e30])
def test_unit_cos_sq_matches_pairwise_loop(shape, magnitude):
    """Rank 1 (one example: columns +-x) reads 1 whatever the signs, where the signed mean
    cosine of the same matrix averages +1 and -1 towards 0; rank 2 and random matrices match
    a double loop in float64; dead units are left out; at tiny and huge magnitudes too."""
    rng = np.random.default_rng(1)
    rank1 = np.outer(rng.standard_normal(shape[0]), rng.choice([-1.0, 1.0], shape[1])
                     * rng.uniform(0.5, 2, shape[1]))
    signed = np.mean([np.sign(rank1[0, j] * rank1[0, k]) for j in range(shape[1])
                      for k in range(shape[1]) if j != k])
    assert abs(signed) < 0.9  # what the signed mean cosine read for a rank-1 gradient
    for g in (rank1, _rank(2, shape, rng), rng.standard_normal(shape)):
        g = g * magnitude
        g[:, 1] = 0  # a dead unit has no direction and is left out
        g32 = g.astype(np.float32)
        got = float(unit_cos_sq(jnp.asarray(g32)))
        assert got == pytest.approx(mean_squared_cosine(g32), abs=2e-6)
    assert float(unit_cos_sq(jnp.asarray(rank1 * magnitude, jnp.float32))) == pytest.approx(
        1.0, abs=1e-6)


@pytest.mark.parametrize("batch, fan_in, fan_out", [(1, 6, 5), (3, 9, 7), (5, 4, 8)])
@pytest.mark.parametrize("h_size, delta_size", [(1.0, 1.0), (1e-30, 1e-12), (1e25, 1e-20)])
def test_unit_cos_sq_of_factors_matches_the_pairwise_loop_on_their_product(
        batch, fan_in, fan_out, h_size, delta_size):
    """The factored form reads the squared cosines of h^T delta, computed here in float64 by a
    double loop, with dead units (zero delta columns) left out, at magnitudes whose product
    under- or overflows float32; one example gives 1 (rank one)."""
    rng = np.random.default_rng(batch * fan_in)
    h = (rng.standard_normal((batch, fan_in)) * h_size).astype(np.float32)
    delta = (rng.standard_normal((batch, fan_out)) * rng.uniform(0.5, 3, fan_out)
             * delta_size).astype(np.float32)
    delta[:, 2] = 0
    exact = h.astype(np.float64).T @ delta.astype(np.float64)
    got = float(unit_cos_sq_of_factors(jnp.asarray(h), jnp.asarray(delta),
                                       jnp.asarray(np.any(delta != 0, axis=0))))
    assert got == pytest.approx(mean_squared_cosine(exact), abs=2e-6)
    if batch == 1:
        assert got == pytest.approx(1.0, abs=2e-6)


def test_unit_cos_sq_of_factors_needs_two_live_units_and_follows_the_given_ones():
    rng = np.random.default_rng(4)
    h, delta = rng.standard_normal((2, 5)), rng.standard_normal((2, 4))
    exact = h.T @ delta
    alive = np.array([True, False, True, True])  # a unit whose computed dL/dW was all zero
    got = float(unit_cos_sq_of_factors(jnp.asarray(h, jnp.float32), jnp.asarray(delta, jnp.float32),
                                       jnp.asarray(alive)))
    assert got == pytest.approx(mean_squared_cosine(exact[:, alive]), abs=2e-6)
    one = np.array([True, False, False, False])
    assert np.isnan(unit_cos_sq_of_factors(jnp.asarray(h), jnp.asarray(delta), jnp.asarray(one)))
    assert np.isnan(unit_cos_sq_of_factors(jnp.zeros((2, 5)), jnp.asarray(delta),
                                           jnp.asarray(alive)))  # h = 0: no unit has a gradient


def test_factored_cosines_are_used_where_they_are_cheaper():
    """A probe's weight layers read the same grad_unit_cos_sq whichever form computes it: a
    wide layer at batch 4 (factored) and a narrow one (dL/dW's own Gram matrix) against the
    pairwise loop of numpy's dL/dW."""
    sizes, batch = (16, 32, 2), 4
    assert stats.factors_are_cheaper(batch, 16, 32) and not stats.factors_are_cheaper(batch, 32, 2)
    params = gradjax.init_mlp(jax.random.key(3), sizes, scale=1.0)
    x = jax.random.normal(jax.random.key(4), (batch, sizes[0]))
    y = jax.random.normal(jax.random.key(5), (batch, sizes[-1]))
    got = gradjax.grad_stats(params, x, y, activation="tanh")
    np_params = [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params]
    ref = mlp_backprop(np_params, np.asarray(x, np.float64), np.asarray(y, np.float64), "tanh")
    for l, g in enumerate(ref["grads"]):
        assert got["grad_unit_cos_sq"][l, 0] == pytest.approx(mean_squared_cosine(g["W"]),
                                                              abs=1e-5)


def test_unit_cos_sq_of_orthogonal_units_is_zero():
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((8, 5)))
    signs = np.array([1.0, -1.0, 3.0, -0.5, 2.0])  # orthogonal columns of any sign and size
    assert float(unit_cos_sq(jnp.asarray(q * signs, jnp.float32))) == pytest.approx(0, abs=1e-6)
    assert np.isnan(unit_cos_sq(jnp.ones((6, 1))))
    assert np.isnan(unit_cos_sq(jnp.zeros((6, 3))))


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_grad_stats_of_a_deep_net_match_numpy_backprop(activation, x64):
    sizes, batch = (5, 7, 6, 4, 2), 3
    params = gradjax.init_mlp(jax.random.key(7), sizes, init="he_normal", scale=1.3,
                              bias_scale=0.2, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(8), (batch, sizes[0]), jnp.float64)
    y = jax.random.normal(jax.random.key(9), (batch, sizes[-1]), jnp.float64)
    got = gradjax.grad_stats(params, x, y, activation=activation)
    np_params = [{k: np.asarray(v) for k, v in p.items()} for p in params]
    ref = mlp_backprop(np_params, np.asarray(x), np.asarray(y), activation)
    assert float(got["loss_value"]) == pytest.approx(ref["loss"], rel=1e-12)
    max_deriv = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25}[activation]
    for l, g in enumerate(ref["grads"]):
        for col, name in enumerate(("W", "b")):
            t = g[name].ravel()
            assert got["grad_var"][l, col] == pytest.approx(t.var(), rel=1e-10, abs=1e-300)
            assert got["grad_sq_norm"][l, col] == pytest.approx(np.sum(t**2), rel=1e-10)
            assert got["grad_frac_zero"][l, col] == pytest.approx(np.mean(t == 0))
        assert got["grad_unit_cos_sq"][l, 0] == pytest.approx(
            mean_squared_cosine(g["W"]), rel=1e-8, nan_ok=True)
        delta = ref["deltas"][l]
        assert got["delta_sq_norm"][l] == pytest.approx(np.mean(np.sum(delta**2, 1)), rel=1e-10)
    for l, (z, d) in enumerate(zip(ref["z"], ref["dphi"], strict=True)):
        assert got["preact_mean"][l] == pytest.approx(z.mean(), rel=1e-10, abs=1e-14)
        assert got["preact_var"][l] == pytest.approx(z.var(), rel=1e-10)
        assert got["act_deriv_mean"][l] == pytest.approx(d.mean(), rel=1e-10)
        assert got["act_frac_dead"][l] == pytest.approx(np.mean(np.all(d == 0, axis=0)))
        sat = np.all(np.abs(d) < 0.01 * max_deriv, axis=0)
        assert got["act_frac_saturated"][l] == pytest.approx(np.mean(sat))
    assert np.all(np.isnan(np.asarray(got["preact_mean"][-1])))


def test_zeros_from_dead_units_are_not_underflow_but_tiny_products_are():
    """A dead ReLU's exact zeros are structural; in a deep, tiny sigmoid net the gradient of the
    first layer underflows float32 (XLA:CPU flushes subnormals, so it lands on exact 0) and is
    counted as underflow, not as dead."""
    relu = gradjax.init_mlp(jax.random.key(0), (3, 8, 8, 1), bias_init="normal", scale=1.0)
    x, y = jnp.ones((2, 3)), jnp.zeros((2, 1))
    s = gradjax.grad_stats(relu, x, y, activation="relu")
    assert float(s["grad_frac_zero"][0, 0]) > 0
    assert float(s["grad_frac_underflow"][0, 0]) == 0
    deep = gradjax.init_mlp(jax.random.key(1), (2,) + (4,) * 40 + (1,), scale=0.01,
                            bias_init="zeros")
    s = gradjax.grad_stats(deep, jnp.ones((1, 2)), jnp.ones((1, 1)), activation="sigmoid")
    assert float(s["grad_frac_zero"][0, 0]) == 1
    assert float(s["grad_frac_underflow"][0, 0]) == 1
    assert float(s["act_frac_dead"][0]) == 0


_backprop = jax.jit(backprop.backprop, static_argnums=3)
_cheap = jax.jit(liveness.underflow_by_shortcut, static_argnums=(1, 2))
_exact = jax.jit(liveness.underflow_by_replay, static_argnums=(1, 2, 3))


def _relu_backprop(key, sizes, batch, norm="none", zero_weight=False):
    spec = gradjax.ProbeSpec(sizes=sizes, activation="relu", norm=norm, batch=batch,
                             inputs="fixed", targets="fixed")
    params = gradjax.init_mlp(key, sizes, bias_init="normal")
    if zero_weight:
        params[0]["W"] = params[0]["W"].at[0, 0].set(0.0)
    x = jax.random.normal(jax.random.fold_in(key, 7), (batch, sizes[0]))
    y = jnp.zeros((batch, sizes[-1]))
    return _backprop(network.stack_layers(params), x, y, spec)


@pytest.mark.parametrize("norm", ["none", "layernorm", "batchnorm"])
def test_shortcut_liveness_agrees_with_the_boolean_replay(norm):
    """Without zero weights, the replay's backward step needs no matmul; and a zero of dL/dW
    outside dead rows and columns is what forces the weight masks: when none occurs, the
    shortcut's underflow fractions are the replay's."""
    valid_cases = 0
    for i in range(6):
        bp = _relu_backprop(jax.random.key(i), (3, 6, 6, 6, 2), batch=1 + i % 3, norm=norm)
        cheap, valid, _ = _cheap(bp, norm, jnp.float32)
        exact = _exact(bp, norm, jnp.float32, True)
        no_matmul_back = _exact(bp, norm, jnp.float32, False)
        for a, b in zip(jax.tree.leaves(exact), jax.tree.leaves(no_matmul_back), strict=True):
            np.testing.assert_array_equal(a, b)
        if bool(valid):
            valid_cases += 1
            for (cw, cb), (ew, eb) in zip(cheap, exact, strict=True):
                np.testing.assert_array_equal(cw, ew)
                np.testing.assert_array_equal(cb, eb)
    assert valid_cases >= 3
    bp = _relu_backprop(jax.random.key(0), (3, 6, 6, 6, 2), batch=2, norm=norm, zero_weight=True)
    assert not bool(_cheap(bp, norm, jnp.float32)[1])


def test_a_chunk_that_needs_the_replay_gives_each_init_its_own_numbers():
    """The replay-or-shortcut choice is one branch per chunk; both sides agree per init."""
    sizes = (3, 6, 6, 2)
    plain = _relu_backprop(jax.random.key(3), sizes, batch=1)
    zeroed = _relu_backprop(jax.random.key(4), sizes, batch=1, zero_weight=True)
    assert bool(_cheap(plain, "none", jnp.float32)[1])
    chunk = jax.tree.map(lambda a, b: jnp.stack([a, b]), plain, zeroed)
    together = liveness.underflow_fractions(chunk, "none", jnp.float32)
    for j, bp in enumerate((plain, zeroed)):
        alone = liveness.underflow_fractions(bp, "none", jnp.float32, seed_axis=False)
        for t, a in zip(jax.tree.leaves(together), jax.tree.leaves(alone), strict=True):
            np.testing.assert_array_equal(t[j], a)


def test_a_zero_in_a_live_row_and_column_is_resolved_by_the_replay():
    """x[:, 0] feeds example 0 only and hidden unit 0 is alive in example 1 only, so dL/dW[0, 0]
    is a structural 0 although row 0 and column 0 each carry gradient elsewhere."""
    params = [
        {"W": jnp.array([[-1.0, 1.0], [1.0, 1.0]]), "b": jnp.zeros(2)},
        {"W": jnp.array([[1.0], [1.0]]), "b": jnp.zeros(1)},
    ]
    x, y = jnp.eye(2), jnp.full((2, 1), 5.0)
    spec = gradjax.ProbeSpec(sizes=(2, 2, 1), activation="relu", batch=2, inputs="fixed",
                             targets="fixed")
    bp = backprop.backprop(network.stack_layers(params), x, y, spec)
    assert float(bp.grads[0]["W"][0, 0, 0]) == 0
    assert not bool(liveness.underflow_by_shortcut(bp, "none", jnp.float32)[1])
    s = gradjax.grad_stats(params, x, y, activation="relu")
    assert float(s["grad_frac_zero"][0, 0]) == 0.25
    assert float(s["grad_frac_underflow"][0, 0]) == 0


def test_the_probe_outputs_exactly_the_declared_statistics():
    from gradjax.spec import EXAMPLE_STATS, LOG2_SCALES, STATS, TENSOR_STATS

    params = gradjax.init_mlp(jax.random.key(0), (2, 3, 1))
    out = probe.grad_stats_on_device(params, jnp.ones((1, 2)), jnp.ones((1, 1)),
                                     activation="tanh")
    # one init's gradient: no per-example gradients, no parameters' own norms, no training
    assert set(out) == {*STATS, *LOG2_SCALES} - {*EXAMPLE_STATS, "loss_halved_step"}
    assert set(tensor_stats(jnp.ones(3))) == {*TENSOR_STATS, "grad_log2_scale"}


def test_one_example_gives_every_layer_parallel_unit_gradients():
    """The issue's case: a batch-1 tanh MLP, where dL/dW_l = h_{l-1} (outer) delta_l is rank 1
    in every layer; numpy's rank of the gradient says so independently."""
    params = gradjax.init_mlp(jax.random.key(5), (32, 64, 64, 16, 1), init="lecun_normal")
    x = jax.random.normal(jax.random.key(6), (1, 32))
    y = jnp.ones((1, 1))
    stats = gradjax.grad_stats(params, x, y, activation="tanh")
    _, grads = gradjax.loss_and_grads(params, x, y, activation="tanh")
    for l, g in enumerate(grads[:-1]):
        singular = np.linalg.svd(np.asarray(g["W"], np.float64), compute_uv=False)
        assert singular[1] < 1e-5 * singular[0]  # rank 1 up to float32 rounding
        assert stats["grad_unit_cos_sq"][l, 0] == pytest.approx(1.0, abs=1e-5)


def test_grad_stats_refuses_parameters_that_are_not_the_mlp_s_in_one_line():
    nnx_like = {"stem": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
    for params in (nnx_like, [], [{"kernel": jnp.ones((2, 1))}]):
        with pytest.raises(TypeError) as err:
            gradjax.grad_stats(params, jnp.ones((1, 2)), jnp.ones((1, 1)), activation="tanh")
        assert len(str(err.value).splitlines()) == 1
        assert "list of {'W': [fan_in, fan_out], 'b': [fan_out]} layers" in str(err.value)
