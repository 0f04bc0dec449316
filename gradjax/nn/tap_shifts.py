"""dL/dz at any model's taps: the model evaluated again with a zero shift added to the value
of each tap where an equation computes it.

The gradient of the loss with respect to a shift s added to a value z, at s = 0, is dL/dz. The
built-in MLP adds its shifts in its own forward pass (`gradjax.nn.network.batch_loss`); a
plug-in returns its taps as plain values (`(logits, taps)`) and has no place for a shift, so the
shift is put into its jaxpr: `apply` is traced once (`jax.make_jaxpr`; values it closes over
become the jaxpr's constants) and its equations are evaluated again, in the caller's trace, with
the shift added to a variable right where an equation writes it, so that every later use of the
value sees it, as every use of z sees a change of z.

A tap is often a copy of the value the network goes on with (`z.reshape(batch, -1)`, a slice,
a transpose, a cast), and a shift of the copy would reach no use. The shift is therefore added
to the tap's *root*, the value it was copied from, and dL/d(tap) is the same copy of dL/d(root).
Calls (`jit`, `remat`, a closed call) are inlined first (`inline_calls`), so a value
computed inside one is shifted where the call computes it and every output of the call sees
the shift. A root that a `scan` stacks from its iterations (its `ys`, as in a scan over
layers) was also used inside the loop, where no shift after the loop reaches: its shift enters
the loop as one more scanned input instead, so that iteration i adds slice i where the body
writes the value (`shifted_scan`). A loop's final carry and a branch's result are values like
any other. What cannot be shifted so has no dL/dz here (None): a stacked value that the loop
body only copies out, and one written by a custom-derivative rule beside other outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend.core as jex

# equations that copy entries of their one input: a tap read through them takes its root's
# shift, and its dL/dz is the same copy of the root's
COPIES = frozenset({"slice", "squeeze", "reshape", "expand_dims", "transpose",
                    "convert_element_type", "copy", "copy_p"})
CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "remat", "checkpoint"})


def call_jaxpr(eqn) -> tuple[Any, list] | None:
    """(jaxpr, consts) that a call equation runs on its inputs, or None for any other."""
    if eqn.primitive.name not in CALLS:
        return None
    inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(inner, jex.ClosedJaxpr):
        return inner.jaxpr, list(inner.consts)
    if isinstance(inner, jex.Jaxpr):
        return inner, []
    return None


def bind(eqn, invals: Sequence[Any]) -> list:
    """The equation's primitive applied to `invals` in the current trace (its outputs)."""
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def root_of(var, writers: dict) -> tuple[Any, list]:
    """(the value `var` was copied from, the copy equations from it to `var`, in order)."""
    chain = []
    while isinstance(var, jex.Var) and var in writers:
        eqn = writers[var]
        if eqn.primitive.name not in COPIES or len(eqn.invars) != 1:
            break
        chain.append(eqn)
        var = eqn.invars[0]
    return var, chain[::-1]


def reaches_every_use(var, writers: dict) -> bool:
    """Whether a shift added where `var` is written is seen by every use of its value (in a
    jaxpr without calls, `inline_calls`)."""
    if not isinstance(var, jex.Var):
        return False
    eqn = writers.get(var)
    if eqn is None:  # an input or a constant: every use reads this variable
        return True
    if eqn.primitive.name == "scan":
        return eqn.outvars.index(var) < eqn.params["num_carry"] or _scan_shiftable(eqn, var)
    return len(eqn.outvars) == 1 or not eqn.primitive.name.startswith("custom")


def _scan_shiftable(eqn, var) -> bool:
    """Whether a `scan`'s stacked output can be shifted inside the loop, iteration by
    iteration (`shifted_scan`): the loop body writes it as a value of its own (not a copy),
    which a shift reaches at every use."""
    body = eqn.params["jaxpr"]
    inner = body.jaxpr.outvars[eqn.outvars.index(var)]
    writers = {v: e for e in body.jaxpr.eqns for v in e.outvars}
    return (not body.consts and isinstance(inner, jex.Var) and root_of(inner, writers)[0] is inner
            and reaches_every_use(inner, writers))


def shifted_scan(eqn, invals: Sequence[Any], ys_shifts: dict[int, Any]) -> list:
    """The `scan` equation on `invals` with `ys_shifts[k]` (stacked like output k) added,
    iteration by iteration, where the loop body writes its stacked output k: the shifts enter
    as further scanned inputs, so each iteration's uses of the value see its own shift."""
    body = eqn.params["jaxpr"].jaxpr
    ks = sorted(ys_shifts)
    n_in = len(body.invars)

    def new_body(*args):
        inner = {body.outvars[k]: s for k, s in zip(ks, args[n_in:], strict=True)}
        return evaluate(body, [], args[:n_in], inner)

    slices = [jax.ShapeDtypeStruct(ys_shifts[k].shape[1:], ys_shifts[k].dtype) for k in ks]
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in body.invars]
    closed = jax.make_jaxpr(new_body)(*avals, *slices)
    params = dict(eqn.params, jaxpr=closed)
    if "linear" in params:
        params["linear"] = (*params["linear"], *(False,) * len(ks))
    return eqn.primitive.bind(*invals, *(ys_shifts[k] for k in ks), **params)


