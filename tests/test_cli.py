"""The command line: run/summary/findings on the seed's sweep, lazy bench/report, the compile
cache, and refusing another sweep's folder."""

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_sweep_text

import gradjax
from gradjax import cli

ROOT = Path(__file__).parents[1]
SEED_SWEEP = ROOT / "sweeps" / "seed_examples.toml"
TINY = tiny_sweep_text()  # 6 seeds, scale 0.5 and 1.0


def gradjax_cmd(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "gradjax", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory):
    """sweeps/seed_examples.toml with 40 inits per cell, run through the CLI."""
    out = tmp_path_factory.mktemp("seed") / "seed_examples"
    assert cli.main(["run", str(SEED_SWEEP), "--seeds", "40", "--out", str(out), "--quiet"]) == 0
    return out


def test_findings_speak_in_the_seed_terms_and_match_the_tables(seed_folder, capsys):
    assert cli.main(["findings", str(seed_folder)]) == 0
    text = capsys.readouterr().out
    summary = gradjax.load(seed_folder, param="W", layer=1)
    relu = summary[summary["activation"] == "relu"].iloc[0]
    assert f"ReLU example: {relu['grad_frac_zero_mean']:.1%} of W1's gradient entries" in text
    assert f"{relu['frac_seeds_all_zero']:.1%} of inits are born dead" in text
    tiny = gradjax.load(seed_folder, label="tiny_init_example", param="W")
    w2_cv, w1_cv = tiny.loc[tiny["layer"] == 2, "grad_cv_p50"].item(), \
        tiny.loc[tiny["layer"] == 1, "grad_cv_p50"].item()
    assert f"is {w2_cv:.3g}, against {w1_cv:.3g} for W1 under the same tiny init" in text
    # cells are named by label and the options that vary, not "cell 0" or "2-3x1-1"
    assert "relu_example (activation relu, output_activation linear, scale 1, " in text
    assert "cell 0" not in text and "x1-" not in text
    w1_sq = tiny.loc[tiny["layer"] == 1, "grad_sq_norm_mean"].item()
    assert f"W1's are tiny ({w1_sq:.3g} vs" in text
    assert w2_cv < 0.05 * w1_cv  # W2's entries are nearly one value under the tiny init
    # one example: dL/dW1 = outer(x, delta1) has rank 1, so every pair of W1 columns has cosine
    # +-1 and the mean squared cosine of every init with 2 or more live units is exactly 1
    cos = gradjax.load(seed_folder, "per_seed", layer=1, param="W")["grad_unit_cos_sq"].dropna()
    assert len(cos) > 0 and np.allclose(cos.to_numpy(), 1.0, atol=1e-5)
    assert "is exactly 1 in 100.0% of the inits with 2 or more live units, in every such" in text
    assert "dL/dW1 = outer(x, delta1)" in text


