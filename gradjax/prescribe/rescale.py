"""`rescale`: a tune's prescription applied to a params pytree, in the user's own code."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pandas as pd

from gradjax.probe.tree_probe import scale_leaves


def rescale(params: Any, prescription: pd.DataFrame | pd.Series) -> Any:
    """`params` with the prescribed multipliers on its weights.

    A global row (`layer` null, the `critical` criterion) multiplies every float leaf with
    ndim >= 2 (a weight matrix or kernel), the rule of a sweep's `scale`, and leaves the 1-D
    leaves (biases) as they are. Per-layer rows (`unit-variance`, `equal-gradients`) multiply
    each leaf named by a row's `param`, its `jax.tree_util.keystr` path in the params that the
    model's `init(key)` returns. So a model initialized as the tuned cell was (its `scale`,
    its `layer_scale`), rescaled, is the tuned init; the dtypes are kept. Two lines in a
    training script:

        table = gradjax.load("results/my_sweep-tune", "tune", cell=0, criterion="critical")
        params = gradjax.rescale(model_init(key), table)

    Args:
      params: any pytree of arrays, initialized as the tuned cell (what the tune started from).
      prescription: the tune table's rows of one cell and one criterion (or one row).

    Returns:
      The pytree with each prescribed leaf times its multiplier.

    Raises ValueError unless `prescription` holds one global row or the per-layer rows of one
    cell and criterion, or when a row names a leaf that `params` does not have.
    """
    rows = prescription.to_frame().T if isinstance(prescription, pd.Series) else prescription
    one = rows[["cell", "criterion"]].drop_duplicates() if len(rows) else rows
    if len(one) != 1 or (rows["layer"].isna().any() and len(rows) != 1):
        cells = sorted(set(rows["cell"].tolist())) if "cell" in rows else []
        raise ValueError(f"rescale needs the rows of one cell and one criterion, got "
                         f"{len(rows)} rows (cells {cells}): filter them, e.g. "
                         "load(folder, 'tune', cell=0, criterion='critical')")
    if rows["layer"].isna().all():
        return scale_leaves(params, float(rows["multiplier"].iloc[0]), 1.0)
    factors = dict(zip(rows["param"], rows["multiplier"].astype(float), strict=True))
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [jax.tree_util.keystr(path) for path, _ in flat]
    unknown = sorted(set(factors) - set(paths))
    if unknown:
        raise ValueError(f"rescale: the params have no leaf {', '.join(unknown)}; their "
                         f"leaves: {', '.join(paths)}")
    return treedef.unflatten([leaf * np.asarray(factors[path], leaf.dtype) if path in factors
                              else leaf for path, (_, leaf) in zip(paths, flat, strict=True)])
