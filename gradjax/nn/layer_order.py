"""Which layer each parameter leaf and each tap of any `(init, apply)` model belongs to, in
forward order, read from the jaxpr of `apply` (nothing is computed).

A *module* is the parent path of a leaf (`['stem']` for `['stem']['kernel']` and
`['stem']['bias']`, `.layers[0]` for Equinox's `.layers[0].weight`, `[0]` for a built-in
layer's `[0]['W']`): its leaves share a layer. A leaf at the root of the params pytree is a
module of its own. Modules are numbered 1, 2, ... by the time their first leaf *enters the
network*: the first equation of `apply` that combines it with a value computed from the input
x. Equations on a leaf alone (a dtype cast, a broadcast, a stack of equal layers) do not count,
so preparing every parameter up front does not reorder them; modules that enter at the same
time (a `lax.scan` over stacked layers) keep their order in the pytree. Alphabetical names
therefore play no part: an NNX model `stem -> mid -> out` numbers stem 1, mid 2, out 3.

A tap takes the layer of the latest module among the leaves it depends on (the leaves that
produce it), or the layer its name gives when it is called `layer<l>` (the built-in resmlp's
taps, computed inside one scan, say so by name). Calls (`jit`, `custom_jvp`, ...) are followed
into their jaxprs; loops and branches (`scan`, `while`, `cond`) are taken whole: each of their
outputs depends on all their inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend.core as jex
import numpy as np

TAP_LAYER = re.compile(r"layer(\d+)")


LOOPS = frozenset({"scan", "while"})  # taken whole: a carry can bring dependencies round


def _inner_jaxpr(eqn) -> Any | None:
    """The jaxpr a call-like equation runs on its own inputs, one invar per input, or None
    (a loop, a branch, a primitive)."""
    if eqn.primitive.name in LOOPS:
        return None
    for value in eqn.params.values():
        inner = getattr(value, "jaxpr", value)
        if isinstance(inner, jex.Jaxpr) and len(inner.invars) == len(eqn.invars):
            return inner
    return None


class _Walk:
    """Dependencies as bit sets: bit i is float leaf i, bit `x_bit` the input x."""

    def __init__(self, n_leaves: int):
        self.x_bit = 1 << n_leaves
        self.entered = [-1] * n_leaves  # the time each leaf first met x's flow
        self.clock = 0

    def run(self, jaxpr, deps_in: Sequence[int]) -> list[int]:
        env: dict[Any, int] = dict(zip(jaxpr.invars, deps_in, strict=True))

        def read(v) -> int:
            return env.get(v, 0) if isinstance(v, jex.Var) else 0

        for eqn in jaxpr.eqns:
            deps = [read(v) for v in eqn.invars]
            inner = _inner_jaxpr(eqn)
            if inner is not None:
                outs = self.run(inner, deps)
            else:
                merged = 0
                for d in deps:
                    merged |= d
                self._stamp(merged)
                outs = [merged] * len(eqn.outvars)
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    def _stamp(self, merged: int) -> None:
        self.clock += 1
        if not merged & self.x_bit:
            return
        for i, t in enumerate(self.entered):
            if t < 0 and merged >> i & 1:
                self.entered[i] = self.clock


def _module(path: tuple) -> tuple:
    return path[:-1] if len(path) > 1 else path


def layer_numbers(apply_leaves: Callable, leaves: Sequence[Any], x: Any,
                  paths: Sequence[tuple], tap_names: Sequence[str], extra: Any = ()
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(layer of each leaf, layer of each tap, the number of layers).

    `apply_leaves(leaves, x, extra) -> (logits, {tap name: array})` is the model's apply on its
    float leaves; `leaves`, `x` (one array) and `extra` (a pytree of further inputs that are
    neither, e.g. traced options) are arrays or `jax.ShapeDtypeStruct`s; `paths` are the
    leaves' pytree paths; `tap_names` the order the taps' rows take.
    """
    def flat(ls, xx, ex):
        logits, taps = apply_leaves(ls, xx, ex)
        return logits, [taps[name] for name in tap_names]

    closed = jax.make_jaxpr(flat)(list(leaves), x, extra)
    walk = _Walk(len(leaves))
    ins = [1 << i for i in range(len(leaves))] + [walk.x_bit]
    n_in = len(closed.jaxpr.invars)
    outs = walk.run(closed.jaxpr, (ins + [0] * n_in)[:n_in])
    never = walk.clock + 1  # leaves that never meet x go last, in pytree order
    modules: dict[tuple, tuple[int, int]] = {}
    for i, path in enumerate(paths):
        time = walk.entered[i] if walk.entered[i] >= 0 else never
        first = modules.get(_module(path), (time, i))
        modules[_module(path)] = min(first, (time, i))
    number = {m: k for k, m in enumerate(sorted(modules, key=modules.__getitem__), 1)}
    leaf_layer = np.asarray([number[_module(p)] for p in paths], np.int64)
    tap_deps = outs[len(outs) - len(tap_names):]
    tap_layer = [_tap_layer(name, deps, leaf_layer)
                 for name, deps in zip(tap_names, tap_deps, strict=True)]
    return leaf_layer, np.asarray(tap_layer, np.int64), len(modules)


def _tap_layer(name: str, deps: int, leaf_layer: np.ndarray) -> int:
    named = TAP_LAYER.fullmatch(name)
    if named:
        return int(named.group(1))
    produced_by = [int(layer) for i, layer in enumerate(leaf_layer) if deps >> i & 1]
    return max(produced_by, default=1)
