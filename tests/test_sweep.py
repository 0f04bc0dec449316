"""Sweep files: parsing, expansion order, ranges, buckets, and one-line errors for bad files."""

import numpy as np
import pytest

from gradjax import cli
from gradjax.probe.chunking import make_points
from gradjax.spec import OPTIONS
from gradjax.sweep import SweepError, load_sweep, parse_sweep

TOP = 'name = "t"\nseeds = 4\n'
DEFAULTS = """
[defaults]
in_dim = 2
width = 3
depth = 1
out_dim = 1
activation = "tanh"
inputs = [[0.5, 0.7]]
targets = [[1.0]]
"""


def sweep_text(top=TOP, defaults=DEFAULTS, rest=""):
    return f"{top}{defaults}\n{rest}"


def test_issue_example_expands_grid_then_cases_in_order():
    text = sweep_text(rest="""
[grid]
activation = ["relu", "sigmoid"]
scale = [0.5, 1.0, 2.0]

[[cases]]
label = "wide"
width = 8

[[cases]]
label = "fixed_scale"
scale = 0.1
""")
    cells = parse_sweep(text, "x.toml").cells
    got = [(c.index, c.label, c.options["activation"], c.options["scale"], c.options["width"])
           for c in cells]
    expected = [
        (0, "", "relu", 0.5, 3), (1, "", "relu", 1.0, 3), (2, "", "relu", 2.0, 3),
        (3, "", "sigmoid", 0.5, 3), (4, "", "sigmoid", 1.0, 3), (5, "", "sigmoid", 2.0, 3),
        (6, "wide", "relu", 0.5, 8), (7, "wide", "relu", 1.0, 8), (8, "wide", "relu", 2.0, 8),
        (9, "wide", "sigmoid", 0.5, 8), (10, "wide", "sigmoid", 1.0, 8),
        (11, "wide", "sigmoid", 2.0, 8),
        # a case that sets a grid option fixes it: that axis is dropped for the case
        (12, "fixed_scale", "relu", 0.1, 3), (13, "fixed_scale", "sigmoid", 0.1, 3),
    ]
    assert got == expected


def test_every_option_has_a_value_and_defaults_apply():
    cell = parse_sweep(sweep_text(), "x.toml").cells[0]
    assert tuple(cell.options) == OPTIONS
    assert cell.options["output_activation"] == "linear"
    assert cell.options["leaky_slope"] == 0.01
    assert cell.options["structural_zeros"] is True
    assert cell.options["batch"] == 1
    assert cell.columns()["inputs"] == "[[0.5, 0.7]]"
    assert cell.columns()["targets"] == "[[1.0]]"


def test_ranges_are_log_and_linearly_spaced():
    text = sweep_text(rest="[grid]\nscale = {logspace = [-2, 1, 16]}\n"
                           "bias_scale = {linspace = [0.5, 3.0, 11]}\n")
    cells = parse_sweep(text, "x.toml").cells
    assert len(cells) == 16 * 11
    scales = sorted({c.options["scale"] for c in cells})
    np.testing.assert_allclose(scales, np.logspace(-2, 1, 16), rtol=1e-15)
    biases = [c.options["bias_scale"] for c in cells[:11]]
    np.testing.assert_allclose(biases, np.linspace(0.5, 3.0, 11), rtol=1e-15)


def test_batch_follows_fixed_inputs_or_is_given_for_gaussian_inputs():
    rows = "inputs = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]\ntargets = 0.5\n"
    cell = parse_sweep(sweep_text(defaults=DEFAULTS.replace(
        'inputs = [[0.5, 0.7]]\ntargets = [[1.0]]\n', rows)), "x.toml").cells[0]
    assert cell.options["batch"] == 3
    np.testing.assert_array_equal(cell.fixed_y(), np.full((3, 1), 0.5))
    gauss = DEFAULTS.replace('inputs = [[0.5, 0.7]]\ntargets = [[1.0]]\n',
                             'inputs = "gaussian"\nbatch = 5\ntargets = "zeros"\n')
    cell = parse_sweep(sweep_text(defaults=gauss), "x.toml").cells[0]
    assert cell.options["batch"] == 5 and cell.spec.inputs == "gaussian"
    assert cell.spec.targets == "fixed"
    np.testing.assert_array_equal(cell.fixed_y(), np.zeros((5, 1)))


