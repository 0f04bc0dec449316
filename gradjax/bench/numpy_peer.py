"""The numpy peers `gradjax bench` measures against: hand-written numpy backprop, the same
statistics as gradjax.

One rank-polymorphic implementation, `grad_stats_np`, computes every per-init statistic of
`gradjax.probe.mlp_probe.grad_stats` (PARAM_STATS as [..., layers, 2], LAYER_STATS as [..., layers],
`loss_value`) with plain numpy and hand-written backprop. Arrays may carry any leading "init"
axes: W is [..., fan_in, fan_out], b [..., fan_out], x [..., batch, in_dim]. It is run two ways:

  numpy_loop: the seed's style, a Python loop over inits, each drawn and probed alone (2-D
              arrays, small matmuls; Python overhead per init).
  numpy_vec:  vectorized over a chunk of inits, every matmul batched over a leading init axis.
              This is the strongest CPU peer without an autodiff framework.

Both draw their own parameters with `np.random.default_rng` (float32), so their random numbers
differ from gradjax's (which uses `jax.random`); the statistics are the same functions of the
parameters, which tests/test_baselines.py checks against `gradjax.grad_stats` on shared draws.
Like gradjax, each init is drawn once at unit scale and rescaled for every point (scale,
bias_scale, fixed x, fixed y), and Gaussian inputs / targets are drawn once per init.

The torch peer (`gradjax.bench.torch_peer`) shares this module's draws (`draw_unit_params`,
`draw_data`), points (`point_list`, `point_data`), per-layer assembly (`per_layer_lists`) and
supported networks (`check_supported`), so that it takes the same draws as `numpy_vec` and
computes the same statistics; torch itself is never imported here.

Supported (numpy and torch peers): activations sigmoid / tanh / relu; output activation linear /
sigmoid; MSE loss 0.5 * mean_batch sum_out (yhat - y)^2; no normalization; weight inits `normal`
(N(0, scale^2), the seed's `randn * scale`) and `fan_in_normal` (N(0, scale^2 / fan_in), LeCun
/ He scaling at scale 1 / sqrt(2)); bias inits `normal` and `zeros`; fixed or Gaussian inputs
and fixed or Gaussian targets.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gradjax.spec import LAYER_STATS, PARAM_STATS, SATURATION, ProbeSpec

ACTIVATIONS: tuple[str, ...] = ("sigmoid", "tanh", "relu")
OUTPUT_ACTIVATIONS: tuple[str, ...] = ("linear", "sigmoid")
WEIGHT_INITS: tuple[str, ...] = ("normal", "fan_in_normal")
BIAS_INITS: tuple[str, ...] = ("normal", "zeros")
MAX_DERIVATIVE: dict[str, float] = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0}
F32 = np.float32

NpParams = list[dict[str, np.ndarray]]
Stats = dict[str, np.ndarray]


def check_supported(spec: ProbeSpec) -> None:
    """Raise ValueError when the baselines (numpy and torch) cannot compute `spec`'s network."""
    allowed = {
        "model": ("mlp",),
        "activation": ACTIVATIONS,
        "output_activation": OUTPUT_ACTIVATIONS,
        "loss": ("mse",),
        "norm": ("none",),
        "init": WEIGHT_INITS,
        "bias_init": BIAS_INITS,
        "dtype": ("float32",),
        "inputs": ("fixed", "gaussian"),
        "targets": ("fixed", "gaussian"),
    }
    for field, values in allowed.items():
        if getattr(spec, field) not in values:
            raise ValueError(
                f"the baselines support {field} in {values}, got {getattr(spec, field)!r}"
            )


