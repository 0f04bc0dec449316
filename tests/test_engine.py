"""The engine: chunk, device and pack invariance of per-seed numbers; summaries against numpy;
skipping finished cells; refusing another sweep's folder; the memory budget."""

import io
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import programs_built, tiny_sweep_text

import gradjax
from gradjax.nn import keys
from gradjax.probe import programs
from gradjax.results import layout, reading
from gradjax.run import engine, plan, progress
from gradjax.spec import AGGREGATES, MIN_ARRAY_AXIS, STATS
from gradjax.sweep import SweepError, budget, parse_sweep

SEEDS = 11  # not a multiple of any chunk below, so the last chunk is padded
SWEEP = {"seeds": SEEDS, "root_seed": 7, "grid": {"scale": [0.5, 1.0, 2.0]}}
TEXT = tiny_sweep_text(**SWEEP)


def run(tmp_path, name, text=TEXT, **kwargs):
    kwargs.setdefault("devices", 1)
    out = tmp_path / name
    report = engine.execute_sweep(parse_sweep(text, "tiny.toml"), out, quiet=True, **kwargs)
    return out, report


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep in chunks of 6 seeds on one device."""
    out, report = run(tmp_path_factory.mktemp("ref"), "ref", chunk=6)
    return out, report


def test_per_seed_numbers_do_not_depend_on_chunk_size(reference, tmp_path):
    out, report = run(tmp_path, "chunk2", chunk=2)
    assert {p["chunk"] for p in report.packs} == {2}
    a, b = reading.load(reference[0], "per_seed"), reading.load(out, "per_seed")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    sa, sb = reading.load(reference[0]), reading.load(out)
    exact = [c for c in sa.columns if c != "grad_var_across_seeds"]
    pd.testing.assert_frame_equal(sa[exact], sb[exact], check_exact=True)
    np.testing.assert_allclose(sa["grad_var_across_seeds"], sb["grad_var_across_seeds"],
                               rtol=1e-6)


def test_per_seed_numbers_are_the_same_on_two_devices(reference, tmp_path):
    assert jax.device_count() == 2  # tests/conftest.py
    out, report = run(tmp_path, "two", chunk=6, devices=2)
    assert report.packs[0]["chunk"] == 6
    pd.testing.assert_frame_equal(reading.load(reference[0], "per_seed"),
                                  reading.load(out, "per_seed"), check_exact=True)
    np.testing.assert_allclose(reading.load(reference[0])["grad_var_across_seeds"],
                               reading.load(out)["grad_var_across_seeds"], rtol=1e-6)


def test_a_tight_budget_splits_points_and_changes_no_number(reference, tmp_path):
    out, report = run(tmp_path, "tight", max_memory=budget.parse_bytes("4.5KB"))
    # one cell per pack, each padded to 2 points (an axis of 1 would change the numbers)
    assert [p["cells"] for p in report.packs] == [[0], [1], [2]]
    assert {(p["chunk"], p["points"]) for p in report.packs} == {(2, 2)}
    pd.testing.assert_frame_equal(reading.load(reference[0], "per_seed"),
                                  reading.load(out, "per_seed"), check_exact=True)


def test_adding_an_axis_value_changes_no_existing_cell(reference, tmp_path):
    more = tiny_sweep_text(**SWEEP | {"grid": {"scale": [0.25, 0.5, 1.0, 2.0]}})
    out, _ = run(tmp_path, "more", text=more, chunk=6)
    old, new = reading.load(reference[0], "per_seed"), reading.load(out, "per_seed")
    new = new[new["scale"] != 0.25].drop(columns="cell").reset_index(drop=True)
    pd.testing.assert_frame_equal(old.drop(columns="cell"), new, check_exact=True)


def test_summary_columns_match_numpy_on_the_per_seed_table(reference):
    per_seed, summary = reading.load(reference[0], "per_seed"), reading.load(reference[0])
    assert (summary["seeds"] == SEEDS).all()
    for (cell, layer, param), rows in per_seed.groupby(["cell", "layer", "param"]):
        row = summary[(summary["cell"] == cell) & (summary["layer"] == layer)
                      & (summary["param"] == param)].iloc[0]
        assert len(rows) == SEEDS
        for stat in STATS:
            x = rows[stat].to_numpy(np.float64)
            x = x[~np.isnan(x)]
            if x.size == 0:
                assert all(np.isnan(row[f"{stat}_{a}"]) for a in AGGREGATES)
                continue
            want = {"mean": x.mean(), "std": x.std(), "p05": np.percentile(x, 5),
                    "p50": np.percentile(x, 50), "p95": np.percentile(x, 95)}
            for agg, value in want.items():
                np.testing.assert_allclose(row[f"{stat}_{agg}"], value, rtol=1e-12, atol=0,
                                           err_msg=f"{stat}_{agg} cell {cell} {layer}{param}")
        dead = np.mean(rows["grad_frac_zero"].to_numpy() == 1.0)
        assert row["frac_seeds_all_zero"] == dead
    # a 3-unit ReLU layer on one example is born dead in some inits at these seeds
    assert summary["frac_seeds_all_zero"].max() > 0


def test_grad_var_across_seeds_matches_numpy_over_jax_grad(reference):
    summary = reading.load(reference[0])
    grad = jax.jit(gradjax.loss_and_grads, static_argnames=("activation",))
    for scale in (0.5, 1.0, 2.0):
        grads = []
        for seed in range(SEEDS):
            params = gradjax.init_mlp(keys.init_key(7, seed), (2, 3, 1), scale=scale)
            _, g = grad(params, jnp.array([[0.5, -0.7]]), jnp.array([[1.0]]), activation="relu")
            grads.append(g)
        for layer in (1, 2):
            for param in ("W", "b"):
                g = np.stack([np.asarray(x[layer - 1][param], np.float64) for x in grads])
                want = np.var(g, axis=0).mean()
                got = summary[(summary["scale"] == scale) & (summary["layer"] == layer)
                              & (summary["param"] == param)]["grad_var_across_seeds"].item()
                np.testing.assert_allclose(got, want, rtol=1e-5)


def test_a_rerun_skips_finished_cells(reference):
    out, _ = reference
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    again = engine.execute_sweep(parse_sweep(TEXT, "tiny.toml"), out, quiet=True, devices=1)
    assert (again.cells, again.cells_skipped, again.inits) == (0, 3, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before


def test_another_sweep_is_refused_and_overwrite_starts_over(reference, tmp_path):
    out, _ = run(tmp_path, "x", chunk=6)
    other = parse_sweep(tiny_sweep_text(**SWEEP | {"root_seed": 8}), "other.toml")
    with pytest.raises(layout.ResultsError, match="different sweep.*--overwrite"):
        engine.execute_sweep(other, out, quiet=True, devices=1, chunk=6)
    assert (out / "sweep.toml").read_text() == TEXT
    report = engine.execute_sweep(other, out, quiet=True, devices=1, chunk=6, overwrite=True)
    assert report.cells == 3 and (out / "sweep.toml").read_text() == other.text
    assert not reading.load(out, "per_seed").equals(reading.load(reference[0], "per_seed"))
    with pytest.raises(layout.ResultsError, match="different sweep"):
        engine.execute_sweep(parse_sweep(TEXT, "tiny.toml").with_seeds(5), out, quiet=True)


def test_a_folder_that_is_not_a_results_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(layout.ResultsError, match="not a gradjax results folder"):
        engine.execute_sweep(parse_sweep(TEXT, "tiny.toml"), tmp_path, quiet=True, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_budget_sets_the_chunk_and_the_log_says_how_it_was_used(reference, tmp_path):
    lines = []
    engine.execute_sweep(parse_sweep(TEXT, "tiny.toml"), tmp_path / "log", devices=1, chunk=6,
                         log=lines.append)
    assert "chunk 6 seeds x 3 points on 1 device(s); device memory" in lines[0]
    assert "at LLVM -O0 (a tiny network) in" in lines[0]
    assert "of 2.00 GB" in lines[0] and "across-seed moments" in lines[0]
    assert lines[-1].startswith("tiny: 3 cells run, 0 already done; 33 inits in ")
    spec = parse_sweep(TEXT, "tiny.toml").cells[0].spec
    need = budget.estimate_bytes
    assert need(spec, 40, 3) > need(spec, 39, 3) > need(spec, 39, 2)
    # chunks are on the ladder: room for 40 seeds runs 32 (the rung below); 10 or 9 seeds on 2
    # devices run 6 per device (the rung that holds 5)
    assert plan.initial_plan(spec, 3, 1000, need(spec, 40, 3), 1) == plan.Plan(3, 32)
    assert plan.initial_plan(spec, 3, 10, 2**30, 2) == plan.Plan(3, 12)
    assert plan.initial_plan(spec, 3, 9, 2**30, 2) == plan.Plan(3, 12)
    assert plan.initial_plan(spec, 3, 1, 2**30, 1) == plan.Plan(3, 2)
    # not even 2 seeds of 3 points fit: fewer points per pack, then the smallest chunk
    assert plan.initial_plan(spec, 3, 1000, need(spec, 2, 1), 1) == plan.Plan(1, 2)


def test_a_pack_leaves_room_for_its_points_host_memory_and_holds_as_many_points_as_fit():
    spec = parse_sweep(TEXT, "tiny.toml").cells[0].spec
    need, per_point = budget.estimate_bytes, 10**6
    room = need(spec, 2, 2) + 2 * per_point  # 2 seeds of 2 points, with their host memory
    assert plan.initial_plan(spec, 3, 1000, room, 1, per_point=per_point) == plan.Plan(2, 2)
    assert plan.initial_plan(spec, 3, 1000, room - 1, 1, per_point=per_point).points == 1
    assert plan.initial_plan(spec, 3, 1000, room, 1).points == 3  # no host memory: all fit
    # on a CPU: three float64 copies of every parameter's mean and M2 per point; none on a GPU
    bucket = parse_sweep(TEXT, "tiny.toml").buckets()[0]
    entries = sum(a * b + b for a, b in zip(spec.sizes[:-1], spec.sizes[1:], strict=True))
    cpu, gpu = [types.SimpleNamespace(platform="cpu")], [types.SimpleNamespace(platform="gpu")]
    assert plan.host_per_point(bucket, cpu) == 3 * 2 * 8 * entries
    assert plan.host_per_point(bucket, gpu) == 0
    assert plan.device_budget(10**9, gpu) == 10**9


def test_the_ladder_is_powers_of_two_and_their_halfway_rungs():
    ladder = sorted({2**k for k in range(1, 20)} | {3 * 2**k for k in range(0, 19)})
    for n in range(1, 5000):
        assert plan.rung_up(n) == min(r for r in ladder if r >= n)
        assert plan.rung_down(n) == max([r for r in ladder if r <= n] or [2])
    # padding a chunk to its rung costs at most a third of it
    assert all(plan.rung_up(n) <= 1.5 * n for n in range(2, 5000))


def test_a_tiny_network_compiles_quick_on_a_cpu_and_a_larger_one_at_the_default():
    cpu = jax.devices("cpu")
    tiny = parse_sweep(TEXT, "tiny.toml").buckets()[0]  # 2-3-1: 13 entries x batch 1
    assert plan.compile_options(tiny, cpu) == plan.QUICK
    # 64 -> 64 -> 1 with a batch of 1 is 4,225 entries x 1 example: over QUICK_WORK
    wide = parse_sweep(tiny_sweep_text(defaults={"in_dim": 64, "width": 64, "inputs": None,
                                                 "targets": None}), "w.toml").buckets()[0]
    assert plan.QUICK_WORK < 64 * 64 + 64 + 64 + 1
    assert plan.compile_options(wide, cpu) == {}
    # the choice is the bucket's alone: the same whatever the seeds
    more = parse_sweep(TEXT, "tiny.toml").with_seeds(5000).buckets()[0]
    assert plan.compile_options(more, cpu) == plan.QUICK


def test_parse_bytes():
    assert budget.parse_bytes("2GB") == 2 * 1024**3
    assert budget.parse_bytes("512MiB") == 512 * 1024**2
    assert budget.parse_bytes("1.5k") == 1536
    assert budget.parse_bytes("100") == 100
    for bad in ("", "GB", "-1GB", "2 parsecs", "0"):
        with pytest.raises(ValueError):
            budget.parse_bytes(bad)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_quiet(reference, tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    sweep = parse_sweep(TEXT, "tiny.toml")
    engine.execute_sweep(sweep, tmp_path / "bar", devices=1, chunk=6, log=lambda msg: None)
    bar = terminal.getvalue()
    assert "100%" in bar and "33.0/33.0" in bar and "init/s" in bar
    # the last state drawn counts every cell complete
    assert bar.rstrip().endswith("cells 3/3 complete, 0 in progress]")
    terminal.seek(0)
    terminal.truncate()
    engine.execute_sweep(sweep, tmp_path / "quiet", devices=1, chunk=6, quiet=True)
    assert terminal.getvalue() == ""


def test_progress_lines_without_a_terminal(reference, tmp_path, monkeypatch):
    """Not a terminal (a log file): no bar, but a line per PROGRESS_EVERY_S (0 here: every
    chunk) with cells complete and in progress, inits, the rate and the time left."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)
    lines = []
    engine.execute_sweep(parse_sweep(TEXT, "tiny.toml"), tmp_path / "log", devices=1, chunk=6,
                         log=lines.append)
    assert sys.stderr.getvalue() == ""
    said = [line for line in lines if " inits/s, " in line and " left" in line]
    assert len(said) == 2  # one pack of 3 cells, 11 seeds in chunks of 6
    # the pack's 3 cells are in progress, not complete, until their last chunk is written
    assert said[0].startswith("tiny: cells 0/3 complete, 3 in progress; inits 18/33 ")
    assert said[-1].startswith("tiny: cells 0/3 complete, 3 in progress; inits 33/33 ")
    assert said[-1].endswith(" inits/s, about 0s left")