def test_summary_table_groups_and_filters(seed_folder, capsys):
    assert cli.main(["summary", str(seed_folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("W rows by label, activation, output_activation, scale")
    assert out[0].endswith("and layer; one cell per row.")
    assert out[1].split()[:5] == ["label", "activation", "output_activation", "scale",
                                  "bias_scale"]
    assert len(out) == 2 + 3 * 2 + 1  # what the rows are, header, 3 cells x 2 layers, legend
    assert cli.main(["summary", str(seed_folder), "--by", "activation", "--layer", "-1"]) == 2
    assert capsys.readouterr().err.startswith('error: label ("", relu_example, '
                                              'tiny_init_example), ')
    assert cli.main(["summary", str(seed_folder), "--by", "activation", "--layer", "-1",
                     "--pool"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert ('median over its `cells` (--pool: pooled over label "", relu_example, '
            'tiny_init_example; ') in lines[0]
    assert lines[1].split()[:4] == ["activation", "layer", "cells", "seeds"]
    sigmoid = lines[3].split()
    assert sigmoid[:4] == ["sigmoid", "2", "2", "40"]
    frame = gradjax.load(seed_folder, activation="sigmoid", layer=2, param="W")
    assert float(sigmoid[4]) == pytest.approx(frame["grad_sq_norm_p50"].median(), rel=2e-3)
    assert cli.main(["summary", str(seed_folder), "--by", "colour"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --by: unknown column(s) colour")
    assert cli.main(["summary", str(seed_folder / "nope")]) == 2


# ------------------------------------------------ synthetic summary folders (no JAX run)

SYNTHETIC = dict(model="mlp", in_dim=2, width=4, depth=1, out_dim=1, activation="tanh",
                 output_activation="linear", init="normal", scale=1.0, bias_init="zeros",
                 bias_scale=1.0, loss="mse", norm="none", batch=1, step=0, optimizer="sgd",
                 learning_rate=0.1)
SYNTHETIC_STATS = ("grad_sq_norm_p50", "grad_sq_norm_mean", "delta_sq_norm_p50",
                   "grad_frac_zero_mean", "frac_seeds_all_zero", "grad_cv_p50",
                   "grad_unit_cos_sq_mean", "grad_var_across_seeds", "loss_value_p50",
                   "frac_loss_halved", "loss_halved_step_p50")


def write_summary(folder: Path, cells: list[dict], stats) -> Path:
    """A results folder with only a summary table, in the results schema's column order
    (sweep, cell, label, options, layer, ...): one W and one b row per layer of each cell,
    every statistic `stats(cell options, layer)`."""
    rows = []
    for cell, options in enumerate(cells):
        options = {**SYNTHETIC, **options}
        label = options.pop("label", "")
        n_layers = options["depth"] + 1
        for layer in range(1, n_layers + 1):
            for param in ("W", "b"):
                rows.append({"sweep": "synthetic", "cell": cell, "label": label, **options,
                             "layer": layer, "layer_from_output": layer - n_layers - 1,
                             "param": param, "seeds": 10, **stats(options, layer)})
    (folder / "summary").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "summary" / "cell-00000.parquet")
    return folder


def _depth_value(options: dict, layer: int) -> dict:
    """Each cell's own numbers, so a row shows whose median it is."""
    value = options["depth"] * 100 + options["scale"] * 10 + (options["activation"] == "relu")
    return {s: value + layer / 10 for s in SYNTHETIC_STATS}


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory):
    """activation x scale x depth (2, 8): a grid with an option that `--by` can leave out."""
    cells = [dict(activation=a, scale=s, depth=d) for a in ("relu", "tanh") for s in (1.0, 2.0)
             for d in (2, 8)]
    return write_summary(tmp_path_factory.mktemp("depths"), cells, _depth_value)


def _row(lines: list[str], *first: str) -> list[str]:
    return next(line.split() for line in lines if line.split()[: len(first)] == list(first))


def test_summary_refuses_to_pool_an_option_outside_by(depth_folder, capsys):
    argv = ["summary", str(depth_folder), "--by", "activation,scale", "--layer", "1"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: depth varies (2, 8) and is not in --by: add it to --by, fix it with --where "
        "depth=VALUE, or pass --pool to pool over it"]
    depth_2 = 2 * 100 + 2.0 * 10 + 1 + 0.1  # relu, scale 2, depth 2, layer 1
    depth_8 = 8 * 100 + 2.0 * 10 + 1 + 0.1
    assert cli.main([*argv, "--where", "depth=2"]) == 0
    assert float(_row(capsys.readouterr().out.splitlines(), "relu", "2")[4]) == pytest.approx(
        depth_2, rel=2e-3)
    assert cli.main(["summary", str(depth_folder), "--by", "activation,scale,depth",
                     "--layer", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert float(_row(lines, "relu", "2", "8")[5]) == pytest.approx(depth_8, rel=2e-3)
    assert cli.main([*argv, "--pool"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "median over its `cells` (--pool: pooled over depth 2, 8)" in lines[0]
    relu_2 = _row(lines, "relu", "2")
    assert relu_2[3] == "2"  # cells
    assert float(relu_2[5]) == pytest.approx(np.median([depth_2, depth_8]), rel=2e-3)
    assert cli.main([*argv, "--where", "depth=3"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --where depth=3: matches no row; values present: 2, 8"]


def _trained(options: dict, layer: int) -> dict:
    """A training cell's numbers in closed form: the loss falls by `rate` per step; sgd at
    scale 0.5 never halves it."""
    step, scale = options["step"], options["scale"]
    rate = {"sgd": 0.97, "adam": 0.8}[options["optimizer"]] ** scale
    stuck = (options["optimizer"], scale) == ("sgd", 0.5)
    halved = 0.0 if stuck or step == 0 else min(1.0, step * scale / 16)
    return {**_depth_value(options, layer), "loss_value_p50": 0.6 * rate**step,
            "frac_loss_halved": halved,
            "loss_halved_step_p50": 4.0 / scale if halved > 0 else np.nan}


def test_findings_on_a_training_sweep_lead_with_the_loss(tmp_path, capsys):
    steps = (0, 5, 20)
    cells = [dict(optimizer=o, scale=s, step=t) for o in ("sgd", "adam") for s in (0.5, 1.0)
             for t in steps]
    folder = write_summary(tmp_path / "train", cells, _trained)
    assert cli.main(["findings", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].startswith("Training: the loss (median over inits) at each recorded step")
    expected = []
    for optimizer, scale in (("sgd", 0.5), ("sgd", 1.0), ("adam", 0.5), ("adam", 1.0)):
        rate = {"sgd": 0.97, "adam": 0.8}[optimizer] ** scale
        losses = [0.6 * rate**t for t in steps]
        halved = ("no init halved its loss by step 20" if (optimizer, scale) == ("sgd", 0.5)
                  else f"{min(1.0, 20 * scale / 16):.1%} of inits halved their loss by step 20, "
                  f"at step {4.0 / scale:g} (median)")
        expected.append(f"  scale {scale:g}, optimizer {optimizer}: loss {losses[0]:.3g} at step "
                        f"0, {losses[1]:.3g} at 5, {losses[2]:.3g} at 20; {halved}")
    assert lines[4:8] == expected
    assert lines[8:10] == ["", "Gradients, per configuration and step:"]
    assert lines[10] == "scale 0.5, step 0, optimizer sgd" and lines[11].startswith("  W1: ")


def test_summary_prints_the_chosen_statistics(seed_folder, capsys):
    assert cli.main(["summary", str(seed_folder), "--by", "label", "--layer", "1",
                     "--stat", "grad_var,delta_sq_norm_mean"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["label", "layer", "seeds", "grad_var_p50", "delta_sq_norm_mean"]
    relu = next(line.split() for line in lines if line.split()[0] == "relu_example")
    row = gradjax.load(seed_folder, label="relu_example", layer=1, param="W").iloc[0]
    assert float(relu[3]) == pytest.approx(row["grad_var_p50"], rel=2e-3)
    assert float(relu[4]) == pytest.approx(row["delta_sq_norm_mean"], rel=2e-3)
    assert cli.main(["summary", str(seed_folder), "--stat", "grad_colour"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --stat: unknown statistic 'grad_colour'")


def test_findings_on_another_sweep_name_what_varies(tmp_path, capsys):
    text = tiny_sweep_text(defaults={"width": 4, "bias_init": "zeros"},
                           grid={"scale": None, "norm": ["none", "layernorm"]})
    sweep = tmp_path / "norms.toml"
    sweep.write_text(text)
    out = tmp_path / "norms"
    assert cli.main(["run", str(sweep), "--out", str(out), "--quiet"]) == 0
    assert cli.main(["findings", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "norm none" in lines and "norm layernorm" in lines  # the cells' names
    assert lines[1].startswith("Every cell: in_dim 2, width 4, depth 1, out_dim 1, activation relu")
    assert "bias_scale" not in "\n".join(lines)  # bias_init zeros does not use it
    assert "In the seed's terms:" not in lines
    assert lines[-1].startswith("(The seed's own findings") and "has none" in lines[-1]
    w = gradjax.load(out, param="W", norm="layernorm")
    ratio = w["delta_sq_norm_p50"].iloc[0] / w["delta_sq_norm_p50"].iloc[-1]
    assert f"  |dL/dz|^2 (median over inits) at layer 1 is {ratio:.3g} x the output layer's" in (
        lines)


def test_validate_estimates_time_and_memory_compiling_and_writing_nothing(
        tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(TINY)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", str(sweep)]) == 0
    assert "--estimate" in capsys.readouterr().out
    compiles: list[float] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compiles.append(seconds)
        if event == "/jax/core/compile/backend_compile_duration" else None)
    assert cli.main(["validate", str(sweep), "--estimate"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    match = re.fullmatch(r"estimate \(a model of the run's cost, nothing compiled; "
                         r"docs/sweeps.md\): about ([\d.e+]+) s: [\d.]+ s starting, "
                         r"([\d.e+]+) s compiling 1 program\(s\) .*, ([\d.e+-]+) s "
                         r"computing 1 chunk\(s\), Parquet writes of a large sweep not "
                         r"included; device memory "
                         r"about ([\d.]+) KB per chunk .* the estimate took ([\d.e-]+) s", line)
    assert match, line
    assert float(match.group(2)) > 0 and float(match.group(3)) > 0 and float(match.group(4)) > 0
    assert compiles == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_run_refuses_another_sweeps_folder(seed_folder, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(SEED_SWEEP.read_text().replace("root_seed = 0", "root_seed = 1"))
    before = sorted(p.stat().st_mtime_ns for p in seed_folder.rglob("*.parquet"))
    assert cli.main(["run", str(other), "--seeds", "40", "--out", str(seed_folder),
                     "--no-cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds results of a different sweep" in err[0]
    assert sorted(p.stat().st_mtime_ns for p in seed_folder.rglob("*.parquet")) == before


def test_bench_and_report_are_delegated(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("gradjax.analysis.report")
    fake.add_arguments = lambda p: (p.add_argument("dir"), p.add_argument("--fmt"))
    fake.main = lambda args: seen.append((args.dir, args.fmt)) or 0
    monkeypatch.setitem(sys.modules, "gradjax.analysis.report", fake)
    assert cli.main(["report", "results/x", "--fmt", "svg"]) == 0
    assert seen == [("results/x", "svg")]


def test_a_missing_optional_dependency_fails_only_its_subcommand(monkeypatch, capsys, tmp_path):
    real = cli.importlib.import_module

    def import_module(name, *args):
        if name == "gradjax.bench.command":
            raise ModuleNotFoundError("No module named 'psutil'")
        return real(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    assert cli.main(["bench", "--workload", "all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: gradjax bench is unavailable here: No module named 'psutil'"]
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(TINY)
    assert cli.main(["validate", str(sweep)]) == 0


def test_module_entry_point_and_lazy_imports(tmp_path):
    result = gradjax_cmd("--help")
    assert result.returncode == 0
    for command in ("run", "summary", "validate", "findings", "bench", "report"):
        assert command in result.stdout
    code = ("import sys; from gradjax.cli import main; "
            f"rc = main(['validate', {str(SEED_SWEEP)!r}]); "
            "print(rc, [m for m in ('gradjax.bench.command', 'gradjax.analysis.report', "
            "'matplotlib') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "0 []"


def test_grown_sharded_and_rerun_sweeps_load_every_program_from_the_cache(tmp_path):
    """Chunks and packs on the ladder: 300 seeds of 5 scales plan a 384-seed chunk of 6
    points; the same sweep grown to 380 seeds and 6 scales, a shard of it in a new folder, and
    a rerun all plan that program again, so none of them compiles one; `--no-cache` does."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # a cache of its own: it counts compiles
    grown = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]

    def run(out, seeds, scales, *extra):
        sweep = tmp_path / f"{seeds}-{len(scales)}.toml"
        sweep.write_text(tiny_sweep_text(seeds=seeds, grid={"scale": scales}))
        done = gradjax_cmd("run", str(sweep), "--out", str(tmp_path / out), *extra, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = run("out", 300, grown[:5])
    assert "compiled 1 chunk programs, loaded 0 from the persistent compile cache" in first
    assert list((tmp_path / "cache" / "gradjax" / "jax").iterdir())
    for out, extra in (("out", ()), ("shard", ("--shard", "1/2")), ("out", ("--overwrite",))):
        log = run(out, 380, grown, *extra)  # grown, a shard of it, a rerun
        assert re.search(r"compiled 0 chunk programs, loaded 1 from the persistent compile "
                         r"cache, 0 cache misses in all", log), (extra, log)
    assert "compiled 1 chunk programs, persistent compile cache off" in run(
        "out", 380, grown, "--overwrite", "--no-cache")