def test_cells_differing_in_scale_and_fixed_data_share_a_bucket():
    text = sweep_text(rest="""
[grid]
activation = ["relu", "tanh"]
scale = [0.5, 2.0]
bias_scale = [0.0, 1.0]
inputs = [[[0.5, 0.7]], [[-1.0, 1.0]]]
targets = ["zeros", 3.0]
""")
    sweep = parse_sweep(text, "x.toml")
    buckets = sweep.buckets()
    assert [b.spec.activation for b in buckets] == ["relu", "tanh"]
    assert [len(b.cells) for b in buckets] == [16, 16]
    points = make_points(buckets[0].spec, **buckets[0].points())
    cells = buckets[0].cells
    np.testing.assert_array_equal(points["scale"], [c.options["scale"] for c in cells])
    np.testing.assert_array_equal(points["bias_scale"], [c.options["bias_scale"] for c in cells])
    expected_x = np.array([c.options["inputs"][0] for c in cells], np.float32)
    np.testing.assert_array_equal(points["x"][:, 0], expected_x)
    expected_y = [0.0 if c.options["targets"] == "zeros" else 3.0 for c in cells]
    np.testing.assert_array_equal(points["y"][:, 0, 0], expected_y)


def test_shape_options_make_separate_buckets():
    text = sweep_text(rest='[grid]\ndepth = [1, 2]\nnorm = ["none", "layernorm"]\n')
    assert len(parse_sweep(text, "x.toml").buckets()) == 4


def test_shipped_sweep_files_validate():
    from pathlib import Path

    files = sorted(Path(__file__).parents[1].glob("sweeps/*.toml"))
    names = {f.stem for f in files}
    assert {"seed_examples", "activation_by_scale", "init_schemes", "mean_field_tanh"} <= names
    for path in files:
        sweep = load_sweep(path)
        assert sweep.name == path.stem
    seed = load_sweep(Path(__file__).parents[1] / "sweeps/seed_examples.toml")
    assert seed.seeds == 10_000
    examples = [(c.options["activation"], c.options["scale"], c.options["bias_scale"],
                 c.options["inputs"]) for c in seed.cells]
    assert examples == [("sigmoid", 1.0, 1.0, ((0.5, 0.7),)), ("relu", 1.0, 1.0, ((0.5, -0.7),)),
                        ("sigmoid", 0.01, 0.01, ((0.5, 0.7),))]