def test_the_bucket_line_names_every_option_that_fixes_the_program(reference, tmp_path):
    lines = []
    engine.execute_sweep(parse_sweep(TEXT, "tiny.toml"), tmp_path / "b", devices=1, chunk=6,
                     log=lines.append)
    bucket = next(line for line in lines if line.startswith("bucket 1/1 "))
    for option in ("in_dim 2", "width 3", "depth 1", "out_dim 1", "activation relu",
                   "output_activation linear", "loss mse", "norm none", "leaky_slope 0.01",
                   "init normal", "bias_init normal", "dtype float32", "batch 1"):
        assert option in bucket, option


def test_overflowing_cells_give_inf_and_nan_without_warnings(tmp_path):
    # same program as `reference`
    huge = tiny_sweep_text(**SWEEP | {"grid": {"scale": [1.0, 1e20, 1e30]}})
    out, _ = run(tmp_path, "huge", text=huge, chunk=6)
    per_seed, summary = reading.load(out, "per_seed"), reading.load(out)
    blown = per_seed[per_seed["scale"] == 1e30]
    assert np.isinf(blown["loss_value"]).any()  # (inits with every ReLU dead stay finite)
    assert (blown["grad_nonfinite"] > 0).any()
    fine = summary[summary["scale"] == 1.0]
    assert np.isfinite(fine["grad_var_across_seeds"]).all()
    assert not np.isfinite(summary[summary["scale"] == 1e30]["grad_var_across_seeds"]).all()


