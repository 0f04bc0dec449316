"""Results that grow: more seeds compute only the new seeds, more axis values only the new
cells, and the folder ends as a fresh run of the final sweep would write it; shards of one
folder (run one after the other here; together in test_scale_out) add up to a single run."""

import json

import pytest
from conftest import assert_same_results, tiny_sweep_text

from gradjax.results import layout, reading
from gradjax.run import engine
from gradjax.sweep import parse_sweep

SWEEP = {"seeds": 11, "root_seed": 7, "grid": {"scale": [0.5, 1.0, 2.0]}}
TEXT = tiny_sweep_text(**SWEEP)
MORE_CELLS = tiny_sweep_text(**SWEEP | {"grid": {"scale": [0.25, 0.5, 1.0, 2.0]}})


def run(out, text=TEXT, seeds=None, **kwargs):
    sweep = parse_sweep(text, "tiny.toml")
    sweep = sweep if seeds is None else sweep.with_seeds(seeds)
    kwargs.setdefault("chunk", 6)
    return engine.execute_sweep(sweep, out, quiet=True, devices=1, **kwargs)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Fresh runs of the final sweeps: 11 seeds of 3 cells, and of 4 cells."""
    root = tmp_path_factory.mktemp("fresh")
    run(root / "three")
    run(root / "four", MORE_CELLS)
    return root


def test_more_seeds_compute_only_the_new_seeds(fresh, tmp_path):
    first = run(tmp_path / "grown", seeds=6)
    assert first.inits == 3 * 6
    grown = run(tmp_path / "grown")
    assert (grown.inits, grown.cells, grown.cells_skipped) == (3 * 5, 3, 0)
    assert_same_results(tmp_path / "grown", fresh / "three")
    assert json.loads((tmp_path / "grown" / "manifest.json").read_text())["seeds"] == 11


def test_more_axis_values_compute_only_the_new_cells(fresh, tmp_path):
    run(tmp_path / "grown")
    before = {p.name: p.read_bytes() for p in (tmp_path / "grown" / "summary").iterdir()}
    grown = run(tmp_path / "grown", MORE_CELLS)
    assert (grown.inits, grown.cells, grown.cells_skipped) == (11, 1, 3)
    assert_same_results(tmp_path / "grown", fresh / "four")
    # the old cells moved from 0, 1, 2 to 1, 2, 3 (scale 0.25 comes first): rows unchanged
    after = reading.load(tmp_path / "grown")
    assert list(after.drop_duplicates("cell")["scale"]) == [0.25, 0.5, 1.0, 2.0]
    assert len(before) == 3


def test_an_edited_comment_is_not_a_change_and_a_changed_cell_is_refused(tmp_path):
    out = tmp_path / "x"
    run(out, seeds=6)
    again = run(out, "# the same sweep, reformatted\n" + TEXT.replace(" = ", "   =   "), seeds=6)
    assert (again.inits, again.cells_skipped) == (0, 3)
    fewer_cells = tiny_sweep_text(**SWEEP | {"grid": {"scale": [0.5, 1.0]}})
    with pytest.raises(layout.ResultsError, match="cell 2 is not a cell of tiny.toml"):
        run(out, fewer_cells, seeds=6)
    other_depth = tiny_sweep_text(**SWEEP | {"defaults": {"depth": 2}})
    with pytest.raises(layout.ResultsError, match="cell 0 is not a cell"):
        run(out, other_depth, seeds=6)
    with pytest.raises(layout.ResultsError, match="6 seeds per cell.*asks for 5"):
        run(out, seeds=5)


def test_shards_in_seed_blocks_add_up_to_a_single_run(fresh, tmp_path):
    out = tmp_path / "sharded"
    # blocks of 4 seeds: 3 cells x 3 blocks = 9 pieces, shard 1 takes 3, shard 2 takes 3, ...
    first = run(out, shard=(1, 3), seed_block=4)
    assert first.inits == 3 * 4 and not (out / "manifest.json").exists()
    assert not list((out / "summary").iterdir())  # no cell has all its seeds yet
    assert run(out, shard=(3, 3)).inits == 3 * 3  # the last block holds seeds 8..10
    last = run(out, shard=(2, 3), chunk=2)  # another chunking changes no number
    assert last.inits == 3 * 4
    assert json.loads((out / ".run.json").read_text())["seed_block"] == 4
    assert (out / "manifest.json").exists()
    assert_same_results(out, fresh / "three")
    assert not (out / ".work" / "packs").exists() and not (out / ".work" / "locks").exists()


def test_a_plain_run_finishes_what_shards_left(fresh, tmp_path):
    out = tmp_path / "left"
    run(out, shard=(2, 2), seed_block=4)
    plain = run(out)
    # the 9 (cell, block) pairs in order (block 0 of cells 0..2, block 1, block 2): shard 2
    # of 2 owns the last 5, block 1 (seeds 4..7) of cells 1 and 2 and block 2 (8..10) of all
    assert plain.inits == 3 * 11 - (2 * 4 + 3 * 3)
    assert_same_results(out, fresh / "three")


def test_bad_shards_are_refused(tmp_path):
    with pytest.raises(ValueError, match="shard 3/2"):
        run(tmp_path / "x", shard=(3, 2))
    with pytest.raises(ValueError, match="--overwrite with shards"):
        run(tmp_path / "x", shard=(1, 2), overwrite=True)
    assert not (tmp_path / "x").exists()


def test_more_seeds_with_a_partial_per_seed_table_compute_the_cell_again(tmp_path):
    """Without every per-seed statistic the old rows cannot be summarized again: the cell is
    computed anew, and its tables hold the new seed count."""
    text = tiny_sweep_text(**SWEEP | {"per_seed": ["grad_sq_norm"]})
    out = tmp_path / "partial"
    run(out, text, seeds=6)
    grown = run(out, text)
    assert grown.inits == 3 * 11
    assert (reading.load(out)["seeds"] == 11).all()
    assert len(reading.load(out, "per_seed")) == 3 * 11 * 4
    assert run(out, text).inits == 0  # finished: nothing left


def test_growing_waits_for_no_run_of_the_previous_version(tmp_path):
    import fcntl

    out = tmp_path / "busy"
    run(out, seeds=6)
    with open(out / ".run.lock", "a") as lock:  # a run of the 6-seed sweep, still writing
        fcntl.flock(lock, fcntl.LOCK_SH)
        assert run(out, seeds=6).inits == 0  # the same version runs beside it
        with pytest.raises(layout.ResultsError, match="another version of this sweep"):
            run(out)
    assert run(out).inits == 3 * 5
