"""Mean-field theory (gradjax.nn.gaussian, theory and theory_columns): checked against closed
forms, Monte Carlo in numpy, an independent numpy iteration, and gradjax's own measurements of
deep tanh networks."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from numpy.polynomial.hermite_e import hermegauss

from gradjax.nn import gaussian, theory
from gradjax.nn.theory_columns import add_theory_columns
from gradjax.probe.chunking import make_points
from gradjax.probe.programs import run_seeds
from gradjax.spec import THEORY_COLUMNS, WEIGHT_INITS, ProbeSpec

RNG = np.random.default_rng(20170401)
Z = RNG.standard_normal((2, 1_000_000))  # Monte Carlo draws, shared by the tests below


def _mc(values: np.ndarray) -> tuple[float, float]:
    """Monte Carlo mean and its standard error."""
    return float(values.mean()), float(values.std() / math.sqrt(values.size))


def _pdf(z):
    return np.exp(-z * z / 2) / math.sqrt(2 * math.pi)


# --------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("mean, std", [(0.0, 1e-3), (0.0, 1.0), (0.7, 3.0), (-40.0, 25.0)])
def test_gaussian_rule_moments_and_half_line(mean, std):
    u, w = gaussian.gaussian_rule(mean, std, kinks=(0.3,))
    np.testing.assert_allclose(np.sum(w), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.sum(w * u), mean, atol=1e-12 * max(1, abs(mean)))
    np.testing.assert_allclose(np.sum(w * (u - mean) ** 4), 3 * std**4, rtol=1e-10)
    # A step at a breakpoint is integrated exactly: P(u > 0.3) = Phi((mean - 0.3) / std).
    expected = 0.5 * math.erfc((0.3 - mean) / (std * math.sqrt(2)))
    np.testing.assert_allclose(np.sum(w * (u > 0.3)), expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("q", [0.05, 1.0, 100.0, 1e4])
def test_tanh_moments_against_dense_numpy_integral(q):
    """Large q is where a plain Gauss-Hermite rule fails (58 % off at q = 100)."""
    u = np.linspace(-40, 40, 800_001)  # tanh'^2 < 1e-33 beyond |u| = 40
    dens = _pdf(u / math.sqrt(q)) / math.sqrt(q)
    sech2 = 1 - np.tanh(u) ** 2
    ref_dphi = np.trapezoid(sech2**2 * dens, u)
    ref_phi = 1 - np.trapezoid(sech2 * dens, u)
    m = gaussian.moments("tanh", q)
    np.testing.assert_allclose(m.dphi_sq, ref_dphi, rtol=2e-6)
    np.testing.assert_allclose(m.phi_sq, ref_phi, rtol=2e-6)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "softplus", "silu"])
def test_smooth_activations_agree_with_gauss_hermite_at_small_q(activation):
    import jax.numpy as jnp

    from gradjax.nn.activations import derivative, get_activation

    z, w = hermegauss(200)
    w = w / w.sum()
    fn = get_activation(activation)
    for q in (0.1, 1.0, 2.0):
        u = jnp.asarray(math.sqrt(q) * z, jnp.float32)
        phi, dphi = np.asarray(fn(u), np.float64), np.asarray(derivative(fn, u), np.float64)
        m = gaussian.moments(activation, q)
        np.testing.assert_allclose(m.phi_sq, np.sum(w * phi**2), rtol=1e-6)
        np.testing.assert_allclose(m.dphi_sq, np.sum(w * dphi**2), rtol=1e-6)


def test_hard_tanh_kinks_against_closed_form():
    for q in (0.3, 1.0, 5.0):
        a = 1 / math.sqrt(q)
        inside = math.erf(a / math.sqrt(2))  # P(|u| < 1)
        m = gaussian.moments("hard_tanh", q)
        np.testing.assert_allclose(m.dphi_sq, inside, rtol=1e-6)
        np.testing.assert_allclose(
            m.phi_sq, q * (inside - 2 * a * _pdf(a)) + 1 - inside, rtol=1e-6
        )


@pytest.mark.parametrize("activation", ["tanh", "selu", "soft_sign", "elu"])
def test_moments_against_monte_carlo(activation):
    """Also checks the slope E[z phi phi'] / sqrt(q) = d/dq E[phi^2] by a finite difference."""
    fn = {
        "tanh": np.tanh,
        "selu": lambda u: 1.0507009873554805
        * np.where(u > 0, u, 1.6732632423543772 * np.expm1(np.minimum(u, 0))),
        "soft_sign": lambda u: u / (1 + np.abs(u)),
        "elu": lambda u: np.where(u > 0, u, np.expm1(np.minimum(u, 0))),
    }[activation]
    q, h, du = 1.3, 1e-3, 1e-6
    u = math.sqrt(q) * Z[0]
    phi_sq, err = _mc(fn(u) ** 2)
    dphi_sq, derr = _mc(((fn(u + du) - fn(u - du)) / (2 * du)) ** 2)
    m = gaussian.moments(activation, q)
    assert abs(m.phi_sq - phi_sq) < 5 * err
    assert abs(m.dphi_sq - dphi_sq) < 5 * derr + 1e-5
    up, down = gaussian.moments(activation, [q * (1 + h), q * (1 - h)]).phi_sq
    np.testing.assert_allclose(m.slope, (up - down) / (2 * q * h), rtol=1e-4)


def test_pair_moments_against_monte_carlo_and_arc_cosine():
    q, c = 0.8, 0.6
    u1 = math.sqrt(q) * Z[0]
    u2 = math.sqrt(q) * (c * Z[0] + math.sqrt(1 - c * c) * Z[1])
    phi, dphi = gaussian.pair_moments("tanh", q, c)
    mc, err = _mc(np.tanh(u1) * np.tanh(u2))
    assert abs(phi - mc) < 5 * err
    mc, err = _mc((1 - np.tanh(u1) ** 2) * (1 - np.tanh(u2) ** 2))
    assert abs(dphi - mc) < 5 * err
    for activation, slope in (("relu", 0.0), ("leaky_relu", 0.2)):
        phi, dphi = gaussian.pair_moments(activation, q, c, leaky_slope=slope)
        f = np.where(u1 > 0, u1, slope * u1) * np.where(u2 > 0, u2, slope * u2)
        mc, err = _mc(f)
        assert abs(phi - mc) < 5 * err
        mc, err = _mc(np.where(u1 > 0, 1, slope) * np.where(u2 > 0, 1, slope))
        assert abs(dphi - mc) < 5 * err


# --------------------------------------------------------------------------- fixed points


@pytest.mark.parametrize("sigma_w2, sigma_b2", [(0.5, 0.05), (1.0, 0.05), (1.9, 0.3), (1.2, 0.0)])
def test_relu_closed_forms(sigma_w2, sigma_b2):
    mf = theory.mean_field("relu", sigma_w2, sigma_b2)
    assert mf.chi1 == pytest.approx(sigma_w2 / 2)
    assert mf.q_star == pytest.approx(sigma_b2 / (1 - sigma_w2 / 2), abs=1e-12)
    assert mf.xi_grad == pytest.approx(-1 / math.log(sigma_w2 / 2))
    assert mf.c_star == 1.0 and mf.xi_c == pytest.approx(mf.xi_grad)


def test_relu_diverges_at_and_above_two():
    assert theory.fixed_point_q("relu", 2.0, 0.05) == math.inf
    assert theory.fixed_point_q("relu", 3.0, 0.0) == math.inf
    assert theory.fixed_point_q("relu", 2.0, 0.0, q0=0.7) == 0.7  # marginal: every q is fixed
    mf = theory.mean_field("relu", 3.0, 0.05)
    assert mf.chi1 == pytest.approx(1.5) and mf.xi_grad < 0 and math.isnan(mf.xi_q)
    assert theory.fixed_point_q("linear", 1.5, 0.05) == math.inf


def _numpy_length_map(q, sigma_w2, sigma_b2):
    z = np.linspace(-12, 12, 4001)
    return sigma_w2 * np.trapezoid(np.tanh(math.sqrt(q) * z) ** 2 * _pdf(z), z) + sigma_b2


@pytest.mark.parametrize("sigma_w2", [0.5, 1.5, 3.0])
def test_tanh_fixed_point_matches_plain_iteration(sigma_w2):
    q = 1.0
    for _ in range(300):
        q = _numpy_length_map(q, sigma_w2, 0.05)
    assert theory.fixed_point_q("tanh", sigma_w2, 0.05) == pytest.approx(q, rel=1e-6)


def test_tanh_without_bias_goes_to_zero_in_the_ordered_phase():
    assert theory.fixed_point_q("tanh", 0.8, 0.0) == 0.0
    assert theory.fixed_point_q("tanh", 2.0, 0.0) > 0.5
    mf = theory.mean_field("tanh", 0.8, 0.0)
    assert mf.chi1 == pytest.approx(0.8, rel=1e-6)  # sigma_w^2 tanh'(0)^2


def test_depth_scales_and_phases_for_tanh():
    ordered = theory.mean_field("tanh", 1.5, 0.05)
    assert ordered.chi1 < 1 and ordered.c_star == 1.0
    assert ordered.xi_c == pytest.approx(ordered.xi_grad)  # Schoenholz: equal in the ordered phase
    slope = math.exp(-1 / ordered.xi_q)
    q = ordered.q_star
    finite_difference = (_numpy_length_map(q * 1.001, 1.5, 0.05) - _numpy_length_map(
        q * 0.999, 1.5, 0.05)) / (0.002 * q)
    assert slope == pytest.approx(finite_difference, rel=1e-4)

    chaotic = theory.mean_field("tanh", 3.0, 0.05)
    assert chaotic.chi1 > 1 > chaotic.chi_c and 0 < chaotic.c_star < 1
    assert chaotic.xi_grad < 0 < chaotic.xi_c
    # c* is a fixed point of the correlation map, checked by Monte Carlo.
    c, q = chaotic.c_star, chaotic.q_star
    u1 = math.sqrt(q) * Z[0]
    u2 = math.sqrt(q) * (c * Z[0] + math.sqrt(1 - c * c) * Z[1])
    mc, err = _mc(3.0 * np.tanh(u1) * np.tanh(u2) / q)
    assert abs(mc + 0.05 / q - c) < 5 * err


@pytest.mark.parametrize("sigma_b2", [0.05, 0.3])
def test_tanh_critical_line_has_chi1_one_by_numpy_quadrature(sigma_b2):
    """At the returned sigma_w^2, q* from the plain numpy iteration of the length map gives
    sigma_w^2 E[tanh'(sqrt(q*) z)^2] = 1 by Gauss-Hermite quadrature."""
    sigma_w2 = theory.critical_sigma_w2("tanh", sigma_b2)
    q = 1.0
    for _ in range(500):  # with sigma_b > 0 the length map converges geometrically
        q = _numpy_length_map(q, sigma_w2, sigma_b2)
    z, w = hermegauss(200)
    chi1 = sigma_w2 * np.sum(w * np.cosh(math.sqrt(q) * z) ** -4) / math.sqrt(2 * math.pi)
    assert chi1 == pytest.approx(1.0, abs=2e-4)
    if sigma_b2 == 0.05:
        assert sigma_w2 == pytest.approx(1.76, abs=0.005)


def test_relu_critical_line_is_two_and_none_outside_the_bracket():
    assert theory.critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, rel=1e-9)
    assert theory.critical_sigma_w2("relu", 0.3) == pytest.approx(2.0, rel=1e-9)
    assert math.isnan(theory.critical_sigma_w2("relu", 0.0, low=2.5, high=4.0))


