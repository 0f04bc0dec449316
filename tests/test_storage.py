"""Results on disk: schema, metadata, atomic writes, `load`, and other readers."""

import fcntl
import json

import duckdb
import jax
import jaxlib
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import tiny_sweep_text

import gradjax
from gradjax.results import files, layout, ledger, results_folder, schema
from gradjax.run import engine, provenance
from gradjax.spec import EXAMPLE_STATS, INIT_STATS, LAYER_STATS, OPTIONS, PARAM_STATS, STATS
from gradjax.sweep import load_sweep, parse_sweep

SWEEP = {
    "name": "store",
    "seeds": 5,
    "root_seed": 3,
    "grid": {"scale": [0.5, 1.0]},
    "cases": [{"label": "small_bias", "scale": 1.0, "bias_scale": 0.1}],
}
TEXT = tiny_sweep_text(**SWEEP)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "store"
    # the shapes of tests/test_engine.py's sweep (one bucket of 3 points, chunks of 6 seeds),
    # so that a whole-suite run compiles that program once
    engine.execute_sweep(parse_sweep(TEXT, "store.toml"), out, quiet=True, devices=1, chunk=6)
    return out


def test_layout_and_sweep_copy(folder):
    assert (folder / "sweep.toml").read_text() == TEXT
    assert sorted(p.name for p in (folder / "per_seed").iterdir()) == [
        f"cell-{i:05d}.parquet" for i in range(3)]
    assert sorted(p.name for p in (folder / "summary").iterdir()) == [
        f"cell-{i:05d}.parquet" for i in range(3)]
    # what is left of the work: each cell's moments over all its seeds (to grow the folder)
    left = sorted(p.relative_to(folder / ".work").parts[0] for p in (folder / ".work").rglob("*")
                  if p.is_file())
    assert left == ["pieces"] * 3
    assert len(list((folder / ".work").glob("pieces/*/seeds-0000000000-0000000005.npz"))) == 3
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["cells"] == 3
    assert manifest["rows"] == {"summary": 3 * 4, "per_seed": 3 * 4 * 5}
    assert not list(folder.rglob("*.tmp"))


def test_per_seed_schema_and_rows(folder):
    table = pq.read_table(folder / "per_seed" / "cell-00002.parquet")
    names = table.schema.names
    assert names[:3] == ["sweep", "cell", "label"]
    assert names[3 : 3 + len(OPTIONS)] == list(OPTIONS)
    position = ["seed", "layer", "layer_from_output", "param", "n"]
    assert names[3 + len(OPTIONS) : 3 + len(OPTIONS) + len(position)] == position
    assert names[3 + len(OPTIONS) + len(position) :] == list(STATS)
    assert list(STATS) == [*PARAM_STATS, *EXAMPLE_STATS, *LAYER_STATS, *INIT_STATS]
    types = {f.name: f.type for f in table.schema}
    assert types["cell"] == types["seed"] == types["depth"] == types["batch"] == pa.int64()
    assert types["scale"] == types["bias_scale"] == pa.float64()
    assert types["activation"] == types["label"] == types["inputs"] == pa.string()
    assert types["structural_zeros"] == pa.bool_()
    # magnitudes (whose squares leave float32's range) are float64, the rest float32
    magnitudes = {"grad_mean", "grad_var", "grad_sq_norm", "grad_max_abs", "grad_mean_abs",
                  "delta_sq_norm", "preact_mean", "preact_var"}
    assert {types[s] for s in magnitudes} == {pa.float64()}
    others = {*STATS} - magnitudes
    assert {types[s] for s in others} == {pa.float32()}
    frame = table.to_pandas()
    assert len(frame) == 5 * 2 * 2  # seeds x layers x (W, b)
    # the 2-3-1 net: W1 has 2 x 3 entries, b1 3, W2 3 x 1, b2 1; layer 2 is the output layer
    assert frame[["seed", "layer", "layer_from_output", "param", "n"]].values.tolist()[:4] == [
        [0, 1, -2, "W", 6], [0, 1, -2, "b", 3], [0, 2, -1, "W", 3], [0, 2, -1, "b", 1]]
    assert (frame["label"] == "small_bias").all() and (frame["bias_scale"] == 0.1).all()
    # layer statistics repeat on W and b, the loss on every row of an init
    for stat in LAYER_STATS:
        w, b = frame[frame["param"] == "W"][stat], frame[frame["param"] == "b"][stat]
        np.testing.assert_array_equal(w.to_numpy(), b.to_numpy())
    assert frame.groupby("seed")["loss_value"].nunique().eq(1).all()
    assert frame["grad_unit_cos_sq"][frame["param"] == "b"].isna().all()


