"""The sweep-file parser: TOML text (`parse_sweep`, `load_sweep`, or a dict through
`sweep_from_dict`) -> a `Sweep` of validated, expanded cells (`gradjax.sweep.model`), each value
checked by `gradjax.sweep.values`; the checks that involve a cell's several options are here.

A sweep file has `name`, `seeds`, optional `root_seed` and `per_seed` (true, false or a list of
statistics: what the per-seed table keeps), and three optional tables:

  [defaults]   option = value, for every cell
  [grid]       option = [v1, v2, ...] (or {logspace = [a, b, n]} / {linspace = [a, b, n]} for
               a float option): the cells are the Cartesian product of the axes
  [[cases]]    label = "...", plus option overrides: explicit cells, each crossed with the grid

Cells are numbered in the order of expansion: first the grid alone (label ""), then each case in
file order; within a block the grid's axes vary in file order, the last axis fastest. A case
that sets an option which is also a grid axis fixes that option: the axis is dropped for that
case. Random streams never depend on the cell number (`gradjax.nn.keys`), so adding a value to an
axis changes no other cell's numbers.

Everything is validated before any work; the first problem found raises `SweepError`, whose
`line()` is `error: <file>: <field>: <what is wrong>; allowed: <values>`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradjax.nn.models import Family, resolve
from gradjax.nn.models.family import SCALES
from gradjax.spec import COMMON, DIGITS_SHAPE, OPTION_BY_NAME, OPTIONS
from gradjax.spec.option import Option
from gradjax.sweep.model import Cell, Sweep
from gradjax.sweep.toml_text import ALLOWED, NotToml, dumps
from gradjax.sweep.values import (
    MAX_RANGE,
    MAX_SEEDS,
    Bad,
    SweepError,
    check_integer,
    check_per_seed,
    check_steps,
    check_table,
    check_value,
    is_number,
    show,
)

TOP_LEVEL: tuple[str, ...] = (
    "name", "seeds", "root_seed", "per_seed", "steps", "defaults", "grid", "cases",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _model_values(doc: dict) -> list[tuple[str, Any]]:
    """(field, value) of every `model` the file names, before anything else is validated."""
    found = []
    defaults, grid = doc.get("defaults"), doc.get("grid")
    if isinstance(defaults, dict) and "model" in defaults:
        found.append(("defaults.model", defaults["model"]))
    if isinstance(grid, dict) and isinstance(grid.get("model"), list):
        found += [(f"grid.model[{i}]", v) for i, v in enumerate(grid["model"])]
    cases = doc.get("cases")
    for i, case in enumerate(cases if isinstance(cases, list) else []):
        if isinstance(case, dict) and "model" in case:
            found.append((f"cases[{i}].model", case["model"]))
    return found


class _Parser:
    """Validation of one file: its source, folder, model families and the options they
    declare (gradjax's, plus plug-ins' own)."""

    def __init__(self, source: str, doc: dict):
        self.source = source
        self.folder = "" if source.startswith("<") else str(Path(source).resolve().parent)
        self.families: dict[str, Family] = {}
        self.known: dict[str, Option] = dict(OPTION_BY_NAME)
        extra: dict[str, Option] = {}
        for field, value in _model_values(doc):
            family = self.family(field, value)
            for option in family.options:
                if option.name in OPTION_BY_NAME:
                    continue
                seen = extra.setdefault(option.name, option)
                if (seen.kind, seen.choices) != (option.kind, option.choices):
                    raise SweepError(source, field, f"option {option.name!r} is declared as "
                                     f"{option.kind} here and as {seen.kind} by another model",
                                     "plug-ins that agree on the kind of a shared option")
        self.extra = tuple(extra.values())
        self.known.update(extra)

    def family(self, field: str, value: Any) -> Family:
        model = self.checked(field, "model", value)
        if model not in self.families:
            try:
                family = resolve(model, self.folder)
            except ValueError as err:
                raise SweepError(self.source, field, str(err),
                                 OPTION_BY_NAME["model"].allowed()) from None
            for option in family.options:
                try:
                    if option.default is not None:
                        check_value(option, option.default)
                except Bad as bad:
                    problem, allowed = bad.args
                    raise SweepError(self.source, field, f"the factory's default for "
                                     f"{option.name}: {problem}", allowed) from None
            self.families[model] = family
        return self.families[model]

    def sources(self) -> tuple[tuple[str, str], ...]:
        """(model, sha256 of its module's source) of every plug-in of the file."""
        return tuple(sorted((f.name, f.source_sha256) for f in self.families.values()
                            if f.source_sha256))

    def checked(self, field: str, name: str, value: Any) -> Any:
        try:
            return check_value(self.known[name], value)
        except Bad as bad:
            problem, allowed = bad.args
            raise SweepError(self.source, field, problem, allowed) from None

    def unknown(self, field: str, skip: tuple[str, ...] = ()) -> SweepError:
        return SweepError(self.source, field, "unknown key", ", ".join((*skip, *self.known)))

    def options(self, field: str, table: dict, skip: tuple[str, ...] = ()) -> dict:
        out = {}
        for name, value in table.items():
            if name in skip:
                continue
            if name not in self.known:
                raise self.unknown(f"{field}.{name}", skip)
            out[name] = self.checked(f"{field}.{name}", name, value)
        return out

    def range(self, field: str, name: str, spec: dict) -> list[float]:
        allowed = "{logspace = [start, stop, n]} or {linspace = [start, stop, n]}, n in 1..10000"
        floats = [n for n, o in self.known.items() if o.kind == "float"]
        if name not in floats:
            raise SweepError(self.source, field, f"a range is not allowed for {name}",
                             f"a list of values (ranges only for {', '.join(floats)})")
        if len(spec) != 1 or next(iter(spec)) not in ("logspace", "linspace"):
            raise SweepError(self.source, field, f"{show(spec)} is not a range", allowed)
        kind, args = next(iter(spec.items()))
        ok = (
            isinstance(args, list) and len(args) == 3
            and all(is_number(a) and math.isfinite(a) for a in args[:2])
            and isinstance(args[2], int) and not isinstance(args[2], bool)
            and 1 <= args[2] <= MAX_RANGE
        )
        if not ok:
            raise SweepError(self.source, f"{field}.{kind}", f"{show(args)} is malformed",
                             allowed)
        values = np.linspace(float(args[0]), float(args[1]), args[2])
        return [float(v) for v in (10.0**values if kind == "logspace" else values)]

    def axes(self, grid: dict) -> list[tuple[str, list]]:
        axes = []
        for name, spec in grid.items():
            field = f"grid.{name}"
            if name not in self.known:
                raise self.unknown(field)
            if isinstance(spec, dict):
                raw = self.range(field, name, spec)
            elif isinstance(spec, list) and spec:
                raw = spec
            else:
                ranged = " or a range" if self.known[name].kind == "float" else ""
                raise SweepError(self.source, field,
                                 f"{show(spec)} is not a non-empty list of values",
                                 "a non-empty list" + ranged)
            values = [self.checked(f"{field}[{i}]", name, v) for i, v in enumerate(raw)]
            for i, v in enumerate(values):
                if v in values[:i]:
                    raise SweepError(self.source, f"{field}[{i}]", f"{show(raw[i])} is repeated",
                                     "each value once per axis")
            axes.append((name, values))
        return axes

    def cases(self, value: Any) -> list[tuple[str, dict, str]]:
        if not isinstance(value, list):
            raise SweepError(self.source, "cases", f"{show(value)} is not an array of tables",
                             "[[cases]] tables with a label and option overrides")
        out, labels = [], set()
        for i, case in enumerate(value):
            field = f"cases[{i}]"
            case = check_table(self.source, field, case,
                               "a [[cases]] table: a label and option overrides")
            label = case.get("label")
            if not isinstance(label, str) or not label.strip():
                problem = "missing" if label is None else f"{show(label)} is not a label"
                raise SweepError(self.source, f"{field}.label", problem,
                                 "a non-empty string, unique among the cases")
            if label in labels:
                raise SweepError(self.source, f"{field}.label", f"{show(label)} is used twice",
                                 "a non-empty string, unique among the cases")
            labels.add(label)
            out.append((label, self.options(field, case, skip=("label",)), field))
        return out

    def expand(self, defaults: dict, axes: list[tuple[str, list]],
               cases: list[tuple[str, dict, str]]) -> tuple[Cell, ...]:
        """The cells: the grid alone, then each case crossed with the grid (last axis
        fastest)."""
        cells: list[Cell] = []
        for label, overrides, case_field in [("", {}, ""), *cases]:
            block_axes = [(n, v) for n, v in axes if n not in overrides]
            where = {n: f"defaults.{n}" for n in defaults}
            where.update({n: f"grid.{n}" for n, _ in block_axes})
            where.update({n: f"{case_field}.{n}" for n in overrides})
            for combo in itertools.product(*(v for _, v in block_axes)):
                opts = {**defaults, **dict(zip([n for n, _ in block_axes], combo, strict=True))}
                opts.update(overrides)
                cells.append(_Finisher(self, len(cells), label, where).cell(opts))
        return tuple(cells)


class _Finisher:
    """One cell: the options its model takes, defaults filled in, batch resolved, and the
    checks that involve several options."""

    def __init__(self, parser: _Parser, index: int, label: str, where: dict):
        self.parser, self.index, self.label, self.where = parser, index, label, where
        self.cell_id = f"cell {index}" + (f", label {show(label)}" if label else "")

    def fail(self, name: str, problem: str, allowed: str):
        raise SweepError(self.parser.source, self.where.get(name, name),
                         f"{problem} ({self.cell_id})", allowed)

    def declared(self, family: Family) -> dict[str, Option]:
        """The options the model takes: gradjax's common ones, the family's and, for a
        plug-in, every option its factory names."""
        names = [*COMMON, *(o.name for o in family.options), *family.params]
        if family.handles_scale:  # it takes the scale(s) it names; the other is not an option
            names = [n for n in names if n not in SCALES or n in family.params]
        own = {o.name: o for o in family.options}
        return {n: own.get(n, self.parser.known[n]) for n in dict.fromkeys(names)}

    def cell(self, given: dict) -> Cell:
        family = self.parser.family(self.where.get("model", "model"),
                                    given.get("model", OPTION_BY_NAME["model"].default))
        declared = self.declared(family)
        for name in given:
            if name not in declared and not self.where.get(name, "").startswith("defaults."):
                self.fail(name, f"model {family.name!r} does not take {name}",
                          ", ".join(declared))
        opts = {n: v for n, v in given.items() if n in declared}
        for name, option in declared.items():
            if name not in opts and option.default is not None:
                opts[name] = option.default
            elif name not in opts and option.required:
                self.fail(name, "missing",
                          "set it in [defaults], in [grid] or in every [[cases]] table")
        self.check_data(opts)
        self.check_loss(opts)
        columns = {n: opts.get(n) for n in (*OPTIONS, *(o.name for o in self.parser.extra))}
        return Cell(self.index, self.label, columns, dict(self.where), family,
                    self.parser.folder, declared)

    def check_data(self, opts: dict) -> None:
        x = opts["inputs"]
        if isinstance(x, tuple):
            if "batch" in opts and opts["batch"] != len(x):
                self.fail("batch", f"batch = {opts['batch']} but inputs has {len(x)} rows",
                          "the number of rows of a fixed inputs batch, or no batch")
            opts["batch"] = len(x)
            if len(x[0]) != opts["in_dim"]:
                self.fail("inputs", f"rows of length {len(x[0])} but in_dim = {opts['in_dim']}",
                          f"rows of in_dim = {opts['in_dim']} numbers")
        opts.setdefault("batch", 1)
        if x == "digits" and importlib.util.find_spec("sklearn") is None:
            self.fail("inputs", "digits needs scikit-learn, which is not installed",
                      "pip install 'gradjax[digits]', or inputs gaussian or a fixed batch")
        if x == "digits" and opts["in_dim"] != DIGITS_SHAPE[0]:
            self.fail("inputs", f"digits with in_dim = {opts['in_dim']}",
                      f'inputs "digits" only with in_dim = {DIGITS_SHAPE[0]} (8 x 8 pixels)')
        y = opts["targets"]
        if y == "labels" and (x != "digits" or opts["out_dim"] != DIGITS_SHAPE[1]):
            self.fail("targets", f"labels with inputs {show(x)} and out_dim = "
                      f"{opts['out_dim']}", f'targets "labels" only with inputs "digits" and '
                      f"out_dim = {DIGITS_SHAPE[1]} (one-hot classes)")
        if isinstance(y, tuple):
            if len(y[0]) != opts["out_dim"]:
                self.fail("targets",
                          f"rows of length {len(y[0])} but out_dim = {opts['out_dim']}",
                          f"rows of out_dim = {opts['out_dim']} numbers")
            if len(y) != opts["batch"]:
                self.fail("targets", f"{len(y)} rows of targets for a batch of {opts['batch']}",
                          f"batch = {opts['batch']} rows, or a number, zeros, gaussian, "
                          "random_labels")

    def check_loss(self, opts: dict) -> None:
        if opts["loss"] == "bce" and opts["output_activation"] != "sigmoid":
            self.fail("loss", f"bce with output_activation {show(opts['output_activation'])}",
                      'loss "bce" only with output_activation "sigmoid"')
        if opts["loss"] == "softmax_cross_entropy" and opts["out_dim"] < 2:
            self.fail("loss", f"softmax_cross_entropy with out_dim = {opts['out_dim']} (the "
                      "softmax of one logit is 1, so every gradient is exactly 0)",
                      'loss "softmax_cross_entropy" only with out_dim >= 2')
        if opts.get("norm") == "batchnorm" and opts["batch"] < 2:
            self.fail("norm", f"batchnorm with batch = {opts['batch']}",
                      "batchnorm only with batch >= 2")
        if opts.get("norm") == "batchnorm" and opts["per_example"]:
            self.fail("per_example", "per_example with batchnorm (one example's own loss is "
                      "not defined when the batch's statistics couple the examples)",
                      "per_example = true only with norm \"none\" or \"layernorm\"")


def parse_sweep(text: str, source: str = "<sweep>") -> Sweep:
    """Validate a sweep file's text and expand its cells; raises `SweepError`. A plug-in
    model (`model = "package.module:factory"`) is imported from the file's folder first."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(source, "toml", str(err), "TOML 1.0 syntax") from None
    for key in doc:
        if key not in TOP_LEVEL:
            raise SweepError(source, key, "unknown key", ", ".join(TOP_LEVEL))
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problem = "missing" if name is None else f"{show(name)} is not a plain folder name"
        if isinstance(name, str) and ("/" in name or "\\" in name or name.startswith(".")):
            problem = f"{show(name)} would put results outside the results folder"
        raise SweepError(source, "name", problem,
                         "1-100 letters, digits, '.', '_', '-', starting with a letter or digit")
    if "seeds" not in doc:
        raise SweepError(source, "seeds", "missing", f"an integer in 1..{MAX_SEEDS}")
    seeds = check_integer(source, "seeds", doc["seeds"], 1, MAX_SEEDS)
    root_seed = check_integer(source, "root_seed", doc.get("root_seed", 0), 0, 2**32 - 1)
    parser = _Parser(source, doc)
    defaults = parser.options("defaults", check_table(
        source, "defaults", doc.get("defaults", {}), "a [defaults] table of option = value"))
    axes = parser.axes(check_table(source, "grid", doc.get("grid", {}),
                                   "a [grid] table of option = [values]"))
    cases = parser.cases(doc.get("cases", []))
    if "steps" in doc:
        axes.append(("step", check_steps(source, doc["steps"], defaults, axes, cases)))
    cells = parser.expand(defaults, axes, cases)
    per_seed = check_per_seed(source, doc.get("per_seed", True))
    extra = tuple(_settled(option, cells, source) for option in parser.extra)
    return Sweep(name, seeds, root_seed, text, source, cells, extra, parser.sources(),
                 per_seed)


def sweep_from_dict(doc: Mapping[str, Any], source: str = "<dict>") -> Sweep:
    """A sweep written as a Python dict of the TOML's shape (`gradjax.sweep.toml_text`),
    validated as its TOML text is, which the sweep keeps: a results folder holds it as
    `sweep.toml`. A plug-in model is imported from the current folder first."""
    try:
        text = dumps(doc)
    except NotToml as err:
        raise SweepError(source, err.args[0], err.args[1], ALLOWED) from None
    return parse_sweep(text, source)


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; raises `SweepError` (also for an unreadable file)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        problem = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SweepError(str(path), "file", problem.lower(), "a readable UTF-8 TOML file") from None
    return parse_sweep(text, str(path))


_VALUE_KINDS = {bool: "bool", int: "int", float: "float", str: "text"}


def _settled(option: Option, cells: Sequence[Cell], source: str) -> Option:
    """A "value" option (a plug-in parameter with neither annotation nor default) as the kind
    its values in the sweep's cells share: int, float (ints among floats count as floats),
    text or bool; never traced. Other options as they are."""
    if option.kind != "value":
        return option
    kinds = {_VALUE_KINDS[type(c.options[option.name])] for c in cells
             if c.options.get(option.name) is not None}
    if kinds == {"int", "float"}:
        kinds = {"float"}
    if len(kinds) > 1:
        field = next(c.field(option.name) for c in cells if c.options.get(option.name) is not None)
        raise SweepError(source, field, f"option {option.name!r} takes values of several kinds "
                         f"({', '.join(sorted(kinds))})", "values of one kind, or annotate the "
                         "factory's parameter")
    return dataclasses.replace(option, kind=kinds.pop() if kinds else "text")