def test_chan_merge_matches_numpy_and_tolerates_inf():
    from gradjax.results.summary import describe
    from gradjax.run.moments import ChunkMoments

    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 2, 3))
    parts = [x[:3], x[3:4], x[4:]]
    total = ChunkMoments(0, None)
    for part in parts:
        chunk = [{"mean": part.mean(0), "m2": part.var(0) * len(part)}]
        total = total.merge(ChunkMoments(len(part), chunk))
    np.testing.assert_allclose(total.tree[0]["mean"], x.mean(0), rtol=1e-14)
    np.testing.assert_allclose(total.tree[0]["m2"] / total.n, x.var(0), rtol=1e-13)
    # in place (a run's loop): the same bits, written into the first operand's arrays
    first = [{"mean": x[:3].mean(0), "m2": x[:3].var(0) * 3}]
    second = ChunkMoments(7, [{"mean": x[3:].mean(0), "m2": x[3:].var(0) * 7}])
    fresh = ChunkMoments(3, [dict(first[0])]).merge(second)
    kept = ChunkMoments(3, first).merge(second, in_place=True)
    a, b, n = ChunkMoments(3, [{"mean": x[:3].mean(0), "m2": x[:3].var(0) * 3}]), second, 10
    delta = b.tree[0]["mean"] - a.tree[0]["mean"]  # Chan et al.'s formula, written out
    want = {"mean": a.tree[0]["mean"] + delta * (7 / n),
            "m2": a.tree[0]["m2"] + b.tree[0]["m2"] + np.square(delta) * (3 * 7 / n)}
    for k in ("mean", "m2"):
        assert kept.tree[0][k] is first[0][k]
        np.testing.assert_array_equal(kept.tree[0][k].view(np.int64), want[k].view(np.int64))
        np.testing.assert_array_equal(kept.tree[0][k].view(np.int64),
                                      fresh.tree[0][k].view(np.int64))
    # the padding points are dropped as a copy, so that merging in place lets them go
    from gradjax.run.pack_work import first_points
    padded = ChunkMoments(2, [{"mean": np.zeros((3, 4)), "m2": np.zeros((3, 4))}])
    assert first_points(padded, 2).tree[0]["mean"].base is None
    assert first_points(padded, 3).tree[0]["mean"] is padded.tree[0]["mean"]
    blown = ChunkMoments(2, [{"mean": np.array([np.inf, 1.0]), "m2": np.array([np.inf, 0.0])}])
    merged = blown.merge(blown)
    assert np.isnan(merged.tree[0]["mean"][0]) and merged.tree[0]["mean"][1] == 1.0
    stats = describe(np.array([[np.inf, np.nan], [np.inf, np.nan], [1.0, np.nan]]))
    assert stats["mean"][0] == np.inf and np.isnan(stats["mean"][1])
    assert stats["p50"][0] == np.inf and np.isnan(stats["p05"][1])


