"""The project's own files agree with each other: packaging metadata, the Makefile, the README."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project["license"], str) and re.fullmatch(r"[A-Za-z0-9.\-]+",
                                                                project["license"])


def test_makefile_and_readme_state_the_python_pyproject_requires():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = re.fullmatch(r">=\s*(3\.\d+)", project["requires-python"].split("#")[0].strip())
    assert version
    for name in ("Makefile", "README.md"):
        stated = set(re.findall(r"Python >= (3\.\d+)", (ROOT / name).read_text()))
        assert stated == {version.group(1)}, name


def test_readme_starts_with_make_run_and_make_test():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in block.strip().splitlines()] == [
        ["make", "run"], ["make", "test"]]


def test_the_readme_library_snippet_reproduces_the_number_it_stands_beside(capsys):
    """The snippet, on 200 of its 1,000 inits (for time), prints a median W2 grad_cv within
    the seeds' spread of the figure the README gives for the sweep, and a 4-row frame."""
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```python")[1:]
    snippet = next(b.split("```", 1)[0] for b in blocks if "grad_stats(" in b)
    assert "range(1000)" in snippet
    namespace: dict = {}
    exec(compile(snippet.replace("range(1000)", "range(200)"), "README.md", "exec"),  # noqa: S102
         namespace)
    median = float(capsys.readouterr().out.splitlines()[0])
    stated = re.search(r"\(`grad_cv`, median over inits\) is ([0-9.]+)", readme).group(1)
    assert median == pytest.approx(float(stated), rel=0.15)
    assert len(namespace["gradjax"].stats_frame(namespace["stats"][0])) == 4
