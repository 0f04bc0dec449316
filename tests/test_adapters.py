"""The Equinox and Flax NNX adapters against the libraries' own calls and gradients, and the two
example plug-ins in examples/ at tiny size (the `test` extra installs equinox and flax)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_plugin
from flax import nnx

import gradjax
from gradjax.nn.adapters.equinox import from_equinox
from gradjax.nn.adapters.flax_nnx import from_nnx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = jax.random.key(7)
X = jax.random.normal(jax.random.key(1), (4, 3))
Y = jax.random.normal(jax.random.key(2), (4, 2))


def load_example(name: str):
    """Import examples/<name>.py by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def assert_trees_close(actual, expected, rtol=1e-6, atol=1e-6):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(leaves(actual), leaves(expected), strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def mse(outputs: jax.Array) -> jax.Array:
    return jnp.mean((outputs - Y) ** 2)


def assert_vmapped_init_is_per_key_init(init):
    keys = jax.random.split(KEY, 3)
    stacked = jax.jit(jax.vmap(init))(keys)
    for i in range(3):
        assert_trees_close(jax.tree.map(lambda a, i=i: a[i], stacked), init(keys[i]), 0, 0)
    assert_trees_close(init(keys[0]), init(keys[0]), 0, 0)
    assert not all(map(np.array_equal, leaves(init(keys[0])), leaves(init(keys[1]))))


def test_importing_gradjax_adapters_imports_no_library():
    code = ("import sys, gradjax.nn.adapters as a; assert a.__all__ == []; "
            "print(sorted({'jax', 'flax', 'equinox'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --------------------------------------------------------------------------------- Equinox


def eqx_mlp(key: jax.Array) -> "eqx.Module":
    return eqx.nn.MLP(3, 2, width_size=5, depth=2, activation=jnp.tanh, key=key)


def test_equinox_apply_calls_the_module_example_by_example():
    init, apply = from_equinox(eqx_mlp)
    params = init(KEY)
    module = eqx_mlp(KEY)
    assert_trees_close(params, eqx.filter(module, eqx.is_inexact_array), 0, 0)
    expected = jnp.stack([module(x) for x in X])
    np.testing.assert_allclose(apply(params, X), expected, rtol=1e-6, atol=1e-6)


def test_equinox_grad_through_apply_is_filter_grad_of_the_module():
    init, apply = from_equinox(eqx_mlp)
    grads = jax.grad(lambda p: mse(apply(p, X)))(init(KEY))
    expected = eqx.filter_grad(lambda m: mse(jnp.stack([m(x) for x in X])))(eqx_mlp(KEY))
    assert_trees_close(grads, expected)
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(grads)[0]]
    assert names == [f".layers[{i}].{w}" for i in range(3) for w in ("weight", "bias")]


def test_equinox_init_is_deterministic_and_vmaps_over_keys():
    assert_vmapped_init_is_per_key_init(from_equinox(eqx_mlp)[0])


if eqx is not None:

    class Tapped(eqx.Module):
        """A linear layer whose outputs are permuted by an integer array (a non-float leaf)
        and scaled by a float option, returning its pre-activation as a tap."""

        linear: eqx.nn.Linear
        order: jax.Array

        def __init__(self, key: jax.Array, scale=1.0):
            linear = eqx.nn.Linear(3, 2, key=key)
            self.linear = eqx.tree_at(lambda m: m.weight, linear, linear.weight * scale)
            self.order = jnp.array([1, 0])

        def __call__(self, x):
            z = self.linear(x)
            return jnp.tanh(z)[self.order], {"pre": z}


def test_equinox_taps_come_through_batched_and_integer_leaves_stay_static():
    init, apply = from_equinox(Tapped)
    params = init(KEY)
    assert [leaf.shape for leaf in jax.tree.leaves(params)] == [(2, 3), (2,)]
    out, taps = jax.jit(apply)(params, X)
    module = Tapped(KEY)
    z = jnp.stack([module.linear(x) for x in X])
    np.testing.assert_allclose(taps["pre"], z, rtol=1e-6)
    np.testing.assert_allclose(out, jnp.tanh(z)[:, ::-1], rtol=1e-6)


def test_equinox_factory_can_close_over_a_traced_float_option():
    @jax.jit
    def outputs(scale):
        init, apply = from_equinox(lambda key: Tapped(key, scale))
        return apply(init(KEY), X)[1]["pre"]

    module = Tapped(KEY, 3.0)
    np.testing.assert_allclose(outputs(3.0), jnp.stack([module.linear(x) for x in X]),
                               rtol=1e-6)


# ----------------------------------------------------------------------------------- Flax NNX


if nnx is not None:

    class TwoLayer(nnx.Module):
        """Two linear layers, the first one's kernel scaled by a float option."""

        def __init__(self, rngs, scale=1.0):
            self.hidden = nnx.Linear(3, 5, rngs=rngs)
            self.hidden.kernel[...] = self.hidden.kernel[...] * scale
            self.out = nnx.Linear(5, 2, rngs=rngs)

        def __call__(self, x):
            z = self.hidden(x)
            return self.out(jnp.tanh(z)), {"hidden": z}

    class Tempered(nnx.Module):
        """A float option kept as an array attribute: state, but not a parameter."""

        def __init__(self, rngs, temperature):
            self.linear = nnx.Linear(3, 2, rngs=rngs)
            self.temperature = jnp.asarray(temperature)

        def __call__(self, x):
            return self.linear(x) / self.temperature

    class Stateful(nnx.Module):
        """Non-parameter state: BatchNorm statistics (updated by a call) and stored Rngs."""

        def __init__(self, rngs):
            self.linear = nnx.Linear(3, 2, rngs=rngs)
            self.norm = nnx.BatchNorm(2, rngs=rngs)
            self.drop = nnx.Dropout(0.5, deterministic=True, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.norm(self.linear(x)))


def test_nnx_init_draws_the_params_of_the_module_built_from_the_key():
    init, apply = from_nnx(TwoLayer)
    params = init(KEY)
    _, expected = nnx.split(TwoLayer(nnx.Rngs(params=KEY)), nnx.Param)
    assert_trees_close(params, nnx.to_pure_dict(expected), 0, 0)
    out, taps = apply(params, X)
    direct_out, direct_taps = TwoLayer(nnx.Rngs(params=KEY))(X)
    np.testing.assert_allclose(out, direct_out, rtol=1e-6)
    np.testing.assert_allclose(taps["hidden"], direct_taps["hidden"], rtol=1e-6)
    assert taps["hidden"].shape == (4, 5)


def test_nnx_grad_through_apply_is_nnx_grad_of_the_module():
    init, apply = from_nnx(TwoLayer)
    grads = jax.grad(lambda p: mse(apply(p, X)[0]))(init(KEY))
    expected = nnx.grad(lambda m: mse(m(X)[0]))(TwoLayer(nnx.Rngs(params=KEY)))
    assert_trees_close(grads, nnx.to_pure_dict(expected))
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(grads)[0]]
    assert names == [f"['{layer}']['{w}']" for layer in ("hidden", "out")
                     for w in ("bias", "kernel")]