def _activation(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(phi(z), phi'(z)) for a hidden or output activation."""
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            s = F32(1) / (F32(1) + np.exp(-z))
        return s, s * (F32(1) - s)
    if name == "tanh":
        t = np.tanh(z)
        return t, (F32(1) + t) * (F32(1) - t)
    if name == "relu":
        return np.maximum(z, F32(0)), (z > 0).astype(F32)
    if name == "linear":
        return z, np.ones_like(z)
    raise ValueError(f"unsupported activation {name!r}")


def _matmul_t(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a^T @ b over the last two axes: [..., n, p], [..., n, q] -> [..., p, q]."""
    return np.swapaxes(a, -1, -2) @ b


def _mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over the last k axes."""
    return np.mean(a, axis=tuple(range(-k, 0)), dtype=F32)


def tensor_stats_np(g: np.ndarray, k: int) -> Stats:
    """`gradjax.probe.stats.tensor_stats` over the last k axes of g (ddof 0)."""
    axes = tuple(range(-k, 0))
    absg = np.abs(g)
    mean = _mean(g, k)
    var = _mean(np.square(g - np.expand_dims(mean, axes)), k)
    mean_abs = _mean(absg, k)
    zero = g == 0
    safe = np.where(mean_abs > 0, mean_abs, F32(1))
    return {
        "grad_mean": mean,
        "grad_var": var,
        "grad_sq_norm": np.sum(np.square(g), axis=axes, dtype=F32),
        "grad_max_abs": np.max(absg, axis=axes),
        "grad_mean_abs": mean_abs,
        "grad_cv": np.where(mean_abs > 0, np.sqrt(var) / safe, F32(np.nan)),
        "grad_frac_zero": _mean(zero.astype(F32), k),
        "grad_frac_subnormal": _mean((~zero & (absg < np.finfo(F32).tiny)).astype(F32), k),
        "grad_nonfinite": np.sum(~np.isfinite(g), axis=axes).astype(F32),
    }


def unit_cos_sq_np(g_w: np.ndarray) -> np.ndarray:
    """Mean squared cosine over pairs of distinct columns of g_w [..., fan_in, fan_out], zero
    columns left out, as |Gram|_F^2 - sum |u|^4 over m (m - 1) ordered pairs, the Gram matrix
    on the smaller side; NaN below two live columns."""
    norms = np.sqrt(np.sum(np.square(g_w), axis=-2))
    alive = norms > 0
    u = g_w / np.where(alive, norms, F32(1))[..., None, :]
    m = np.sum(alive, axis=-1).astype(F32)
    ut = np.swapaxes(u, -1, -2)
    gram = u @ ut if u.shape[-2] <= u.shape[-1] else ut @ u
    diagonal = np.sum(np.square(np.sum(np.square(u), axis=-2)), axis=-1)
    pairs = np.sum(np.square(gram), axis=(-2, -1)) - diagonal
    mean = np.clip(pairs / np.where(m >= 2, m * (m - 1), F32(1)), 0, 1)
    return np.where(m >= 2, mean, F32(np.nan)).astype(F32)


def _forward(params: NpParams, x: np.ndarray, activation: str):
    """Each layer's input, each hidden layer's pre-activation and phi', and the logits."""
    h, inputs, preacts, dphis = x, [], [], []
    for layer in params[:-1]:
        inputs.append(h)
        z = h @ layer["W"] + layer["b"][..., None, :]
        h, dphi = _activation(activation, z)
        preacts.append(z)
        dphis.append(dphi)
    inputs.append(h)
    return inputs, preacts, dphis, h @ params[-1]["W"] + params[-1]["b"][..., None, :]


def _backward(params: NpParams, inputs, dphis, delta: np.ndarray):
    """Hand-written backprop from dL/dz of the output layer: (grads, deltas), per layer."""
    grads, deltas = [], []
    for l in range(len(params) - 1, -1, -1):
        deltas.append(delta)
        grads.append({"W": _matmul_t(inputs[l], delta), "b": np.sum(delta, axis=-2)})
        if l > 0:
            delta = (delta @ np.swapaxes(params[l]["W"], -1, -2)) * dphis[l - 1]
    return grads[::-1], deltas[::-1]


def _liveness(params: NpParams, inputs, dphis, d_out: np.ndarray):
    """`gradjax.probe.liveness.structural_liveness` (no norm): entries not forced to 0 by
    structure."""
    reach = d_out != 0
    live = []
    for l in range(len(params) - 1, -1, -1):
        w_live = _matmul_t((inputs[l] != 0).astype(F32), reach.astype(F32)) > 0
        live.append((w_live, np.any(reach, axis=-2)))
        if l > 0:
            nonzero_w = (params[l]["W"] != 0).astype(F32)
            back = (reach.astype(F32) @ np.swapaxes(nonzero_w, -1, -2)) > 0
            reach = back & (dphis[l - 1] != 0)
    return live[::-1]


def _param_stats(g: np.ndarray, live, is_weight: bool) -> Stats:
    k = 2 if is_weight else 1
    out = tensor_stats_np(g, k)
    lead = g.shape[:-k]
    if live is None:
        out["grad_frac_underflow"] = np.full(lead, np.nan, F32)
    else:
        out["grad_frac_underflow"] = _mean(((g == 0) & live).astype(F32), k)
    out["grad_unit_cos_sq"] = unit_cos_sq_np(g) if is_weight else np.full(lead, np.nan, F32)
    return out


def _layer_stats(z: np.ndarray, dphi: np.ndarray, max_deriv: float) -> Stats:
    mean = _mean(z, 2)
    return {
        "preact_mean": mean,
        "preact_var": _mean(np.square(z - mean[..., None, None]), 2),
        "act_frac_dead": _mean(np.all(dphi == 0, axis=-2).astype(F32), 1),
        "act_frac_saturated": _mean(
            np.all(np.abs(dphi) < F32(SATURATION * max_deriv), axis=-2).astype(F32), 1
        ),
        "act_deriv_mean": _mean(dphi, 2),
    }


def per_layer_lists(grads, live, delta_sq_norms, param_stats, layer_stats, n_hidden, nan):
    """{stat: [value per layer and param]} and {stat: [value per layer]}, for either peer's
    arrays (numpy or torch): `param_stats(g, live, is_weight)`, `layer_stats(l)` for the
    hidden layers l < n_hidden; `nan` fills the output layer's activation statistics."""
    per_param: dict[str, list] = {k: [] for k in PARAM_STATS}
    per_layer: dict[str, list] = {k: [] for k in LAYER_STATS}
    for l, (g, (w_live, b_live)) in enumerate(zip(grads, live, strict=True)):
        for name, lv in (("W", w_live), ("b", b_live)):
            for k, v in param_stats(g[name], lv, name == "W").items():
                per_param[k].append(v)
        per_layer["delta_sq_norm"].append(delta_sq_norms[l])
        hidden = layer_stats(l) if l < n_hidden else {}
        for k in LAYER_STATS[1:]:
            per_layer[k].append(hidden.get(k, nan))
    return per_param, per_layer


def grad_stats_np(
    params: NpParams,
    x: np.ndarray,
    y: np.ndarray,
    *,
    activation: str,
    output_activation: str = "linear",
    structural_zeros: bool = True,
) -> Stats:
    """`gradjax.grad_stats` in numpy, for any leading init axes shared by params, x and y.

    x is [..., batch, in_dim] and y [..., batch, out_dim]; both may omit the leading axes.
    MSE loss, no norm. Returns arrays with the leading axes, then [layers, 2] or [layers].
    """
    inputs, preacts, dphis, logits = _forward(params, x, activation)
    out, d_out = _activation(output_activation, logits)
    err = out - y
    batch = x.shape[-2]
    loss = F32(0.5) * _mean(np.sum(np.square(err), axis=-1), 1)
    grads, deltas = _backward(params, inputs, dphis, err * d_out / F32(batch))
    live = (
        _liveness(params, inputs, dphis, d_out)
        if structural_zeros
        else [(None, None)] * len(params)
    )
    lead = loss.shape
    per_param, per_layer = per_layer_lists(
        grads, live, [_mean(np.sum(np.square(d), axis=-1), 1) for d in deltas],
        lambda g, lv, is_weight: _param_stats(g, lv, is_weight),
        lambda l: _layer_stats(preacts[l], dphis[l], MAX_DERIVATIVE[activation]),
        len(preacts), np.full(lead, np.nan, F32),
    )
    n_layers = len(params)
    stats = {
        k: np.stack(v, axis=-1).reshape(*lead, n_layers, 2) for k, v in per_param.items()
    }
    stats.update({k: np.stack(v, axis=-1) for k, v in per_layer.items()})
    stats["loss_value"] = loss
    return stats


def draw_unit_params(rng: np.random.Generator, spec: ProbeSpec, n: tuple[int, ...]) -> NpParams:
    """Parameters at scale = bias_scale = 1 with leading axes `n` (() for one init), float32."""
    params = []
    for fan_in, fan_out in zip(spec.sizes[:-1], spec.sizes[1:], strict=True):
        w = rng.standard_normal((*n, fan_in, fan_out), dtype=F32)
        if spec.init == "fan_in_normal":
            w *= F32(1 / np.sqrt(fan_in))
        if spec.bias_init == "zeros":
            b = np.zeros((*n, fan_out), F32)
        else:
            b = rng.standard_normal((*n, fan_out), dtype=F32)
        params.append({"W": w, "b": b})
    return params


def scale_params(raw: NpParams, scale: float, bias_scale: float) -> NpParams:
    """W * scale and b * bias_scale (the unit draws are reused for every point)."""
    return [{"W": p["W"] * F32(scale), "b": p["b"] * F32(bias_scale)} for p in raw]


def point_list(scales, bias_scales, xs, ys) -> list[tuple[float, float, object, object]]:
    """The points as (scale, bias_scale, fixed x or None, fixed y or None) tuples."""
    scales, bias_scales = list(scales), list(bias_scales)
    if len(scales) != len(bias_scales):
        raise ValueError("scales and bias_scales must have the same length")
    n = len(scales)
    xs = [None] * n if xs is None else list(xs)
    ys = [None] * n if ys is None else list(ys)
    return list(zip(scales, bias_scales, xs, ys, strict=True))


def draw_data(rng: np.random.Generator, spec: ProbeSpec, n: tuple[int, ...]):
    """The Gaussian inputs / targets of `n` inits (None where the spec fixes them)."""
    in_dim, out_dim = spec.sizes[0], spec.sizes[-1]
    x = y = None
    if spec.inputs == "gaussian":
        x = rng.standard_normal((*n, spec.batch, in_dim), dtype=F32)
    if spec.targets == "gaussian":
        y = rng.standard_normal((*n, spec.batch, out_dim), dtype=F32)
    return x, y


def point_data(value, drawn: np.ndarray | None, rows: int, cols: int) -> np.ndarray:
    """The drawn inputs / targets, or else the point's fixed `value` as a [rows, cols] array."""
    return drawn if drawn is not None else np.asarray(value, F32).reshape(rows, cols)


def _probe_points(spec: ProbeSpec, raw: NpParams, drawn, points) -> list[Stats]:
    """Statistics at every point (scale, bias_scale, fixed x, fixed y) of the same draws."""
    batch, in_dim, out_dim = spec.batch, spec.sizes[0], spec.sizes[-1]
    out = []
    for scale, bias_scale, x, y in points:
        out.append(grad_stats_np(
            scale_params(raw, scale, bias_scale),
            point_data(x, drawn[0], batch, in_dim),
            point_data(y, drawn[1], batch, out_dim),
            activation=spec.activation, output_activation=spec.output_activation,
            structural_zeros=spec.structural_zeros,
        ))
    return out


def numpy_loop(
    spec: ProbeSpec, n_inits: int, scales, bias_scales, xs=None, ys=None, *, seed: int = 0
) -> Iterator[Stats]:
    """The seed's style: a Python loop that draws and probes one init at a time.

    Arguments mirror `gradjax.probe.chunking.make_points` (xs / ys: [P, batch, dim] fixed data, or
    None where the spec draws it per init). Yields each init's statistics with a [P] points axis.
    """
    check_supported(spec)
    points = point_list(scales, bias_scales, xs, ys)
    rng = np.random.default_rng(seed)
    for _ in range(n_inits):
        raw = draw_unit_params(rng, spec, ())
        per_point = _probe_points(spec, raw, draw_data(rng, spec, ()), points)
        yield {k: np.stack([p[k] for p in per_point]) for k in per_point[0]}


def numpy_vec(
    spec: ProbeSpec, n_inits: int, scales, bias_scales, xs=None, ys=None, *, chunk: int = 1024,
    seed: int = 0,
) -> Iterator[Stats]:
    """Vectorized over chunks of inits, every array with a leading init axis.

    Arguments as `numpy_loop`; yields each chunk's statistics as [c, P, ...], the layout of
    `gradjax.probe.programs.run_seeds`.
    """
    check_supported(spec)
    points = point_list(scales, bias_scales, xs, ys)
    rng = np.random.default_rng(seed)
    for start in range(0, n_inits, chunk):
        n = (min(chunk, n_inits - start),)
        raw = draw_unit_params(rng, spec, n)
        per_point = _probe_points(spec, raw, draw_data(rng, spec, n), points)
        yield {k: np.stack([p[k] for p in per_point], axis=1) for k in per_point[0]}


def vec_bytes_per_init(spec: ProbeSpec, points: int = 1) -> int:
    """A rough upper estimate of `numpy_vec`'s working memory per init, in bytes: the unit and
    scaled parameters, gradients and liveness masks (about 6 copies of the parameters), and
    about 10 [batch, width] arrays per layer (pre-activations, activations, phi', deltas,
    reach masks and temporaries), for each point."""
    n_params = sum(a * b + b for a, b in zip(spec.sizes[:-1], spec.sizes[1:], strict=True))
    n_units = spec.batch * sum(spec.sizes)
    return 4 * (n_params * (2 + 4 * points) + 10 * n_units * points)

