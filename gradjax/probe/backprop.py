"""The MLP's forward and backward pass for one init, with everything its statistics need:
the loss, dL/dparams, dL/dz from zero shifts added to every pre-activation z (the gradient
of the loss with respect to a shift of z is dL/dz), phi'(u) and d output / d logits."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradjax.nn.activations import derivative, get_activation
from gradjax.nn.network import (
    Trace,
    as_batch,
    batch_loss,
)
from gradjax.spec import ProbeSpec


class Backprop(NamedTuple):
    """One init's forward and backward pass, per segment (see `network.stack_layers`)."""

    params: list  # the scaled, segmented parameters
    loss: jax.Array
    trace: Trace
    grads: list  # dL/dparams, segmented like params
    deltas: list  # dL/dz, [k, batch, fan_out] per segment
    dphis: list  # phi'(u) per hidden segment
    d_out: jax.Array  # d output / d logits (ones for losses computed from the logits)


def backprop(stacked, x, y, spec: ProbeSpec) -> Backprop:
    """Loss, gradients and everything the statistics need, for one init."""
    x = as_batch(jnp.asarray(x, jnp.dtype(spec.dtype)))
    shifts = [jnp.zeros((seg["b"].shape[0], x.shape[0], seg["b"].shape[1]), jnp.dtype(spec.dtype))
              for seg in stacked]

    def value(p, s):
        return batch_loss(
            p, x, y, activation=spec.activation, output_activation=spec.output_activation,
            loss=spec.loss, norm=spec.norm, leaky_slope=spec.leaky_slope, shifts=s,
        )

    (loss, trace), (grads, deltas) = jax.value_and_grad(value, argnums=(0, 1), has_aux=True)(
        stacked, shifts
    )
    phi = get_activation(spec.activation, leaky_slope=spec.leaky_slope)
    dphis = [derivative(phi, u) for u in trace.phi_inputs if u is not None]
    if spec.loss in ("bce", "softmax_cross_entropy"):  # the loss sees the logits directly
        d_out = jnp.ones_like(trace.logits)
    else:
        out_fn = get_activation(spec.output_activation, leaky_slope=spec.leaky_slope)
        d_out = derivative(out_fn, trace.logits)
    return Backprop(stacked, loss, trace, grads, deltas, dphis, d_out)