def test_metadata_of_every_file(folder):
    files = sorted(folder.glob("*/cell-*.parquet"))
    assert len(files) == 6
    git = provenance.git_revision()
    for path in files:
        meta = {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}
        assert meta["sweep_text"] == TEXT and meta["sweep_name"] == "store"
        assert meta["gradjax_version"] == gradjax.__version__
        assert meta["jax_version"] == jax.__version__
        assert meta["jaxlib_version"] == jaxlib.__version__
        assert meta["backend"] == jax.default_backend() == "cpu"
        assert meta["device_kind"] == jax.devices()[0].device_kind
        assert meta["written_utc"].endswith("+00:00")
        assert meta["table"] == path.parent.name and meta["cell"] == str(int(path.stem[5:]))
        assert meta["seeds"] == "5" and meta["root_seed"] == "3"
        if git is not None:
            assert meta["git_revision"] == git[0] and len(git[0]) == 40
        assert "pandas" not in meta


def test_load_gives_typed_columns_and_filters(folder):
    per_seed = gradjax.load(folder, "per_seed")
    assert len(per_seed) == 3 * 5 * 4
    assert not any(isinstance(t, pd.CategoricalDtype) for t in per_seed.dtypes)
    assert per_seed["cell"].dtype == np.int64 and per_seed["scale"].dtype == np.float64
    assert per_seed["grad_var"].dtype == np.float64 and per_seed["grad_cv"].dtype == np.float32
    assert per_seed["structural_zeros"].dtype == bool
    assert pd.api.types.is_string_dtype(per_seed["activation"])
    assert per_seed[["cell", "seed"]].equals(
        per_seed[["cell", "seed"]].sort_values(["cell", "seed"]))
    some = gradjax.load(folder, "per_seed", label="small_bias", scale=1.0, layer=1, param="W")
    assert len(some) == 5 and set(some["cell"]) == {2}
    pd.testing.assert_frame_equal(
        some.reset_index(drop=True),
        per_seed[(per_seed["cell"] == 2) & (per_seed["layer"] == 1)
                 & (per_seed["param"] == "W")].reset_index(drop=True))
    summary = gradjax.load(folder)
    assert len(summary) == 3 * 2 * 2 and (summary["seeds"] == 5).all()
    assert len(gradjax.load(folder, cell=[0, 2])) == 8
    with pytest.raises(ValueError, match="unknown column.*colour"):
        gradjax.load(folder, colour="red")
    with pytest.raises(ValueError, match="unknown table"):
        gradjax.load(folder, "cells")
    with pytest.raises(FileNotFoundError):
        gradjax.load(folder / "nope")


def test_load_counts_layers_from_the_output_and_reads_table_folders(folder):
    summary = gradjax.load(folder)
    output = gradjax.load(folder, layer=-1)
    assert len(output) == 3 * 2 and set(output["layer"]) == {2}  # depth 1: layer 2 is the output
    assert (output["layer_from_output"] == -1).all()
    below = gradjax.load(folder, "per_seed", layer=[-2, 2], param="W")
    assert set(below["layer"]) == {1, 2} and len(below) == 3 * 5 * 2
    pd.testing.assert_frame_equal(gradjax.load(folder / "summary"), summary)
    pd.testing.assert_frame_equal(gradjax.load(folder / "per_seed", cell=1),
                                  gradjax.load(folder, "per_seed", cell=1))
    assert (summary["n"] == np.where(summary["layer"] == 1, [6, 3] * 6, [3, 1] * 6)).all()


