"""Flax NNX models as gradjax model plug-ins: `from_nnx(make)` -> `(init, apply)`.

`make(rngs: nnx.Rngs) -> nnx.Module` builds the model. The pair follows the plug-in contract:

- `init(key)` calls `make(nnx.Rngs(key))` with the typed PRNG key as the default stream, so
  every stream the model asks for (`rngs.params()`, `rngs.dropout`, ...) draws from that key, and
  returns its `nnx.Param` variables as a plain nested dict of arrays (`nnx.to_pure_dict`), so
  `jax.tree_util.keystr` names each leaf by attribute path (`['attn']['kernel']`) and the
  leaves of one module share its path. The same key gives the same params; `init` jits and
  vmaps over keys.
- `apply(params, x)` merges the params into the module's graph (`nnx.merge`) and calls it on
  the batch `x` `[batch, in_dim]` (NNX modules take a batch). It returns what the module returns:
  logits `[batch, out_dim]`, or `(logits, taps)` with `taps` a dict of arrays `[batch, ...]`.

Invariants:

- Only `nnx.Param` variables are parameters. Other state (BatchNorm statistics, stored `Rngs`)
  is not drawn per key: it is taken once from a build with key 0, the same for every init, and
  changes that a call makes to it are dropped, so `apply` is a pure function of `(params, x)`.
- The graph (layer sizes, attributes that are not variables) must not depend on the key: it is
  taken once, when `from_nnx` is called, from `nnx.eval_shape`, which draws no parameter.
- A float option (a traced scalar) is best used in arithmetic while building (scaling an init).
  Kept on the module, it must always be an array (`self.t = jnp.asarray(t)`): NNX then holds it
  as non-parameter state. A class that once stored a plain Python float there treats the
  attribute as static, and a traced value fails later.
"""

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

__all__ = ["from_nnx"]

Params = dict[str, Any]  # nested dicts of arrays, `nnx.to_pure_dict` of the Param state
Init = Callable[[jax.Array], Params]
Apply = Callable[[Params, jax.Array], Any]


def _split(make: Callable[[nnx.Rngs], nnx.Module], key: jax.Array) -> tuple:
    """`(graphdef, params, rest)` of `make(nnx.Rngs(key))`."""
    return nnx.split(make(nnx.Rngs(key)), nnx.Param, ...)


def _graph_and_rest(make: Callable[[nnx.Rngs], nnx.Module]
                    ) -> tuple[Any, nnx.State, nnx.State]:
    """The module's graph, its params' structure and its non-parameter state, built without
    drawing any parameter unless there is such state.

    Args:
        make: builds the module from an `nnx.Rngs`.

    Returns:
        `(graphdef, params, rest)`: the graph definition, the `nnx.Param` state (abstract
        unless built concretely) and the state that is not `nnx.Param`.
    """
    abstract = nnx.eval_shape(lambda: make(nnx.Rngs(jax.random.key(0))))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree.leaves(rest):  # its values are needed: build once, concretely
        with jax.ensure_compile_time_eval():
            graphdef, params, rest = _split(make, jax.random.key(0))
    return graphdef, params, rest


def from_nnx(make: Callable[[nnx.Rngs], nnx.Module]) -> tuple[Init, Apply]:
    """The `(init, apply)` plug-in pair of a Flax NNX model.

    Args:
        make: `make(rngs) -> nnx.Module`, the model built from an `nnx.Rngs`. Its `__call__(x)`
            takes a batch `[batch, in_dim]` and returns the logits `[batch, out_dim]`, or
            `(logits, taps)` with `taps` a dict name -> array `[batch, ...]`.

    Returns:
        `init(key) -> params`, the model's `nnx.Param` variables as nested dicts of arrays,
        and `apply(params, x)`, the model with those params called on the batch `x`.
    """
    graphdef, template, rest = _graph_and_rest(make)

    def init(key: jax.Array) -> Params:
        _, params, _ = _split(make, key)
        return nnx.to_pure_dict(params)

    def apply(params: Params, x: jax.Array) -> Any:
        state = jax.tree.map(lambda a: a, template)  # a fresh State to fill in
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state, rest, copy=True)(x)  # no mutation leaks out

    return init, apply