# (what is wrong, full text, the field the error line must name)
MALFORMED = [
    ("unknown top-level key", sweep_text(top=TOP + 'colour = "red"\n'), "colour"),
    ("unknown option", sweep_text(defaults=DEFAULTS + "widht = 3\n"), "defaults.widht"),
    ("unknown activation", sweep_text(rest='[grid]\nactivation = ["relu", "relu6"]\n'),
     "grid.activation[1]"),
    ("width is a string", sweep_text(defaults=DEFAULTS.replace("width = 3", 'width = "3"')),
     "defaults.width"),
    ("zero width", sweep_text(defaults=DEFAULTS.replace("width = 3", "width = 0")),
     "defaults.width"),
    ("negative depth", sweep_text(defaults=DEFAULTS.replace("depth = 1", "depth = -1")),
     "defaults.depth"),
    ("float in_dim", sweep_text(defaults=DEFAULTS.replace("in_dim = 2", "in_dim = 2.0")),
     "defaults.in_dim"),
    ("boolean batch", sweep_text(defaults=DEFAULTS + "batch = true\n"), "defaults.batch"),
    ("empty axis", sweep_text(rest="[grid]\nscale = []\n"), "grid.scale"),
    ("axis not a list", sweep_text(rest="[grid]\nscale = 1.0\n"), "grid.scale"),
    ("range too short", sweep_text(rest="[grid]\nscale = {logspace = [-2, 1]}\n"),
     "grid.scale.logspace"),
    ("range count not integer", sweep_text(rest="[grid]\nscale = {linspace = [0.5, 3, 2.5]}\n"),
     "grid.scale.linspace"),
    ("range on integer option", sweep_text(rest="[grid]\nwidth = {linspace = [1, 4, 4]}\n"),
     "grid.width"),
    ("unknown range kind", sweep_text(rest="[grid]\nscale = {geomspace = [1, 2, 3]}\n"),
     "grid.scale"),
    ("inputs rows longer than in_dim",
     sweep_text(defaults=DEFAULTS.replace("[[0.5, 0.7]]", "[[0.5, 0.7, 0.1]]")), "defaults.inputs"),
    ("targets rows wider than out_dim",
     sweep_text(defaults=DEFAULTS.replace("[[1.0]]", "[[1.0, 2.0]]")), "defaults.targets"),
    ("batch differs from input rows", sweep_text(defaults=DEFAULTS + "batch = 4\n"),
     "defaults.batch"),
    ("name escapes results/", sweep_text(top='name = "../evil"\nseeds = 4\n'), "name"),
    ("absolute name", sweep_text(top='name = "/tmp/evil"\nseeds = 4\n'), "name"),
    ("missing seeds", sweep_text(top='name = "t"\n'), "seeds"),
    ("zero seeds", sweep_text(top='name = "t"\nseeds = 0\n'), "seeds"),
    ("bce with a linear output", sweep_text(defaults=DEFAULTS + 'loss = "bce"\n'),
     "defaults.loss"),
    ("batchnorm on one example", sweep_text(defaults=DEFAULTS + 'norm = "batchnorm"\n'),
     "defaults.norm"),
    ("softmax of one logit", sweep_text(defaults=DEFAULTS + 'loss = "softmax_cross_entropy"\n'),
     "defaults.loss"),
    ("a width no memory holds",
     sweep_text(defaults=DEFAULTS.replace("width = 3", "width = 100000000000")), "defaults.width"),
    ("a grid batch over the budget", sweep_text(
        defaults=DEFAULTS.replace("inputs = [[0.5, 0.7]]\n", 'inputs = "gaussian"\n')
        .replace("targets = [[1.0]]\n", ""), rest="[grid]\nbatch = [1, 10000000000]\n"),
     "grid.batch"),
    ("case without label", sweep_text(rest='[[cases]]\nactivation = "relu"\n'), "cases[0].label"),
    ("duplicate labels", sweep_text(rest='[[cases]]\nlabel = "a"\n[[cases]]\nlabel = "a"\n'),
     "cases[1].label"),
    ("unknown key in a case", sweep_text(rest='[[cases]]\nlabel = "a"\nactvation = "relu"\n'),
     "cases[0].actvation"),
    ("TOML syntax", sweep_text(rest="[grid\n"), "toml"),
    ("unknown inputs kind", sweep_text(defaults=DEFAULTS.replace('[[0.5, 0.7]]', '"uniform"')),
     "defaults.inputs"),
    ("ragged input rows", sweep_text(defaults=DEFAULTS.replace(
        "inputs = [[0.5, 0.7]]", "inputs = [[0.5, 0.7], [0.1]]")), "defaults.inputs"),
    ("repeated axis value", sweep_text(rest="[grid]\nscale = [1.0, 1.0]\n"), "grid.scale[1]"),
    ("missing in_dim", sweep_text(defaults=DEFAULTS.replace("in_dim = 2\n", "")), "in_dim"),
    ("unknown dtype", sweep_text(defaults=DEFAULTS + 'dtype = "float16"\n'), "defaults.dtype"),
    ("negative scale", sweep_text(defaults=DEFAULTS + "scale = -1.0\n"), "defaults.scale"),
    ("nan scale", sweep_text(defaults=DEFAULTS + "scale = nan\n"), "defaults.scale"),
    ("unknown grid key", sweep_text(rest="[grid]\nsclae = [1.0]\n"), "grid.sclae"),
    ("negative root_seed", sweep_text(top=TOP + "root_seed = -1\n"), "root_seed"),
    ("string boolean", sweep_text(defaults=DEFAULTS + 'structural_zeros = "yes"\n'),
     "defaults.structural_zeros"),
    ("unknown targets kind", sweep_text(defaults=DEFAULTS.replace('[[1.0]]', '"ones"')),
     "defaults.targets"),
    ("inputs not a batch", sweep_text(defaults=DEFAULTS.replace("[[0.5, 0.7]]", "[0.5, 0.7]")),
     "defaults.inputs"),
    ("input rows given for a grid of batches",
     sweep_text(rest="[grid]\ninputs = [[0.5, 0.7]]\n"), "grid.inputs[0]"),
    ("defaults not a table", sweep_text(defaults='defaults = 3\n'), "defaults"),
    ("cases not tables", TOP + 'cases = ["a"]\n' + DEFAULTS, "cases[0]"),
    ("cases not an array", TOP + 'cases = 3\n' + DEFAULTS, "cases"),
]


