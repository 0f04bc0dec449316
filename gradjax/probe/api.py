"""`grad_stats`, the library's one call for one init's gradient statistics, whatever the model:
the MLP's parameter list, or any `(init, apply)` pair (Flax NNX, Equinox, plain JAX)."""

from __future__ import annotations

from typing import Any

from gradjax.probe.mlp_probe import grad_stats as mlp_grad_stats
from gradjax.probe.tree_probe import model_grad_stats


def is_model(value: Any) -> bool:
    """An `(init, apply)` pair: two callables."""
    return isinstance(value, tuple) and len(value) == 2 and all(map(callable, value))


def grad_stats(model_or_params: Any, x, y, **options: Any) -> dict[str, Any]:
    """Gradient statistics of one init on one batch, as host numpy arrays.

    Args:
        model_or_params: the MLP's parameters (a list of {"W", "b"} layers, as
            `gradjax.init_mlp` returns; then `activation=` is required), or a model's
            `(init, apply)` pair (then `params=` or `key=`; see
            `gradjax.probe.tree_probe.model_grad_stats`).
        x, y: the batch and its targets.
        **options: loss, output_activation, leaky_slope; the MLP's norm and structural_zeros.

    Returns:
        For the MLP: `loss_value` and, per statistic, [layers, 2] (W, b) or [layers]. For a
        model: per statistic [rows], one row per float leaf then per tap, beside `layer`,
        `layer_from_output`, `param` and `n`. `gradjax.stats_frame` makes either a tidy frame.
    """
    if is_model(model_or_params):
        return model_grad_stats(model_or_params, x, y, **options)
    return mlp_grad_stats(model_or_params, x, y, **options)


__all__ = ["grad_stats", "is_model"]
