"""The torch peer `gradjax bench` measures against: `torch_func`, what a torch user would write.

The loss of one init, with autodiff (`torch.func.grad_and_value`, w.r.t. the parameters and a
zero shift of each pre-activation, whose gradient is dL/dz), `torch.func.vmap`-ed over a chunk
of inits, and the statistics ported to batched torch ops (`grad_stats_torch`), so that all the
work after the draw runs in torch, on its intra-op threads, as all of gradjax's runs in XLA.
Float32, CPU. torch is imported only when this peer runs (`import_torch`); gradjax does not
need it.

`torch_func` takes the same draws as `numpy_vec` for the same seed and chunk (those of
`gradjax.bench.numpy_peer`, shared with torch without a copy), so the two give the same
statistics to float32 rounding (tests/test_baselines.py), and it supports the same networks
(`numpy_peer.check_supported`). Everything that touches torch lives here, apart from the numpy
peers, which need none of it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gradjax.bench.numpy_peer import (
    F32,
    MAX_DERIVATIVE,
    Stats,
    check_supported,
    draw_data,
    draw_unit_params,
    per_layer_lists,
    point_data,
    point_list,
)
from gradjax.spec import SATURATION, ProbeSpec

TORCH_MISSING = "torch is not installed (pip install 'gradjax[torch]')"


def import_torch():
    """`torch`, imported on first use only (gradjax itself never needs it).

    Raises ImportError with the install hint `TORCH_MISSING` when torch is absent, and with
    torch's own message when it is present but fails to import."""
    try:
        import torch
        import torch.func  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] == "torch":
            raise ImportError(TORCH_MISSING) from err
        raise ImportError(f"torch failed to import: {err}") from err
    except ImportError as err:
        raise ImportError(f"torch failed to import: {err}") from err
    return torch


def _as_torch(torch, a):
    """A float32 CPU tensor of a numpy array (shared memory when the array is writable)."""
    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.require(a, F32, "W"))


def _phi_torch(torch, name: str, z):
    """phi(z) inside the differentiated function (torch's own ops and derivatives)."""
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return torch.relu(z)
    if name == "linear":
        return z
    raise ValueError(f"unsupported activation {name!r}")


def _dphi_torch(name: str, z, h):
    """phi'(z) from z and h = phi(z), as the numpy peers compute it."""
    if name == "sigmoid":
        return h * (1 - h)
    if name == "tanh":
        return (1 + h) * (1 - h)
    if name == "relu":
        return (z > 0).to(z.dtype)
    return z.new_ones(z.shape)  # linear


def _mean_torch(a, k: int):
    return a.mean(dim=tuple(range(-k, 0)))


def tensor_stats_torch(torch, g, k: int) -> dict:
    """`tensor_stats_np` in torch: statistics over the last k axes of g (ddof 0)."""
    dims = tuple(range(-k, 0))
    f = g.dtype
    absg = g.abs()
    mean = g.mean(dim=dims)
    var = (g - mean[(..., *(None,) * k)]).square().mean(dim=dims)
    mean_abs = absg.mean(dim=dims)
    zero = g == 0
    live_mean = mean_abs > 0
    return {
        "grad_mean": mean,
        "grad_var": var,
        "grad_sq_norm": g.square().sum(dim=dims),
        "grad_max_abs": absg.amax(dim=dims),
        "grad_mean_abs": mean_abs,
        "grad_cv": torch.where(
            live_mean, var.sqrt() / torch.where(live_mean, mean_abs, 1.0), float("nan")
        ),
        "grad_frac_zero": zero.to(f).mean(dim=dims),
        "grad_frac_subnormal": (~zero & (absg < torch.finfo(f).tiny)).to(f).mean(dim=dims),
        "grad_nonfinite": (~torch.isfinite(g)).sum(dim=dims).to(f),
    }


def unit_cos_sq_torch(torch, g_w):
    """`unit_cos_sq_np` in torch (columns of g_w [..., fan_in, fan_out])."""
    norms = g_w.square().sum(dim=-2).sqrt()
    alive = norms > 0
    u = g_w / torch.where(alive, norms, 1.0)[..., None, :]
    m = alive.sum(dim=-1).to(g_w.dtype)
    ut = u.transpose(-1, -2)
    gram = u @ ut if u.shape[-2] <= u.shape[-1] else ut @ u
    pairs = gram.square().sum(dim=(-2, -1)) - u.square().sum(dim=-2).square().sum(dim=-1)
    two = m >= 2
    mean = (pairs / torch.where(two, m * (m - 1), 1.0)).clamp(0, 1)
    return torch.where(two, mean, float("nan"))


def _liveness_torch(params, inputs, dphis, d_out):
    """The numpy peers' structural liveness in torch: the boolean replay of backprop, as float
    matmuls."""
    reach = d_out != 0
    live = []
    for l in range(len(params) - 1, -1, -1):
        f = params[l]["W"].dtype
        w_live = ((inputs[l] != 0).to(f).transpose(-1, -2) @ reach.to(f)) > 0
        live.append((w_live, reach.any(dim=-2)))
        if l > 0:
            nonzero_w = (params[l]["W"] != 0).to(f)
            back = (reach.to(f) @ nonzero_w.transpose(-1, -2)) > 0
            reach = back & (dphis[l - 1] != 0)
    return live[::-1]


def _param_stats_torch(torch, g, live, is_weight: bool) -> dict:
    k = 2 if is_weight else 1
    out = tensor_stats_torch(torch, g, k)
    lead = g.shape[:-k]
    nan = g.new_full(lead, float("nan"))
    out["grad_frac_underflow"] = (
        nan if live is None else _mean_torch(((g == 0) & live).to(g.dtype), k)
    )
    out["grad_unit_cos_sq"] = unit_cos_sq_torch(torch, g) if is_weight else nan
    return out


