"""A tune table (`gradjax tune`) in words: the prescription that `gradjax tune` prints and that
`gradjax findings` and the report lead with. Reads the table only (no JAX).

A results folder `results/<name>` has its tune beside it, in `results/<name>-tune` (the
default of `gradjax tune`); a tune's own folder holds it under `tune/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from gradjax.results import layout, reading
from gradjax.spec import OPTION_BY_NAME


def tune_table(folder: str | Path) -> tuple[Path, pd.DataFrame] | None:
    """(the tune's folder, its table) for a tune's folder or for a results folder whose tune
    is beside it (`<folder>-tune`); None when there is none (or the folder is not local)."""
    if "://" in str(folder):
        return None
    here = Path(folder).resolve()
    for candidate in (here, here.with_name(f"{here.name}-tune")):
        if (candidate / layout.TUNE).is_dir():
            return candidate, reading.load(candidate, layout.TUNE)
    return None


def cell_name(row: pd.Series, varying: list[str]) -> str:
    """The cell's label and the options that vary between the table's cells."""
    options = ", ".join(f"{c} {row[c]}" for c in varying if not pd.isna(row[c]))
    return ", ".join(n for n in (row["label"], options) if n) or "every cell"


def critical_lines(row: pd.Series, name: str) -> list[str]:
    """A global scale's row: the critical scale and its spread over inits, or why none."""
    if row["note"]:
        return [f"{name}: {row['note']}"]
    return [f"{name}: critical scale {row['critical_scale']:.4g} (x{row['multiplier']:.3g} of "
            f"scale {row['from_scale']:.4g}); per init 5-95 %: x{row['multiplier_p05']:.3g} to "
            f"x{row['multiplier_p95']:.3g}; {row['inits_crossing']:.0f} of {row['inits']:.0f} "
            f"inits cross chi = 1 on the grid ({row['wall_s']:.1f} s)"]


def layer_lines(rows: pd.DataFrame, name: str) -> list[str]:
    """The `layer_scale` a sweep runs the prescription by: for each of the model's layers its
    multiplier (1 for a layer without a weight leaf, which has no row) times the cell's own
    `layer_scale` (the multipliers are relative to the cell's init), and the 5-95 % ranges of
    the multipliers."""
    first = rows.iloc[0]
    per_layer = rows.groupby("layer", sort=True).first()
    every = range(1, int(first["layers"]) + 1)
    own = json.loads(first["layer_scale"]) if "layer_scale" in first else []
    own = own or [1.0] * len(every)
    scales = ", ".join(f"{c * per_layer['multiplier'].get(l, 1.0):.3g}"
                       for c, l in zip(own, every, strict=True))
    ranges = ", ".join(f"{lo:.3g}-{hi:.3g}" for lo, hi in
                       zip(per_layer["multiplier_p05"], per_layer["multiplier_p95"], strict=True))
    return [f"{name}: {first['criterion']}: layer_scale = [{scales}] (median over inits, layers "
            f"1-{len(every)} in forward order; per init 5-95 % of the layers with weights: "
            f"{ranges}); "
            f"{first['inits_holding']:.0f} of {first['inits']:.0f} inits meet the criterion at "
            f"their own multipliers ({first['wall_s']:.1f} s)"]


def check_lines(row: pd.Series) -> list[str]:
    """The check round of one tuned cell: before and after, over the same inits."""
    if pd.isna(row["grad_spread_before"]):
        return []
    verdict = "balanced better" if row["improved"] else "weight gradients NOT balanced better"
    lines = [f"  median over the same inits, default -> tuned: |dL/dW_l|^2 largest/smallest "
             f"layer {row['grad_spread_before']:.3g} -> {row['grad_spread_after']:.3g}, "
             f"first/last {row['grad_ratio_before']:.3g} -> {row['grad_ratio_after']:.3g}; "
             f"|dL/dz|^2 first/last {row['dz_ratio_before']:.3g} -> {row['dz_ratio_after']:.3g} "
             f"({verdict})"]
    if row["train_steps"] > 0:
        lines.append(f"  loss halved within {row['train_steps']:.0f} steps: "
                     f"{row['frac_loss_halved_before']:.0%} of inits -> "
                     f"{row['frac_loss_halved_after']:.0%}")
    return lines


def prescription_lines(table: pd.DataFrame) -> list[str]:
    """Per criterion and tuned cell: what to use, its spread over inits, and its check."""
    varying = [c for c in table.columns
               if c in OPTION_BY_NAME and table[c].astype(str).nunique() > 1]
    lines = []
    for (_, _), rows in table.groupby(["criterion", "cell"], sort=False):
        row = rows.iloc[0]
        name = cell_name(row, varying)
        if pd.isna(row["layer"]):  # one global scale
            lines += critical_lines(row, name)
        else:
            lines += layer_lines(rows, name)
        lines += check_lines(row)
    return lines


def prescription_text(table: pd.DataFrame) -> str:
    """`prescription_lines` as one text (what `gradjax tune` prints)."""
    return "\n".join(prescription_lines(table))
