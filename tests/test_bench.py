"""`gradjax bench` on a tiny workload: records, outputs, the FLOP count. No timing assertions."""

import argparse
import importlib.metadata
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from gradjax.bench import command, precision
from gradjax.bench import measure as bench
from gradjax.bench.record import RECORD_KEYS, make_record
from gradjax.bench.torch_peer import TORCH_MISSING
from gradjax.bench.workloads import (
    WORKLOADS,
    Workload,
    WorkloadBucket,
    draws_per_seed,
    flops_per_init,
    sweep_workload,
)
from gradjax.probe import chunking, programs
from gradjax.run import executables
from gradjax.spec import MIN_ARRAY_AXIS, STATS, ProbeSpec
from gradjax.sweep import budget

HAVE_TORCH = importlib.util.find_spec("torch") is not None

TINY_SPEC = ProbeSpec(
    sizes=(3, 4, 2), activation="tanh", init="fan_in_normal", bias_init="zeros", batch=2,
    inputs="gaussian", targets="gaussian",
)
TINY = Workload(
    "T", "tiny", (WorkloadBucket(TINY_SPEC, scales=(1.0, 2.0), bias_scales=(0.0, 0.0)),),
    n_inits=8, chunk=4, loop_inits=2,
)


def _parse(argv):
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_flops_formula_matches_a_hand_count():
    assert flops_per_init(TINY_SPEC) == 6 * 2 * (3 * 4 + 4 * 2)
    m = WORKLOADS["M"].buckets[0].spec
    assert flops_per_init(m) == 6 * 64 * (10 * 128 * 128 + 128 * 1)
    assert TINY.inits == 16  # 8 seeds x 2 points
    assert TINY.flops == 8 * 2 * 240


def test_builtin_workloads_are_the_issue_s():
    s, m, big = (WORKLOADS[k] for k in "SML")
    assert s.buckets[0].spec.sizes == (2, 3, 1) and s.n_inits == 100_000
    assert m.buckets[0].spec.sizes == (128, *[128] * 10, 1) and m.n_inits == 1024
    assert m.buckets[0].spec.batch == 64 and m.buckets[0].spec.activation == "tanh"
    assert big.buckets[0].spec.sizes == (512, *[512] * 20, 1) and big.n_inits == 64
    assert big.buckets[0].spec.batch == 128 and big.buckets[0].spec.activation == "relu"


@pytest.mark.parametrize(
    ("text", "size"),
    [("2GiB", 2 * 2**30), ("1.5G", int(1.5 * 2**30)), ("512MB", 512 * 2**20), ("800", 800)],
)
def test_one_size_parser_for_bench_and_run(text, size):
    assert budget.size_argument(text) == size


def test_a_nonsense_size_is_a_usage_error():
    with pytest.raises(argparse.ArgumentTypeError):
        budget.size_argument("lots")


def test_compile_log_counts_a_fresh_compile():
    executables.disable_compile_cache()  # so that it compiles afresh
    with bench.CompileLog() as log:
        jax.block_until_ready(jax.jit(lambda a: a * 3 + 1)(jnp.arange(5.0)))
    assert log.backend_compiles >= 1 and log.seconds > 0


