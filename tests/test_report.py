"""`gradjax report` on small results folders in the sweep engine's schema (synthetic statistics,
real mean-field columns)."""

import argparse
import base64
import itertools
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gradjax.analysis import distributions, drawing, heatmaps, profiles, report, training_figures
from gradjax.nn.activations import ACTIVATIONS
from gradjax.nn.theory_columns import add_theory_columns
from gradjax.results import reading
from gradjax.spec import LAYER_STATS, PARAM_STATS, STAT_BY_NAME, STAT_TABLE

pytest.importorskip("matplotlib")

SEEDS = 64
DEPTH, WIDTH = 4, 16
OPTIONS = dict(
    in_dim=WIDTH, width=WIDTH, depth=DEPTH, out_dim=1, output_activation="linear",
    leaky_slope=0.01, init="fan_in_normal", bias_init="normal", bias_scale=0.1, loss="mse",
    norm="none", dtype="float32", inputs="gaussian", targets="gaussian", batch=2,
    structural_zeros=True,
)
STATS = (*PARAM_STATS, *LAYER_STATS, "loss_value")


def _fake_stats(rng, options: dict) -> dict[str, np.ndarray]:
    """Per-seed statistics [seeds, layers(, 2)] shaped like the probe's, drawn with numpy:
    |grad|^2 shrinks towards the input by sigma_w^2 / 2 per layer, ReLU units die, etc."""
    n_layers, relu = options["depth"] + 1, options["activation"] == "relu"
    decay = np.log(options["scale"] ** 2 / 2) * (n_layers - 1 - np.arange(n_layers))
    sq_norm = np.exp(rng.normal(decay[None, :, None], 1.0, (SEEDS, n_layers, 2)))
    dead = rng.random((SEEDS, n_layers)) < (0.5 if relu else 0.0)
    frac_zero = np.where(dead, 1.0, rng.uniform(0, 0.6 if relu else 0, (SEEDS, n_layers)))
    sq_norm[dead] = 0.0
    entries = np.array([WIDTH * WIDTH, WIDTH])
    stats = {
        "grad_sq_norm": sq_norm,
        "grad_var": sq_norm / entries,
        "grad_mean": rng.normal(0, 1e-3, sq_norm.shape),
        "grad_max_abs": np.sqrt(sq_norm),
        "grad_mean_abs": np.sqrt(sq_norm / entries),
        "grad_cv": np.where(sq_norm > 0, rng.uniform(0.5, 1.5, sq_norm.shape), np.nan),
        "grad_frac_zero": np.repeat(frac_zero[..., None], 2, axis=-1),
        "grad_frac_subnormal": np.zeros(sq_norm.shape),
        "grad_nonfinite": np.zeros(sq_norm.shape),
        "grad_frac_underflow": np.zeros(sq_norm.shape),
        "grad_unit_cos_sq": np.stack([rng.uniform(0, 1, (SEEDS, n_layers)),
                                   np.full((SEEDS, n_layers), np.nan)], axis=-1),
    }
    saturated = min(1.0, options["scale"] / 4)
    stats.update({
        "delta_sq_norm": sq_norm[..., 1],
        "preact_mean": rng.normal(0, 0.1, (SEEDS, n_layers)),
        "preact_var": np.full((SEEDS, n_layers), options["scale"] ** 2),
        "act_frac_dead": dead.astype(float),
        "act_frac_saturated": rng.uniform(0, saturated, (SEEDS, n_layers)),
        "act_deriv_mean": rng.uniform(0, 1, (SEEDS, n_layers)),
        "loss_value": rng.exponential(1.0, SEEDS),
    })
    for name in LAYER_STATS[1:]:
        stats[name][:, -1] = np.nan  # no activation on the output layer
    return stats


