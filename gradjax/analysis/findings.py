"""`gradjax findings DIR`: what a results folder shows, in words. First the prescription of its
tune, where `gradjax tune` wrote one beside it; for a training sweep then what training did
(the loss per configuration); then every cell's layers, first to last, by their weight tensors
(`gradjax.results.layers`: W for MLP-shaped layers, the largest leaf of a plug-in's module),
whatever the model; then, for cells shaped like the seed's examples (2-3-1, one example), what
they show in the seed's terms; then the swept options that changed nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gradjax.analysis.prescription import prescription_lines, tune_table
from gradjax.results import reading
from gradjax.results.columns import option_columns, varying_options
from gradjax.results.inert import inert_lines
from gradjax.results.layers import layer_rows, weight_name
from gradjax.spec import OPTION_BY_NAME, TRAINING_OPTIONS

BIAS_SCALED = ("normal", "constant")  # the bias inits that use bias_scale
UNIT_COS_SQ = "grad_unit_cos_sq"  # 1 = every unit's gradient parallel up to sign
PROFILE_ROWS = 4  # deeper cells show their first and last two layers


def _option_text(row: pd.Series, names: Sequence[str]) -> str:
    """`name value` for each option, bias_scale only where the bias init uses it."""
    leaky = "leaky_relu" in (row.get("activation"), row.get("output_activation"))
    shown = [n for n in names if (n != "bias_scale" or row.get("bias_init") in BIAS_SCALED)
             and (n != "leaky_slope" or leaky) and not pd.isna(row[n])
             and (n, row[n]) != ("model", OPTION_BY_NAME["model"].default)]
    return ", ".join(f"{n} {row[n]:g}" if isinstance(row[n], float) else f"{n} {row[n]}"
                     for n in shown)


def _cell_name(row: pd.Series, varying: Sequence[str]) -> str:
    """A cell's label (if any) and the options that vary between the sweep's cells."""
    options = _option_text(row, varying)
    if row["label"]:
        return f"{row['label']}" + (f" ({options})" if options else "")
    return options or "The sweep's only cell"


def _find_cell(cells: pd.DataFrame, **options) -> pd.Series | None:
    match = cells
    for key, value in options.items():
        same = np.isclose(match[key], value) if isinstance(value, float) else match[key] == value
        match = match[same]
    return None if match.empty else match.iloc[0]


def _profile_lines(rows: pd.DataFrame) -> list[str]:
    """Weight rows of one cell (`layer_rows`): every layer, or the first and last two of a
    deep cell, then how |dL/dz|^2 changes from the output layer down to layer 1 (or, for a
    model without dL/dz, how the weight gradient's |dL/dW|^2 does)."""
    shown = rows if len(rows) <= PROFILE_ROWS else pd.concat([rows.iloc[:2], rows.iloc[-2:]])
    lines = []
    for i, (_, r) in enumerate(shown.iterrows()):
        if i == 2 and len(rows) > PROFILE_ROWS:
            lines.append(f"  ... {len(rows) - PROFILE_ROWS} more layers "
                         "(gradjax summary DIR --layer L shows any layer)")
        cos = r.get(f"{UNIT_COS_SQ}_mean", math.nan)
        lines.append(
            f"  {weight_name(r['param'], r['layer'])}: exact zeros "
            f"{r['grad_frac_zero_mean']:.1%} of entries, "
            f"born dead {r['frac_seeds_all_zero']:.2%} of inits, grad_cv median "
            f"{r['grad_cv_p50']:.3g}"
            + ("" if np.isnan(cos) else f", squared unit cosine mean {cos:.3f}")
        )
    for stat, what in (("delta_sq_norm", "|dL/dz|^2"), ("grad_sq_norm", "|dL/dW|^2")):
        first, last = rows.iloc[0][f"{stat}_p50"], rows.iloc[-1][f"{stat}_p50"]
        if len(rows) > 1 and last > 0 and np.isfinite(first / last):
            lines.append(f"  {what} (median over inits) at layer {rows.iloc[0]['layer']} is "
                         f"{first / last:.3g} x the output layer's" + _trend(first / last))
            break
    return lines


def _trend(ratio: float) -> str:
    if ratio < 1e-3:
        return ": vanishing"
    if ratio > 1e3:
        return ": exploding"
    return ""


def _seed_lines(w: pd.DataFrame, cells: pd.DataFrame, cos_exact: dict) -> list[str]:
    """What the seed's three examples show, for cells shaped like them (2-3-1, batch 1) at the
    init (step 0 of a training sweep)."""
    if not {"in_dim", "width", "depth", "out_dim", "batch"} <= set(cells.columns):
        return []
    seed_like = cells[(cells["in_dim"] == 2) & (cells["width"] == 3) & (cells["depth"] == 1)
                      & (cells["out_dim"] == 1) & (cells["batch"] == 1)
                      & ((cells["step"] == 0) if "step" in cells else True)]
    lines = []
    relu = _find_cell(seed_like, activation="relu")
    if relu is not None:
        lines.append(
            f"* ReLU example: {relu['grad_frac_zero_mean']:.1%} of W1's gradient entries are "
            f"exactly 0 on average (a hidden unit with z <= 0 passes no gradient back, and each "
            f"is off with probability 1/2), and {relu['frac_seeds_all_zero']:.1%} of inits are "
            f"born dead: all of W1's gradient is 0 (all 3 units off, 1/8 = 12.5%)."
        )
    tiny = _find_cell(seed_like, activation="sigmoid", scale=0.01)
    ref = _find_cell(seed_like, activation="sigmoid", scale=1.0)
    if tiny is not None:
        lines.append(_tiny_init_line(w, tiny, ref))
    shares = [cos_exact[c] for c in seed_like["cell"] if not math.isnan(cos_exact[c])]
    if shares:
        lines.append(
            "* One example makes dL/dW1 = outer(x, delta1): every hidden unit's column of W1's "
            "gradient is a multiple of x, so the gradients of any two units are parallel up to "
            "sign and W1's rows are x_1 and x_2 times one shared vector, the repeated values in "
            "the seed's printouts. Measured: the mean squared cosine between units' gradients "
            f"({UNIT_COS_SQ}: 1 = parallel up to sign, 0 = orthogonal) is exactly 1 in "
            f"{min(shares):.1%} of the inits with 2 or more live units, in every such cell."
        )
    return lines


def _tiny_init_line(w: pd.DataFrame, tiny: pd.Series, ref: pd.Series | None) -> str:
    t = w[w["cell"] == tiny["cell"]].set_index("layer")
    text = (f"* Tiny init (x0.01): W2's gradient entries are nearly one value. Their spread "
            f"relative to their size (grad_cv, median over inits) is "
            f"{t.loc[2, 'grad_cv_p50']:.3g}, against {t.loc[1, 'grad_cv_p50']:.3g} for W1 "
            "under the same tiny init")
    if ref is not None:
        r = w[w["cell"] == ref["cell"]].set_index("layer")
        text += (f", and against {r.loc[2, 'grad_cv_p50']:.3g} for W2 at scale 1. Every hidden "
                 "unit sits at sigmoid(~0) = 0.5, so dL/dW2 = delta2 * a1 ~ delta2 * (0.5, 0.5, "
                 f"0.5). They are not small (mean |dL/dW2|^2 "
                 f"{t.loc[2, 'grad_sq_norm_mean']:.3g} vs {r.loc[2, 'grad_sq_norm_mean']:.3g} "
                 "at scale 1); W1's are tiny "
                 f"({t.loc[1, 'grad_sq_norm_mean']:.3g} vs "
                 f"{r.loc[1, 'grad_sq_norm_mean']:.3g}), since dL/dW1 is proportional to W2")
    return text + "."


def _cos_exact(folder: str | Path, w: pd.DataFrame) -> dict[int, float]:
    """Per cell, the fraction of inits (with 2 or more live units) whose W1 has squared unit
    cosine 1 (a rank-1 gradient); NaN where the per-seed table has no such value."""
    try:
        first = reading.load(folder, "per_seed", layer=1, param="W")
    except (FileNotFoundError, ValueError):  # per_seed = false
        first = pd.DataFrame()
    if UNIT_COS_SQ not in first:  # (or a folder written before the statistic existed)
        first = pd.DataFrame({"cell": [], UNIT_COS_SQ: []})
    exact = {}
    for cell in w["cell"].unique():
        cos = first.loc[first["cell"] == cell, UNIT_COS_SQ].to_numpy(np.float64)
        cos = cos[~np.isnan(cos)]
        exact[cell] = float(np.isclose(cos, 1.0, atol=1e-5).mean()) if cos.size else math.nan
    return exact


def _training_lines(cells: pd.DataFrame, varying: Sequence[str]) -> list[str]:
    """What training did, per configuration (the cells that differ only in `step`): the median
    loss over inits at each recorded step, then, by the last step, the fraction of inits whose
    loss fell below half its step-0 value and the median step at which it did. Empty for a
    folder with no step after the init."""
    if "step" not in cells or not (cells["step"] > 0).any():
        return []
    config = [c for c in varying if c != "step"]
    labels = ["label"] if cells["label"].nunique() > 1 else []
    lines = ["Training: the loss (median over inits) at each recorded step, and how many inits "
             "halved it (below half its step-0 value; median over them of the first step "
             "that did), per configuration:"]
    keys = [*labels, *config]
    groups = cells.groupby(keys, sort=False, dropna=False) if keys else [((), cells)]
    for _, rows in groups:
        rows = rows.sort_values("step")
        losses = ", ".join(f"{loss:.3g} at {'step ' if k == 0 else ''}{step}" for k, (step, loss)
                           in enumerate(zip(rows["step"], rows["loss_value_p50"], strict=True)))
        last = rows.iloc[-1]
        name = _cell_name(last, config) if keys or last["label"] else "Every init"
        lines.append(f"  {name}: loss {losses}; {_halved_text(last)}")
    return lines


def _halved_text(last: pd.Series) -> str:
    step, frac, median = last["step"], last["frac_loss_halved"], last["loss_halved_step_p50"]
    if step == 0 or np.isnan(frac):
        return "nothing trained yet"
    if frac == 0:
        return f"no init halved its loss by step {step}"
    return (f"{frac:.1%} of inits halved their loss by step {step}, at step {median:g} "
            "(median)")


def findings_text(folder: str | Path) -> str:
    """What a results folder shows, of any model (the module docstring), led by the
    prescription of its tune where it has one (`gradjax.analysis.prescription`); a tune's own
    folder gives the prescription alone."""
    tuned = tune_table(folder)
    lead = [] if tuned is None else [
        f"Prescription (gradjax tune, {tuned[0]}):", *prescription_lines(tuned[1]), ""]
    if tuned is not None and Path(tuned[0]) == Path(folder):
        return "\n".join(lead).rstrip()
    return "\n".join([*lead, *summary_lines(folder)])


def summary_lines(folder: str | Path) -> list[str]:
    """The findings of a results folder's summary (`findings_text`)."""
    summary = reading.load(folder, "summary")
    inert = inert_lines(summary)  # options that change nothing, in any model's cells
    w = layer_rows(summary)
    cells = w.groupby("cell", sort=True).head(1).set_index("cell", drop=False)
    varying = [c for c in varying_options(cells) if c != "label"]
    trained = "step" in cells and bool((cells["step"] > 0).any())
    fixed = [c for c in option_columns(summary) if c not in varying
             and (trained or c not in (*TRAINING_OPTIONS, "step"))]
    lines = [f"{summary['sweep'].iloc[0]}: {len(cells)} cells x {int(cells['seeds'].iloc[0]):,} "
             f"random inits each ({folder})",
             f"Every cell: {_option_text(cells.iloc[0], fixed)}", ""]
    training = _training_lines(cells, varying)
    if training:
        lines += [*training, "", "Gradients, per configuration and step:"]
    cos_exact = _cos_exact(folder, w)
    for cell, rows in w.groupby("cell"):
        lines.append(_cell_name(cells.loc[cell], varying))
        lines += _profile_lines(rows)
    lines += ["", *inert] if inert else []
    seed = _seed_lines(w, cells, cos_exact)
    if seed:
        lines += ["", "In the seed's terms:", *seed]
    else:
        lines += ["", "(The seed's own findings, the ReLU example, the tiny init and one example, "
                  "are drawn only from cells shaped like sweeps/seed_examples.toml: 2-3-1 "
                  "networks on one example. This sweep has none.)"]
    return lines
