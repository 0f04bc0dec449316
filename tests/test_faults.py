"""The fault campaign at small size (`benchmarks/fault_campaign.py` is the long version):
damaged files, a full disk, a read-only folder, numerical extremes, malformed sweep files and
what a sweep file may not do. Each failure gives one error line and a non-zero exit, nothing
already written is harmed, and a re-run after the fix completes with a single run's numbers."""

import ast
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from conftest import assert_same_results, tiny_sweep_text
from hypothesis import HealthCheck, given, settings

import gradjax
from gradjax import cli
from gradjax.results import files, layout, remote
from gradjax.run import engine, executables
from gradjax.sweep import TOP_LEVEL, parse_sweep

TEXT = tiny_sweep_text(seeds=6, root_seed=7, grid={"scale": [0.5, 1.0, 2.0]})


def run(out, text=TEXT, **kwargs):
    kwargs = {"chunk": 6, "quiet": True, "devices": 1} | kwargs
    return engine.execute_sweep(parse_sweep(text, "tiny.toml"), out, **kwargs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref"
    run(out)
    return out


def assert_like_reference(out, reference):
    assert_same_results(out, reference)
    assert not list(Path(out).rglob("*.tmp"))


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes inside the first data page, leaving the footer intact
        middle = bytearray(data)
        for i in range(8, 40):
            middle[i] ^= 0xFF
        path.write_bytes(bytes(middle))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_result_file_is_never_read_as_data(reference, tmp_path, how):
    out = tmp_path / "out"
    run(out)
    damage(out / "per_seed" / "cell-00001.parquet", how)
    damage(out / "summary" / "cell-00002.parquet", how)
    with pytest.raises(layout.ResultsError, match=r"cell-0000[12]\.parquet.*gradjax run"):
        gradjax.load(out, "per_seed")
    with pytest.raises(layout.ResultsError, match=r"cell-00002\.parquet"):
        gradjax.load(out)
    lines = []
    again = run(out, log=lines.append, quiet=False)
    assert again.cells == 2 and again.inits == 2 * 6
    assert sum("computing it again" in line for line in lines) == 2
    assert_like_reference(out, reference)


def test_a_damaged_piece_is_dropped_and_computed_again(reference, tmp_path):
    out = tmp_path / "out"
    # blocks of 3 seeds: shard 1 of 2 computes seeds 0..2 of every cell, finishing none
    run(out, shard=(1, 2), seed_block=3)
    pieces = {p.parent.name: p for p in (out / ".work" / "pieces").glob("*/*.npz")}
    assert len(pieces) == 3 and not list((out / "summary").iterdir())
    first, second, _ = sorted(pieces.values())
    first.write_bytes(b"not an npz")  # damaged moments
    rows = second.with_suffix(".parquet")
    rows.write_bytes(rows.read_bytes()[:100])  # damaged rows
    again = run(out)  # seeds 3..5 of every cell, then the two damaged pieces again
    assert again.inits == 3 * 3 + 2 * 3
    assert_like_reference(out, reference)


LIMITED = """
import resource, signal, sys
size = {size!r}
if size is not None:  # a full disk: writes past `size` bytes fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
from gradjax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def gradjax_run(sweep: Path, out: Path, size: int | None = None) -> subprocess.CompletedProcess:
    """`gradjax run` in a child that limits itself first (no preexec_fn: forking this
    JAX-threaded process is what JAX warns against)."""
    return subprocess.run([sys.executable, "-c", LIMITED.format(size=size), "run",
                           str(sweep), "--out", str(out), "--no-cache"], capture_output=True,
                          text=True, timeout=240)


def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0]


def test_a_full_disk_gives_one_error_and_a_rerun_completes(reference, tmp_path):
    sweep, out = tmp_path / "tiny.toml", tmp_path / "out"
    sweep.write_text(TEXT)
    full = gradjax_run(sweep, out, size=6000)
    assert re.fullmatch(r"error: writing the results in .* failed \(.*File too large.*resume",
                        error_line(full))
    assert not list(out.rglob("*.tmp"))
    assert gradjax_run(sweep, out).returncode == 0
    assert_like_reference(out, reference)


def make_read_only(paths: list[Path], read_only: bool) -> None:
    """chmod a-w; as root, for whom permissions do not bind, chattr +i (immutable)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if read_only else "-i", *map(str, paths)], check=True)
        return
    for path in paths:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) if read_only
                   else mode | stat.S_IWUSR)


