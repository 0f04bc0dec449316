"""The peers of `gradjax bench` compute the same statistics as `gradjax.grad_stats`.

The numpy peers are fed the same parameters (a gradjax `init_mlp` draw converted to numpy), so
this makes the benchmark's peers honest and checks gradjax against an independent, hand-written
backprop. The torch peer is checked against both, where torch is installed; where it is not
(CI), that the peer says so and `gradjax bench` lists it as not measured with the install hint.
"""

import importlib.util
import re
import sys

import jax
import numpy as np
import pytest

import gradjax
from gradjax.bench import measure as bench
from gradjax.bench import numpy_peer, torch_peer
from gradjax.bench.record import format_table, make_record
from gradjax.bench.workloads import Workload, WorkloadBucket
from gradjax.spec import LAYER_STATS, PARAM_STATS, ProbeSpec

HAVE_TORCH = importlib.util.find_spec("torch") is not None

NETS = [
    # (sizes, activation, output_activation, batch, scale, bias_scale)
    ((2, 1), "sigmoid", "sigmoid", 1, 1.0, 1.0),
    ((2, 3, 1), "sigmoid", "sigmoid", 1, 1.0, 1.0),
    ((3, 6, 6, 2), "relu", "linear", 5, 1.2, 0.5),
    ((3, 8, 8, 8, 2), "tanh", "sigmoid", 4, 0.7, 0.0),
]
KEYS = (*PARAM_STATS, *LAYER_STATS, "loss_value")
grad_stats = gradjax.grad_stats


def _draw(sizes, batch, scale, bias_scale, seed):
    key_p, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
    params = gradjax.init_mlp(key_p, sizes, scale=scale, bias_scale=bias_scale)
    x = jax.random.normal(key_x, (batch, sizes[0]))
    y = jax.random.normal(key_y, (batch, sizes[-1]))
    return params, x, y


def _to_numpy(params):
    return [{k: np.asarray(v) for k, v in layer.items()} for layer in params]


def _assert_stats_close(got, want):
    assert set(got) == set(want) == set(KEYS)
    for k in KEYS:
        np.testing.assert_allclose(
            got[k], np.asarray(want[k]), rtol=2e-4, atol=1e-6, equal_nan=True, err_msg=k
        )


@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{n[1]}-{'x'.join(map(str, n[0]))}")
def test_grad_stats_np_matches_gradjax_per_init(net):
    sizes, act, out_act, batch, scale, bias_scale = net
    params, x, y = _draw(sizes, batch, scale, bias_scale, seed=len(sizes) + batch)
    want = grad_stats(params, x, y, activation=act, output_activation=out_act)
    got = numpy_peer.grad_stats_np(
        _to_numpy(params), np.asarray(x), np.asarray(y), activation=act,
        output_activation=out_act,
    )
    _assert_stats_close(got, want)


@pytest.mark.parametrize("net", NETS[2:4], ids=lambda n: n[1])
def test_grad_stats_np_vectorized_over_inits_matches_each_init(net):
    sizes, act, out_act, batch, scale, bias_scale = net
    draws = [_draw(sizes, batch, scale, bias_scale, seed=s) for s in range(3)]
    stacked = [
        {k: np.stack([np.asarray(d[0][l][k]) for d in draws]) for k in ("W", "b")}
        for l in range(len(sizes) - 1)
    ]
    x = np.stack([np.asarray(d[1]) for d in draws])
    y = np.stack([np.asarray(d[2]) for d in draws])
    got = numpy_peer.grad_stats_np(stacked, x, y, activation=act, output_activation=out_act)
    for i, (params, xi, yi) in enumerate(draws):
        want = grad_stats(params, xi, yi, activation=act, output_activation=out_act)
        _assert_stats_close({k: v[i] for k, v in got.items()}, want)


