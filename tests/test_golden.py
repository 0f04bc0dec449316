"""The numbers themselves: the per-seed table of a sweep over every value of every option
(tests/fixtures/every_option.toml), recorded and checked after every change that must not move
a number. Slow (14 buckets, ~5 min of compiling here): `make test-slow` runs it, at XLA's default
optimization level (tests/conftest.py).

XLA:CPU compiles for the host's instruction set, so the last bits of a float32 sum can differ
between CPUs (and between jax releases). The table was re-recorded on 2026-12-07 (AMD EPYC, jax
0.10.2), when the table of 2026-12-02 no longer matched on this machine: the unchanged code of
0667dec gave the same numbers as the code of this date, both differing from the old record in
float32 rounding (loss_value by at most 2.3e-7 relative). A mismatch names its columns.

Re-recorded again on 2026-12-07 when tiny networks began compiling at LLVM -O0
(`gradjax.run.plan.compile_options`; every bucket here is one): the statistics moved by float32
rounding, at most 1.1e-5 relative (grad_mean, a mean that cancels), except in the layernorm and
batchnorm cells, whose pre-norm bias gradients are 0 in exact arithmetic and float32 noise
(~1e-8) at either level, so their values and exact-zero counts are that noise.
"""

from pathlib import Path

import pandas as pd
import pytest

import gradjax
from gradjax.run.engine import execute_sweep
from gradjax.sweep import load_sweep

FIXTURE = Path(__file__).parent / "fixtures" / "every_option.toml"
RECORDED_TABLE = Path(__file__).parent / "fixtures" / "every_option_per_seed.parquet"


@pytest.mark.slow
def test_every_option_gives_the_recorded_numbers(tmp_path):
    sweep = load_sweep(FIXTURE)
    assert len(sweep.cells) == 14 and len(sweep.buckets()) == 14
    execute_sweep(sweep, tmp_path / "out", quiet=True)
    want = pd.read_parquet(RECORDED_TABLE)
    got = gradjax.load(tmp_path / "out", "per_seed")[list(want.columns)]
    moved = [c for c in want.columns if not got[c].equals(want[c])]
    assert not moved, f"numbers moved in {moved}"
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False)