def _cell_frames(sweep: str, cell: int, label: str, options: dict, rng):
    """(per_seed, summary) frames of one cell in the results schema (the columns used here)."""
    stats = _fake_stats(rng, options)
    n_layers = options["depth"] + 1
    seed, layer, param = np.meshgrid(np.arange(SEEDS), np.arange(1, n_layers + 1), ["W", "b"],
                                     indexing="ij")
    per_seed = pd.DataFrame({"seed": seed.ravel(), "layer": layer.ravel(), "param": param.ravel()})
    for name in PARAM_STATS:
        per_seed[name] = stats[name].reshape(-1)
    for name in LAYER_STATS:
        per_seed[name] = np.repeat(stats[name].reshape(-1), 2)
    per_seed["loss_value"] = np.repeat(stats["loss_value"], n_layers * 2)
    for key, value in dict(sweep=sweep, cell=cell, label=label, **options).items():
        per_seed[key] = value
    groups = per_seed.groupby(["layer", "param"], sort=True)
    summary = groups[list(STATS)].agg(["mean", "median"])
    summary.columns = [f"{s}_{'p50' if a == 'median' else a}" for s, a in summary.columns]
    summary = summary.reset_index()
    summary["frac_seeds_all_zero"] = groups["grad_max_abs"].agg(lambda v: np.mean(v == 0)).values
    for key, value in dict(sweep=sweep, cell=cell, label=label, **options, seeds=SEEDS).items():
        summary[key] = value
    return _schema_order(per_seed, options), _schema_order(add_theory_columns(summary), options)


def _schema_order(frame: pd.DataFrame, options: dict) -> pd.DataFrame:
    """The results schema's column order: identity, then the options, then positions and
    statistics (`gradjax.results.columns.option_columns` reads the options by position)."""
    first = ["sweep", "cell", "label", *options]
    return frame[first + [c for c in frame.columns if c not in first]]


def _write_folder(path, cells):
    """A results folder (summary/ and per_seed/ Parquet files) of cells [(label, options)]."""
    rng = np.random.default_rng(7)
    for index, (label, options) in enumerate(cells):
        frames = _cell_frames("test_sweep", index, label, {**OPTIONS, **options}, rng)
        for name, frame in zip(("per_seed", "summary"), frames, strict=True):
            (path / name).mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path / name / f"cell-{index:05d}.parquet")
    return path


@pytest.fixture(scope="module")
def grid_folder(tmp_path_factory):
    """tanh and relu x three scales: a complete activation x scale grid, in theory's model."""
    cells = [("", dict(activation=a, scale=s)) for a in ("tanh", "relu") for s in (0.1, 1.0, 3.0)]
    return _write_folder(tmp_path_factory.mktemp("grid"), cells)


@pytest.fixture(scope="module")
def examples_folder(tmp_path_factory):
    """Three cells that are no grid, like the seed's examples: plain normal inits, and options
    that follow others (output_activation and inputs follow activation, bias_scale scale)."""
    sigmoid = dict(activation="sigmoid", output_activation="sigmoid", inputs="[[0.5, 0.7]]",
                   init="normal", bias_scale=1.0)
    cells = [
        ("", dict(sigmoid, scale=1.0)),
        ("relu_example", dict(sigmoid, activation="relu", output_activation="linear",
                              inputs="[[0.5, -0.7]]", scale=1.0)),
        ("tiny", dict(sigmoid, scale=0.01, bias_scale=0.01)),
    ]
    return _write_folder(tmp_path_factory.mktemp("examples"), cells)


def _run(*argv) -> int:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return report.main(parser.parse_args([str(a) for a in argv]))


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r"src='data:image/png;base64,([^']+)'", page)]


@pytest.mark.integration  # the whole report command
def test_report_on_a_grid_writes_every_figure_inline(grid_folder, tmp_path, capsys):
    out = tmp_path / "report"
    assert _run(grid_folder, "--out", out) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted([*(f"heatmap-{s}.png" for s in heatmaps.HEATMAP_STATS),
                            "profiles.png", "histograms.png", "examples.png"])
    page = (out / "report.html").read_text()
    images = _images(page)
    assert len(images) == len(names)
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") and len(img) > 10_000 for img in images)
    assert {img for img in images} == {(out / n).read_bytes() for n in names}
    assert "src='http" not in page and "<script" not in page  # self-contained, nothing fetched
    assert "Mean-field check" in page and "Not drawn" not in page
    assert "wrote 7 figures" in capsys.readouterr().out


@pytest.mark.integration  # the whole report command
def test_default_output_folder_is_dir_report(examples_folder):
    assert _run(examples_folder) == 0
    assert (examples_folder / "report" / "report.html").exists()


@pytest.mark.integration  # the whole report command
def test_no_grid_is_a_note_not_a_crash(examples_folder, tmp_path):
    out = tmp_path / "r"
    assert _run(examples_folder, "--out", out) == 0
    assert not list(out.glob("heatmap-*.png"))
    page = (out / "report.html").read_text()
    assert "no complete activation x scale grid (2 activation(s), 2 scale(s), 3 of the 4" in page
    assert "Mean-field check" not in page  # init "normal": no theory
    assert len(_images(page)) == 3