def test_structural_zeros_off_gives_nan_underflow():
    params, x, y = _draw((3, 6, 6, 2), 2, 1.0, 1.0, seed=0)
    got = numpy_peer.grad_stats_np(
        _to_numpy(params), np.asarray(x), np.asarray(y), activation="relu",
        structural_zeros=False,
    )
    want = grad_stats(params, x, y, activation="relu", structural_zeros=False)
    _assert_stats_close(got, want)
    assert np.isnan(got["grad_frac_underflow"]).all()


def test_dead_relu_units_are_structural_zeros_not_underflow():
    params = [
        {"W": np.array([[1.0, -1.0, 2.0]], np.float32), "b": np.zeros(3, np.float32)},
        {"W": np.array([[1.0], [1.0], [0.0]], np.float32), "b": np.zeros(1, np.float32)},
    ]
    x, y = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    got = numpy_peer.grad_stats_np(params, x, y, activation="relu")
    want = grad_stats(
        [{k: jax.numpy.asarray(v) for k, v in layer.items()} for layer in params], x, y,
        activation="relu",
    )
    _assert_stats_close(got, want)
    assert got["act_frac_dead"][0] == pytest.approx(1 / 3)
    assert got["grad_frac_zero"][0, 0] == pytest.approx(2 / 3)  # dead unit and zero weight
    assert got["grad_frac_underflow"][0, 0] == 0


SEED_SPEC = ProbeSpec(sizes=(2, 3, 1), activation="sigmoid", output_activation="sigmoid",
                      inputs="fixed", targets="fixed")
GAUSSIAN_SPEC = ProbeSpec(
    sizes=(4, 8, 8, 1), activation="tanh", init="fan_in_normal", bias_init="zeros", batch=3,
    inputs="gaussian", targets="gaussian",
)


def test_loop_yields_per_init_stats_with_a_points_axis():
    xs, ys = [[[0.5, 0.7]], [[0.5, 0.7]]], [[[1.0]], [[0.0]]]
    loop = list(numpy_peer.numpy_loop(SEED_SPEC, 3, [1.0, 2.0], [1.0, 0.5], xs, ys))
    assert len(loop) == 3
    for stats in loop:
        assert set(stats) == set(KEYS)
        assert stats["grad_mean"].shape == (2, 2, 2)  # [P, layers, (W, b)]
        assert stats["preact_var"].shape == (2, 2)
        assert stats["loss_value"].shape == (2,)
        assert np.isfinite(stats["grad_sq_norm"]).all()


def test_vec_yields_chunks_laid_out_like_run_seeds():
    chunks = list(numpy_peer.numpy_vec(GAUSSIAN_SPEC, 5, [1.0], [0.0], chunk=2))
    assert [c["loss_value"].shape for c in chunks] == [(2, 1), (2, 1), (1, 1)]
    assert chunks[0]["grad_unit_cos_sq"].shape == (2, 1, 3, 2)
    assert np.isnan(chunks[0]["grad_unit_cos_sq"][..., 1]).all()  # biases have no unit cosine


def test_points_reuse_the_same_draws():
    (stats,) = numpy_peer.numpy_loop(GAUSSIAN_SPEC, 1, [1.0, 2.0], [0.0, 0.0], seed=3)
    # Linear in the output layer's weights: doubling every W with zero biases scales the
    # pre-activations of layer 1 by 2, so its variance by 4, on the same draws.
    np.testing.assert_allclose(stats["preact_var"][1, 0], 4 * stats["preact_var"][0, 0], rtol=1e-5)


def test_vec_bytes_per_init_grows_with_the_network():
    small = numpy_peer.vec_bytes_per_init(SEED_SPEC)
    assert 0 < small < numpy_peer.vec_bytes_per_init(GAUSSIAN_SPEC)
    assert numpy_peer.vec_bytes_per_init(SEED_SPEC, points=2) > small


def test_unsupported_network_is_refused():
    spec = ProbeSpec(sizes=(2, 3, 1), activation="gelu", inputs="fixed", targets="fixed")
    with pytest.raises(ValueError, match="activation"):
        list(numpy_peer.numpy_vec(spec, 1, [1.0], [1.0], [[0.0, 0.0]], [[0.0]]))


