"""The vmapped probe: compiles, chunking, random streams, dtypes and norms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import counting_calls

import gradjax
from gradjax.nn import keys, network
from gradjax.nn.activations import derivative, max_abs_derivative
from gradjax.probe import chunking, programs
from gradjax.probe import mlp_probe as probe
from gradjax.spec import layer_sizes

# W1 has 64 x 64 = 4096 entries: the size at which XLA:CPU would switch reduction kernels.
WIDE = probe.ProbeSpec(sizes=(64, 64, 64, 1), activation="tanh", batch=3,
                       inputs="gaussian", targets="gaussian")


def _collect(spec, points, seeds, chunk, root_seed=0):
    parts = list(programs.run_seeds(spec, points, seeds, root_seed=root_seed, chunk=chunk))
    return {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}


def _points(spec, n):
    return chunking.make_points(spec, np.linspace(0.2, 2.0, n), np.linspace(0.0, 0.5, n))


def test_a_grid_of_50_scales_compiles_once(monkeypatch):
    spec = probe.ProbeSpec(sizes=(3, 7, 1), activation="relu", inputs="gaussian",
                           targets="gaussian")  # a shape no other test compiles
    with counting_calls(monkeypatch, chunking, "chunk_program") as traces:
        first = _collect(spec, _points(spec, 50), np.arange(10), chunk=10)
        other_values = chunking.make_points(spec, np.logspace(-2, 1, 50), np.full(50, 0.3))
        second = _collect(spec, other_values, np.arange(10), chunk=10)
    assert len(traces) == 1
    assert first["grad_var"].shape == (10, 50, 2, 2)
    assert not np.array_equal(first["grad_var"], second["grad_var"])


def test_per_seed_numbers_do_not_depend_on_chunk_size():
    points = _points(WIDE, 2)
    reference = _collect(WIDE, points, np.arange(24), chunk=24)
    for chunk in (5, 16):
        got = _collect(WIDE, points, np.arange(24), chunk=chunk)
        for k, v in reference.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{k}, chunk {chunk}")


def test_one_cell_and_seed_recomputed_alone_is_bit_identical():
    points = _points(WIDE, 2)
    everything = _collect(WIDE, points, np.arange(12), chunk=12, root_seed=5)
    alone = _collect(WIDE, jax.tree.map(lambda a: a[1:], points), np.array([7]), chunk=2,
                     root_seed=5)
    for k, v in everything.items():
        np.testing.assert_array_equal(alone[k][0, 0], v[7, 1], err_msg=k)


def test_common_random_numbers_across_scales_and_independence_across_seeds():
    """Same seed, two scales: the init is the same draw scaled (linear net, zero bias: the
    gradient of a 0-hidden-layer net scales exactly with it). Different seeds differ."""
    spec = probe.ProbeSpec(sizes=(4, 2), activation="linear", bias_init="zeros",
                           inputs="gaussian", targets="fixed")
    points = chunking.make_points(spec, [1.0, 2.0], [1.0, 1.0], ys=[[0.0, 0.0]])
    stats = _collect(spec, points, np.arange(4), chunk=4)
    np.testing.assert_allclose(stats["grad_sq_norm"][:, 1], 4 * stats["grad_sq_norm"][:, 0],
                               rtol=1e-6)
    assert len(np.unique(stats["grad_sq_norm"][:, 0, 0, 0])) == 4


def test_init_draws_follow_the_key_derivation():
    key = keys.init_key(3, 11)
    params = gradjax.init_mlp(key, (5, 6, 6, 6, 2), init="normal", scale=1.0)
    for layer, p in enumerate(params, start=1):
        expected = jax.random.normal(keys.weight_key(key, layer), p["W"].shape)
        np.testing.assert_array_equal(p["W"], expected)
        np.testing.assert_array_equal(p["b"], jax.random.normal(keys.bias_key(key, layer),
                                                                p["b"].shape))


@pytest.mark.parametrize(
    ("init", "variance"),
    [("normal", 0.09), ("uniform", 0.03), ("fan_in_normal", 0.09 / 200),
     ("he_normal", 0.09 * 2 / 200), ("glorot_uniform", 0.09 * 2 / 500),
     ("lecun_normal", 0.09 / 200)],
)
def test_init_variances_match_their_definitions(init, variance):
    """`scale` multiplies the std: N(0, s^2); U(-s, s) has variance s^2/3; fan-in and
    fan-avg schemes divide by fan_in = 200 or (fan_in + fan_out)/2 = 250."""
    w = gradjax.init_mlp(jax.random.key(0), (200, 300), init=init, scale=0.3)[0]["W"]
    assert float(jnp.var(w)) == pytest.approx(variance, rel=0.02)


def test_truncated_normal_initializers_are_bounded_and_constant_is_symmetric():
    w = gradjax.init_mlp(jax.random.key(1), (100, 400), init="he_normal")[0]["W"]
    std = np.sqrt(2 / 100)
    assert float(jnp.max(jnp.abs(w))) <= 2 * std / 0.87962566 + 1e-6  # truncated at 2 sigma
    c = gradjax.init_mlp(jax.random.key(1), (3, 4), init="constant", scale=0.7,
                         bias_init="zeros")[0]
    np.testing.assert_array_equal(c["W"], np.full((3, 4), 0.7, np.float32))
    np.testing.assert_array_equal(c["b"], np.zeros(4, np.float32))
    o = gradjax.init_mlp(jax.random.key(2), (8, 8), init="orthogonal", scale=2.0)[0]["W"]
    np.testing.assert_allclose(o.T @ o, 4 * np.eye(8), atol=1e-5)


def test_activation_conventions():
    assert float(derivative(jax.nn.relu, jnp.float32(0.0))) == 0.0
    assert max_abs_derivative("sigmoid") == pytest.approx(0.25, rel=1e-6)
    assert max_abs_derivative("tanh") == pytest.approx(1.0, rel=1e-6)
    assert max_abs_derivative("selu") == pytest.approx(1.0507009873554805 * 1.6732632423543772,
                                                       rel=1e-5)
    gelu = gradjax.get_activation("gelu")
    assert float(gelu(jnp.float32(1.0))) == pytest.approx(0.8413447, rel=1e-6)  # exact erf form
    with pytest.raises(ValueError, match="allowed: .*sigmoid"):
        gradjax.get_activation("swishy")
    with pytest.raises(ValueError, match="allowed: .*he_normal"):
        gradjax.init_mlp(jax.random.key(0), (2, 2), init="kaiming")


def test_weight_gradients_stay_flat_while_preactivation_gradients_shrink():
    """Bias-free linear net, plain N(0, s^2) init: sigma_w^2 = s^2 * fan_in = 0.5 per layer.
    With targets y ~ N(0, I) much larger than the output, dL/dz^L ~ -y and E|dL/dz^l|^2 shrinks
    by sigma_w^2 per layer towards the input; but |dL/dW^l|^2 = |h^{l-1}|^2 |dL/dz^l|^2 (batch
    of one) and E|h^{l-1}|^2 shrinks by the same factor in the other direction: flat."""
    depth, width = 6, 32
    spec = probe.ProbeSpec(sizes=(width,) * (depth + 1) + (width,), activation="linear",
                           bias_init="zeros", inputs="gaussian", targets="gaussian")
    points = chunking.make_points(spec, [np.sqrt(0.5 / width)] * 2, [0.0] * 2)
    stats = _collect(spec, points, np.arange(300), chunk=150)
    delta = stats["delta_sq_norm"][:, 0].mean(axis=0)
    weight = stats["grad_sq_norm"][:, 0, :, 0].mean(axis=0)
    np.testing.assert_allclose(delta[:-1] / delta[1:], 0.5, rtol=0.1)
    assert delta[-1] / delta[0] > 30
    assert weight.max() / weight.min() < 1.5


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_normalization_standardizes_the_activation_inputs(norm):
    spec = probe.ProbeSpec(sizes=(4, 16, 16, 1), activation="relu", norm=norm, batch=8,
                           inputs="gaussian", targets="gaussian")
    stats = _collect(spec, chunking.make_points(spec, [5.0], [1.0]), np.arange(6), chunk=6)
    np.testing.assert_allclose(stats["preact_mean"][:, 0, :2], 0.0, atol=1e-5)
    np.testing.assert_allclose(stats["preact_var"][:, 0, :2], 1.0, rtol=1e-3)
    assert np.all(np.isfinite(stats["grad_var"]))


def test_float64_and_bfloat16_probes(x64):
    for dtype, tol in (("float64", 1e-12), ("bfloat16", 0.05)):
        spec = probe.ProbeSpec(sizes=(3, 5, 1), activation="tanh", dtype=dtype,
                               inputs="gaussian", targets="gaussian", batch=2)
        stats = _collect(spec, chunking.make_points(spec, [1.0], [1.0]), np.arange(3), chunk=3)
        key = keys.init_key(0, 1)
        drawn = network.init_mlp(key, spec.sizes, dtype=jnp.dtype(dtype))
        params = jax.tree.map(lambda a: a.astype(jnp.float64), drawn)
        x = jax.random.normal(keys.data_key(key, keys.INPUTS), (2, 3), jnp.dtype(dtype))
        y = jax.random.normal(keys.data_key(key, keys.TARGETS), (2, 1), jnp.dtype(dtype))
        loss, _ = gradjax.loss_and_grads(params, x.astype(jnp.float64), y.astype(jnp.float64),
                                         activation="tanh")
        assert stats["loss_value"][1, 0] == pytest.approx(float(loss), rel=tol)


def test_bfloat16_across_seed_moments_are_accumulated_in_float32():
    """A bfloat16 probe's per-entry moments across seeds match numpy's float32 mean and sum of
    squared deviations of the same bfloat16 gradients."""
    spec = probe.ProbeSpec(sizes=(3, 5, 1), activation="tanh", dtype="bfloat16",
                           inputs="gaussian", targets="gaussian", batch=2)
    points = chunking.make_points(spec, [1.0], [1.0])
    seeds = np.arange(6)
    [(_, _, moments)] = list(programs.run_seeds(spec, points, seeds, chunk=6, with_moments=True))
    grads = []
    for seed in seeds:
        key = keys.init_key(0, int(seed))
        params = network.init_mlp(key, spec.sizes, dtype=jnp.bfloat16)
        x = jax.random.normal(keys.data_key(key, keys.INPUTS), (2, 3), jnp.bfloat16)
        y = jax.random.normal(keys.data_key(key, keys.TARGETS), (2, 1), jnp.bfloat16)
        _, g = gradjax.loss_and_grads(params, x, y, activation="tanh")
        grads.append(np.asarray(g[0]["W"], np.float32))
    grads = np.stack(grads)
    first = moments["moments"][0]["W"]
    on_device = jax.eval_shape(lambda g, v: chunking.chunk_moments(g, v, spec.stat_dtype),
                               {"W": jax.ShapeDtypeStruct((6, 3, 5), jnp.bfloat16)},
                               jax.ShapeDtypeStruct((6,), bool))["moments"]["W"]
    assert on_device["mean"].dtype == on_device["m2"].dtype == jnp.float32
    np.testing.assert_allclose(first["mean"][0], grads.mean(0), rtol=0.05, atol=1e-3)
    m2 = ((grads - grads.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(first["m2"][0], m2, rtol=0.1, atol=1e-3)


@pytest.mark.parametrize("init", ["normal", "he_uniform", "orthogonal", "fan_in_normal"])
def test_init_key_and_init_mlp_rebuild_the_parameters_a_sweep_used(init):
    """What the probe draws for (root_seed, seed) at a scale point, against the public
    rebuild; bit for bit."""
    from gradjax.nn.network import scale_params

    spec = probe.ProbeSpec(sizes=(3, 4, 4, 4, 2), activation="tanh", init=init,
                           bias_init="normal", inputs="fixed", targets="fixed")
    key = gradjax.init_key(11, 5)
    raw, _ = probe.draw_init(spec, key)
    used = scale_params(raw, 0.7, 0.2)
    layers = [{p: seg[p][i] for p in ("W", "b")} for seg in used for i in range(len(seg["W"]))]
    rebuilt = gradjax.init_mlp(key, spec.sizes, init=init, scale=0.7, bias_init="normal",
                               bias_scale=0.2)
    assert len(layers) == len(rebuilt) == 4
    for a, b in zip(layers, rebuilt, strict=True):
        for p in ("W", "b"):
            np.testing.assert_array_equal(np.asarray(a[p]), np.asarray(b[p]))


def test_a_deep_net_s_chunk_program_is_as_large_as_a_shallow_one_s():
    """Compile time grows with the program's size: layers of equal shape run in one scanned
    segment, so depth 32 lowers to about the StableHLO of depth 2 (unrolled, it would be
    ~16x), and compiles within the 1.5x that issue 21 asks (docs/performance.md)."""
    def lines(depth: int) -> int:
        spec = probe.ProbeSpec(sizes=layer_sizes(8, 8, depth, 1), activation="tanh", batch=2,
                               inputs="gaussian", targets="gaussian")
        points, _ = chunking.pad_points(chunking.make_points(spec, [0.5, 2.0], [0.0, 0.0]))
        lowered = programs.chunk_program_of(spec, True).lower(
            np.uint32(0), np.zeros(2, np.int32), np.zeros(2, bool), points, np.int32(2))
        return len(lowered.as_text().splitlines())

    assert lines(32) < 1.1 * lines(2)
