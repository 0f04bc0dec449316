"""`gradjax.grad_stats` of any `(init, apply)` model: per-leaf statistics equal numpy
reductions of `jax.grad` of the same model and loss, rows numbered in forward order, and one
tidy frame from `stats_frame`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import gradjax
from gradjax.nn.adapters.flax_nnx import from_nnx


class TinyCNN(nnx.Module):
    """conv -> relu -> conv -> mean-pool -> linear head, on 6 x 6 single-channel images given
    as flat rows of 36; the modules' names sort against their order (head, conv_b, conv_a)."""

    def __init__(self, rngs):
        self.conv_a = nnx.Conv(1, 3, kernel_size=(3, 3), rngs=rngs)
        self.conv_b = nnx.Conv(3, 4, kernel_size=(3, 3), rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        a = self.conv_a(x.reshape(-1, 6, 6, 1))
        b = self.conv_b(jax.nn.relu(a))
        return self.head(jnp.mean(jax.nn.relu(b), axis=(1, 2))), {"conv_a": a, "conv_b": b}


def test_grad_stats_of_an_nnx_cnn_equal_numpy_of_jax_grad():
    model = from_nnx(TinyCNN)
    init, apply = model
    params = init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (3, 36))
    y = jax.random.normal(jax.random.key(2), (3, 2))
    stats = gradjax.grad_stats(model, x, y, params=params)
    grads = jax.grad(lambda p: 0.5 * jnp.mean(jnp.sum((apply(p, x)[0] - y) ** 2, axis=1)))(params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    names = [jax.tree_util.keystr(path) for path, _ in flat]
    assert list(stats["param"]) == names + ["taps['conv_a']", "taps['conv_b']"]
    for i, (_, g) in enumerate(flat):
        g = np.asarray(g, np.float64).ravel()
        assert stats["grad_sq_norm"][i] == pytest.approx(np.sum(g * g), rel=1e-5)
        assert stats["grad_var"][i] == pytest.approx(g.var(), rel=1e-4, abs=1e-30)
        assert stats["grad_max_abs"][i] == pytest.approx(np.abs(g).max(), rel=1e-6)
        assert stats["n"][i] == g.size
    layer = dict(zip(stats["param"], stats["layer"], strict=True))
    assert [layer[f"['{m}']['kernel']"] for m in ("conv_a", "conv_b", "head")] == [1, 2, 3]
    assert layer["taps['conv_a']"] == 1 and layer["taps['conv_b']"] == 2
    frame = gradjax.stats_frame(stats)
    assert len(frame) == len(names) + 2
    assert frame.loc[frame.param == "['head']['kernel']", "layer_from_output"].item() == -1
    taps = frame[frame.param.str.startswith("taps")]
    assert taps["grad_var"].isna().all() and taps["preact_var"].notna().all()


def test_grad_stats_of_a_model_needs_params_or_a_key():
    with pytest.raises(TypeError, match="params=... or key="):
        gradjax.grad_stats(from_nnx(TinyCNN), jnp.ones((1, 36)), jnp.ones((1, 2)))
