"""Magnitude statistics are right to rounding at any magnitude, from subnormal to huge.

Squares of float32 entries below ~1e-19 underflow and above ~1e19 overflow; each statistic with
a unit is computed on an exactly rescaled tensor (`gradjax.probe.pow2`). Everything here is checked
against numpy in float64 on the same float32 values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import mean_squared_cosine, mlp_backprop

import gradjax
from gradjax.nn import keys
from gradjax.probe import chunking, pow2
from gradjax.probe.stats import tensor_stats, to_host, unit_cos_sq
from gradjax.run.moments import ChunkMoments

TINY = float(np.finfo(np.float32).smallest_subnormal)
F32_MAX = float(np.finfo(np.float32).max)


def _log_uniform(rng, shape, low, high):
    """float32 entries with random signs, |entry| log-uniform in [low, high]."""
    mag = np.exp(rng.uniform(np.log(low), np.log(high), shape))
    return (mag * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def _tensors():
    rng = np.random.default_rng(0)
    around = 1e-23 * (1 + rng.standard_normal(64))  # the reported bug: squares underflow
    subnormal = rng.integers(1, 2**23, 40).astype(np.uint32).view(np.float32)
    return {
        "1e-23": around.astype(np.float32),
        "1e-38..1e38": _log_uniform(rng, (9, 7), 1e-38, 1e38),
        "near max": _log_uniform(rng, (20,), 1e37, F32_MAX),
        "subnormal": subnormal * rng.choice([-1, 1], 40).astype(np.float32),
        "smallest subnormal": np.float32([TINY, -TINY, TINY, 0.0]),
        "1e-30 with zeros": np.where(rng.random(30) < 0.3, 0, 1e-30 * rng.random(30))
        .astype(np.float32),
    }


@pytest.mark.parametrize("name", list(_tensors()))
def test_tensor_stats_match_float64_numpy_at_any_magnitude(name):
    g = _tensors()[name]
    got = to_host(jax.jit(tensor_stats)(jnp.asarray(g)))
    d = g.astype(np.float64).ravel()
    want = {
        "grad_mean": d.mean(), "grad_var": d.var(), "grad_sq_norm": np.sum(d * d),
        "grad_max_abs": np.abs(d).max(), "grad_mean_abs": np.abs(d).mean(),
        "grad_cv": d.std() / np.abs(d).mean(),
    }
    for stat, value in want.items():
        assert got[stat] == pytest.approx(value, rel=2e-5, abs=0), stat
    assert got["grad_var"] > 0 and got["grad_cv"] > 0  # the entries differ
    assert got["grad_frac_zero"] == pytest.approx(np.mean(d == 0))
    assert got["grad_frac_subnormal"] == pytest.approx(
        np.mean((d != 0) & (np.abs(d) < np.finfo(np.float32).tiny)))


@pytest.mark.parametrize("value", [TINY, 1e-40, 1e-30, 1.0, 1e30, F32_MAX])
def test_equal_entries_have_zero_cv_and_nearly_equal_ones_do_not(value):
    same = np.full(12, value, np.float32)
    got = to_host(tensor_stats(jnp.asarray(same)))
    assert got["grad_var"] == 0 and got["grad_cv"] == 0
    assert got["grad_sq_norm"] == pytest.approx(12 * value**2, rel=1e-6)
    nudged = same.copy()
    nudged[0] = np.nextafter(same[0], np.float32(np.inf) if value < F32_MAX else 0)
    got = to_host(tensor_stats(jnp.asarray(nudged)))
    d = nudged.astype(np.float64)  # one entry one ulp off: 1e-7 relative, or 2x for TINY
    assert got["grad_var"] > 0 and got["grad_cv"] > 0
    assert got["grad_cv"] == pytest.approx(d.std() / np.abs(d).mean(), rel=1e-3, abs=1e-6)


def _random_floats(rng, dtype, size):
    """Every bit pattern equally likely (subnormals, huge and tiny values), finite ones only."""
    uint = {np.float32: np.uint32, np.float64: np.uint64}[dtype]
    x = rng.integers(0, np.iinfo(uint).max, size, dtype=np.uint64).astype(uint).view(dtype)
    return x[np.isfinite(x)]


def _want_scaled(x, k, dtype):
    """numpy's exact ldexp, with results below the smallest normal number as 0 and above the
    largest finite one as inf."""
    with np.errstate(over="ignore"):
        want = np.ldexp(x.astype(np.float64), k) if dtype == np.float32 else np.ldexp(x, k)
    want = np.where(np.abs(want) > np.finfo(dtype).max, np.copysign(np.inf, want), want)
    return np.where(np.abs(want) < np.finfo(dtype).tiny, np.copysign(0.0, want), want)


def test_an_inf_anywhere_gives_an_inf_mean_not_nan():
    for g in ([np.inf, 1.0, 2.0], [1.0, np.inf, 2.0]):
        got = to_host(tensor_stats(jnp.float32(g)))
        assert got["grad_mean"] == np.inf and got["grad_nonfinite"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_times_pow2_is_exact_for_every_float_including_subnormals(dtype, x64):
    rng = np.random.default_rng(1)
    x = _random_floats(rng, dtype, 50_000)
    low = np.finfo(dtype).minexp - np.finfo(dtype).nmant
    k = rng.integers(low - 30, -low + 30, x.size)
    got = np.asarray(jax.jit(pow2.times_pow2)(x, k)).astype(np.float64)
    want = _want_scaled(x, k, dtype)
    assert np.mean((want != 0) & np.isfinite(want)) > 0.3
    np.testing.assert_array_equal(got, want)


def test_multiply_equals_times_pow2_on_normal_floats_with_normal_results():
    rng = np.random.default_rng(5)
    x = _random_floats(rng, np.float32, 50_000)
    x = x[np.abs(x) >= np.finfo(np.float32).tiny]
    k = rng.integers(-149, 150, x.size)
    got = np.asarray(jax.jit(pow2.multiply)(x, k), np.float64)
    want = _want_scaled(x, k, np.float32)
    normal = (want != 0) & np.isfinite(want)
    assert normal.mean() > 0.3
    np.testing.assert_array_equal(got[normal], want[normal])
    assert np.all(got[want == 0] == 0) and np.all(np.isinf(got[np.isinf(want)]))


@pytest.mark.parametrize("power", [1, 2])
def test_unscale_is_ldexp_in_float64_for_float32_values_and_any_exponent(power):
    rng = np.random.default_rng(7)
    x = _random_floats(rng, np.float32, 50_000)
    for k in (rng.integers(-252, 253, x.size), np.zeros(x.size, np.int64),
              rng.integers(-600, 600, x.size)):  # power 2: past 1022, the ldexp path
        with np.errstate(over="ignore"):  # float64 overflows only past 2**1024: inf, as want
            got = pow2.unscale(x, k.astype(np.int32), power)
            want = np.ldexp(x.astype(np.float64), power * k)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("k", [-300, -200, -149, 149, 240, 300])
def test_times_pow2_by_a_constant_is_not_folded_into_one_overflowing_factor(k):
    x = np.float32([2.0**100, 2.0**-120, 1e-45, -3e-39, 1.0])
    got = np.asarray(jax.jit(lambda a: pow2.times_pow2(a, k))(x), np.float64)
    np.testing.assert_array_equal(got, _want_scaled(x, np.full(x.size, k), np.float32))


def test_max_exponent_is_floor_log2_for_every_float32():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x[np.isfinite(x)], np.float32([0.0, TINY, F32_MAX])])
    got = np.asarray(jax.jit(pow2.max_exponent, static_argnames="axis")(x[:, None], axis=1))
    d = np.abs(x.astype(np.float64))
    want = np.where(d > 0, np.floor(np.log2(np.where(d > 0, d, 1))), 0)
    np.testing.assert_array_equal(got, want)
    assert int(pow2.max_exponent(jnp.float32([1e-3, jnp.inf, jnp.nan]))) == -10


def test_unit_cos_sq_of_tiny_and_huge_columns():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((6, 4)) * np.array([1e-30, 1e-25, 1e20, 1.0])
    g32 = g.astype(np.float32)
    got = float(unit_cos_sq(jnp.asarray(g32)))
    assert got == pytest.approx(mean_squared_cosine(g32), abs=1e-6)


def _deep_tiny_net():
    """tanh, depth 16, scale 0.05: layer-1 gradients are ~1e-21, their squares below float32."""
    sizes = (4, 6, *([6] * 15), 6, 2)
    params = gradjax.init_mlp(jax.random.key(11), sizes, init="fan_in_normal", scale=0.05,
                              bias_init="zeros")
    x = jax.random.normal(jax.random.key(12), (3, sizes[0]))
    y = jax.random.normal(jax.random.key(13), (3, sizes[-1]))
    return params, x, y


def test_grad_stats_of_a_deep_net_whose_squares_underflow():
    """W, b and dL/dz statistics of a float32 net against numpy float64 reductions of the same
    float32 gradients (and of a float64 numpy backprop for dL/dz and the pre-activations)."""
    params, x, y = _deep_tiny_net()
    got = gradjax.grad_stats(params, x, y, activation="tanh")
    _, grads = gradjax.loss_and_grads(params, x, y, activation="tanh")
    first_w = np.asarray(grads[0]["W"], np.float64)
    assert np.abs(first_w).max() < 1e-19 and np.abs(first_w).max() > 0  # squares underflow
    for layer in (0, 1, len(params) - 1):
        for col, p in enumerate(("W", "b")):
            d = np.asarray(grads[layer][p], np.float64).ravel()
            assert got["grad_var"][layer, col] == pytest.approx(d.var(), rel=1e-5)
            assert got["grad_mean"][layer, col] == pytest.approx(d.mean(), rel=1e-4)
            assert got["grad_max_abs"][layer, col] == np.abs(d).max()
            assert got["grad_mean_abs"][layer, col] == pytest.approx(np.abs(d).mean(), rel=1e-5)
            assert got["grad_sq_norm"][layer, col] == pytest.approx(np.sum(d * d), rel=1e-5)
            assert got["grad_cv"][layer, col] == pytest.approx(d.std() / np.abs(d).mean(),
                                                               rel=1e-4)
    ref = mlp_backprop([{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params],
                       np.asarray(x, np.float64), np.asarray(y, np.float64), "tanh")
    delta_sq = [np.mean(np.sum(d**2, axis=1)) for d in ref["deltas"]]
    assert delta_sq[0] < 1e-38  # below float32's normal range
    np.testing.assert_allclose(got["delta_sq_norm"], delta_sq, rtol=1e-3)
    np.testing.assert_allclose(got["preact_var"][:-1], [z.var() for z in ref["z"]], rtol=1e-3)
    np.testing.assert_allclose(got["preact_mean"][:-1], [z.mean() for z in ref["z"]], rtol=1e-3)
    assert abs(ref["z"][-1]).max() < 1e-19  # the deepest pre-activations' squares underflow
    assert np.all(got["grad_unit_cos_sq"][:, 0] == got["grad_unit_cos_sq"][:, 0])  # no NaN


def test_across_seed_moments_at_any_magnitude():
    """Per-entry mean and M2 across seeds, through the probe's chunk moments and the host's
    unscaling and Chan merge, against numpy float64; entries span 1e-38 to 1e38 and one entry
    is constant across seeds beside one that varies at 1e-30."""
    rng = np.random.default_rng(4)
    seeds, shape = 10, (5, 3)
    scales = _log_uniform(rng, shape, 1e-38, 1e38).astype(np.float64)
    g = (scales * (1 + 0.5 * rng.standard_normal((seeds, *shape)))).astype(np.float32)
    g[:, 0, 0] = 1e30
    g[:, 0, 1] = (1e-30 * rng.standard_normal(seeds)).astype(np.float32)
    valid = np.arange(seeds) < 8  # the last two are a chunk's padding
    merged = ChunkMoments(0, None)
    for part in (slice(0, 3), slice(3, seeds)):
        chunk = chunking.chunk_moments({"W": jnp.asarray(g[part])}, jnp.asarray(valid[part]),
                                    jnp.float32)
        merged = merged.merge(ChunkMoments.from_chunk(chunk))
    d = g[valid].astype(np.float64)
    np.testing.assert_allclose(merged.tree["W"]["mean"], d.mean(0), rtol=1e-5)
    np.testing.assert_allclose(merged.tree["W"]["m2"], ((d - d.mean(0)) ** 2).sum(0), rtol=1e-4)
    assert merged.tree["W"]["m2"][0, 0] == 0 and merged.tree["W"]["m2"][0, 1] > 0


@pytest.mark.integration  # a whole run of a sweep
def test_sweep_grad_var_across_seeds_of_underflowing_gradients(tmp_path):
    """End to end: the summary's grad_var_across_seeds and the per-seed grad_var of a deep
    tiny-scale net against numpy float64 on gradients recomputed seed by seed."""
    from gradjax.run.engine import execute_sweep
    from gradjax.sweep import parse_sweep

    text = ('name = "under"\nseeds = 4\n[defaults]\nin_dim = 3\nwidth = 4\ndepth = 6\n'
            'out_dim = 1\nactivation = "tanh"\ninit = "fan_in_normal"\nscale = 0.0005\n'
            'bias_init = "zeros"\nbatch = 2\n')
    sweep = parse_sweep(text)
    execute_sweep(sweep, tmp_path / "out", quiet=True)
    summary = gradjax.load(tmp_path / "out", layer=1)
    per_seed = gradjax.load(tmp_path / "out", "per_seed", layer=1, param="W")
    spec = sweep.cells[0].spec
    grads = []
    for seed in range(4):
        key = keys.init_key(0, seed)
        params = gradjax.init_mlp(key, spec.sizes, init="fan_in_normal", scale=0.0005,
                                  bias_init="zeros")
        x = jax.random.normal(keys.data_key(key, keys.INPUTS), (2, 3))
        y = jax.random.normal(keys.data_key(key, keys.TARGETS), (2, 1))
        _, g = gradjax.loss_and_grads(params, x, y, activation="tanh")
        grads.append({p: np.asarray(g[0][p], np.float64) for p in ("W", "b")})
    w = np.stack([g["W"] for g in grads])
    assert np.abs(w).max() < 1e-19
    np.testing.assert_allclose(per_seed["grad_var"], [a.var() for a in w], rtol=1e-5)
    for p in ("W", "b"):
        stacked = np.stack([g[p] for g in grads])
        want = stacked.var(axis=0).mean()
        got = summary.loc[summary["param"] == p, "grad_var_across_seeds"].item()
        assert got == pytest.approx(want, rel=1e-4)

