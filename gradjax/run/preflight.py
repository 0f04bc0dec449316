"""What a run checks in a sweep before it writes anything, in one place.

`gradjax run` (`engine.execute_sweep`, and the Ray driver) and `gradjax validate` call
`check_sweep`, so a sweep that validate passes is one that run accepts, and both refuse a bad
one with the same line. (Run also checks its results folder, which only run is given.)

JAX is imported only for a sweep with a model other than the MLP, whose shapes only JAX knows:
validating a built-in MLP sweep, like reading results, stays JAX-free (tests/test_imports.py).
"""

from __future__ import annotations

from gradjax.spec import capabilities
from gradjax.sweep import Sweep
from gradjax.sweep.budget import check_budget
from gradjax.sweep.values import check_layer_scale


def check_sweep(sweep: Sweep, max_memory: int | None) -> None:
    """Raise `SweepError` (one line, at the field to fix) if a run of `sweep` would be refused:
    an MLP bucket whose smallest chunk is estimated over `max_memory` bytes (None: not checked,
    as the bench runs its smallest chunk anyway), or a plug-in model whose factory, `init` or
    `apply` fails, or whose logits are not [batch, out_dim] or taps not [batch, ...] (every
    such bucket traced abstractly with `jax.eval_shape`: nothing is computed or compiled)."""
    if max_memory is not None:
        check_budget(sweep, max_memory)
    for bucket in sweep.buckets():
        if capabilities(bucket.spec.model).shapes_from_options:  # its layers: its sizes
            check_layer_scale(sweep.source, bucket.cells[0], bucket.spec.n_layers)
    if not all(capabilities(b.spec.model).shapes_from_options for b in sweep.buckets()):
        from gradjax.run.model_check import check_models  # JAX: only a plug-in sweep needs it

        check_models(sweep)
