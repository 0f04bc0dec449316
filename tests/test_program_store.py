"""The program store (`gradjax.probe.program_store`): a gradjax family's compiled chunk program
is found again without tracing and computes the same bits; a plug-in's is never stored; the
name changes with whatever shapes the program; old source versions are pruned."""

import os

import jax
import numpy as np
import pytest
from conftest import run_plugin

from gradjax.probe import chunking, program_store, programs
from gradjax.probe import mlp_probe as probe
from gradjax.results.files import user_cache_dir
from gradjax.run import executables

SPEC = probe.ProbeSpec(sizes=(3, 5, 1), activation="tanh", batch=2, inputs="gaussian",
                       targets="gaussian")


@pytest.fixture
def own_cache(tmp_path):
    """A compile cache (and so a program store) of this test's own, empty; the suite's shared
    cache comes back with the next test (conftest)."""
    executables.enable_compile_cache(tmp_path / "cache")
    programs.clear_compiled()
    yield tmp_path / "cache" / program_store.FOLDER
    programs.clear_compiled()


@pytest.fixture
def traces(monkeypatch):
    """Each trace of the chunk program, counted (with the store on, unlike `counting_calls`)."""
    calls: list[int] = []
    original = chunking.chunk_program

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(chunking, "chunk_program", counted)
    return calls


def _run():
    """Per-seed stats of SPEC at two points, 5 seeds."""
    points = chunking.make_points(SPEC, [0.5, 2.0], [0.0, 0.3])
    (_, stats, _), = programs.run_seeds(SPEC, points, np.arange(5), chunk=8, root_seed=1)
    return stats


def test_a_stored_program_is_loaded_without_tracing_and_gives_the_same_bits(own_cache, traces):
    built = _run()
    stored = list(own_cache.rglob("*.program"))
    assert len(traces) == 1 and len(stored) == 1
    assert stored[0].stat().st_mode & 0o777 == 0o600  # code: the user's alone
    assert stored[0].parent.stat().st_mode & 0o777 == 0o700
    device, stem = jax.devices()[0], stored[0].name.removesuffix(".program")
    stored[0].parent.chmod(0o770)  # a folder others could write is never read
    assert program_store.load(stem, device) is None
    stored[0].parent.chmod(0o700)
    assert program_store.load(stem, device) is not None
    programs.clear_compiled()  # as a new process: nothing in memory
    loaded = _run()
    assert len(traces) == 1  # not traced again
    for name, value in built.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_a_run_counts_a_stored_program_as_loaded_from_the_compile_cache(own_cache):
    points, _ = chunking.pad_points(chunking.make_points(SPEC, [1.0], [0.0]))
    first = executables.build_executable(SPEC, points, 4, jax.devices()[:1])
    programs.clear_compiled()
    again = executables.build_executable(SPEC, points, 4, jax.devices()[:1])
    assert (first.source, again.source) == ("compiled", "compile cache")


PLUGIN = '''
import jax

def linear(in_dim: int, out_dim: int):
    def init(key):
        return {"w": jax.random.normal(key, (in_dim, out_dim))}
    return init, lambda p, x: x @ p["w"]
'''


@pytest.mark.integration  # a whole run of a sweep
def test_a_plugin_s_programs_go_through_jax_s_cache_only(own_cache, tmp_path):
    rows = run_plugin(tmp_path, "lin", PLUGIN, "lin:linear", "in_dim = 3\nout_dim = 1")
    assert len(rows) > 0  # its program ran
    assert not list(own_cache.rglob("*.program"))  # its code is the user's: not named by ours


def test_the_name_changes_with_every_part_and_with_xla_flags(monkeypatch):
    device, other = jax.devices()[:2]
    base = program_store.program_name(SPEC, True, 8, device=device)
    changed = [
        program_store.program_name(SPEC, True, 16, device=device),
        program_store.program_name(SPEC, False, 8, device=device),
        program_store.program_name(probe.ProbeSpec(sizes=(3, 5, 1), activation="relu", batch=2,
                                                   inputs="gaussian", targets="gaussian"),
                                   True, 8, device=device),
        program_store.program_name(SPEC, True, 8, device=other),
    ]
    flags = os.environ["XLA_FLAGS"] + " --xla_cpu_use_thunk_runtime=true"
    monkeypatch.setattr(program_store, "flags_in_effect", lambda: flags)
    changed.append(program_store.program_name(SPEC, True, 8, device=device))
    assert len({base, *changed}) == 1 + len(changed)


def test_tree_layouts_spell_tuples_lists_dicts_and_none():
    tree = jax.tree.structure(((1, [2, None]), {"b": {"x": 3}, "a": [4]}, None))
    assert program_store.tree_of(program_store.layout_of(tree)) == tree
    assert program_store.tree_of(program_store.layout_of(tree)) != jax.tree.structure(
        ([1, [2, None]], {"b": {"x": 3}, "a": [4]}, None))  # a tuple is not a list


def test_prune_keeps_the_most_recently_used_source_folders(tmp_path):
    for age, name in enumerate("abcde"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.program").write_bytes(b"1")
        os.utime(tmp_path / name, (1e9 - age * 100, 1e9 - age * 100))  # a is the newest
    program_store.prune(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_the_store_is_off_where_the_backend_started_before_gradjax_set_its_flags(monkeypatch):
    assert program_store.flags_in_effect() == os.environ["XLA_FLAGS"]  # conftest's order
    monkeypatch.setattr(program_store, "flags_in_effect", lambda: None)
    assert program_store.store_folder() is None


def test_the_store_is_off_with_the_compile_cache():
    executables.disable_compile_cache()
    assert program_store.store_folder() is None
    executables.enable_compile_cache(user_cache_dir())
    with program_store.suspended():
        assert program_store.store_folder() is None
    assert program_store.store_folder() is not None
