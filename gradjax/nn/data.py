"""Input batches and targets drawn per init and per optimizer step (see `gradjax.nn.keys`).

  inputs  "gaussian":      x ~ N(0, I), [batch, in_dim]
  inputs  "digits":        `batch` distinct images of scikit-learn's digits (1,797 8 x 8
                           images, pixels / 16 in [0, 1]), drawn without replacement
  targets "gaussian":      y ~ N(0, I), [batch, out_dim]
  targets "random_labels": a uniformly random class per example, one-hot (for
                           softmax_cross_entropy) or a fair coin in {0, 1} per output (for bce)
  targets "teacher":       what a random network of the same family gives on x (the probe
                           passes it in): the output for mse, the thresholded sigmoid for bce,
                           the one-hot argmax for softmax_cross_entropy
  targets "labels":        the digits' own classes, one-hot [batch, 10]
Fixed inputs and targets (including `zeros` and numbers) are not drawn: they travel as traced
arrays on the probe's points axis, and every step uses that same batch.

Step 0 draws from the init's data stream exactly as an init-only probe does; the batch of step
t >= 1 comes from the same streams folded with t, so training sees a fresh batch per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradjax.nn import keys
from gradjax.nn.activations import get_activation
from gradjax.spec import DIGITS_SHAPE

Teacher = Callable[[jax.Array], jax.Array]  # x -> the teacher's logits


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 64] float32 in [0, 1], labels [1797] int32), from the scikit-learn
    package's own copy (no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError('inputs = "digits" needs scikit-learn: '
                          "pip install 'gradjax[digits]'") from None
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)


def step_key(key: jax.Array, step) -> jax.Array:
    """`key` itself at step 0 (an init-only probe's draw); fold_in(key, step) after."""
    folded = jax.random.fold_in(key, step)
    chosen = jnp.where(jnp.asarray(step) == 0, jax.random.key_data(key),
                       jax.random.key_data(folded))
    return jax.random.wrap_key_data(chosen, impl=jax.random.key_impl(key))


def teacher_targets(logits: jax.Array, spec) -> jax.Array:
    """Targets from a teacher's logits, in the form the spec's loss takes."""
    if spec.loss == "softmax_cross_entropy":
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)
    if spec.loss == "bce":
        return (logits > 0).astype(logits.dtype)
    return get_activation(spec.output_activation, leaky_slope=spec.leaky_slope)(logits)


def draw_batch(spec, init_key: jax.Array, step=0, teacher: Teacher | None = None
               ) -> tuple[jax.Array | None, jax.Array | None]:
    """(x, y) drawn for this init at optimizer step `step` (traced or not), None where the
    spec uses fixed values, and y None for teacher targets without `teacher` (then
    `point_batch` computes them)."""
    dt = jnp.dtype(spec.dtype)
    in_dim, out_dim = spec.sizes[0], spec.sizes[-1]
    x = y = None
    x_key = step_key(keys.data_key(init_key, keys.INPUTS), step)
    y_key = step_key(keys.data_key(init_key, keys.TARGETS), step)
    if spec.inputs == "gaussian":
        x = jax.random.normal(x_key, (spec.batch, in_dim), dt)
    elif spec.inputs == "digits":
        images, labels = digits()
        rows = jax.random.choice(x_key, images.shape[0], (spec.batch,), replace=False)
        x = jnp.asarray(images, dt)[rows]
        if spec.targets == "labels":
            y = jax.nn.one_hot(jnp.asarray(labels)[rows], DIGITS_SHAPE[1], dtype=dt)
    if spec.targets == "gaussian":
        y = jax.random.normal(y_key, (spec.batch, out_dim), dt)
    elif spec.targets == "random_labels":
        if spec.loss == "softmax_cross_entropy":
            labels = jax.random.randint(y_key, (spec.batch,), 0, out_dim)
            y = jax.nn.one_hot(labels, out_dim, dtype=dt)
        else:
            y = jax.random.bernoulli(y_key, 0.5, (spec.batch, out_dim)).astype(dt)
    elif spec.targets == "teacher" and x is not None and teacher is not None:
        y = teacher_on(spec, teacher, x)
    return x, y


def teacher_on(spec, teacher: Teacher, x: jax.Array) -> jax.Array:
    """The teacher's targets for inputs x."""
    return teacher_targets(teacher(x), spec).astype(jnp.dtype(spec.dtype))


def point_batch(spec, init_key: jax.Array, point, step=0, teacher: Teacher | None = None,
                drawn: tuple | None = None) -> tuple[jax.Array, jax.Array]:
    """(x, y) of one init at one point and step: fixed data from the point, the rest drawn
    (or `drawn`, step 0's draw made beforehand), teacher targets computed on x."""
    x, y = drawn if drawn is not None else draw_batch(spec, init_key, step, teacher)
    if spec.inputs == "fixed":
        x = point["x"]
    x = jnp.asarray(x, jnp.dtype(spec.dtype))
    if spec.targets == "fixed":
        y = point["y"]
    elif spec.targets == "teacher" and y is None:
        y = teacher_on(spec, teacher, x)
    return x, y