# ----------------------------------------------------------------------------- torch_func

TORCH_CASES = [
    # (spec, scales, bias_scales, xs, ys): sigmoid / tanh / relu, depth 0-3, batch 1 and > 1
    (SEED_SPEC, [1.0, 2.0], [1.0, 0.5], [[[0.5, 0.7]]] * 2, [[[1.0]], [[0.0]]]),
    (ProbeSpec(sizes=(3, 1), activation="sigmoid", batch=2, inputs="gaussian",
               targets="gaussian"), [1.0], [1.0], None, None),
    (GAUSSIAN_SPEC, [1.0, 2.0], [0.0, 0.0], None, None),
    (ProbeSpec(sizes=(3, 6, 6, 6, 2), activation="relu", batch=5, inputs="gaussian",
               targets="fixed"),
     [1.2], [0.5], None, [np.linspace(-1, 1, 10).reshape(5, 2)]),
    (ProbeSpec(sizes=(2, 5, 1), activation="relu", structural_zeros=False, inputs="fixed",
               targets="fixed"), [1.0], [1.0],
     [[[0.5, -0.7]]], [[[1.0]]]),
]


def _missing_torch_is_reported(call):
    with pytest.raises(ImportError, match=re.escape(torch_peer.TORCH_MISSING)):
        call()


@pytest.mark.parametrize(
    "case", TORCH_CASES, ids=lambda c: f"{c[0].activation}-{'x'.join(map(str, c[0].sizes))}"
)
def test_torch_func_matches_numpy_vec_on_the_same_draws(case):
    spec, scales, bias_scales, xs, ys = case
    args = (spec, 5, scales, bias_scales, xs, ys)
    if not HAVE_TORCH:
        _missing_torch_is_reported(lambda: list(torch_peer.torch_func(*args, chunk=2)))
        return
    got = list(torch_peer.torch_func(*args, chunk=2, seed=7))
    want = list(numpy_peer.numpy_vec(*args, chunk=2, seed=7))
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        _assert_stats_close(g, w)  # the tolerance of the numpy peers against gradjax
        for k in KEYS:
            assert g[k].shape == w[k].shape and g[k].dtype == w[k].dtype == np.float32, k


@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{n[1]}-{'x'.join(map(str, n[0]))}")
def test_grad_stats_torch_matches_gradjax(net):
    sizes, act, out_act, batch, scale, bias_scale = net
    params, x, y = _draw(sizes, batch, scale, bias_scale, seed=len(sizes) + batch)
    one = [{k: v[None] for k, v in layer.items()} for layer in _to_numpy(params)]

    def run():
        return torch_peer.grad_stats_torch(one, np.asarray(x), np.asarray(y), activation=act,
                                          output_activation=out_act)

    if not HAVE_TORCH:
        _missing_torch_is_reported(run)
        return
    got = run()
    want = grad_stats(params, x, y, activation=act, output_activation=out_act)
    _assert_stats_close({k: v[0] for k, v in got.items()}, want)


def test_bench_lists_torch_func_as_not_measured_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as without it
    workload = Workload(
        "T", "tiny", (WorkloadBucket(GAUSSIAN_SPEC),), n_inits=2, chunk=2, loop_inits=1
    )
    fields = bench.run_job(bench.Job("torch_func", workload, reps=1))
    assert fields == {"error": "torch is not installed (pip install 'gradjax[torch]')"}
    record = make_record(workload, "torch_func", fields, {}, {}, None)
    assert record["inits_per_s"] is None
    table = format_table([record], {"error": "skipped"})
    assert ("T torch_func: not measured: torch is not installed (pip install 'gradjax[torch]')"
            in table.splitlines())
    assert "torch_func" in bench.IMPLS  # so the default `--impl` (all) lists it