def _layer_stats_torch(z, dphi, max_deriv: float) -> dict:
    mean = _mean_torch(z, 2)
    f = z.dtype
    return {
        "preact_mean": mean,
        "preact_var": _mean_torch((z - mean[..., None, None]).square(), 2),
        "act_frac_dead": (dphi == 0).all(dim=-2).to(f).mean(dim=-1),
        "act_frac_saturated": (dphi.abs() < SATURATION * max_deriv).all(dim=-2).to(f).mean(dim=-1),
        "act_deriv_mean": _mean_torch(dphi, 2),
    }


def _torch_backprop(torch, activation: str, output_activation: str, x_batched: bool,
                    y_batched: bool):
    """vmap(grad_and_value(loss)) over a leading init axis of the parameters (and of x / y when
    they are drawn per init). The loss is differentiated w.r.t. the parameters and a zero shift
    of every pre-activation, whose gradient is dL/dz (the deltas), as gradjax does in JAX."""

    def loss(params, shifts, x, y):
        h, hidden, preacts = x, [], []
        for l, (layer, shift) in enumerate(zip(params, shifts, strict=True)):
            z = h @ layer["W"] + layer["b"] + shift
            if l == len(params) - 1:
                break
            h = _phi_torch(torch, activation, z)
            preacts.append(z)
            hidden.append(h)
        out = _phi_torch(torch, output_activation, z)
        value = 0.5 * torch.mean(torch.sum(torch.square(out - y), dim=-1))
        return value, (hidden, preacts, z, out)

    step = torch.func.grad_and_value(loss, argnums=(0, 1), has_aux=True)
    return torch.func.vmap(step, in_dims=(0, None, 0 if x_batched else None,
                                          0 if y_batched else None))


def grad_stats_torch(
    params,
    x,
    y,
    *,
    activation: str,
    output_activation: str = "linear",
    structural_zeros: bool = True,
) -> Stats:
    """`grad_stats_np` with torch.func autodiff and the statistics in torch, float32 on CPU.

    params carry exactly one leading init axis (W [n, fan_in, fan_out], b [n, fan_out]); x is
    [n, batch, in_dim] or [batch, in_dim], y likewise. Arrays may be numpy arrays or torch
    tensors. Returns numpy arrays laid out like `grad_stats_np`'s: [n, layers, 2] / [n, layers].
    """
    torch = import_torch()
    params = [{k: _as_torch(torch, v) for k, v in layer.items()} for layer in params]
    x, y = _as_torch(torch, x), _as_torch(torch, y)
    batch = x.shape[-2]
    shifts = [x.new_zeros(batch, layer["b"].shape[-1]) for layer in params]
    backprop = _torch_backprop(torch, activation, output_activation, x.dim() == 3, y.dim() == 3)
    (grads, deltas), (loss, (hidden, preacts, logits, out)) = backprop(params, shifts, x, y)
    dphis = [_dphi_torch(activation, z, h) for z, h in zip(preacts, hidden, strict=True)]
    inputs = [x, *hidden]
    d_out = _dphi_torch(output_activation, logits, out)
    live = (
        _liveness_torch(params, inputs, dphis, d_out)
        if structural_zeros
        else [(None, None)] * len(params)
    )
    lead = loss.shape
    per_param, per_layer = per_layer_lists(
        grads, live, [d.square().sum(dim=-1).mean(dim=-1) for d in deltas],
        lambda g, lv, is_weight: _param_stats_torch(torch, g, lv, is_weight),
        lambda l: _layer_stats_torch(preacts[l], dphis[l], MAX_DERIVATIVE[activation]),
        len(preacts), loss.new_full(lead, float("nan")),
    )
    n_layers = len(params)
    stats = {
        k: torch.stack(v, dim=-1).reshape(*lead, n_layers, 2) for k, v in per_param.items()
    }
    stats.update({k: torch.stack(v, dim=-1) for k, v in per_layer.items()})
    stats["loss_value"] = loss
    return {k: v.numpy() for k, v in stats.items()}


def torch_func(
    spec: ProbeSpec, n_inits: int, scales, bias_scales, xs=None, ys=None, *, chunk: int = 1024,
    seed: int = 0,
) -> Iterator[Stats]:
    """`numpy_vec` with torch.func: vmap(grad) over chunks of inits, statistics in torch.

    The same draws as `numpy_vec` for the same seed and chunk (numpy's generator, then shared
    with torch), so the two yield the same statistics to float32 rounding. Each point rescales
    the unit draws in torch. Arguments and the yielded layout [c, P, ...] as `numpy_vec`.
    """
    torch = import_torch()
    check_supported(spec)
    points = point_list(scales, bias_scales, xs, ys)
    rng = np.random.default_rng(seed)
    batch, in_dim, out_dim = spec.batch, spec.sizes[0], spec.sizes[-1]
    for start in range(0, n_inits, chunk):
        n = (min(chunk, n_inits - start),)
        raw = [{k: _as_torch(torch, v) for k, v in layer.items()}
               for layer in draw_unit_params(rng, spec, n)]
        drawn = draw_data(rng, spec, n)
        per_point = []
        for scale, bias_scale, x, y in points:
            params = [{"W": p["W"] * float(F32(scale)), "b": p["b"] * float(F32(bias_scale))}
                      for p in raw]
            per_point.append(grad_stats_torch(
                params, point_data(x, drawn[0], batch, in_dim),
                point_data(y, drawn[1], batch, out_dim),
                activation=spec.activation, output_activation=spec.output_activation,
                structural_zeros=spec.structural_zeros,
            ))
        yield {k: np.stack([p[k] for p in per_point], axis=1) for k in per_point[0]}