def test_heatmap_text_names_the_extreme_cells(grid_folder):
    summary = _summary(grid_folder)
    rows = summary[(summary["param"] == "W") & (summary["layer"] == 1)]
    fig = heatmaps.heatmap_figure(rows, 1, "grad_var")
    lowest = rows.loc[rows["grad_var_p50"].idxmin()]
    assert f"Lowest {lowest['grad_var_p50']:.3g} ({lowest['activation']}, scale " in fig.text
    assert drawing.spans_decades(rows["grad_var_p50"].to_numpy())  # spans decades: log colours


def test_theory_line_is_anchored_at_the_output_layer():
    cell = pd.DataFrame({
        "layer": [1, 2, 3, 4],
        "theory_grad_ratio": [np.nan, 0.5, 0.25, np.nan],
        "grad_sq_norm_mean": [9.0, 9.0, 9.0, 2.0],
    })
    np.testing.assert_allclose(profiles._theory_line(cell), [np.nan, 0.25, 0.5, 2.0])
    assert profiles._theory_line(cell.assign(theory_grad_ratio=np.nan)) is None


def test_profiles_and_table_show_theory_for_fan_in_normal(grid_folder):
    summary = _summary(grid_folder)
    assert "Dashed: the mean-field prediction" in profiles.profile_figure(summary).text
    relu = summary[(summary["activation"] == "relu") & (summary["scale"] == 3.0)]
    assert math.isclose(relu["theory_chi1"].iloc[0], 4.5)  # sigma_w^2 / 2
    table = report.theory_table(summary)
    assert table.count("<tr>") == 1 + 6 and "<td>relu</td><td>9</td>" in table
    assert "<td>4.5</td>" in table


def test_theory_columns_are_recomputed_for_older_folders(grid_folder):
    summary = _summary(grid_folder)
    older = summary.drop(columns=["theory_fit_chi1", "theory_chi1"])
    again = report.with_theory(older)
    pd.testing.assert_frame_equal(again[summary.columns], summary, check_like=True)