def test_a_filter_that_matches_nothing_lists_the_values_present(folder):
    with pytest.raises(ValueError, match=r"activation='Relu' matches no row; values present: "
                                         r"'relu'$"):
        gradjax.load(folder, activation="Relu")
    with pytest.raises(ValueError, match=r"layer=5 matches no row; values present: 1, 2 \(or -1"):
        gradjax.load(folder, layer=5)
    with pytest.raises(ValueError, match=r"scale=\[3.0\] matches no row; values present: "
                                         r"0.5, 1.0"):
        gradjax.load(folder, scale=[3.0])


def test_stats_frame_is_tidy_and_matches_grad_stats():
    params = gradjax.init_mlp(jax.random.key(0), (2, 3, 4, 1))
    x, y = jax.numpy.ones((2, 2)), jax.numpy.zeros((2, 1))
    stats = gradjax.grad_stats(params, x, y, activation="tanh")
    frame = gradjax.stats_frame(stats)
    assert frame[["layer", "layer_from_output", "param"]].values.tolist() == [
        [1, -3, "W"], [1, -3, "b"], [2, -2, "W"], [2, -2, "b"], [3, -1, "W"], [3, -1, "b"]]
    assert frame.loc[4, "grad_var"] == stats["grad_var"][2, 0]
    assert frame.loc[3, "preact_var"] == stats["preact_var"][1]
    assert (frame["loss_value"] == float(stats["loss_value"])).all()


def test_summary_has_every_aggregate_and_the_theory_columns(folder):
    summary = gradjax.load(folder)
    for stat in (*PARAM_STATS, *LAYER_STATS, "loss_value"):
        for agg in ("mean", "std", "p05", "p50", "p95"):
            assert summary[f"{stat}_{agg}"].dtype == np.float64
    from gradjax.spec import THEORY_COLUMNS

    for column in ("grad_var_across_seeds", "frac_seeds_all_zero", *THEORY_COLUMNS):
        assert summary[column].dtype == np.float64
    assert summary["theory_chi1"].isna().all()  # init "normal": no mean-field prediction


def test_duckdb_polars_and_pyarrow_read_the_same_rows(folder):
    want = gradjax.load(folder, "per_seed")
    pattern = str(folder / "per_seed" / "**" / "*.parquet")
    con = duckdb.connect()
    got = con.execute(
        "select cell, seed, layer, param, grad_var, activation, scale "
        f"from read_parquet('{pattern}') order by cell, seed, layer, param").df()
    assert len(got) == len(want)
    np.testing.assert_array_equal(got["grad_var"].to_numpy(), want["grad_var"].to_numpy())
    assert got["cell"].dtype == np.int64 and got["scale"].dtype == np.float64
    described = con.execute(f"describe select * from read_parquet('{pattern}')").df()
    assert "cell" in described["column_name"].tolist()  # a real column, no hive partitions
    summary_n = con.execute(
        f"select count(*) from read_parquet('{folder}/summary/**/*.parquet')").fetchone()[0]
    assert summary_n == 12
    frame = pl.read_parquet(pattern).sort(["cell", "seed", "layer", "param"])
    assert frame.height == len(want)
    assert frame.schema["activation"] == pl.String and frame.schema["cell"] == pl.Int64
    assert frame.schema["grad_var"] == pl.Float64 and frame.schema["grad_cv"] == pl.Float32
    np.testing.assert_array_equal(frame["grad_var"].to_numpy(), want["grad_var"].to_numpy())
    dataset = ds.dataset(folder / "per_seed", format="parquet")
    assert dataset.count_rows() == len(want)
    assert dataset.schema.names == schema.per_seed_schema(pa.float32()).names


