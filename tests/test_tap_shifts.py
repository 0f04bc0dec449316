"""dL/dz at a plug-in's taps (`gradjax.nn.tap_shifts`), against backprop written out in numpy:
taps read as values, as copies (a reshape, a slice), inside a jitted apply, and the stacked
outputs of a scan over layers, shifted iteration by iteration inside the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradjax
from gradjax.nn.tap_shifts import with_tap_shifts

B, D, H, O = 4, 3, 5, 2


def _params():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return {"W1": jax.random.normal(k1, (D, H)), "b1": 0.1 * jnp.ones(H),
            "W2": jax.random.normal(k2, (H, O)) / np.sqrt(H), "x": jax.random.normal(k3, (B, D))}


def _apply(params, x):
    z1 = x @ params["W1"] + params["b1"][None, :]
    logits = jnp.tanh(z1) @ params["W2"]
    return logits, {"z1": z1, "flat": z1.reshape(B, -1)[:, 1:4], "logits": logits}


def _numpy_deltas(params, y):
    """dL/dz1 and dL/dlogits of L = 0.5 mean_b |logits_b - y_b|^2, by hand in float64."""
    w1, b1, w2, x = (np.asarray(params[k], np.float64) for k in ("W1", "b1", "W2", "x"))
    z1 = x @ w1 + b1
    logits = np.tanh(z1) @ w2
    d_logits = (logits - y) / B
    return (d_logits @ w2.T) * (1 - np.tanh(z1) ** 2), d_logits


def _deltas(apply, params, y):
    shifted = with_tap_shifts(lambda p, x: (lambda out: (out[0], [out[1][n] for n in
                              ("z1", "flat", "logits")]))(apply(p, x)), params, params["x"])

    def loss(shifts):
        logits, _ = shifted.apply((params, params["x"]), shifts)
        return 0.5 * jnp.mean(jnp.sum(jnp.square(logits - y), axis=-1))

    zeros = [jnp.zeros(s.shape, s.dtype) for s in shifted.roots]
    return shifted.deltas(jax.grad(loss)(zeros))


@pytest.mark.parametrize("jitted", [False, True])
def test_tap_deltas_equal_numpy_backprop_for_values_and_copies(jitted):
    params, y = _params(), np.linspace(-1, 1, B * O).reshape(B, O)
    apply = jax.jit(_apply) if jitted else _apply
    d_z1, d_flat, d_logits = _deltas(apply, params, jnp.asarray(y, jnp.float32))
    want_z1, want_logits = _numpy_deltas(params, y)
    np.testing.assert_allclose(d_z1, want_z1, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(d_flat, want_z1[:, 1:4], rtol=2e-5, atol=1e-7)  # the copy's
    np.testing.assert_allclose(d_logits, want_logits, rtol=2e-5, atol=1e-7)


def test_taps_stacked_by_a_scan_are_shifted_inside_the_loop():
    w = np.asarray(jax.random.normal(jax.random.key(1), (D, D))) / np.sqrt(D)
    x = np.asarray(jax.random.normal(jax.random.key(2), (B, D)))

    def apply(params, xx):
        def block(h, ww):
            z = h @ ww
            return jnp.tanh(z), z

        h, zs = jax.lax.scan(block, xx, jnp.stack([params["W"]] * 3))
        return h, [zs[0], zs[2], h]

    params = {"W": jnp.asarray(w, jnp.float32)}
    shifted = with_tap_shifts(apply, params, jnp.asarray(x, jnp.float32))
    zeros = [jnp.zeros(s.shape, s.dtype) for s in shifted.roots]
    loss = lambda s: jnp.sum(shifted.apply((params, jnp.asarray(x, jnp.float32)), s)[0])  # noqa: E731
    d0, d2, d_out = shifted.deltas(jax.grad(loss)(zeros))
    # numpy: h_{t+1} = tanh(h_t w), L = sum(h_3); dL/dz_t = dL/dh_{t+1} * (1 - tanh^2 z_t)
    hs, zs = [x.astype(np.float64)], []
    for _ in range(3):
        zs.append(hs[-1] @ w)
        hs.append(np.tanh(zs[-1]))
    dh, dz = np.ones((B, D)), [None] * 3
    for t in (2, 1, 0):
        dz[t] = dh * (1 - np.tanh(zs[t]) ** 2)
        dh = dz[t] @ w.T
    np.testing.assert_allclose(d0, dz[0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(d2, dz[2], rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(d_out, np.ones((B, D)))  # the loop's carry out is a value


def test_grad_stats_of_a_plugin_give_each_tap_its_delta_sq_norm():
    params, y = _params(), np.linspace(-1, 1, B * O).reshape(B, O)
    model = (lambda key: params, _apply)
    stats = gradjax.grad_stats(model, params["x"], jnp.asarray(y, jnp.float32), params=params)
    want_z1, want_logits = _numpy_deltas(params, y)
    by_param = dict(zip(stats["param"], stats["delta_sq_norm"], strict=True))
    mean_sq = lambda d: np.mean(np.sum(d.reshape(B, -1) ** 2, axis=1))  # noqa: E731
    np.testing.assert_allclose(by_param["taps['z1']"], mean_sq(want_z1), rtol=1e-5)
    np.testing.assert_allclose(by_param["taps['flat']"], mean_sq(want_z1[:, 1:4]), rtol=1e-5)
    np.testing.assert_allclose(by_param["taps['logits']"], mean_sq(want_logits), rtol=1e-5)
    leaf_rows = [p for p in stats["param"] if not p.startswith("taps")]
    assert np.isnan([by_param[p] for p in leaf_rows]).all()  # dL/dz is a tap's statistic