def test_a_float64_sweep_computes_in_float64_and_leaves_x64_off(tmp_path):
    assert not jax.config.jax_enable_x64
    text = tiny_sweep_text(**SWEEP | {"defaults": {"dtype": "float64"}})
    out, _ = run(tmp_path, "f64", text=text, chunk=6)
    assert not jax.config.jax_enable_x64
    row = reading.load(out, "per_seed", seed=0, scale=0.5, layer=1, param="W").iloc[0]
    assert isinstance(row["grad_cv"], np.float64)
    want = float64_seed0_stats()
    assert row["grad_var"] == pytest.approx(want["grad_var"][0, 0], rel=1e-12)
    assert row["loss_value"] == pytest.approx(float(want["loss_value"]), rel=1e-12)


def float64_seed0_stats() -> dict:
    """`grad_stats` of seed 0 of the tiny sweep (root_seed 7, scale 0.5), in float64."""
    with jax.enable_x64(True):
        params = gradjax.init_mlp(keys.init_key(7, 0), (2, 3, 1), scale=0.5,
                                  dtype=jnp.float64)
        return gradjax.grad_stats(params, jnp.array([[0.5, -0.7]]), jnp.array([[1.0]]),
                                  activation="relu")


def test_the_report_says_where_the_time_went(tmp_path):
    logged = []
    text = tiny_sweep_text(**SWEEP | {"root_seed": 31, "grid": {"scale": [0.3, 0.6]}})
    report = engine.execute_sweep(parse_sweep(text, "tiny.toml"), tmp_path / "out", chunk=4,
                              devices=1, log=logged.append)
    spent = report.time_spent()
    assert list(spent) == [*progress.PHASES, "other"]
    assert all(v > 0 for k, v in spent.items() if k != "other") and spent["other"] >= 0
    assert sum(spent.values()) == pytest.approx(report.wall_s, rel=1e-6)
    assert spent["compile"] > spent["compute"]  # a fresh program, 6 seeds of a tiny net
    assert f"compile {spent['compile']:.1f} s" in logged[-1]


