"""A deep convolutional net in Equinox, a plug-in deep enough for `gradjax tune`'s `critical`
criterion (`model = "deep_cnn_eqx:deep_cnn"`).

Each example is a flat vector of `in_dim = side * side` pixels, one `[1, side, side]` channel.
`depth` 3x3 convolutions with `channels` output channels (padding 1: the image keeps its size),
each followed by `activation`, then a linear head. Kernels are drawn N(0, 1 / fan_in), biases
zero, so a sweep's `scale` is sigma_w (as `init = "fan_in_normal"` for the MLP).

Taps: `conv1` ... `conv<depth>`, the pre-activations `[batch, channels, side, side]`.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

import gradjax
from gradjax.nn.adapters.equinox import from_equinox


def _fan_in_normal(conv: eqx.nn.Conv2d, key: jax.Array) -> eqx.nn.Conv2d:
    fan_in = math.prod(conv.weight.shape[1:])
    weight = jax.random.normal(key, conv.weight.shape) / math.sqrt(fan_in)
    conv = eqx.tree_at(lambda c: c.weight, conv, weight)
    return eqx.tree_at(lambda c: c.bias, conv, jnp.zeros_like(conv.bias))


class DeepCNN(eqx.Module):
    """(conv -> activation) x depth -> linear, on one `[side * side]` example."""

    convs: list
    head: eqx.nn.Linear
    side: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(self, side: int, out_dim: int, channels: int, depth: int, activation: str,
                 key: jax.Array):
        keys = jax.random.split(key, 2 * depth + 1)
        self.convs = [
            _fan_in_normal(eqx.nn.Conv2d(1 if i == 0 else channels, channels, kernel_size=3,
                                         padding=1, key=keys[2 * i]), keys[2 * i + 1])
            for i in range(depth)]
        self.head = eqx.nn.Linear(channels * side * side, out_dim, key=keys[-1])
        self.side = side
        self.activation = activation

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits `[out_dim]` and the taps of one example `x` `[side * side]`."""
        act = gradjax.get_activation(self.activation)
        h, taps = x.reshape(1, self.side, self.side), {}
        for i, conv in enumerate(self.convs):
            z = conv(h)
            taps[f"conv{i + 1}"] = z
            h = act(z)
        return self.head(h.reshape(-1)), taps


def deep_cnn(in_dim: int = 64, out_dim: int = 1, channels: int = 8, depth: int = 8,
             activation: str = "tanh") -> tuple[Callable, Callable]:
    """The plug-in factory of `DeepCNN`.

    Args:
        in_dim: pixels per example, a perfect square `side * side`.
        out_dim: logits per example.
        channels: output channels of each convolution.
        depth: convolutions (each one tap).
        activation: a gradjax activation (`gradjax.ACTIVATIONS`).

    Returns:
        `(init, apply)` from `gradjax.nn.adapters.equinox.from_equinox`.
    """
    side = math.isqrt(in_dim)
    if side * side != in_dim:
        raise ValueError(f"deep_cnn: in_dim={in_dim} is not a square number of pixels")
    gradjax.get_activation(activation)
    return from_equinox(lambda key: DeepCNN(side, out_dim, channels, depth, activation, key))