@pytest.mark.parametrize(("problem", "text", "field"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_sweep_gives_one_error_line_exit_2_and_writes_nothing(
    problem, text, field, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    for argv in (["validate", str(path)],
                 ["run", str(path), "--out", str(tmp_path / "out"), "--no-cache"],
                 ["run", str(path), "--no-cache"]):
        assert cli.main(argv) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        assert lines[0].startswith(f"error: {path}: {field}: "), lines[0]
        assert "; allowed: " in lines[0]
        assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_at_least_twenty_malformed_files_are_covered():
    assert len(MALFORMED) >= 20
    assert len({m[1] for m in MALFORMED}) == len(MALFORMED)


def test_missing_file_is_one_error_line(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'nope.toml'}: file: ")


def test_sweep_error_names_file_field_and_allowed_values():
    with pytest.raises(SweepError) as info:
        parse_sweep(sweep_text(defaults=DEFAULTS + 'norm = "groupnorm"\n'), "f.toml")
    assert info.value.line() == (
        'error: f.toml: defaults.norm: unknown norm "groupnorm"; '
        "allowed: none, layernorm, batchnorm"
    )


def test_validate_reports_cells_and_buckets(tmp_path, capsys):
    path = tmp_path / "ok.toml"
    path.write_text(sweep_text(rest='[grid]\nactivation = ["relu", "tanh"]\nscale = [1.0, 2.0]\n'))
    assert cli.main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 cells in 2 compiled bucket(s), 4 seeds each (16 inits)" in out


def test_the_options_table_of_the_docs_is_the_declared_one():
    from pathlib import Path

    from gradjax.spec import options_markdown

    docs = (Path(__file__).parents[1] / "docs" / "sweeps.md").read_text()
    assert options_markdown() in docs


def test_every_option_not_traced_is_a_field_of_the_compiled_program():
    import dataclasses

    from gradjax.spec import OPTION_TABLE, ProbeSpec
    from gradjax.sweep import SHAPE_OPTIONS

    fields = {f.name for f in dataclasses.fields(ProbeSpec)}
    program = {o.name for o in OPTION_TABLE if not o.traced and o.name not in SHAPE_OPTIONS}
    # scaled_layers: the length of the traced layer_scale, a shape
    assert fields == {"sizes", "model_options", "model_folder", "scaled_layers", *program}
    assert {o.name for o in OPTION_TABLE if o.traced} == {
        "scale", "layer_scale", "bias_scale", "branch_scale", "step", "learning_rate",
        "weight_decay", "momentum"}
    # a traced option makes no new bucket; any other option does
    text = sweep_text(rest="[grid]\nscale = [0.5, 1.0]\nbias_scale = [0.1, 0.2]\n")
    assert len(parse_sweep(text).buckets()) == 1
    lists = "[grid]\nlayer_scale = [[1.0, 2.0, 1.0], [0.5, 1.0, 3.0]]\n"
    assert len(parse_sweep(sweep_text(rest=lists)).buckets()) == 1
    lengths = "[grid]\nlayer_scale = [[], [0.5, 1.0, 3.0]]\n"
    assert len(parse_sweep(sweep_text(rest=lengths)).buckets()) == 2
    text = sweep_text(rest="[grid]\nleaky_slope = [0.1, 0.2]\n")
    assert len(parse_sweep(text).buckets()) == 2


def test_run_help_lists_every_option_with_its_default(capsys):
    from gradjax.spec import OPTION_TABLE

    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for o in OPTION_TABLE:
        assert f"  {o.name}: {o.doc}; {o.allowed()}; default {o.default_text()}" in out


def test_the_statistics_tables_of_the_docs_are_the_declared_ones():
    from pathlib import Path

    from gradjax.spec import SCALED, STAT_TABLE, STATS, stats_markdown

    docs = (Path(__file__).parents[1] / "docs" / "conventions.md").read_text()
    assert stats_markdown() in docs
    assert {s.level for s in STAT_TABLE} == {"tensor", "layer", "init", "cell"}
    assert STATS[-2:] == ("loss_value", "loss_halved_step") and set(SCALED) <= set(STATS)
