"""Telling dead zeros from underflow: the boolean replay of backprop.

An entry of dL/dW is structurally zero when every path from it to the loss passes through a
unit with phi'(u) == 0 (a ReLU off on that example, an exactly-flat saturated unit), a zero
weight or a zero input. Replaying backprop on booleans marks the entries that are *not* forced
to 0; an exact zero in such a live entry is float underflow (or exact cancellation), not a
dead unit. The replay is
cut to what a chunk needs (`underflow_fractions`), and every cut gives the same numbers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gradjax.nn.network import (
    scan_layers,
)
from gradjax.probe import pow2
from gradjax.probe.backprop import Backprop


def _reach_into_z(reach_u: jax.Array, norm: str) -> jax.Array:
    """Which entries of z can receive gradient, given which entries of u = norm(z) do."""
    if norm == "layernorm":
        return jnp.broadcast_to(jnp.any(reach_u, axis=1, keepdims=True), reach_u.shape)
    if norm == "batchnorm":
        return jnp.broadcast_to(jnp.any(reach_u, axis=0, keepdims=True), reach_u.shape)
    return reach_u


def _live_step(reach, layer, norm, weight_masks, w_has_zeros):
    """One layer of the boolean replay of backprop; reach: [batch, fan_out] of z^l.

    Emits (W_live [fan_in, fan_out], b_live [fan_out]), or with `weight_masks=False`
    (rows_live [fan_in], b_live), which bounds W_live by an outer product. With no zero weight
    (`w_has_zeros=False`) a unit below is reached from example b as soon as any unit above
    is, so the backward step needs no matmul.
    """
    h_in, w, below = layer
    f = h_in.dtype
    b_live = jnp.any(reach, axis=0)
    if weight_masks:
        first = ((h_in != 0).astype(f).T @ reach.astype(f)) > 0
    else:
        first = jnp.any(h_in != 0, axis=0)
    if w_has_zeros:
        back = (reach.astype(f) @ (w != 0).astype(f).T) > 0
    else:
        back = jnp.broadcast_to(jnp.any(reach, axis=1, keepdims=True), h_in.shape)
    return _reach_into_z(back & below, norm), (first, b_live)


def structural_liveness(
    stacked, trace, dphis, d_out, norm: str = "none", *, weight_masks: bool = True,
    w_has_zeros: bool = True,
):
    """Per segment, (W_live [k, fan_in, fan_out], b_live [k, fan_out]): gradient entries that are
    *not* forced to 0 by structure.

    An entry is structurally zero when every path from it to the loss passes through a unit with
    phi'(u) == 0 (a ReLU off on that example, an exactly-flat saturated unit), a zero weight or a
    zero input. This replays backprop on booleans; an exact zero in a live entry is float
    underflow (or exact cancellation), not a dead unit. `w_has_zeros=False` is a shortcut valid
    only when no weight is exactly 0; `weight_masks=False` returns rows_live [k, fan_in] instead
    of W_live: W_live is then contained in the outer product of rows_live and b_live.
    """
    # below[l]: may z^{l-1}'s units pass gradient back (phi' != 0)? All True for the input.
    first = jnp.ones_like(trace.layer_inputs[0][0], dtype=bool)
    masks = [d != 0 for d in dphis]
    reach, live = d_out != 0, []
    step = functools.partial(
        _live_step, norm=norm, weight_masks=weight_masks, w_has_zeros=w_has_zeros
    )
    for i in range(len(stacked) - 1, -1, -1):
        below = masks[i - 1][-1:] if i > 0 else first[None]
        if i < len(masks) and masks[i].shape[0] > 1:  # then fan_in == fan_out in the segment
            below = jnp.concatenate([below, masks[i][:-1]])
        reach, seg_live = scan_layers(
            step, reach, (trace.layer_inputs[i], stacked[i]["W"], below), reverse=True
        )
        live.append(seg_live)
    return live[::-1]


def _frac(mask, f):
    return jnp.mean(mask.reshape(mask.shape[0], -1), axis=1, dtype=f)


def underflow_by_replay(bp: Backprop, norm: str, f, w_has_zeros: bool = True):
    """Per segment, (W, b) fractions of entries that are exactly 0 although live."""
    live = structural_liveness(
        bp.params, bp.trace, bp.dphis, bp.d_out, norm, w_has_zeros=w_has_zeros
    )
    return [
        (_frac(pow2.is_zero(g["W"]) & w_live, f), _frac(pow2.is_zero(g["b"]) & b_live, f))
        for g, (w_live, b_live) in zip(bp.grads, live, strict=True)
    ]


def underflow_by_shortcut(bp: Backprop, norm: str, f):
    """`underflow_by_replay` without the weight masks; whether that was valid for this init; and
    whether no weight is exactly 0.

    Valid when no weight is 0, every gradient is finite and each exact zero of dL/dW lies in a
    row with no live input or a column with no live unit. Those rows and columns are then
    exactly 0 and not live, so no live entry of W is 0.
    """
    live = structural_liveness(
        bp.params, bp.trace, bp.dphis, bp.d_out, norm, weight_masks=False, w_has_zeros=False
    )
    out, explained = [], []
    no_zero_weight = jnp.all(jnp.stack([jnp.all(seg["W"] != 0) for seg in bp.params]))
    for g, (rows, cols) in zip(bp.grads, live, strict=True):
        _, fan_in, fan_out = g["W"].shape
        dead_rows = fan_in - jnp.sum(rows, axis=1, dtype=jnp.int32)
        dead_cols = fan_out - jnp.sum(cols, axis=1, dtype=jnp.int32)
        in_dead = dead_rows * fan_out + dead_cols * fan_in - dead_rows * dead_cols
        zeros = jnp.sum(pow2.is_zero(g["W"]).reshape(g["W"].shape[0], -1), axis=1,
                        dtype=jnp.int32)
        finite = jnp.all(jnp.isfinite(g["W"])) & jnp.all(jnp.isfinite(g["b"]))
        explained.append(jnp.all(zeros == in_dead) & finite)
        out.append((jnp.zeros(g["W"].shape[0], f), _frac(pow2.is_zero(g["b"]) & cols, f)))
    return out, jnp.all(jnp.stack(explained)) & no_zero_weight, no_zero_weight


def underflow_fractions(bp: Backprop, norm: str, f, seed_axis: bool = True):
    """`grad_frac_underflow` per segment as (W [k], b [k]), for a chunk of inits (a leading seed
    axis on `bp` and on the result) or, with `seed_axis=False`, for one init.

    The full boolean replay of backprop costs two boolean matmuls per layer. It is cut to what
    the chunk needs, in three tiers decided once per chunk, outside the vmap over seeds (so the
    choice stays a branch and the other sides are not computed); all give identical numbers:
    no weight mask at all when every exact zero of dL/dW lies in a dead row or column (tanh,
    sigmoid, batch-1 relu), one matmul per layer (the weight masks) when no weight is exactly
    0, the full replay otherwise.
    """

    def over_seeds(fn):
        return jax.vmap(fn) if seed_axis else fn

    cheap, explained, no_zero_weight = over_seeds(lambda b: underflow_by_shortcut(b, norm, f))(bp)
    tier = jnp.where(jnp.all(explained), 0, jnp.where(jnp.all(no_zero_weight), 1, 2))
    return jax.lax.switch(tier, [
        lambda: cheap,
        lambda: over_seeds(lambda b: underflow_by_replay(b, norm, f, w_has_zeros=False))(bp),
        lambda: over_seeds(lambda b: underflow_by_replay(b, norm, f))(bp),
    ])
