"""A sweep from a notebook: `gradjax.run_sweep` of a dict runs into the folder `gradjax run`
would use, with its rules (resume, refusal of another sweep's folder), keeps the sweep as TOML
that parses back to the same cells, and returns the summary table."""

import math
import tomllib

import pytest
from conftest import TINY_SWEEP

import gradjax
from gradjax.sweep import SweepError, load_sweep, sweep_from_dict
from gradjax.sweep.toml_text import dumps


def test_dumps_writes_toml_that_reads_back_as_the_same_dict():
    doc = {"name": "x", "seeds": 3, "per_seed": False, "steps": [0, 5],
           "defaults": {"activation": "tanh", "bias_scale": 1e-30, "inputs": [[0.5, -0.7]],
                        'odd "key"': "tab\tand ünïcode"},
           "grid": {"scale": {"logspace": [-1, 1, 9]}, "learning_rate": [math.inf, -0.25]},
           "cases": [{"label": "a", "depth": 2}, {"label": "b", "depth": 8}]}
    assert tomllib.loads(dumps(doc)) == doc


def test_a_value_toml_cannot_hold_is_one_error_naming_its_field():
    doc = {**TINY_SWEEP, "grid": {"scale": {0.5, 1.0}}}
    with pytest.raises(SweepError) as err:
        sweep_from_dict(doc)
    assert "grid.scale" in err.value.line() and "set" in err.value.line()


def test_run_sweep_of_a_dict_returns_the_summary_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = gradjax.run_sweep(TINY_SWEEP)  # the cache's default folder: the suite's
    folder = tmp_path / "results" / "tiny"
    assert summary.equals(gradjax.load(folder))
    assert sorted(summary["scale"].unique()) == [0.5, 1.0] and set(summary["seeds"]) == {6}
    kept = load_sweep(folder / "sweep.toml")
    assert [c.options for c in kept.cells] == [c.options for c in sweep_from_dict(TINY_SWEEP).cells]
    stamps = sorted(p.stat().st_mtime_ns for p in folder.rglob("*.parquet"))
    assert gradjax.run_sweep(TINY_SWEEP, compile_cache=False).equals(summary)
    assert sorted(p.stat().st_mtime_ns for p in folder.rglob("*.parquet")) == stamps
    with pytest.raises(gradjax.ResultsError, match="different sweep"):
        gradjax.run_sweep({**TINY_SWEEP, "root_seed": 1}, compile_cache=False)