def evaluate(jaxpr, consts: Sequence[Any], args: Sequence[Any], shifts: dict | None = None,
             inline: bool = False) -> list:
    """Evaluate `jaxpr` on `args` in the current trace, adding `shifts[var]` to each variable
    of `shifts` where it is written (on entry, for an input or a constant); with `inline`, a
    call's own jaxpr is evaluated in its place (so tracing this gives a jaxpr without calls)."""
    shifts = shifts or {}
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    def write(v, value):
        env[v] = value + shifts[v] if v in shifts else value

    for v, value in zip(jaxpr.constvars, consts, strict=True):
        write(v, value)
    for v, value in zip(jaxpr.invars, args, strict=True):
        write(v, value)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        stacked = _stacked_shifts(eqn, shifts)
        if stacked:
            outs = shifted_scan(eqn, invals, stacked)
            for k, (v, value) in enumerate(zip(eqn.outvars, outs, strict=True)):
                if k in stacked:  # shifted inside the loop already
                    env[v] = value
                else:
                    write(v, value)
            continue
        call = call_jaxpr(eqn) if inline else None
        outs = bind(eqn, invals) if call is None else evaluate(*call, invals, inline=True)
        for v, value in zip(eqn.outvars, outs, strict=True):
            write(v, value)
    return [read(v) for v in jaxpr.outvars]


def _stacked_shifts(eqn, shifts: dict) -> dict[int, Any]:
    """The shifts of a `scan` equation's stacked outputs, by output index ({} for any other
    equation): they are added inside the loop (`shifted_scan`)."""
    if eqn.primitive.name != "scan":
        return {}
    n_carry = eqn.params["num_carry"]
    return {k: shifts[v] for k, v in enumerate(eqn.outvars) if k >= n_carry and v in shifts}


def inline_calls(closed: jex.ClosedJaxpr) -> jex.ClosedJaxpr:
    """The same computation with every call (`jit`, `remat`, a closed call) replaced by its
    equations, so that a value computed inside one is a variable of the whole jaxpr. Loops,
    branches and custom-derivative rules stay whole."""
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    return jax.make_jaxpr(lambda *a: evaluate(closed.jaxpr, closed.consts, a, inline=True))(
        *avals)


class TapShifts(NamedTuple):
    """A model's forward pass with shifts at the roots of its taps (`with_tap_shifts`).

    Attributes:
        apply: `apply(args, shifts) -> (logits, [tap, ...])`, `shifts` one array per root
            (zeros of `roots`' shapes), each added where its root is computed.
        roots: the shapes of the shifted values, one per distinct root that can be shifted.
        deltas: `deltas(root_grads) -> [dL/d(tap) or None, ...]` from the gradients of the
            loss with respect to the shifts (None for a tap that cannot be shifted).
        shiftable: for each tap, whether it has dL/dz (`deltas` gives it).
    """

    apply: Callable[[Any, Sequence[Any]], tuple[Any, list]]
    roots: list[jax.ShapeDtypeStruct]
    deltas: Callable[[Sequence[Any]], list]
    shiftable: list[bool]


def with_tap_shifts(fn: Callable, *args: Any) -> TapShifts:
    """`fn(*args) -> (logits, [tap, ...])` with a shift at the root of each tap (`TapShifts`).

    Traced once here, at the shapes of `args` (arrays or tracers). The gradient of a loss of
    `apply` with respect to a root's shift, at zero shifts, is dL/d(root), and each tap's dL/dz
    is the tap's copy of it (`deltas`).
    """
    flat_args, in_tree = jax.tree.flatten(args)

    def flat_fn(*leaves):
        logits, taps = fn(*jax.tree.unflatten(in_tree, leaves))
        return [logits, *taps]

    closed = inline_calls(jax.make_jaxpr(flat_fn)(*flat_args))
    jaxpr = closed.jaxpr
    writers = {v: eqn for eqn in jaxpr.eqns for v in eqn.outvars}
    roots: list = []
    tap_roots: list[tuple[int, list] | None] = []
    for var in jaxpr.outvars[1:]:
        root, chain = root_of(var, writers)
        if not reaches_every_use(root, writers):
            tap_roots.append(None)
            continue
        if root not in roots:
            roots.append(root)
        tap_roots.append((roots.index(root), chain))

    def apply(call_args: Any, shifts: Sequence[Any]) -> tuple[Any, list]:
        outs = evaluate(jaxpr, closed.consts, jax.tree.leaves(call_args),
                        dict(zip(roots, shifts, strict=True)))
        return outs[0], outs[1:]

    def deltas(root_grads: Sequence[Any]) -> list:
        out = []
        for found in tap_roots:
            if found is None:
                out.append(None)
                continue
            index, chain = found
            grad = root_grads[index]
            for eqn in chain:
                (grad,) = bind(eqn, [grad])
            out.append(grad)
        return out

    shapes = [jax.ShapeDtypeStruct(r.aval.shape, r.aval.dtype) for r in roots]
    return TapShifts(apply, shapes, deltas, [found is not None for found in tap_roots])