def test_colour_scales():
    from matplotlib.colors import LogNorm, Normalize, SymLogNorm

    norm, log = heatmaps._colour_norm(np.array([1e-9, 1e-3, np.nan]))
    assert log and isinstance(norm, LogNorm)
    norm, log = heatmaps._colour_norm(np.array([0.0, 1e-5, 0.2]))
    assert log and isinstance(norm, SymLogNorm) and norm(0.0) == 0.0  # zeros stay visible
    norm, log = heatmaps._colour_norm(np.array([0.0, 0.3, 0.9]))
    assert not log and type(norm) is Normalize and (norm.vmin, norm.vmax) == (0.0, 0.9)
    limits = heatmaps.HEATMAP_STATS["unit_cos_sq"].limits  # a squared cosine: always 0..1
    norm, log = heatmaps._colour_norm(np.array([1e-4, 1e-3]), limits=limits)
    assert not log and (norm.vmin, norm.vmax) == (0.0, 1.0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--heatmap-stats", "grad_var,nope"], "--heatmap-stats: unknown nope"),
        (["--hist-stat", "nope"], "--hist-stat: unknown statistic 'nope'"),
        (["--cells", "relu_example,99"], "--cells: no cell '99'"),
        (["--layer", "9"], "--layer 9: no cell has that layer"),
    ],
)
def test_bad_options_are_one_error_line(examples_folder, tmp_path, capsys, argv, message):
    assert _run(examples_folder, "--out", tmp_path / "x", *argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_folder_is_an_error(tmp_path, capsys):
    assert _run(tmp_path / "nothing") == 2
    assert "no readable summary table" in capsys.readouterr().err


@pytest.mark.integration  # the whole report command
def test_chosen_cells_by_label_and_number(examples_folder, tmp_path):
    out = tmp_path / "r"
    assert _run(examples_folder, "--out", out, "--cells", "relu_example,0",
                "--hist-stat", "grad_frac_zero", "--layer", "-1") == 0
    page = (out / "report.html").read_text()
    assert "relu_example: relu" in page and "cell 0: sigmoid" in page
    assert "tiny: " not in page.split("Histograms of")[1].split("</figure>")[0]


def _summary(folder) -> pd.DataFrame:
    files = sorted((folder / "summary").iterdir())
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_heatmaps_facet_by_a_third_option_and_fix_the_rest():
    rng = np.random.default_rng(3)
    frames = [
        _cell_frames("s", k, "", {**OPTIONS, "activation": a, "scale": s, "depth": d,
                                  "width": w}, rng)[1]
        for k, (a, s, d, w) in enumerate(
            (a, s, d, w) for a in ("tanh", "relu") for s in (0.5, 2.0) for d in (2, 4)
            for w in (8, 16))
    ]
    summary = pd.concat(frames, ignore_index=True)
    figures = heatmaps.heatmap_figures(summary, 1, ["grad_var", "frac_zero"])
    assert [f.name for f in figures] == ["heatmap-grad_var", "heatmap-frac_zero"]
    text = figures[0].text
    assert "one panel per depth" in text and "width = 16 only (of 2 values)" in text
    w1 = summary[(summary["param"] == "W") & (summary["layer"] == 1) & (summary["width"] == 16)]
    highest = w1.loc[w1["grad_var_p50"].idxmax()]
    assert (f"highest {highest['grad_var_p50']:.3g} ({highest['activation']}, scale "
            f"{highest['scale']:.3g}, depth {highest['depth']})") in text


def test_profiles_mark_underflow_and_overflow_on_the_axis_edges(grid_folder):
    summary = _summary(grid_folder)
    assert "Triangles" not in profiles.profile_figure(summary).text
    w = summary["param"] == "W"
    summary.loc[w & (summary["cell"] == 0) & (summary["layer"] == 1), "grad_sq_norm_mean"] = 0.0
    summary.loc[w & (summary["cell"] == 5) & (summary["layer"] == 1), "grad_sq_norm_mean"] = np.inf
    assert "Triangles on the bottom (top) edge" in profiles.profile_figure(summary).text


def _grid_summary(**grid) -> pd.DataFrame:
    """The summary table of every combination of `grid`'s option values (synthetic stats)."""
    rng = np.random.default_rng(5)
    names = list(grid)
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]
    defaults = {"activation": "tanh", "scale": 1.0}
    frames = [_cell_frames("s", k, "", {**OPTIONS, **defaults, **c}, rng)[1]
              for k, c in enumerate(combos)]
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize(
    "values, labels",
    [
        ([1.25, 1.75, 2.25], ["1.25", "1.75", "2.25"]),  # not 1.2, 1.8, 2.2
        ([0.5, 1.0, 2.0], ["0.5", "1", "2"]),
        ([2, 8, 32, 128], ["2", "8", "32", "128"]),
        ([0.7071067811865476, 1.0, 1.118033988749895, 1.5], ["0.707", "1", "1.12", "1.5"]),
        ([1.0, 1.001], ["1", "1.001"]),
        ([0.0031622776601683794, 0.01], ["0.00316", "0.01"]),
        ([0.015625, 0.5], ["0.0156", "0.5"]),
        (["relu", "tanh"], ["relu", "tanh"]),
    ],
)
def test_distinct_labels_use_the_fewest_digits_that_tell_values_apart(values, labels):
    assert drawing.distinct_labels(values) == labels


def test_heatmap_tick_labels_tell_the_scales_apart():
    summary = _grid_summary(activation=["tanh", "relu"], scale=[1.25, 1.75, 2.25])
    rows = summary[(summary["param"] == "W") & (summary["layer"] == 1)]
    ticks = heatmaps.heatmap_figure(rows, 1, "grad_var").image_text.splitlines()
    assert {"1.25", "1.75", "2.25"} <= set(ticks) and not {"1.2", "1.8", "2.2"} & set(ticks)


def test_heatmaps_of_two_options_that_are_not_activation_and_scale():
    summary = _grid_summary(init=["normal", "he_normal"], depth=[2, 4, 8], width=[8, 16])
    figures = heatmaps.heatmap_figures(summary, 1, ["grad_var"])
    assert len(figures) == 1 and isinstance(figures[0], drawing.Figure)
    image = figures[0].image_text.splitlines()
    assert "per init and depth, one panel per width" in figures[0].text
    assert {"normal", "he_normal", "2", "4", "8", "width 8", "width 16"} <= set(image)
    assert "depth (hidden layers)" in image  # the columns' axis label
    flipped = heatmaps.heatmap_figures(summary, 1, ["grad_var"], axes=["width", "depth", "init"])
    assert "per width and depth, one panel per init" in flipped[0].text
    assert {"init normal", "init he_normal"} <= set(flipped[0].image_text.splitlines())