# --------------------------------------------------------------------------- fits and columns


def test_fit_chi1_uses_the_middle_layers_only():
    layers = np.arange(1, 32)
    values = 0.8 ** (-layers.astype(float)) * 3.0
    values[:7] *= RNG.uniform(0.1, 10, 7)  # the first and last quarter are not fitted
    values[-7:] *= RNG.uniform(0.1, 10, 7)
    assert theory.fit_chi1(layers, values) == pytest.approx(0.8, rel=1e-12)
    assert list(theory.middle_layers(31)) == list(range(8, 25))
    values[7:-7] = 0.0  # log(0): nothing left to fit
    assert math.isnan(theory.fit_chi1(layers, values))


def _cell(depth=12, **options):
    base = dict(
        cell=0, activation="tanh", leaky_slope=0.01, init="fan_in_normal", scale=math.sqrt(1.5),
        bias_init="normal", bias_scale=math.sqrt(0.05), depth=depth, width=64, in_dim=64,
        out_dim=1, norm="none", inputs="gaussian",
    )
    base.update(options)
    rows = [
        {**base, "layer": l, "param": p, "grad_sq_norm_mean": 0.9 ** (-l)}
        for l in range(1, depth + 2) for p in ("W", "b")
    ]
    return pd.DataFrame(rows)