def test_nnx_init_is_deterministic_and_vmaps_over_keys():
    assert_vmapped_init_is_per_key_init(from_nnx(TwoLayer)[0])


def test_nnx_non_parameter_state_is_fixed_and_apply_stays_pure():
    init, apply = from_nnx(Stateful)
    params = init(KEY)
    assert [leaf.shape for leaf in jax.tree.leaves(params)] == [(2,), (3, 2), (2,), (2,)]
    expected = Stateful(nnx.Rngs(KEY))(X)
    jitted = jax.jit(apply)
    for x in (X, X + 1.0, X):  # a second trace would fail if a call's update leaked out
        np.testing.assert_allclose(jitted(params, x), Stateful(nnx.Rngs(KEY))(x), atol=1e-5)
    np.testing.assert_allclose(apply(params, X), expected, atol=1e-5)


def test_nnx_factory_can_close_over_a_traced_float_option():
    @jax.jit
    def taps(scale):
        init, apply = from_nnx(lambda rngs: TwoLayer(rngs, scale))
        return apply(init(KEY), X)[1]["hidden"]

    np.testing.assert_allclose(taps(3.0), TwoLayer(nnx.Rngs(KEY), 3.0)(X)[1]["hidden"],
                               rtol=1e-6)


def test_nnx_a_traced_float_option_kept_as_an_attribute_is_fixed_state_not_a_param():
    @jax.jit
    def outputs_and_params(temperature):
        init, apply = from_nnx(lambda rngs: Tempered(rngs, temperature))
        params = init(KEY)
        return apply(params, X), params

    outputs, params = outputs_and_params(4.0)
    assert [leaf.shape for leaf in jax.tree.leaves(params)] == [(2,), (3, 2)]
    np.testing.assert_allclose(outputs, Tempered(nnx.Rngs(KEY), 4.0)(X), rtol=1e-6)


# ----------------------------------------------------------------------------------- examples