@pytest.mark.integration  # the whole report command
def test_heatmap_axes_option(grid_folder, tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(grid_folder, "--out", out, "--heatmap-axes", "scale,activation",
                "--heatmap-stats", "grad_var") == 0
    assert "per scale and activation" in (out / "report.html").read_text()
    assert _run(grid_folder, "--out", out, "--heatmap-axes", "depth,scale") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --heatmap-axes: depth does not vary") and err.count("\n") == 1
    assert _run(grid_folder, "--out", out, "--heatmap-axes", "scale") == 2
    assert "not two or three different options" in capsys.readouterr().err


def test_heatmap_colour_scale_per_panel_by_default_or_shared():
    summary = _grid_summary(activation=["tanh", "relu"], scale=[0.5, 3.0], depth=[2, 8])
    rows = summary[(summary["param"] == "W") & (summary["layer"] == 1)]
    unit = heatmaps.HEATMAP_STATS["grad_var"].caption.split()[0:4]  # (per-panel labels are wrapped)

    def colour_bars(figure):
        return " ".join(figure.image_text.split()).count(" ".join(unit))

    per_panel = heatmaps.heatmap_figure(rows, 1, "grad_var", facet="depth")
    shared = heatmaps.heatmap_figure(rows, 1, "grad_var", facet="depth", colour_scale="shared")
    assert colour_bars(per_panel) == 2 and "each panel has its own colour scale" in per_panel.text
    assert colour_bars(shared) == 1 and "one colour scale for all panels" in shared.text


def test_heatmap_notes_are_in_the_image():
    summary = _grid_summary(activation=["tanh", "relu"], scale=[0.5, 2.0], depth=[2, 4],
                            width=[8, 16])
    figure = heatmaps.heatmap_figures(summary, 1, ["frac_zero"])[0]
    assert "Options not shown: width = 16 only (of 2 values)." in figure.image_text


def _titles(figure, suffix: str) -> set[str]:
    return {t for t in figure.image_text.splitlines() if t.endswith(suffix)}


def test_profiles_facet_by_the_second_option_and_show_dz_beside_dw():
    summary = _grid_summary(activation=["tanh", "relu"], scale=[0.5, 1.0, 2.0], depth=[2, 4, 8])
    figure = profiles.profile_figure(report.with_theory(summary))
    dz, dw = r": $\partial L/\partial z_l$", r": $\partial L/\partial W_l$"
    panels = {f"{a}, depth {d}" for a in ("tanh", "relu") for d in (2, 4, 8)}
    assert _titles(figure, dz) == {p + dz for p in panels}
    assert _titles(figure, dw) == {p + dw for p in panels}
    image = figure.image_text
    assert "mean over the batch\nmean over inits [(loss / pre-activation)^2]" in image
    assert "one line per scale, one panel per activation and depth" in figure.text
    assert "all 18 cells are drawn" in figure.text and "Options not shown" not in image


def test_profiles_draw_every_line():
    scales = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5]
    summary = report.with_theory(_grid_summary(scale=scales))
    figure = profiles.profile_figure(summary, ["grad_sq_norm"])
    legend = [t for t in figure.image_text.splitlines() if "sigma_w^2" in t]
    assert [t.split()[0] for t in legend] == drawing.distinct_labels(scales)
    assert "all 9 cells are drawn" in figure.text


def test_profiles_say_in_the_image_what_they_fix():
    summary = _grid_summary(activation=["tanh", "relu"], scale=[0.5, 2.0], depth=[2, 4],
                            width=[8, 16])
    figure = profiles.profile_figure(summary)
    assert "8 of the 16 cells are drawn" in figure.text
    assert "Options not shown: width = 16 only (of 2 values)." in figure.image_text


def test_profiles_say_which_panels_they_leave_out():
    n, kept = len(ACTIVATIONS), profiles.MAX_PANELS
    assert n > kept
    summary = _grid_summary(activation=list(ACTIVATIONS), scale=[0.5, 2.0])
    figure = profiles.profile_figure(summary, ["grad_sq_norm"])
    assert f"{2 * kept} of the {2 * n} cells are drawn" in figure.text
    assert f"the first {kept} of {n} activation panels" in " ".join(figure.image_text.split())
    assert not any(t.startswith(f"{ACTIVATIONS[-1]}:") for t in figure.image_text.splitlines())