def test_add_theory_columns_for_relu():
    out = add_theory_columns(_cell(activation="relu", scale=1.0, inputs=None))
    assert out["theory_q_star"].iloc[0] == pytest.approx(0.1)  # 0.05 / (1 - 1/2)
    assert out["theory_chi1"].iloc[0] == pytest.approx(0.5)
    w = out[out["param"] == "W"].set_index("layer")["theory_grad_ratio"]
    b = out[out["param"] == "b"].set_index("layer")["theory_grad_ratio"]
    assert math.isnan(w[1])  # |x|^2 unknown
    np.testing.assert_allclose(w.loc[2:12], 0.5)
    np.testing.assert_allclose(b.loc[1:12], 0.5)
    assert math.isnan(w[13]) and math.isnan(b[13])
    np.testing.assert_allclose(out["measured_chi1"], 0.9)
    assert len(out) == 26 and list(out.columns[:16]) == list(_cell().columns)
    assert list(out.columns[16:]) == list(THEORY_COLUMNS)


def test_fixed_inputs_set_the_first_layer():
    """Fixed inputs arrive as the sweep's JSON rows; their mean square sets q^1."""
    x = [[0.5, -0.7] * 32]
    out = add_theory_columns(_cell(activation="relu", scale=1.0, inputs=json.dumps(x)))
    w = out[out["param"] == "W"].set_index("layer")["theory_grad_ratio"]
    q1 = 1.0 * np.mean(np.square(x)) + 0.05
    h1 = 64 * q1 / 2  # E|h^1|^2 = n_1 E[relu(sqrt(q1) z)^2]
    assert w[1] == pytest.approx(0.5 * 64 * np.mean(np.square(x)) / h1)