def finite_grads(init, apply, x):
    grads = jax.jit(jax.grad(lambda p: jnp.mean(apply(p, x)[0] ** 2)))(init(KEY))
    assert all(np.isfinite(g).all() for g in leaves(grads))
    assert all(np.abs(g).max() > 0 for g in leaves(grads))
    return grads


def test_conv_eqx_taps_are_the_convolutions_and_grads_are_finite():
    init, apply = load_example("conv_eqx").conv_net(in_dim=16, out_dim=3, channels=2)
    x = jax.random.normal(KEY, (2, 16))
    params = init(KEY)
    out, taps = apply(params, x)
    assert out.shape == (2, 3)
    conv = params.conv1
    expected = jax.lax.conv_general_dilated(x.reshape(2, 1, 4, 4), conv.weight, (1, 1), "SAME")
    np.testing.assert_allclose(taps["conv1"], expected + conv.bias[None], rtol=1e-5, atol=1e-6)
    assert taps["conv2"].shape == (2, 2, 4, 4)
    finite_grads(init, apply, x)


def test_conv_eqx_options_are_checked_and_used():
    conv_net = load_example("conv_eqx").conv_net
    x = jax.random.normal(KEY, (2, 16))
    relu, tanh = (conv_net(in_dim=16, activation=a) for a in ("relu", "tanh"))
    assert not np.allclose(relu[1](relu[0](KEY), x)[0], tanh[1](tanh[0](KEY), x)[0])
    with pytest.raises(ValueError, match="square"):
        conv_net(in_dim=15)
    with pytest.raises(ValueError, match="activation"):
        conv_net(activation="softmax")


def test_transformer_nnx_runs_tiny_and_ignores_token_order():
    init, apply = load_example("transformer_nnx").transformer_block()
    apply = jax.jit(apply)  # one compile instead of one per operation
    x = jax.random.normal(KEY, (2, 4, 8))
    out, taps = apply(init(KEY), x.reshape(2, 32))
    assert out.shape == (2, 4)
    assert taps["attn_logits"].shape == (2, 2, 4, 4)
    assert taps["mlp_hidden"].shape == (2, 4, 32)
    shuffled, _ = apply(init(KEY), x[:, ::-1].reshape(2, 32))  # no positions, mean-pooled
    np.testing.assert_allclose(shuffled, out, rtol=1e-5, atol=1e-6)
    finite_grads(init, apply, x.reshape(2, 32))


def test_transformer_nnx_options_are_checked():
    block = load_example("transformer_nnx").transformer_block
    with pytest.raises(ValueError, match="multiple"):
        block(in_dim=30)
    with pytest.raises(ValueError, match="divide"):
        block(heads=3)


LAYER_ORDER = '''
import jax
import jax.numpy as jnp
from flax import nnx

from gradjax.nn.adapters.flax_nnx import from_nnx


class StemMidOut(nnx.Module):
    """Modules whose names sort out, mid, stem, used in the forward order stem, mid, out."""

    def __init__(self, rngs):
        self.stem = nnx.Linear(3, 4, rngs=rngs)
        self.mid = nnx.Linear(4, 4, rngs=rngs)
        self.out = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        a = self.stem(x)
        b = self.mid(jnp.tanh(a))
        return self.out(jnp.tanh(b)), {"after_stem": a, "after_mid": b}


def stem_mid_out(in_dim: int, out_dim: int):
    return from_nnx(StemMidOut)
'''


def test_nnx_layers_are_numbered_in_forward_order_not_by_name(tmp_path):
    """stem -> mid -> out: layer 1 is stem (kernel and bias together), -1 is out, and each tap
    sits at the layer of the module that produces it."""
    rows = run_plugin(tmp_path, "ordered", LAYER_ORDER, "ordered:stem_mid_out",
                      "in_dim = 3\nout_dim = 2\nbatch = 2\n")
    layer = dict(zip(rows.param, rows.layer, strict=True))
    from_output = dict(zip(rows.param, rows.layer_from_output, strict=True))
    want = {"['stem']['kernel']": 1, "['stem']['bias']": 1, "['mid']['kernel']": 2,
            "['mid']['bias']": 2, "['out']['kernel']": 3, "['out']['bias']": 3,
            "taps['after_stem']": 1, "taps['after_mid']": 2}
    assert layer == want
    assert all(from_output[p] == layer[p] - 4 for p in want)
    output = gradjax.load(tmp_path / "out", "per_seed", seed=0, layer=-1)
    assert sorted(output.param) == ["['out']['bias']", "['out']['kernel']"]
