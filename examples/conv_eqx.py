"""A small convolutional net in Equinox, as a gradjax model plug-in (`model = "conv_eqx:conv_net"`).

Each example is a flat vector of `in_dim = side * side` pixels, seen as one `[1, side, side]`
channel. Two 3x3 convolutions with `channels` output channels each (padding 1, so the image
keeps its size), each followed by `activation`, then a linear head from the flattened
`[channels, side, side]` features to `out_dim` logits. Equinox's default inits throughout
(uniform in +-1/sqrt(fan_in)).

Taps: `conv1` and `conv2`, the pre-activations of the two convolutions, `[batch, channels,
side, side]`.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax

import gradjax
from gradjax.nn.adapters.equinox import from_equinox


class ConvNet(eqx.Module):
    """conv -> activation -> conv -> activation -> linear, on one `[side * side]` example."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear
    side: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(self, side: int, out_dim: int, channels: int, activation: str,
                 key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, channels, kernel_size=3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels, channels, kernel_size=3, padding=1, key=k2)
        self.head = eqx.nn.Linear(channels * side * side, out_dim, key=k3)
        self.side = side
        self.activation = activation

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Logits `[out_dim]` and the taps of one example `x` `[side * side]`."""
        act = gradjax.get_activation(self.activation)
        z1 = self.conv1(x.reshape(1, self.side, self.side))
        z2 = self.conv2(act(z1))
        return self.head(act(z2).reshape(-1)), {"conv1": z1, "conv2": z2}


def conv_net(
    in_dim: int = 64, out_dim: int = 10, channels: int = 4, activation: str = "relu"
) -> tuple[Callable, Callable]:
    """The plug-in factory of `ConvNet`.

    Args:
        in_dim: pixels per example, a perfect square `side * side`.
        out_dim: logits per example.
        channels: output channels of each convolution.
        activation: a gradjax activation (`gradjax.ACTIVATIONS`; the sweep checks it), which
            also gives the taps their activation statistics (dead, saturated units).

    Returns:
        `(init, apply)` from `gradjax.nn.adapters.equinox.from_equinox`.
    """
    side = math.isqrt(in_dim)
    if side * side != in_dim:
        raise ValueError(f"conv_net: in_dim={in_dim} is not a square number of pixels")
    gradjax.get_activation(activation)  # an unknown name fails here, not inside a trace
    return from_equinox(lambda key: ConvNet(side, out_dim, channels, activation, key))