def test_a_read_only_folder_gives_one_error_and_harms_nothing(reference, tmp_path):
    sweep, out = tmp_path / "tiny.toml", tmp_path / "out"
    sweep.write_text(TEXT)
    run(out, TEXT.replace("seeds = 6", "seeds = 4"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    paths = [out, *out.rglob("*")]
    make_read_only(paths, True)
    try:
        line = error_line(gradjax_run(sweep, out))
    finally:
        make_read_only(paths, False)
    assert re.fullmatch(r"error: writing the results in .* failed \((Permission denied|"
                        r"Operation not permitted|Read-only file system).*resume", line), line
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert gradjax_run(sweep, out).returncode == 0  # 4 seeds grown to 6
    assert_like_reference(out, reference)


EXTREMES = """
name = "extremes"
seeds = 4

[defaults]
in_dim = 3
width = 4
depth = 3
out_dim = 1
activation = "relu"

[[cases]]
label = "scale_1e6"
scale = 1e6

[[cases]]
label = "scale_1e-30"
scale = 1e-30
"""


def test_numerical_extremes_record_nonfinite_and_underflow_counts(tmp_path):
    run(tmp_path / "x", EXTREMES, chunk=None)
    rows = gradjax.load(tmp_path / "x", "per_seed", param="W")
    by = {label: r for label, r in rows.groupby("label")}
    # scale 1e6, depth 3: the loss is ~1e6^8 = 1e48 > float32's 3e38: inf, then inf/NaN
    assert (by["scale_1e6"]["grad_nonfinite"] > 0).any()
    # scale 1e-30: every gradient has a factor 1e-30 or smaller: float32 underflows
    assert (by["scale_1e-30"]["grad_frac_underflow"] > 0).any()
    # bfloat16 and a depth-200 sigmoid net: benchmarks/fault_campaign.py (two more compiles)


# ----------------------------------------------------------------- malformed sweep files

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
    | st.text(max_size=12) | st.sampled_from(["relu", "mlp", "gaussian", "a:b", "../x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["scale", "width", "depth", "activation", "x", "label"]), inner,
        max_size=3),
    max_leaves=8)
KEYS = st.sampled_from([*TOP_LEVEL, "bogus"])


def toml_value(value) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.dictionaries(KEYS, VALUES, max_size=6), st.booleans())
def test_every_malformed_sweep_file_gets_one_error_line_and_exit_2(tmp_path, capsys, doc,
                                                                   broken):
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in doc.items())
    path = tmp_path / "fuzz.toml"
    path.write_text(text + ("\n[[[" if broken else ""))
    status = cli.main(["validate", str(path)])
    err = capsys.readouterr().err
    if status == 0:
        parse_sweep(path.read_text(), str(path))  # it is a valid sweep
        return
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {path}: "), err


# ------------------------------------------------------------------------------ security

def test_gradjax_never_evaluates_or_unpickles():
    """Sweep files, checkpoints and moments are data: no eval/exec, no pickle anywhere.
    (Compiled programs are code by nature: JAX's compile cache and the program store load
    them only from the user's private cache folder.)"""
    for path in Path(gradjax.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "compile"), path
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "cloudpickle")
                               for n in names), path
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, path


def test_results_stay_inside_the_results_root_unless_out_is_given(tmp_path):
    assert remote.output_folder(None, tmp_path, "ok") == tmp_path / "ok"
    assert remote.output_folder("file:///data/x%20y", tmp_path, "ok") == Path("/data/x y")
    for name in ("../up", "a/b", ".hidden"):
        text = tiny_sweep_text(name=name)
        with pytest.raises(Exception, match="outside the results folder"):
            parse_sweep(text, "x.toml")


def test_the_compile_cache_folder_is_private(tmp_path):
    """(`executables.enable_compile_cache` makes its folder with this; turning JAX's cache on here
    would leave it on for the rest of the session.)"""
    loose = tmp_path / "cache"
    loose.mkdir(mode=0o755)
    assert stat.S_IMODE(files.private_folder(loose).stat().st_mode) == 0o700
    fresh = files.private_folder(tmp_path / "new" / "cache")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert "private_folder(" in Path(executables.__file__).read_text()
