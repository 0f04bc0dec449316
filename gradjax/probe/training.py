"""Optimizer steps inside the probe: an init's parameters after `step` updates, for one init,
written to be vmapped over seeds and looped over points like the rest of the probe.

The optimizers are optax's (`optimizer`); `learning_rate`, `weight_decay` and `momentum` are
traced, so a grid over them compiles once, and so is `step`, the loop's trip count: one
program serves every recorded step. Update t (t = 0 .. step - 1) takes the gradient of the
loss at the parameters after t updates on the batch of step t (`gradjax.nn.data`: the fixed batch,
or a fresh draw from the init's data stream folded with t).

`loss_halved_step` is the first t in 1 .. step at which the loss on the init's step-0 batch,
L_0(theta_t), fell below half of L_0(theta_0); NaN if none did (and always at step 0). The
step-0 batch, not each step's fresh one, so that the check measures learning and not the
luck of a batch (with fixed data the two are the same).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradjax.probe import pow2
from gradjax.probe.stats import scaled
from gradjax.spec import OPTIMIZERS

Loss = Callable[[Any, jax.Array], jax.Array]  # (params, step) -> the batch loss at that step


def optimizer(name: str, learning_rate, weight_decay, momentum) -> optax.GradientTransformation:
    """optax's `sgd`, `sgd(momentum=...)` or `adamw`, with L2 weight decay.

    Args:
      name: one of OPTIMIZERS.
      learning_rate: eta (traced).
      weight_decay: lambda (traced). sgd and momentum add lambda * w to the gradient before
        the step (coupled L2: w <- w - eta (g + lambda w)); adam decays decoupled, as AdamW
        (Loshchilov & Hutter 2019): w <- w - eta (adam(g) + lambda w).
      momentum: the momentum optimizer's decay beta (traced): v <- g + beta v, w <- w - eta v.

    Returns:
      The optax transformation; adam uses optax's defaults (b1 0.9, b2 0.999, eps 1e-8).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    if name == "adam":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    decay = optax.add_decayed_weights(weight_decay)
    if name == "momentum":
        return optax.chain(decay, optax.sgd(learning_rate, momentum=momentum))
    return optax.chain(decay, optax.sgd(learning_rate))


class Trained(NamedTuple):
    """Parameters after `steps` updates, the step-0 loss, and the first step whose loss fell
    below half of it (NaN if none did yet)."""

    params: Any
    loss0: jax.Array
    halved: jax.Array


def train(loss_at: Loss, monitor: Callable, params, opt: optax.GradientTransformation,
          steps) -> Trained:
    """`steps` (traced) updates of `params` by `opt`, each on the gradient of `loss_at`;
    `monitor(params)` (the loss on the step-0 batch) is watched for halving."""
    def update(t, carry):
        params, state, loss0, halved = carry
        grads = jax.grad(loss_at)(params, t)
        watched = monitor(params).astype(loss0.dtype)
        loss0 = jnp.where(t == 0, watched, loss0)
        halved = first_halved(halved, t, watched, loss0)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss0, halved

    nan = jnp.asarray(jnp.nan, jnp.float32)
    carry = (params, opt.init(params), nan, nan)
    params, _, loss0, halved = jax.lax.fori_loop(0, steps, update, carry)
    halved = first_halved(halved, steps, monitor(params), loss0)  # the parameters reached
    return Trained(params, loss0, halved)


def first_halved(halved: jax.Array, t, loss: jax.Array, loss0: jax.Array) -> jax.Array:
    """`halved`, or t if it is still NaN and loss < loss0 / 2 at t >= 1."""
    now = (t >= 1) & (loss.astype(loss0.dtype) < 0.5 * loss0) & jnp.isnan(halved)
    return jnp.where(now, jnp.asarray(t, halved.dtype), halved)


def to_step(spec, params, point, loss_on: Callable, batch_at: Callable
            ) -> tuple[Any, tuple[jax.Array, jax.Array], Trained]:
    """An init's parameters after its point's `step` updates, that step's batch, and the
    `Trained` record. `loss_on(params, x, y)` is the model's batch loss, `batch_at(t)` the
    batch of step t (`gradjax.nn.data.point_batch`)."""
    train_point = point["train"]
    opt = optimizer(spec.optimizer, train_point["learning_rate"],
                    train_point["weight_decay"], train_point["momentum"])
    first = batch_at(0)
    trained = train(lambda p, t: loss_on(p, *batch_at(t)), lambda p: loss_on(p, *first),
                    params, opt, train_point["step"])
    return trained.params, batch_at(train_point["step"]), trained


def halved_step(spec, trained: Trained | None) -> jax.Array:
    """`loss_halved_step` of an init at its point (NaN without training)."""
    if trained is None:
        return jnp.asarray(jnp.nan, jnp.dtype(spec.stat_dtype))
    return trained.halved.astype(spec.stat_dtype)


def example_noise(per_example: jax.Array, stat_dtype) -> dict[str, jax.Array]:
    """`grad_noise_var` and `gsnr` of one tensor from its per-example gradients [batch, ...].

    Computed on the gradients rescaled by 2**-k (k: the exponent of the largest |entry|, see
    `gradjax.probe.stats.scaled`), so that no square underflows; gsnr does not depend on k and the
    variance is scaled back by 2**(2k), in `stat_dtype`.
    """
    g = per_example.astype(stat_dtype)
    s, k = scaled(g, computed=True)
    mean = jnp.mean(s, axis=0, keepdims=True)
    var = jnp.mean(jnp.square(s - mean), axis=0)
    mean = mean[0]
    noise = pow2.multiply(jnp.mean(var), 2 * k)
    live = var > 0
    ratio = jnp.where(live, jnp.square(mean) / jnp.where(live, var, 1), 0)
    count = jnp.sum(live)
    gsnr = jnp.where(count > 0, jnp.sum(ratio) / jnp.maximum(count, 1).astype(stat_dtype),
                     jnp.nan)
    return {"grad_noise_var": noise, "gsnr": gsnr.astype(stat_dtype)}



def param_sq_norm(param: jax.Array, stat_dtype) -> jax.Array:
    """|param|_F^2, computed on param * 2**-k so that no square underflows, then scaled back
    (in `stat_dtype`: a float32 result below 1e-38 reads subnormal or 0)."""
    s, k = scaled(param.astype(stat_dtype), computed=True)
    return pow2.multiply(jnp.sum(jnp.square(s)), 2 * k)
