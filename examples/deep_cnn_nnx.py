"""A deep convolutional net in Flax NNX, a plug-in deep enough for `gradjax tune`'s `critical`
criterion (`model = "deep_cnn_nnx:deep_cnn"`).

Each example is a flat vector of `in_dim = side * side` pixels, one `[side, side, 1]` channel
(NNX is channels-last). `depth` 3x3 convolutions with `channels` features ("SAME" padding),
each followed by `activation`, then a linear head. Kernels are drawn N(0, 1 / fan_in), biases
zero, so a sweep's `scale` is sigma_w (as `init = "fan_in_normal"` for the MLP).

Taps: `conv1` ... `conv<depth>`, the pre-activations `[batch, side, side, channels]`.
"""

import math
from collections.abc import Callable

import jax
from flax import nnx

import gradjax
from gradjax.nn.adapters.flax_nnx import from_nnx

FAN_IN_NORMAL = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")


class DeepCNN(nnx.Module):
    """(conv -> activation) x depth -> linear, on a batch `[batch, side * side]`."""

    def __init__(self, side: int, out_dim: int, channels: int, depth: int, activation: str,
                 rngs: nnx.Rngs):
        self.convs = nnx.List([
            nnx.Conv(1 if i == 0 else channels, channels, kernel_size=(3, 3), padding="SAME",
                     kernel_init=FAN_IN_NORMAL, rngs=rngs)
            for i in range(depth)])
        self.head = nnx.Linear(channels * side * side, out_dim, rngs=rngs)
        self.side = side
        self.activation = activation

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits `[batch, out_dim]` and the taps of a batch `x` `[batch, side * side]`."""
        act = gradjax.get_activation(self.activation)
        h, taps = x.reshape(x.shape[0], self.side, self.side, 1), {}
        for i, conv in enumerate(self.convs):
            z = conv(h)
            taps[f"conv{i + 1}"] = z
            h = act(z)
        return self.head(h.reshape(x.shape[0], -1)), taps


def deep_cnn(in_dim: int = 64, out_dim: int = 1, channels: int = 8, depth: int = 8,
             activation: str = "tanh") -> tuple[Callable, Callable]:
    """The plug-in factory of `DeepCNN` (Flax NNX).

    Args:
        in_dim: pixels per example, a perfect square `side * side`.
        out_dim: logits per example.
        channels: features of each convolution.
        depth: convolutions (each one tap).
        activation: a gradjax activation (`gradjax.ACTIVATIONS`).

    Returns:
        `(init, apply)` from `gradjax.nn.adapters.flax_nnx.from_nnx`.
    """
    side = math.isqrt(in_dim)
    if side * side != in_dim:
        raise ValueError(f"deep_cnn: in_dim={in_dim} is not a square number of pixels")
    gradjax.get_activation(activation)
    return from_nnx(lambda rngs: DeepCNN(side, out_dim, channels, depth, activation, rngs))
