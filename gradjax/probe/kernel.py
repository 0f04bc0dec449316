"""`ProbeKernel`: what a kind of probe contributes to the one chunk program
(`gradjax.probe.chunking.chunk_program`), as a small named tuple of pure functions.

The chunk program owns everything common to every model: the init keys, the loop over points,
the vmap over seeds, the moments across seeds and the layout of its outputs. A kernel says what
one init draws once (reused at every point: common random numbers) and how a chunk of inits is
taken to gradients and statistics at one point. Two kernels exist: the layered kernel of a family
whose equal layers stack (`gradjax.probe.mlp_probe.KERNEL`: statistics vmapped over stacked
layers, dL/dz on every layer, dead zeros told from underflow) and the kernel of any
`(init, apply)` pytree model (`gradjax.probe.tree_probe.KERNEL`: statistics per leaf and per
tap). Which one runs a bucket is the family's declared capability (`layered_probe`), never its
name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gradjax.spec import ProbeSpec

# draw(spec, init_key) -> what one init draws once (a pytree), vmapped over the chunk's seeds
Draw = Callable[[ProbeSpec, jax.Array], Any]
# at_point(spec, point, drawn [C, ...], init_keys [C]) -> (gradients [C, ...], stats [C, ...])
AtPoint = Callable[[ProbeSpec, dict, Any, jax.Array], tuple[Any, dict]]


class ProbeKernel(NamedTuple):
    """The model-specific part of the chunk program, and its cost on the reference machine.

    Attributes:
        draw: what one init draws once, from its key: reused at every point of the chunk.
        at_point: a chunk of inits at one point: their gradient pytrees (for the moments
            across seeds) and their statistics, each with a leading seed axis.
        compile_seconds_per_tensor: seconds of compiling per parameter tensor
            (`gradjax.run.estimate`, 2 cores).
        seconds_per_tensor: seconds per parameter tensor per (seed, point) of running it.
    """

    draw: Draw
    at_point: AtPoint
    compile_seconds_per_tensor: float
    seconds_per_tensor: float
