"""Losses, each averaged over the batch (rows of `y`).

  mse:                   0.5 * mean_batch sum_out (yhat - y)^2   (the seed's 0.5 * (yhat - y)^2)
  bce:                   mean_batch sum_out -[y log p + (1 - y) log(1 - p)], p = sigmoid(logits)
  softmax_cross_entropy: mean_batch -sum_out y * log_softmax(logits)

`bce` needs `output_activation = "sigmoid"` and is computed from the logits (log-sigmoid), which
is the same function without the log(0) of a saturated sigmoid. `softmax_cross_entropy` treats
the network output as logits.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gradjax.nn.activations import get_activation
from gradjax.spec import LOSSES


def mse(output: jax.Array, y: jax.Array) -> jax.Array:
    return 0.5 * jnp.mean(jnp.sum(jnp.square(output - y), axis=-1))


def bce_from_logits(logits: jax.Array, y: jax.Array) -> jax.Array:
    log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
    return -jnp.mean(jnp.sum(y * log_p + (1 - y) * log_not_p, axis=-1))


def softmax_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def check_loss(loss: str, output_activation: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    if loss == "bce" and output_activation != "sigmoid":
        raise ValueError(
            f"loss 'bce' needs output_activation 'sigmoid', got {output_activation!r}"
        )


def loss_fn(loss: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The loss as a function of (pre-output-activation logits z, targets) for bce, else of the
    network output; see `network.loss_and_grads` for which one is passed."""
    return {"mse": mse, "bce": bce_from_logits, "softmax_cross_entropy": softmax_cross_entropy}[
        loss
    ]


def loss_of_logits(
    logits: jax.Array, y: jax.Array, *, loss: str, output_activation: str, leaky_slope: float,
) -> jax.Array:
    """The batch-mean loss of a network whose last layer gives `logits` [batch, out_dim]:
    bce straight from the logits, any other loss of output_activation(logits)."""
    if loss == "bce":
        return bce_from_logits(logits, y)
    output = get_activation(output_activation, leaky_slope=leaky_slope)(logits)
    return loss_fn(loss)(output, y)
