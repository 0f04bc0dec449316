"""Equinox models as gradjax model plug-ins: `from_equinox(make)` -> `(init, apply)`.

`make(key) -> eqx.Module` builds the model from a typed PRNG key (`jax.random.key`). The pair
follows the plug-in contract:

- `init(key)` builds the module and keeps its floating-point arrays,
  `eqx.partition(make(key), eqx.is_inexact_array)[0]`: a pytree shaped like the module, `None`
  wherever it holds anything else, so `jax.tree_util.keystr` names each leaf by attribute path
  (`.layers[0].weight`). The same key gives the same params; `init` jits and vmaps over keys.
- `apply(params, x)` puts the params back into the module's static part (`eqx.combine`) and
  vmaps the module over the leading axis of `x` (an Equinox module takes one example). It
  returns what the module returns, batched: logits `[batch, out_dim]`, or `(logits, taps)`
  when `__call__` returns `(out, taps)` with `taps` a dict of per-example arrays.

Invariants:

- Every float array in the module is a parameter: it gets a gradient and statistics. Keep a
  float constant out of params by making it a static field or computing it in `__call__`.
- The static part (layer sizes, activation functions, non-float arrays) must not depend on the
  key: it is taken once, when `from_equinox` is called, from `eqx.filter_eval_shape`, or, if the
  module holds non-float arrays, from one build with key 0 under `jax.ensure_compile_time_eval`.
- `apply` is a pure function of `(params, x)`: it never calls `make`.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax

__all__ = ["from_equinox"]

Init = Callable[[jax.Array], Any]
Apply = Callable[[Any, jax.Array], Any]


def _partitioned(make: Callable[[jax.Array], eqx.Module]) -> Callable[[jax.Array], tuple]:
    """`make` followed by the split into (float arrays, everything else)."""

    def build(key: jax.Array) -> tuple:
        return eqx.partition(make(key), eqx.is_inexact_array)

    return build


def _static_part(make: Callable[[jax.Array], eqx.Module]) -> eqx.Module:
    """The module without its float arrays, built without drawing any parameter if possible.

    Args:
        make: builds the module from a typed key.

    Returns:
        The non-parameter part of `make(key)`, with `None` where the float arrays were.
    """
    _, static = eqx.filter_eval_shape(_partitioned(make), jax.random.key(0))
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(static)):
        with jax.ensure_compile_time_eval():  # non-float arrays: their values are needed
            _, static = _partitioned(make)(jax.random.key(0))
    return static


def from_equinox(make: Callable[[jax.Array], eqx.Module]) -> tuple[Init, Apply]:
    """The `(init, apply)` plug-in pair of an Equinox model.

    Args:
        make: `make(key) -> eqx.Module`, the model built from a typed PRNG key. Its
            `__call__(x)` takes one example `[in_dim]` and returns the logits `[out_dim]`, or
            `(logits, taps)` with `taps` a dict name -> per-example array.

    Returns:
        `init(key) -> params`, the module's float arrays (see the module docstring), and
        `apply(params, x)`, the module vmapped over the batch `x` `[batch, in_dim]`.
    """
    static = _static_part(make)

    def init(key: jax.Array) -> eqx.Module:
        params, _ = _partitioned(make)(key)
        return params

    def apply(params: eqx.Module, x: jax.Array) -> Any:
        return jax.vmap(eqx.combine(params, static))(x)

    return init, apply
