"""`rescale`: a tune's prescription applied to a params pytree, in the user's own code."""

from __future__ import annotations

from typing import Any

import pandas as pd

from gradjax.probe.tree_probe import scale_leaves


def rescale(params: Any, prescription: pd.DataFrame | pd.Series) -> Any:
    """`params` with the prescribed multiplier on its weights.

    The same rule as a sweep's `scale`: every float leaf with ndim >= 2 (a weight matrix or
    kernel) is multiplied, every 1-D leaf (a bias) is left as it is. So a model initialized
    at the sweep cell's scale, rescaled, is the tuned init. Two lines in a training script:

        table = gradjax.load("results/my_sweep-tune", "tune", cell=0)
        params = gradjax.rescale(model_init(key), table)

    Args:
      params: any pytree of arrays, at the cell's `scale` (what the tune started from).
      prescription: the tune table's row for this cell (or a table holding only that row).

    Returns:
      The pytree with each weight leaf times the row's `multiplier`.

    Raises ValueError unless `prescription` is exactly one global (`layer` null) row.
    """
    rows = prescription.to_frame().T if isinstance(prescription, pd.Series) else prescription
    rows = rows[rows["layer"].isna()]
    if len(rows) != 1:
        cells = sorted(set(rows["cell"].tolist())) if "cell" in rows else []
        raise ValueError(f"rescale needs one global row of the tune table, got {len(rows)} "
                         f"(cells {cells}): filter it, e.g. load(folder, 'tune', cell=0)")
    return scale_leaves(params, float(rows["multiplier"].iloc[0]), 1.0)
