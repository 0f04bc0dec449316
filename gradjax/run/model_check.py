"""The models of a sweep built abstractly before anything is written, and the float64 switch a
sweep's cells need; JAX (imported by `gradjax.run.preflight` only for sweeps with a model other
than the MLP)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

from gradjax.probe import tree_probe
from gradjax.probe.chunking import make_points
from gradjax.spec import capabilities
from gradjax.sweep import Sweep, SweepError
from gradjax.sweep.values import check_layer_scale


@contextlib.contextmanager
def x64_if_needed(sweep: Sweep) -> Iterator[None]:
    """float64 enabled while a sweep with float64 cells runs: JAX's thread-local config
    context, so the process-wide setting is never touched."""
    if any(c.options["dtype"] == "float64" for c in sweep.cells):
        with jax.enable_x64(True):
            yield
    else:
        yield


def check_models(sweep: Sweep) -> None:
    """Build every plug-in bucket's model abstractly (`jax.eval_shape`: nothing computed) and
    raise `SweepError` at its `model` field if the factory, `init` or `apply` fails or gives
    logits that are not [batch, out_dim], and at `layer_scale` unless it has one number per
    layer (`check_layer_scale`; preflight checks the MLP's): before anything is written."""
    for bucket in sweep.buckets():
        cell = bucket.cells[0]
        if capabilities(bucket.spec.model).shapes_from_options:
            continue
        try:
            with x64_if_needed(sweep):
                points = make_points(bucket.spec, **bucket.points([cell]))
                tree_probe.shapes(bucket.spec, points)
                where = tree_probe.positions(bucket.spec, points)
                layers = tree_probe.layer_count(where)
        except Exception as err:  # noqa: BLE001 (user code: any failure is the model's)
            raise SweepError(sweep.source, cell.field("model"),
                             f"model {bucket.spec.model!r} (cell {cell.index}) fails: "
                             f"{type(err).__name__}: {err}".replace("\n", " "),
                             "a factory whose init and apply run, apply giving [batch, out_dim] "
                             "logits (docs/extending.md)") from None
        check_layer_scale(sweep.source, cell, layers)