def test_add_theory_columns_transient_for_gaussian_inputs():
    out = add_theory_columns(_cell(depth=40))
    w = out[out["param"] == "W"].set_index("layer")["theory_grad_ratio"]
    chi1 = out["theory_chi1"].iloc[0]
    q1 = 1.5 + 0.05  # sigma_w^2 E[x^2] + sigma_b^2
    assert w[1] == pytest.approx(
        1.5 * gaussian.moments("tanh", q1).dphi_sq / gaussian.moments("tanh", q1).phi_sq, rel=1e-9
    )
    assert abs(w[1] / chi1 - 1) > 0.2 and w[35] == pytest.approx(chi1, rel=1e-4)
    # the fit window (layers 11..31) is past the transient: the predicted fit is chi1
    assert out["theory_fit_chi1"].iloc[0] == pytest.approx(chi1, rel=1e-3)


def test_theory_fit_chi1_holds_the_transient_and_divergence():
    """ReLU at sigma_w^2 = 0.35, depth 10: q^l falls from 0.36 to 0.012 over the fit window,
    so the predicted per-layer factor there exceeds chi1 = 0.175; at sigma_w^2 = 6, q^l
    explodes and |h|^2 grows as fast as |delta|^2 shrinks: E|grad W|^2 is flat (factor 1)."""
    ordered = add_theory_columns(
        _cell(depth=10, activation="relu", scale=math.sqrt(0.35), bias_scale=0.1))
    assert ordered["theory_chi1"].iloc[0] == pytest.approx(0.175)
    q = [0.35 + 0.01]  # ReLU by hand: q^{l+1} = 0.35 q^l / 2 + 0.01, |h^l|^2 = n q^l / 2
    for _ in range(9):
        q.append(0.175 * q[-1] + 0.01)
    h_sq = np.array([2.0, *q]) / 2  # |h^0|^2 / n = E[x^2] = 1
    log_grad = np.concatenate([np.cumsum(np.log(0.175 * h_sq[:-1] / h_sq[1:])[::-1])[::-1], [0]])
    by_hand = math.exp(-np.polyfit(np.arange(3, 10), log_grad[2:9], 1)[0])  # layers 3..9
    assert ordered["theory_fit_chi1"].iloc[0] == pytest.approx(by_hand, rel=1e-9)
    assert by_hand > 1.2 * 0.175
    exploding = add_theory_columns(
        _cell(depth=10, activation="relu", scale=math.sqrt(6.0), bias_scale=0.1))
    assert exploding["theory_q_star"].iloc[0] == math.inf
    assert exploding["theory_chi1"].iloc[0] == pytest.approx(3.0)
    assert exploding["theory_fit_chi1"].iloc[0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    "options",
    [{"init": "he_normal"}, {"norm": "layernorm"}, {"bias_init": "constant"}],
)
def test_theory_is_nan_outside_the_mean_field_model(options):
    out = add_theory_columns(_cell(**options))
    for column in THEORY_COLUMNS[:-1]:
        assert out[column].isna().all(), column
    np.testing.assert_allclose(out["measured_chi1"], 0.9)  # a measurement is still a measurement