def test_profiles_of_seed_like_examples_show_every_cell(examples_folder):
    figure = profiles.profile_figure(_summary(examples_folder))
    assert "all 3 cells are drawn" in figure.text
    assert {t.split(":")[0] for t in _titles(figure, r"$\partial L/\partial W_l$")} == {
        "sigmoid", "relu"}
    image = " ".join(figure.image_text.split())
    assert "output_activation and inputs follow activation; bias_scale follows scale" in image


@pytest.mark.integration  # the whole report command
def test_stat_option_chooses_the_profiles(grid_folder, tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(grid_folder, "--out", out, "--stat", "grad_var", "--heatmap-stats",
                "frac_zero") == 0
    page = (out / "report.html").read_text()
    assert "grad_var of each layer, mean over inits" in page
    assert _run(grid_folder, "--out", out, "--stat", "nope") == 2
    assert "error: --stat: unknown nope" in capsys.readouterr().err


def test_dz_theory_uses_the_bias_ratios(grid_folder):
    summary = _summary(grid_folder)
    cell_w = summary[(summary["cell"] == 2) & (summary["param"] == "W")]
    frame = profiles._theory_rows(summary, cell_w, "delta_sq_norm")
    bias = summary[(summary["cell"] == 2) & (summary["param"] == "b")].sort_values("layer")
    np.testing.assert_array_equal(frame["theory_grad_ratio"], bias["theory_grad_ratio"])
    assert not np.allclose(bias["theory_grad_ratio"].iloc[:-1],
                           cell_w.sort_values("layer")["theory_grad_ratio"].iloc[:-1])
    assert profiles._theory_line(frame, "delta_sq_norm_mean") is not None


@pytest.mark.integration  # the whole report command
def test_report_without_matplotlib_is_one_error_line(examples_folder, tmp_path):
    out = tmp_path / "r"
    code = ("import sys; sys.modules['matplotlib'] = None; from gradjax.cli import main; "
            f"sys.exit(main(['report', {str(examples_folder)!r}, '--out', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: gradjax report needs matplotlib: pip install 'gradjax[plot]'"]
    assert not out.exists()


# ------------------------------------------------------------ one unit convention, training


def _training_summary(steps=(0, 5, 20, 50)) -> pd.DataFrame:
    """sgd and adam x two scales at `steps`; adam's loss is 100 x sgd's, so panels drawn each
    on its own axis would not be comparable."""
    rng = np.random.default_rng(11)
    frames = []
    for k, (optimizer, scale, step) in enumerate(itertools.product(("sgd", "adam"), (0.5, 2.0),
                                                                   steps)):
        options = {**OPTIONS, "activation": "tanh", "scale": scale, "step": step,
                   "optimizer": optimizer, "learning_rate": 0.1}
        frame = _cell_frames("train", k, "", options, rng)[1]
        loss = (0.01 if optimizer == "sgd" else 1.0) * scale / (1 + step)
        frames.append(frame.assign(loss_value_p50=loss, loss_value_p05=loss / 2,
                                   loss_value_p95=loss * 2, gsnr_p50=scale / (1 + step)))
    return pd.concat(frames, ignore_index=True)


def _axis_labels(figure: drawing.Figure) -> list[str]:
    """Every axis label of a figure (colour bars included), whitespace made single spaces."""
    return [" ".join(label.split()) for ax in figure.artist.axes
            for label in (ax.get_xlabel(), ax.get_ylabel()) if label.strip()]


def _unit(stat: str) -> str:
    return f"[{STAT_BY_NAME[stat].measure}]"


def _check_units(figures: dict, expected: dict) -> None:
    """No unit spelled by hand (every bracket in an axis label is a unit of the statistics
    table), and each figure's labels name the units of the statistics it draws."""
    units = {s.measure for s in STAT_TABLE}
    for name, figure in figures.items():
        for label in _axis_labels(figure):
            assert set(re.findall(r"\[([^\]]+)\]", label)) <= units, (name, label)
    for name, stats in expected.items():
        labels = " ".join(_axis_labels(figures[name]))
        assert all(_unit(stat) in labels for stat in stats), (name, labels)


def test_every_statistic_label_carries_the_unit_of_the_statistics_table(examples_folder):
    grid = _grid_summary(activation=["tanh", "relu"], scale=[0.5, 2.0])
    figures = {f.name: f for f in heatmaps.heatmap_figures(grid, 1, list(heatmaps.HEATMAP_STATS))}
    examples = _summary(examples_folder)
    figures.update({f.name: f for f in (
        profiles.profile_figure(report.with_theory(grid)),
        distributions.histogram_figure(examples_folder, examples, 1, "grad_sq_norm", None),
        distributions.examples_figure(examples_folder, examples))})
    _check_units(figures, {
        **{f"heatmap-{k}": [info.stat] for k, info in heatmaps.HEATMAP_STATS.items()},
        "profiles": ["delta_sq_norm", "grad_sq_norm"], "histograms": ["grad_sq_norm"],
        "examples": ["grad_mean_abs", "grad_cv", "grad_frac_zero", "grad_unit_cos_sq"]})
    assert "[(loss / parameter)^2]" in " ".join(_axis_labels(figures["heatmap-grad_var"]))
    assert "[(loss / parameter)^2]" in " ".join(_axis_labels(figures["profiles"]))


def test_training_panels_share_the_y_axis_and_mark_the_measured_steps():
    steps = (0, 5, 20, 50)
    figures = training_figures.training_figures(_training_summary(steps))
    assert [f.name for f in figures] == ["training_loss", "training_grad_norm", "training_gsnr"]
    for figure in figures:
        panels = [ax for ax in figure.artist.axes if ax.get_visible() and ax.get_lines()]
        assert len(panels) == 2  # sgd and adam
        assert panels[0].get_ylim() == panels[1].get_ylim()
        lines = [line for ax in panels for line in ax.get_lines()]
        for line in lines:
            assert line.get_marker() not in (None, "", " ", "None")
            assert set(line.get_xdata()) == set(steps)
    loss = [ax for ax in figures[0].artist.axes if ax.get_lines()]
    low, high = loss[0].get_ylim()
    assert low <= 0.01 * 0.5 / 51 and high >= 2.0  # both optimizers' losses on one axis
    _check_units({f.name: f for f in figures}, {
        "training_loss": ["loss_value"], "training_grad_norm": ["grad_sq_norm"],
        "training_gsnr": ["gsnr"]})


def test_unit_cos_sq_heatmap_is_on_the_fixed_range_0_to_1():
    summary = _grid_summary(activation=["tanh", "relu"], scale=[0.5, 2.0])
    rows = summary[(summary["param"] == "W") & (summary["layer"] == 1)]
    figure = heatmaps.heatmap_figure(rows, 1, "unit_cos_sq")
    image = figure.artist.axes[0].get_images()[0]
    assert image.norm.vmin == 0.0 and image.norm.vmax == 1.0
    assert "1 = every unit's gradient is parallel up to sign" in figure.image_text


def test_the_report_and_findings_lead_with_the_prescription_beside_the_folder(tmp_path):
    """A tune in `<folder>-tune` (where `gradjax tune` puts it) heads the report's page and
    `findings`; a folder without one has no such section."""
    from gradjax.analysis.findings import findings_text

    folder = _write_folder(tmp_path / "swept", [("", dict(activation="tanh", scale=0.5))])
    assert report.build_report(folder, reading.load(folder, "summary")).lead == []
    row = {"criterion": "critical", "param": None, "layer": None, "multiplier": 2.4,
           "multiplier_p05": 2.0, "multiplier_p50": 2.5, "multiplier_p95": 3.0,
           "critical_scale": 1.2, "from_scale": 0.5, "inits_crossing": 30, "inits": 32,
           "note": "", "wall_s": 9.0, "cell": 0, "label": "", "activation": "tanh",
           "grad_spread_before": float("nan")}
    (tmp_path / "swept-tune" / "tune").mkdir(parents=True)
    pd.DataFrame([row]).to_parquet(tmp_path / "swept-tune" / "tune" / "tune.parquet")
    expected = ("every cell: critical scale 1.2 (x2.4 of scale 0.5); per init 5-95 %: x2 to x3; "
                "30 of 32 inits cross chi = 1 on the grid (9.0 s)")
    built = report.build_report(folder, reading.load(folder, "summary"))
    assert built.lead == [f"gradjax tune, {tmp_path / 'swept-tune'}:", expected]
    page = report.render_html(built)
    assert page.index("Prescription") < page.index("<figure")
    text = findings_text(folder).splitlines()
    assert text[:3] == [f"Prescription (gradjax tune, {tmp_path / 'swept-tune'}):", expected, ""]
    assert text[3].startswith("test_sweep: 1 cells")