@pytest.mark.parametrize("per_seed", [False, ["grad_var", "loss_value"]])
def test_per_seed_keeps_the_chosen_statistics_and_changes_no_summary(reference, tmp_path,
                                                                   per_seed):
    out, _ = run(tmp_path, "kept", text=tiny_sweep_text(**SWEEP | {"per_seed": per_seed}),
                 chunk=4)
    summary = gradjax.load(out).drop(columns=["sweep"])
    expected = gradjax.load(reference[0]).drop(columns=["sweep"])
    pd.testing.assert_frame_equal(summary, expected)
    if per_seed is False:
        assert not list((out / "per_seed").glob("*.parquet"))
        return
    rows = gradjax.load(out, "per_seed")
    full = gradjax.load(reference[0], "per_seed")
    assert "grad_cv" not in rows and list(rows.columns) == [
        c for c in full.columns if c not in STATS or c in per_seed]
    pd.testing.assert_frame_equal(rows.drop(columns=["sweep"]),
                                  full[rows.columns].drop(columns=["sweep"]))


def test_per_seed_names_only_statistics():
    with pytest.raises(SweepError) as err:
        parse_sweep(tiny_sweep_text(per_seed=["grad_var", "width"]), "tiny.toml")
    assert err.value.field == "per_seed[1]" and "grad_frac_zero" in err.value.line()