@pytest.mark.parametrize("inputs", ["gaussian", None, json.dumps([[0.5, -0.7] * 32])])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_depth_zero_has_the_cell_values_and_no_layer_ratio(activation, inputs):
    """Depth 0 (the output layer only; an IndexError before): q*, chi1 and the depth scales
    depend on (activation, sigma_w, sigma_b, q^1), not on depth, so they read as at depth 1;
    the one layer is the output layer, whose ratio is NaN, and there is nothing to fit."""
    shallow = add_theory_columns(_cell(depth=0, activation=activation, inputs=inputs))
    deeper = add_theory_columns(_cell(depth=1, activation=activation, inputs=inputs))
    assert len(shallow) == 2 and list(shallow.columns) == list(deeper.columns)
    for column in THEORY_COLUMNS[:5]:
        assert shallow[column].nunique() == 1, column
        assert shallow[column].iloc[0] == deeper[column].iloc[0], column
        assert math.isfinite(shallow[column].iloc[0]), column
    for column in ("theory_grad_ratio", "theory_fit_chi1", "measured_chi1"):
        assert shallow[column].isna().all(), column
    profile = theory.layer_profile(activation, 1.5, 0.05, (64, 1), input_sq_mean=1.0)
    for values in (profile.q, profile.weight_ratio, profile.bias_ratio):
        assert values.shape == (1,) and np.isnan(values).all()
    assert gaussian.moments(activation, []).phi_sq.shape == (0,)


@pytest.mark.parametrize("depth", [0, 1])
@pytest.mark.parametrize("init", sorted(set(WEIGHT_INITS) - {"fan_in_normal"}))
def test_shallow_cells_outside_the_model_are_nan(init, depth):
    out = add_theory_columns(_cell(depth=depth, init=init))
    assert len(out) == 2 * (depth + 1)
    assert out[list(THEORY_COLUMNS)].isna().all().all()  # too shallow to fit, too


@pytest.mark.integration  # a whole run of a sweep
def test_a_depth_zero_sweep_runs_and_summarises(tmp_path):
    """End to end: the engine writes the summary (with the theory columns) of a depth-0
    fan_in_normal cell, which raised IndexError before."""
    from conftest import tiny_sweep_text

    from gradjax.results import reading
    from gradjax.run import engine
    from gradjax.sweep import parse_sweep

    text = tiny_sweep_text(
        defaults={"depth": 0, "init": "fan_in_normal", "bias_scale": 0.1}, grid={"scale": [1.0]}
    )
    engine.execute_sweep(parse_sweep(text, "depth0.toml"), tmp_path / "out", quiet=True, devices=1)
    summary = reading.load(tmp_path / "out")
    assert set(summary["layer"]) == {1} and set(summary["param"]) == {"W", "b"}
    assert summary["theory_chi1"].iloc[0] == pytest.approx(0.5)  # relu: sigma_w^2 / 2
    assert summary["theory_q_star"].iloc[0] == pytest.approx(0.02)  # 0.01 / (1 - 1/2)
    assert summary["theory_grad_ratio"].isna().all()


def test_add_theory_columns_wants_one_cell():
    with pytest.raises(ValueError, match="one cell"):
        add_theory_columns(pd.concat([_cell(), _cell(scale=2.0)]))


# --------------------------------------------------------------------------- against gradjax

SIGMA_W2 = (0.5, 1.5, 3.0)
DEPTH, WIDTH, SEEDS = 30, 256, 48