@pytest.mark.integration  # a whole `gradjax run` of the workload
@pytest.mark.parametrize("impl", bench.IMPLS)
def test_each_impl_measures_the_tiny_workload(impl):
    executables.disable_compile_cache()  # it counts gradjax's compiles
    fields = bench.run_job(bench.Job(impl, TINY, reps=2))
    record = make_record(TINY, impl, fields, {"matmul_gflops": 100.0}, {}, None)
    assert set(RECORD_KEYS) <= set(record)
    if impl == "torch_func" and not HAVE_TORCH:
        assert record["error"] == TORCH_MISSING and record["inits_per_s"] is None
        return
    assert record["error"] is None
    assert record["inits_per_s_min"] <= record["inits_per_s"] <= record["inits_per_s_max"]
    assert record["inits_per_s"] > 0
    assert record["gflops"] == pytest.approx(record["inits_per_s"] * 240 / 1e9)
    assert record["pct_of_peak"] == pytest.approx(record["gflops"])  # peak is 100 GFLOP/s
    assert record["extrapolated"] is (impl == "numpy_loop")
    assert record["peak_rss_mb"] > 0 and record["cpu_wall"] > 0
    if impl == "gradjax":
        assert record["compiles"] >= 1 and record["compile_s"] > 0
        assert record["recompiles"] == 0
        assert record["chunk"] == 8  # `gradjax run`'s plan: every seed in one chunk
        assert record["compute_s"] > 0 and record["write_s"] > 0 and record["other_s"] >= 0
    else:
        assert record["write_s"] > 0  # the peer writes the same per-seed table
    if impl == "torch_func":
        assert record["chunk"] == 4 and record["torch_threads"] >= 1
    else:
        assert record["torch_threads"] is None


def test_torch_func_runs_with_the_thread_setting():
    job = bench.Job("torch_func", TINY, reps=1, blas_threads=1)
    if not HAVE_TORCH:
        assert bench.run_job(job) == {"error": TORCH_MISSING}
        return
    import torch

    before = torch.get_num_threads()
    fields = bench.run_job(job)
    assert fields["torch_threads"] == 1 and fields["inits_per_s"] > 0
    assert torch.get_num_threads() == before  # restored for the rest of the process


@pytest.mark.integration  # a whole `gradjax run` of the workload
def test_max_memory_shrinks_the_chunk_and_flags_the_peak():
    fields = bench.run_job(bench.Job("gradjax", TINY, reps=1, max_memory=1))
    record = make_record(TINY, "gradjax", fields, {}, {}, max_memory=1)
    assert record["chunk"] == MIN_ARRAY_AXIS * jax.device_count()  # the smallest chunk run plans
    assert record["within_memory"] is False
    assert record["pct_of_peak"] is None  # no peak measured


def test_isolated_job_reports_its_own_error():
    unsupported = Workload(
        "U", "gelu", (WorkloadBucket(ProbeSpec(sizes=(2, 1), activation="gelu", inputs="gaussian",
                                           targets="gaussian")),),
        n_inits=2, chunk=2, loop_inits=1,
    )
    result = bench.run_isolated(bench.Job("numpy_vec", unsupported, reps=1))
    assert result["error"].startswith("ValueError") and "activation" in result["error"]


def test_isolated_numpy_peer_gets_the_blas_thread_setting(monkeypatch):
    for name in bench.BLAS_THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    result = bench.run_isolated(bench.Job("numpy_loop", TINY, reps=1, blas_threads=1))
    assert "error" not in result
    assert result["blas_threads"] == 1 and result["inits_per_s"] > 0
    assert bench.blas_threads_setting() is None  # the parent's environment is left as it was