def test_temporary_files_are_invisible_to_readers(folder, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for sub in ("per_seed",):
        (copy / sub).mkdir()
        for path in (folder / sub).iterdir():
            (copy / sub / path.name).write_bytes(path.read_bytes())
    (copy / "per_seed" / ".cell-00009.parquet.123.tmp").write_bytes(b"PAR1 partial")
    assert len(gradjax.load(copy, "per_seed")) == 60
    assert ds.dataset(copy / "per_seed", format="parquet").count_rows() == 60
    con = duckdb.connect()
    assert con.execute(
        f"select count(*) from read_parquet('{copy}/per_seed/**/*.parquet')").fetchone()[0] == 60


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    old = pa.table({"x": [1, 2]})
    files.write_parquet(old, path, {"k": "v"})
    assert pq.read_schema(path).metadata == {b"k": b"v"}

    def broken(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(files.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        files.write_parquet(pa.table({"x": [3]}), path)
    assert pq.read_table(path).equals(old)
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_checkpoint_round_trip(tmp_path):
    leaves = [np.arange(6.0).reshape(2, 3), np.full((2, 1), np.nan)]
    files.write_checkpoint(tmp_path / "state.npz", 40, 38, leaves)
    done, n, back = files.read_checkpoint(tmp_path / "state.npz")
    assert (done, n) == (40, 38)
    for a, b in zip(leaves, back, strict=True):
        np.testing.assert_array_equal(a, b)
    assert files.read_checkpoint(tmp_path / "missing.npz") is None


def test_float64_sweeps_store_float64_statistics():
    x64 = parse_sweep(tiny_sweep_text(**SWEEP, defaults={"dtype": "float64"}), "x.toml")
    assert schema.stat_type(x64) == pa.float64()
    assert schema.stat_type(parse_sweep(TEXT, "x.toml")) == pa.float32()


def test_run_file_records_the_parsed_sweep_not_its_text(folder):
    record = json.loads((folder / ".run.json").read_text())
    sweep = parse_sweep(TEXT, "store.toml")
    assert record["seeds"] == 5 and record["name"] == sweep.name
    assert len(record["cells"]) == len(sweep.cells) == len(set(record["cells"]))
    commented = parse_sweep("# a comment\n" + TEXT.replace("=", " = "), "store.toml")
    keys = [ledger.cell_key(commented, c) for c in commented.cells]
    assert keys == record["cells"]


@pytest.mark.integration  # a whole run of a sweep
def test_a_run_waits_for_the_folder_lock_and_says_who_holds_it(folder, monkeypatch):
    monkeypatch.setattr(results_folder, "LOCK_WAIT_S", 0.2)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(layout.ResultsError, match="another gradjax run has held"):
            engine.execute_sweep(parse_sweep(TEXT, "store.toml"), folder, quiet=True, devices=1)


def test_an_empty_list_filter_is_one_clear_error(folder):
    with pytest.raises(ValueError, match=r"^activation=\[\] matches no row \(an empty list "
                                         r"matches nothing\); values present: 'relu'$"):
        gradjax.load(folder, activation=[])


def test_a_list_filter_names_its_values_that_match_no_row(folder):
    # as a scalar filter does: scale=7.0 raises, so does 7.0 in a list (exact ==, as the filter)
    with pytest.raises(ValueError, match=r"^scale=\[0.5, 7.0\]: 7.0 matches no row; values "
                                         r"present: 0.5, 1.0$"):
        gradjax.load(folder, scale=[0.5, 7.0])
    with pytest.raises(ValueError, match=r"scale=\[0.5, 0.50001\]: 0.50001 matches"):
        gradjax.load(folder, scale=[0.5, 0.50001])
    with pytest.raises(ValueError, match=r"^layer=\[-1, -3, 4\]: -3, 4 match no row; values "
                                         r"present: 1, 2 \(or -1"):
        gradjax.load(folder, "per_seed", layer=[-1, -3, 4])
    assert len(gradjax.load(folder, scale=[0.5, 1], layer=[-1, 1])) == 12  # all present


def test_loading_a_folder_that_does_not_exist_says_so(folder, tmp_path):
    for path in (tmp_path / "nope", str(tmp_path / "nope"), f"file://{tmp_path}/nope"):
        with pytest.raises(FileNotFoundError, match=r"nope: no such results folder$"):
            gradjax.load(path)
    with pytest.raises(FileNotFoundError, match=r"nope/per_seed: no such results folder$"):
        gradjax.load(tmp_path / "nope" / "per_seed")
    empty = tmp_path / "empty"
    (empty / "per_seed").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"summary: no Parquet files \(no finished cell "
                                                r"yet\)$"):
        gradjax.load(empty)
    with pytest.raises(FileNotFoundError, match=r"\(no finished cell yet\)$"):
        gradjax.load(empty, "per_seed")
    (empty / ".run.json").write_text(json.dumps({"per_seed": []}))
    with pytest.raises(FileNotFoundError, match=r"per_seed: no Parquet files \(its sweep has "
                                                r"per_seed = false: use the summary table\)$"):
        gradjax.load(empty, "per_seed")


NULLS = {**SWEEP, "name": "nulls", "grid": {"scale": [0.0, 1.0]}}


@pytest.fixture(scope="module")
def nulls(tmp_path_factory):
    """The 2-3-1 ReLU net of `folder` (the same program), at scale 0 and 1."""
    out = tmp_path_factory.mktemp("nulls") / "nulls"
    engine.execute_sweep(parse_sweep(tiny_sweep_text(**NULLS), "nulls.toml"), out, quiet=True,
                     devices=1, chunk=6)
    return out


def test_a_statistic_that_does_not_apply_is_null_and_a_computed_nan_stays_nan(nulls):
    """Layer 2 is the output layer (no activation statistics), its b has one entry (no
    grad_var or grad_cv) and its W one unit (no grad_unit_cos_sq, nor has any b); no
    per_example; step 0 (no loss_halved_step). At scale 0 (W = 0) no gradient reaches layer 1:
    its gradients are exactly 0 and their grad_cv, 0 / 0, is a computed NaN."""
    con = duckdb.connect()
    per_seed = f"read_parquet('{nulls}/per_seed/*.parquet')"

    def one(sql: str) -> tuple:
        return con.execute(sql.replace("PER_SEED", per_seed)).fetchone()

    assert one("select count(*) from PER_SEED")[0] == 3 * 5 * 4
    # activation statistics: layer 1 only; avg() is over those rows (numpy, from pyarrow)
    table = pq.read_table(nulls / "per_seed")
    layer1 = table.filter(pa.compute.equal(table.column("layer"), 1))
    want = np.mean(layer1.column("preact_var").to_numpy())
    count, got = one("select count(preact_var), avg(preact_var) from PER_SEED")
    assert count == 30 and np.isfinite(want) and got == pytest.approx(want, rel=1e-12)
    assert one("select count(act_deriv_mean) from PER_SEED where layer = 2") == (0,)
    # a one-entry tensor has no spread: grad_var and grad_cv are null, not 0
    assert one("select count(*), count(grad_var), count(grad_cv) from PER_SEED where n = 1"
               ) == (15, 0, 0)
    assert one("select count(grad_var) from PER_SEED where n > 1") == (45,)
    assert one("select count(grad_unit_cos_sq) from PER_SEED where param = 'b' or layer = 2"
               ) == (0,)
    assert one("select count(grad_unit_cos_sq) from PER_SEED where layer = 1 and param = 'W'"
               ) == (15,)
    assert one("select count(gsnr), count(grad_noise_var), count(loss_halved_step) "
               "from PER_SEED") == (0, 0, 0)
    # computed NaN stays NaN: at scale 0 every layer-1 gradient is 0, grad_cv 0 / 0
    zero = "from PER_SEED where scale = 0 and layer = 1"
    assert one(f"select count(*), count(grad_cv), sum(isnan(grad_cv)::int), "
               f"sum((grad_max_abs = 0)::int) {zero}") == (10, 10, 10, 10)
    assert np.isnan(one(f"select avg(grad_cv) {zero}")[0])
    summary = f"read_parquet('{nulls}/summary/*.parquet')"
    rows = con.execute(
        "select scale, label, layer, param, grad_cv_mean, frac_seeds_all_zero, grad_var_p50, "
        "preact_var_mean, loss_halved_step_mean, frac_loss_halved, gsnr_mean "
        f"from {summary} order by cell, layer, param").df()
    born_dead = rows[(rows["scale"] == 0) & (rows["layer"] == 1)]
    assert np.isnan(born_dead["grad_cv_mean"]).all()  # NaN (not null: pandas reads it so too)
    assert (born_dead["frac_seeds_all_zero"] == 1).all()
    counts = one(f"select count(grad_cv_mean), count(grad_var_p50), count(preact_var_mean), "
                 f"count(loss_halved_step_mean), count(gsnr_mean), count(*) from {summary}")
    assert counts == (9, 9, 6, 0, 0, 12)
    assert one(f"select count(grad_cv_mean) from {summary} where scale = 0 and layer = 1"
               ) == (2,)  # the NaN aggregates are values
    assert (rows["frac_loss_halved"] == 0).all()  # step 0: no init has halved its loss


def test_stats_frame_marks_what_does_not_apply_and_keeps_a_computed_nan():
    params = [{k: np.zeros_like(v) if k == "W" else v for k, v in layer.items()}
              for layer in gradjax.init_mlp(jax.random.key(0), (2, 3, 1))]
    x, y = np.array([[0.5, -0.7]]), np.array([[1.0]])
    frame = gradjax.stats_frame(gradjax.grad_stats(params, x, y, activation="relu"), params)
    assert frame["n"].tolist() == [6, 3, 3, 1]
    assert frame["grad_var"].isna().tolist() == [False, False, False, True]  # <NA>: n = 1
    assert np.isnan(frame.loc[0, "grad_cv"]) and frame.loc[0, "grad_var"] == 0  # W = 0 above
    assert frame["preact_var"].isna().tolist() == [False, False, True, True]  # output layer
    assert frame["grad_unit_cos_sq"].isna().tolist() == [False, True, True, True]
    for stat in ("gsnr", "param_sq_norm", "loss_halved_step"):  # grad_stats has none
        assert frame[stat].isna().all()


PLUGIN = '''
import jax
import jax.numpy as jnp


def net(in_dim, out_dim):
    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"dense": {"kernel": jax.random.normal(k1, (in_dim, 4)),
                          "bias": jax.random.normal(k2, (4,))},
                "head": {"kernel": jax.random.normal(k3, (4, out_dim))}}

    def apply(p, x):
        z = x @ p["dense"]["kernel"] + p["dense"]["bias"][None, :]
        return jnp.tanh(z) @ p["head"]["kernel"], {"hidden": z}

    return init, apply
'''


@pytest.mark.integration  # a whole run of a sweep
def test_a_plugin_s_leaves_and_taps_have_nulls_where_a_statistic_does_not_apply(tmp_path):
    (tmp_path / "plug.py").write_text(PLUGIN)
    (tmp_path / "plug.toml").write_text(
        'name = "plug"\nseeds = 2\n[defaults]\nmodel = "plug:net"\nin_dim = 3\nout_dim = 1\n')
    engine.execute_sweep(load_sweep(tmp_path / "plug.toml"), tmp_path / "out", quiet=True,
                     devices=1)
    table = pq.read_table(tmp_path / "out" / "per_seed")
    nulls = {p: {s for s in STATS if table.filter(pa.compute.equal(table["param"], p))[s]
                 .null_count == 2} for p in set(table["param"].to_pylist())}
    never = {"grad_frac_underflow", "grad_noise_var", "gsnr", "delta_sq_norm",
             "loss_halved_step"}  # MLP only, per_example = false, a tap's, step 0
    activation = {"preact_mean", "preact_var", "act_frac_dead", "act_frac_saturated",
                  "act_deriv_mean"}
    assert nulls["['dense']['kernel']"] == never | activation
    # a 1-D leaf and a [4, 1] kernel have fewer than 2 units: no unit-direction statistic
    assert nulls["['dense']['bias']"] == nulls["['head']['kernel']"] == (
        never | activation | {"grad_unit_cos_sq"})
    # a tap has no gradient, and no activation option means no phi' statistics; it has dL/dz
    assert nulls["taps['hidden']"] == set(STATS) - {"preact_mean", "preact_var", "loss_value",
                                                    "delta_sq_norm"}
    tap_rows = table.filter(pa.compute.equal(table["param"], "taps['hidden']"))
    assert np.all(np.asarray(tap_rows["delta_sq_norm"]) > 0)
    summary = pq.read_table(tmp_path / "out" / "summary").to_pandas(types_mapper=pd.ArrowDtype)
    tap = summary[summary["param"] == "taps['hidden']"].iloc[0]
    assert tap["grad_var_mean"] is pd.NA and tap["grad_var_across_seeds"] is pd.NA
    assert tap["frac_seeds_all_zero"] is pd.NA and tap["preact_var_mean"] > 0