@pytest.fixture(scope="session")  # module scope would compute it again each time xdist
def tanh_measurements():               # interleaves another module's tests with this group
    """gradjax's probe on tanh MLPs, depth 30 x width 256, sigma_b^2 = 0.05, batch 1: the
    per-layer seed means, as one summary frame per sigma_w^2 (the sweep's summary schema)."""
    spec = ProbeSpec(
        sizes=(WIDTH, *([WIDTH] * DEPTH), 1), activation="tanh", init="fan_in_normal",
        bias_init="normal", inputs="gaussian", targets="gaussian", batch=1,
        structural_zeros=False,
    )
    points = make_points(
        spec, scales=np.sqrt(SIGMA_W2), bias_scales=[math.sqrt(0.05)] * len(SIGMA_W2)
    )
    grads, preact = [], []
    # XLA's default optimization level (the suite compiles at -O0): this program's run, not
    # its compile, is what takes time here
    for _, stats, _ in run_seeds(spec, points, np.arange(SEEDS), chunk=16,
                                 compiler_options={"xla_backend_optimization_level": 2}):
        grads.append(stats["grad_sq_norm"])
        preact.append(stats["preact_var"])
    grad_mean = np.concatenate(grads).mean(0)  # [P, layers, 2]
    preact_mean = np.concatenate(preact).mean(0)  # [P, layers]
    frames = []
    for p, sigma_w2 in enumerate(SIGMA_W2):
        rows = [
            dict(
                cell=p, activation="tanh", leaky_slope=0.01, init="fan_in_normal",
                scale=math.sqrt(sigma_w2), bias_init="normal", bias_scale=math.sqrt(0.05),
                depth=DEPTH, width=WIDTH, in_dim=WIDTH, out_dim=1, norm="none",
                inputs="gaussian", layer=l + 1, param=name,
                grad_sq_norm_mean=grad_mean[p, l, k], preact_var_mean=preact_mean[p, l],
            )
            for l in range(DEPTH + 1) for k, name in enumerate(("W", "b"))
        ]
        frames.append(add_theory_columns(pd.DataFrame(rows)))
    return frames


@pytest.mark.xdist_group("tanh_measurements")  # one worker computes the fixture once
@pytest.mark.parametrize("p", range(len(SIGMA_W2)))
def test_measured_chi1_within_3_percent_of_theory(tanh_measurements, p):
    frame = tanh_measurements[p]
    measured, predicted = frame["measured_chi1"].iloc[0], frame["theory_chi1"].iloc[0]
    assert abs(measured / predicted - 1) < 0.03, (SIGMA_W2[p], measured, predicted)
    # the fit window (layers 8..24) is past the input transient
    assert frame["theory_fit_chi1"].iloc[0] == pytest.approx(predicted, rel=2e-3)


@pytest.mark.xdist_group("tanh_measurements")  # one worker computes the fixture once
@pytest.mark.parametrize("p", range(len(SIGMA_W2)))
def test_hidden_preactivation_variance_is_q_star(tanh_measurements, p):
    frame = tanh_measurements[p]
    hidden = frame[(frame["param"] == "W") & frame["layer"].between(8, DEPTH)]
    measured = hidden["preact_var_mean"].mean()
    assert measured == pytest.approx(frame["theory_q_star"].iloc[0], rel=0.03)


@pytest.mark.xdist_group("tanh_measurements")  # one worker computes the fixture once
@pytest.mark.parametrize("p", range(len(SIGMA_W2)))
def test_whole_gradient_profile_follows_the_predicted_ratios(tanh_measurements, p):
    """Every layer, the input transient included: ln E|grad W^l|^2 spans ~25 (sigma_w^2 = 0.5)
    and the prediction, up to a constant, stays within 0.35 of it."""
    w = tanh_measurements[p][tanh_measurements[p]["param"] == "W"].sort_values("layer")
    ratios = w["theory_grad_ratio"].to_numpy()[:-1]
    predicted = np.concatenate([np.cumsum(np.log(ratios)[::-1])[::-1], [0.0]])
    gap = np.log(w["grad_sq_norm_mean"].to_numpy()) - predicted
    assert np.max(np.abs(gap - gap.mean())) < 0.35
