"""gradjax against the seed's three numpy examples (why-gradients-same-value.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import seed_example_grads, seed_literal_w1_grad

import gradjax
from gradjax.probe.chunking import make_points
from gradjax.probe.programs import run_seeds
from gradjax.spec import ProbeSpec

# (hidden activation, output activation, x, scale of every parameter)
EXAMPLES = {
    "sigmoid": ("sigmoid", "sigmoid", [0.5, 0.7], 1.0),
    "relu": ("relu", "linear", [0.5, -0.7], 1.0),
    "tiny_init": ("sigmoid", "sigmoid", [0.5, 0.7], 0.01),
}
DRAWS = 200
_loss_and_grads = jax.jit(
    gradjax.loss_and_grads, static_argnames=("activation", "output_activation", "loss")
)


def _seed_params(rng, scale):
    """The seed's draws: randn * scale for w1 [2, 3], b1 [3], w2 [3, 1], b2 [1]."""
    return [rng.standard_normal(s) * scale for s in ((2, 3), (3,), (3, 1), (1,))]


def _jax_grads(params, x, hidden, output, dtype):
    w1, b1, w2, b2 = (jnp.asarray(p, dtype) for p in params)
    tree = [{"W": w1, "b": b1}, {"W": w2, "b": b2}]
    loss, g = _loss_and_grads(
        tree, jnp.asarray(x, dtype), jnp.asarray([1.0], dtype),
        activation=hidden, output_activation=output, loss="mse",
    )
    return float(loss), {"W1": g[0]["W"], "b1": g[0]["b"], "W2": g[1]["W"], "b2": g[1]["b"]}


def _compare(example, dtype, rtol, atol):
    hidden, output, x, scale = EXAMPLES[example]
    rng = np.random.default_rng(sum(map(ord, example)))
    for _ in range(DRAWS):
        params = _seed_params(rng, scale)
        if dtype == jnp.float32:
            params = [p.astype(np.float32).astype(np.float64) for p in params]
        ref = seed_example_grads(*params, np.asarray(x), np.array([1.0]), hidden, output)
        loss, got = _jax_grads(params, x, hidden, output, dtype)
        np.testing.assert_allclose(loss, ref["loss"], rtol=rtol, atol=atol)
        for name in ("W1", "b1", "W2", "b2"):
            np.testing.assert_allclose(np.asarray(got[name]), ref[name], rtol=rtol, atol=atol)


@pytest.mark.parametrize("example", EXAMPLES)
def test_jax_grad_matches_seed_backprop_float32(example):
    _compare(example, jnp.float32, rtol=2e-5, atol=1e-8)


@pytest.mark.parametrize("example", EXAMPLES)
def test_jax_grad_matches_seed_backprop_float64(example, x64):
    _compare(example, jnp.float64, rtol=1e-12, atol=1e-15)


def test_seed_w1_printout_is_a_broadcast_of_the_true_gradient(x64):
    """The seed's example code prints a [2, 9] "gradient" for w1; its j == k entries are the
    true gradient and the rest are products of unrelated units' factors."""
    rng = np.random.default_rng(1)
    params = _seed_params(rng, 1.0)
    x = np.array([0.5, 0.7])
    literal = seed_literal_w1_grad(*params, x, np.array([1.0]))
    _, got = _jax_grads(params, x, "sigmoid", "sigmoid", jnp.float64)
    assert literal.shape == (2, 9)
    diagonal = literal.reshape(2, 3, 3)[:, np.arange(3), np.arange(3)]
    np.testing.assert_allclose(diagonal, np.asarray(got["W1"]), rtol=1e-12)
    assert not np.allclose(literal.reshape(2, 3, 3)[:, 0, 1], np.asarray(got["W1"])[:, 1])


def _seed_probe(example, seeds):
    hidden, output, x, scale = EXAMPLES[example]
    spec = ProbeSpec(sizes=(2, 3, 1), activation=hidden, output_activation=output,
                     inputs="fixed", targets="fixed")
    points = make_points(spec, [scale], [scale], xs=[x], ys=[[1.0]])
    parts = list(run_seeds(spec, points, np.arange(seeds), root_seed=0, chunk=2048))
    return {k: np.concatenate([p[1][k] for p in parts])[:, 0] for k in parts[0][1]}


def test_relu_example_zeroes_half_of_w1_and_none_of_it_is_underflow():
    """z1_j = x . w_j + b_j is symmetric about 0, so each hidden unit is dead with probability
    1/2 independently: E[frac_zero(dW1)] = 1/2 and P(all three dead) = 1/8."""
    n = 8000
    stats = _seed_probe("relu", n)
    frac_zero_w1 = stats["grad_frac_zero"][:, 0, 0]
    sd = np.sqrt(0.25 / 3 / n)
    assert abs(frac_zero_w1.mean() - 0.5) < 4 * sd
    born_dead = np.mean(frac_zero_w1 == 1.0)
    assert abs(born_dead - 1 / 8) < 4 * np.sqrt(1 / 8 * 7 / 8 / n)
    np.testing.assert_array_equal(stats["act_frac_dead"][:, 0], frac_zero_w1)
    assert np.all(stats["grad_frac_underflow"][:, :, 0] == 0)


def test_tiny_init_makes_w2_gradient_entries_alike():
    """With every parameter x 0.01, a1 = sigmoid(~0) ~ 1/2 for all units, so dL/dW2 = d_z2 * a1
    has nearly equal entries (cv -> 0), unlike the scale-1 sigmoid example."""
    tiny, unit = _seed_probe("tiny_init", 500), _seed_probe("sigmoid", 500)
    cv_w2_tiny = np.median(tiny["grad_cv"][:, 1, 0])
    cv_w2_unit = np.median(unit["grad_cv"][:, 1, 0])
    assert cv_w2_tiny < 0.02 < cv_w2_unit
    assert np.all(np.abs(tiny["act_deriv_mean"][:, 0] - 0.25) < 1e-3)


def test_constant_init_gives_every_unit_the_same_gradient():
    """Symmetric init: identical hidden units receive identical gradients (cosine 1), even on a
    batch of several examples where the batch-of-one rank-1 argument does not apply."""
    key = jax.random.key(3)
    params = gradjax.init_mlp(key, (4, 5, 5, 1), init="constant", scale=0.3,
                              bias_init="constant", bias_scale=0.1)
    x = jax.random.normal(jax.random.key(4), (6, 4))
    y = jnp.ones((6, 1))
    _, grads = gradjax.loss_and_grads(params, x, y, activation="tanh")
    for layer in grads[:-1]:
        first_unit = jnp.broadcast_to(layer["W"][:, :1], layer["W"].shape)
        np.testing.assert_allclose(layer["W"], first_unit, rtol=1e-6)
    stats = gradjax.grad_stats(params, x, y, activation="tanh")
    np.testing.assert_allclose(stats["grad_unit_cos_sq"][:2, 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(stats["grad_cv"][:2, 1], 0.0, atol=1e-6)