def test_the_next_bucket_compiles_in_the_background_with_its_own_x64_switch(tmp_path):
    """Bucket 2 (float64) is planned on the compile thread while bucket 1 (float32) runs:
    JAX's x64 switch is per thread, so the plan must turn it on there too."""
    text = tiny_sweep_text(**SWEEP | {"grid": {"scale": [0.5], "dtype": ["float32", "float64"]}})
    logged, out = [], tmp_path / "mixed"
    programs.clear_compiled()  # (another test of this process may have compiled them)
    report = engine.execute_sweep(parse_sweep(text, "tiny.toml"), out, chunk=6, devices=1,
                                  log=logged.append)
    assert programs_built(report) == 2 and not jax.config.jax_enable_x64
    row = reading.load(out, "per_seed", seed=0, layer=1, param="W", dtype="float64").iloc[0]
    assert row["grad_var"] == pytest.approx(float64_seed0_stats()["grad_var"][0, 0], rel=1e-12)
    assert 0 < report.peak_rss <= budget.peak_resident_bytes()
    assert "peak RSS" in logged[-1] and "of 2.00 GB" in logged[-1]


def test_a_cpu_budget_leaves_room_for_the_process_and_the_host_moments(tmp_path):
    spec = parse_sweep(TEXT, "tiny.toml").buckets()[0].spec
    assert budget.host_reserve(spec, 3) == 3 * 16 * 3 * (2 * 3 + 3 + 3 * 1 + 1)
    assert budget.resident_bytes() > 0 and budget.peak_resident_bytes() > 0
    logged = []
    # half of what the process holds: plenty for a tiny net's chunk, but nothing is left once
    # the process itself is counted, so the planner takes the smallest chunk
    engine.execute_sweep(parse_sweep(TEXT, "tiny.toml"), tmp_path / "tight", devices=1,
                     max_memory=budget.process_footprint() // 2, log=logged.append,
                     refuse_over=False)
    bucket_line = next(line for line in logged if line.startswith("bucket 1/1"))
    assert f"chunk {MIN_ARRAY_AXIS} seeds" in bucket_line
