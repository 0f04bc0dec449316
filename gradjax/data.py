"""Input batches and targets drawn per init (from the init's data stream, see `gradjax.keys`).

  inputs  "gaussian":      x ~ N(0, I), [batch, in_dim]
  targets "gaussian":      y ~ N(0, I), [batch, out_dim]
  targets "random_labels": a uniformly random class per example, one-hot (for
                           softmax_cross_entropy) or a fair coin in {0, 1} per output (for bce)
Fixed inputs and targets (including `zeros` and numbers) are not drawn: they travel as traced
arrays on the probe's points axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradjax import keys


def draw_batch(spec, init_key: jax.Array) -> tuple[jax.Array | None, jax.Array | None]:
    """(x, y) drawn for this init, None where the spec uses fixed values."""
    dt = jnp.dtype(spec.dtype)
    in_dim, out_dim = spec.sizes[0], spec.sizes[-1]
    x = y = None
    if spec.inputs == "gaussian":
        x = jax.random.normal(keys.data_key(init_key, keys.INPUTS), (spec.batch, in_dim), dt)
    y_key = keys.data_key(init_key, keys.TARGETS)
    if spec.targets == "gaussian":
        y = jax.random.normal(y_key, (spec.batch, out_dim), dt)
    elif spec.targets == "random_labels":
        if spec.loss == "softmax_cross_entropy":
            labels = jax.random.randint(y_key, (spec.batch,), 0, out_dim)
            y = jax.nn.one_hot(labels, out_dim, dtype=dt)
        else:
            y = jax.random.bernoulli(y_key, 0.5, (spec.batch, out_dim)).astype(dt)
    return x, y