@pytest.mark.integration  # a whole `gradjax run` of the workload
def test_main_prints_the_table_and_writes_json_and_parquet(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(WORKLOADS, "T", TINY)
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    out = tmp_path / "bench.json"
    args = _parse(["--workload", "T", "--reps", "1", "--matmul-n", "64", "--in-process",
                   "--json", str(out)])
    assert command.main(args) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "machine is busy" in captured.err
    measured = [i for i in bench.IMPLS if HAVE_TORCH or i != "torch_func"]
    for impl in measured:
        assert f"T         {impl}" in table or f"T {impl}" in " ".join(table.split())
    records = json.loads(out.read_text())
    assert [r["impl"] for r in records] == list(bench.IMPLS)
    for r in records:
        assert r["torch_version"] == (importlib.metadata.version("torch") if HAVE_TORCH
                                      else None)
        if r["impl"] not in measured:  # torch_func without torch: listed under the table
            assert r["error"] == TORCH_MISSING and r["inits_per_s"] is None
            assert f"T torch_func: not measured: {TORCH_MISSING}" in table
            continue
        assert isinstance(r["workload"], str) and isinstance(r["inits_per_s"], float)
        for key in ("inits_per_s_min", "inits_per_s_max", "compile_s", "peak_rss_mb", "gflops",
                    "pct_of_peak"):
            assert isinstance(r[key], float), key
        assert r["device_kind"] and r["jax_version"] == jax.__version__ and r["threads"] >= 1
    frame = pd.read_parquet(out.with_suffix(".parquet"))
    assert list(frame["impl"]) == list(bench.IMPLS)


def test_main_refuses_bad_combinations(capsys):
    assert command.main(_parse(["--impl", "gradjax,tensorflow"])) == 2
    assert "tensorflow" in capsys.readouterr().err
    assert command.main(_parse(["--workload", "none"])) == 2
    assert command.main(_parse(["--in-process", "--blas-threads", "1"])) == 2
    assert "--blas-threads" in capsys.readouterr().err


def test_sweep_file_becomes_a_workload_with_one_workload_bucket_per_shape_bucket(tmp_path):
    pytest.importorskip("gradjax.sweep")
    path = tmp_path / "tiny.toml"
    path.write_text(
        'name = "tiny"\nseeds = 6\n'
        '[defaults]\nin_dim = 2\nwidth = 3\ndepth = 1\nout_dim = 1\nactivation = "tanh"\n'
        '[grid]\nscale = [0.5, 1.0]\nwidth = [3, 5]\n'
    )
    w = sweep_workload(path)
    assert w.name == "tiny" and w.n_inits == 6
    assert [p.n_points for p in w.buckets] == [2, 2]
    assert w.inits == 6 * 4
    assert w.flops == 6 * 2 * sum(flops_per_init(p.spec) for p in w.buckets)
    fields = bench.run_job(bench.Job("numpy_vec", w, reps=1))
    assert fields["inits_per_s"] > 0


def test_the_roofline_counts_every_point_s_flops_and_each_seed_s_draws_once():
    # 3*4 + 4*2 weights, 2 x 3 inputs, 2 x 2 targets; zero biases are not drawn
    assert draws_per_seed(TINY_SPEC) == 20 + 6 + 4
    normal_bias = ProbeSpec(**{**vars(TINY_SPEC), "bias_init": "normal"})
    assert draws_per_seed(normal_bias) == 30 + 4 + 2
    assert TINY.normals == 8 * 30 and TINY.points == 2
    peak, rate = 100.0, 1e8
    seconds = 8 * 2 * 240 / (peak * 1e9) + 8 * 30 / rate
    assert TINY.bound(peak, rate) == pytest.approx(16 / seconds)
    fields = {"inits_per_s": 1000.0, "inits_per_s_min": 900.0, "inits_per_s_max": 1100.0,
              "extrapolated": False, "peak_rss_mb": 1.0, "compile_s": 0.0, "cpu_wall": 1.0}
    record = make_record(TINY, "numpy_vec", fields,
                               {"matmul_gflops": peak, "draw_rate": rate}, {}, None)
    assert record["points"] == 2 and record["normals_per_init"] == 15
    assert record["bound_inits_per_s"] == pytest.approx(16 / seconds)
    assert record["pct_of_bound"] == pytest.approx(100 * 1000 * seconds / 16)


def test_grid_workloads_are_m_and_l_at_sixteen_points_per_draw():
    for name in ("M", "L"):
        base, grid = WORKLOADS[name], WORKLOADS[f"{name}-grid"]
        assert grid.buckets[0].spec == base.buckets[0].spec and grid.points == 16
        assert len(set(grid.buckets[0].scales)) == 16
        assert grid.flops == grid.n_inits * 16 * flops_per_init(base.buckets[0].spec)
        assert grid.normals == grid.n_inits * draws_per_seed(base.buckets[0].spec)
    assert "points = " not in WORKLOADS["M-grid"].sweep_text()  # cells are cases
    assert WORKLOADS["M-grid"].sweep_text().count("[[cases]]") == 15


def test_the_draw_rate_is_measured_on_gradjax_s_generator():
    rate = bench.measure_draw_rate(n=4096, reps=2)
    assert rate["draw_rate_min"] <= rate["draw_rate"] <= rate["draw_rate_max"]
    assert rate["draw_rate"] > 0


def test_the_tf32_check_runs_two_programs_and_finds_no_effect_on_a_cpu():
    """On a CPU both matmul precisions are full float32: `default` moves no statistic by one
    bit, and the comparison did run two programs (the precision is part of a compiled
    program's key, as it is of the program store's name)."""
    spec = ProbeSpec(sizes=(4, 6, 6, 1), activation="tanh", batch=3, inputs="gaussian",
                     targets="gaussian")
    effect = precision.precision_effect(spec, (0.5, 2.0), seeds=6, chunk=4)
    assert set(effect) == set(precision.COMPARED)
    assert all(row["n"] > 0 and row["max"] == 0.0 for row in effect.values())
    points, _ = chunking.pad_points(chunking.make_points(spec, [0.5, 2.0], [0.0, 0.0]))
    device = jax.devices()[0]
    highest, origin = programs.compiled_chunk(spec, False, 4, points, device)
    default, _ = programs.compiled_chunk(spec, False, 4, points, device,
                                         matmul_precision="default")
    assert origin == "memory" and default is not highest


@pytest.mark.integration  # a whole `gradjax run` of the workload, for its per-seed table
def test_a_peer_writes_gradjax_s_per_seed_rows_with_its_own_statistics(tmp_path):
    from gradjax.bench import numpy_peer
    from gradjax.bench.peer_tables import PeerTables
    from gradjax.results.reading import load
    from gradjax.run.library import run_sweep
    from gradjax.sweep import parse_sweep

    run_sweep(parse_sweep(TINY.sweep_text(), "<tiny>"), tmp_path / "run")
    ours = load(tmp_path / "run", "per_seed")
    keys = [c for c in ours.columns if c not in set(STATS)]
    b = TINY.buckets[0]
    args = (b.spec, TINY.n_inits, b.scales, b.bias_scales)
    expected = {  # the peers' own statistics, [seed, point, ...], computed again apart
        "numpy_vec": list(numpy_peer.numpy_vec(*args, chunk=3)),  # chunks of 3, 3 and 2 seeds
        "numpy_loop": [{k: v[None] for k, v in init.items()}
                       for init in numpy_peer.numpy_loop(*args)],
    }
    for impl, chunks in expected.items():
        folder = tmp_path / impl
        folder.mkdir()
        tables = PeerTables(TINY, folder)
        bench.peer_run(bench.Job(impl, TINY), TINY.n_inits, 3, tables)()
        theirs = pd.concat([pd.read_parquet(f) for f in sorted(folder.iterdir())]).sort_values(
            ["cell", "seed", "layer", "param"]).reset_index(drop=True)
        assert list(theirs.columns) == list(ours.columns)
        assert (theirs.dtypes == ours.dtypes).all()
        pd.testing.assert_frame_equal(theirs[keys], ours[keys])  # identity, options, positions
        # each row holds the peer's number for its seed, point (found by its scale), layer, param
        point = theirs.scale.map({scale: p for p, scale in enumerate(b.scales)}).to_numpy()
        seed, layer = theirs.seed.to_numpy(), theirs.layer.to_numpy() - 1
        w_or_b = (theirs.param == "b").to_numpy(int)
        grad_var = np.concatenate([c["grad_var"] for c in chunks])[seed, point, layer, w_or_b]
        preact_var = np.concatenate([c["preact_var"] for c in chunks])[seed, point, layer]
        np.testing.assert_array_equal(theirs.grad_var, grad_var, err_msg=impl)
        np.testing.assert_array_equal(theirs.preact_var, preact_var, err_msg=impl)
        assert np.isfinite(grad_var).all() and np.isfinite(preact_var).any()
        assert tables.seconds > 0
        written = sum(pq.read_table(f).nbytes for f in folder.iterdir())  # Arrow's own count
        assert tables.bytes_per_init() * TINY.n_inits == pytest.approx(written, rel=0.05)
