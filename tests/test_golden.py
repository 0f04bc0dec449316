"""The numbers themselves: the per-seed table of a sweep over every value of every option
(tests/fixtures/every_option.toml), recorded and checked after every change that must not move
a number. Slow (14 buckets, ~3 min of compiling here): `make test-slow` runs it.

History: a sha256 of this table was recorded at 590eea4 (before the engine redesign) and
matched through issue 12. In the fresh environment of issue 13 (jax 0.10.2, numpy 2.4.6,
pandas 3.1.1, pyarrow 26.0.1) the unchanged code of f5abaaa gave another hash, and so did
this session's engine, the same one: the environment moved, not the code. The table itself
replaced the hash, recorded from f5abaaa's run, so that a mismatch names its columns and cells.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gradjax
from gradjax.results.storage import not_applicable, rule_options
from gradjax.run.engine import run_sweep
from gradjax.spec import EXAMPLE_STATS, STATS
from gradjax.sweep import load_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "every_option.toml"
RECORDED_TABLE = Path(__file__).parent / "fixtures" / "every_option_per_seed.parquet"
# the statistics recorded; those added since (issue 11, and grad_unit_cos_sq of issue 19) are
# left out
RECORDED = tuple(s for s in STATS
                 if s not in (*EXAMPLE_STATS, "loss_halved_step", "grad_unit_cos_sq"))
# grad_unit_cos, recorded, was the signed mean cosine between units' gradients; issue 19
# replaced it by the sign-free grad_unit_cos_sq (a signed mean reads ~0 for a rank-1 gradient)
REPLACED = ("grad_unit_cos",)


@pytest.mark.slow
def test_every_option_gives_the_recorded_numbers(tmp_path):
    sweep = load_sweep(FIXTURE)
    assert len(sweep.cells) == 14 and len(sweep.buckets()) == 14
    run_sweep(sweep, tmp_path / "out", quiet=True)
    table = gradjax.load(tmp_path / "out", "per_seed")
    got = table[["cell", "seed", "layer", "param", *RECORDED]]
    recorded = pd.read_parquet(RECORDED_TABLE).drop(columns=list(REPLACED))
    want = _without_not_applicable(recorded, table, sweep)
    moved = [c for c in want.columns if not got[c].equals(want[c])]
    assert not moved, f"numbers moved in {moved}"
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)


def _without_not_applicable(want: pd.DataFrame, got: pd.DataFrame, sweep) -> pd.DataFrame:
    """The recorded table with NaN where a statistic does not apply (the "null on" column of
    docs/conventions.md, `gradjax.results.storage.not_applicable`), as `load` reads a null. The
    table was recorded before such values were null: grad_var and grad_cv of a one-entry tensor read
    0 then (none here: out_dim is 2), the others were NaN already. Positions and options come from
    this run's rows, which are in the recorded order."""
    want = want.copy()
    for cell in sweep.cells:
        rows = np.flatnonzero(got["cell"].to_numpy() == cell.index)
        per_init = int((got["seed"].to_numpy()[rows] == 0).sum())
        first = got.iloc[rows[:per_init]]
        positions = {c: first[c].to_numpy() for c in ("layer_from_output", "param", "n")}
        null = not_applicable(positions, rule_options(cell))
        for stat in (s for s in RECORDED if s in want.columns):
            column = want.columns.get_loc(stat)
            want.iloc[rows[np.tile(null[stat], len(rows) // per_init)], column] = np.nan
    return want
