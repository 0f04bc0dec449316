"""Sweep files: TOML text -> validated cells -> shape buckets (one compile each).

A sweep file has `name`, `seeds`, optional `root_seed`, and three optional tables:

  [defaults]   option = value, for every cell
  [grid]       option = [v1, v2, ...] (or {logspace = [a, b, n]} / {linspace = [a, b, n]} for
               a float option): the cells are the Cartesian product of the axes
  [[cases]]    label = "...", plus option overrides: explicit cells, each crossed with the grid

Cells are numbered in the order of expansion: first the grid alone (label ""), then each case in
file order; within a block the grid's axes vary in file order, the last axis fastest. A case
that sets an option which is also a grid axis fixes that option: the axis is dropped for that
case. Random streams never depend on the cell number (`gradjax.keys`), so adding a value to an
axis changes no other cell's numbers.

Everything is validated before any work; the first problem found raises `SweepError`, whose
`line()` is `error: <file>: <field>: <what is wrong>; allowed: <values>`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradjax.spec import (
    DRAWN_TARGETS,
    INPUT_KINDS,
    OPTION_BY_NAME,
    OPTION_TABLE,
    OPTIONS,
    TARGET_KINDS,
    ProbeSpec,
    layer_sizes,
)

TOP_LEVEL: tuple[str, ...] = ("name", "seeds", "root_seed", "defaults", "grid", "cases")
MAX_SEEDS = 2**31 - 1
MAX_RANGE = 10_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

# Derived from `gradjax.spec.OPTION_TABLE`, the options' one home.
INT_OPTIONS: dict[str, int] = {o.name: int(o.low) for o in OPTION_TABLE if o.kind == "int"}
# Option -> smallest allowed value, None for any finite number (float options).
FLOAT_OPTIONS: dict[str, float | None] = {o.name: o.low for o in OPTION_TABLE
                                          if o.kind == "float"}
NAME_OPTIONS: dict[str, tuple[str, ...]] = {o.name: o.choices for o in OPTION_TABLE
                                            if o.kind == "name"}
INPUT_NAMES: tuple[str, ...] = tuple(k for k in INPUT_KINDS if k != "fixed")
TARGET_NAMES: tuple[str, ...] = tuple(k for k in TARGET_KINDS if k != "fixed")
REQUIRED: tuple[str, ...] = tuple(o.name for o in OPTION_TABLE if o.required)
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTION_TABLE if o.default is not None}
SHAPE_OPTIONS: tuple[str, ...] = ("in_dim", "width", "depth", "out_dim")  # ProbeSpec.sizes
Rows = tuple[tuple[float, ...], ...]


class SweepError(ValueError):
    """A sweep file problem, tied to the file and the field it is in."""

    def __init__(self, source: str, field: str, problem: str, allowed: str):
        super().__init__(f"{source}: {field}: {problem}; allowed: {allowed}")
        self.source, self.field, self.problem, self.allowed = source, field, problem, allowed

    def line(self) -> str:
        return f"error: {self}"


class _Bad(Exception):
    """A value problem not yet tied to a field: (problem, allowed)."""


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | list | dict | bool) else repr(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _rows(value: Any, what: str) -> Rows:
    number = ", a number" if what == "targets" else ""
    allowed = f"{_kinds(what)}{number} or a list of rows, each a list of numbers"
    if not isinstance(value, list) or not value:
        raise _Bad(f"{_show(value)} is not a non-empty list of rows", allowed)
    if not all(isinstance(r, list) and r for r in value):
        raise _Bad(f"{_show(value)} is not a list of rows (a batch is [[...], ...])", allowed)
    if not all(_is_number(v) and math.isfinite(v) for r in value for v in r):
        raise _Bad(f"{_show(value)} holds a value that is not a finite number", allowed)
    if len({len(r) for r in value}) != 1:
        raise _Bad(f"{_show(value)} has rows of different lengths", allowed)
    return tuple(tuple(float(v) for v in r) for r in value)


def _kinds(what: str) -> str:
    return ", ".join(INPUT_NAMES if what == "inputs" else TARGET_NAMES)


def check_option(name: str, value: Any) -> Any:
    """The canonical value of one option (raises `_Bad` with what is wrong and what is allowed).

    inputs: "gaussian" or a fixed batch (tuple of rows); targets: "zeros" | "gaussian" |
    "random_labels", a number (every target entry) or a fixed batch of rows.
    """
    if name in INT_OPTIONS:
        low = INT_OPTIONS[name]
        allowed = f"an integer >= {low}"
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Bad(f"{_show(value)} is not an integer", allowed)
        if value < low:
            raise _Bad(f"{value} is {'negative' if value < 0 else 'not positive'}", allowed)
        return value
    if name in FLOAT_OPTIONS:
        low = FLOAT_OPTIONS[name]
        allowed = "a finite number" + ("" if low is None else f" >= {low:g}")
        if not _is_number(value) or not math.isfinite(value):
            raise _Bad(f"{_show(value)} is not a finite number", allowed)
        if low is not None and value < low:
            raise _Bad(f"{value!r} is below {low:g}", allowed)
        return float(value)
    if name in NAME_OPTIONS:
        names = NAME_OPTIONS[name]
        if value not in names or not isinstance(value, str):
            raise _Bad(f"unknown {name} {_show(value)}", ", ".join(names))
        return value
    if OPTION_BY_NAME.get(name) is not None and OPTION_BY_NAME[name].kind == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"{_show(value)} is not a boolean", "true, false")
        return value
    if name == "inputs":
        if isinstance(value, str):
            if value not in INPUT_NAMES:
                raise _Bad(f"unknown inputs {_show(value)}", f"{_kinds(name)} or a list of rows")
            return value
        return _rows(value, "inputs")
    if name == "targets":
        if isinstance(value, str):
            if value not in TARGET_NAMES:
                raise _Bad(
                    f"unknown targets {_show(value)}", f"{_kinds(name)}, a number or a list of rows"
                )
            return value
        if _is_number(value):
            if not math.isfinite(value):
                raise _Bad(f"{value!r} is not finite", "a finite number")
            return float(value)
        return _rows(value, "targets")
    raise _Bad(f"unknown option {_show(name)}", ", ".join(OPTIONS))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of a sweep: a label and a value for every option (canonical forms)."""

    index: int
    label: str
    options: Mapping[str, Any]
    # option -> the field that set it ("grid.width", "cases[0].width", ...), for error lines
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def field(self, option: str) -> str:
        """Where `option` was set for this cell (the option's name if it is a default)."""
        return self.fields.get(option, option)

    @property
    def spec(self) -> ProbeSpec:
        """The shape bucket: every option that is not traced, fixed data as "fixed"."""
        o = self.options
        program = {opt.name: o[opt.name] for opt in OPTION_TABLE
                   if not opt.traced and opt.name not in SHAPE_OPTIONS}
        program["inputs"] = "gaussian" if o["inputs"] == "gaussian" else "fixed"
        if o["targets"] not in DRAWN_TARGETS:
            program["targets"] = "fixed"
        return ProbeSpec(sizes=layer_sizes(*(o[k] for k in SHAPE_OPTIONS)), **program)

    def columns(self) -> dict[str, Any]:
        """Option values for the result tables; fixed inputs/targets as JSON text."""
        out = dict(self.options)
        for name in ("inputs", "targets"):
            if not isinstance(out[name], str):
                out[name] = json.dumps(out[name])
        return {k: out[k] for k in OPTIONS}

    def fixed_x(self) -> np.ndarray | None:
        o = self.options
        return None if o["inputs"] == "gaussian" else np.asarray(o["inputs"], np.float64)

    def fixed_y(self) -> np.ndarray | None:
        o, shape = self.options, (self.options["batch"], self.options["out_dim"])
        if o["targets"] in DRAWN_TARGETS:
            return None
        if o["targets"] == "zeros":
            return np.zeros(shape)
        if isinstance(o["targets"], float):
            return np.full(shape, o["targets"])
        return np.asarray(o["targets"], np.float64)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Cells that share one compiled program: same `ProbeSpec`, different points."""

    spec: ProbeSpec
    cells: tuple[Cell, ...]

    def points(self, cells: Sequence[Cell] | None = None) -> dict[str, np.ndarray | None]:
        """The per-point values of `cells` (default: all of the bucket's cells), in order, as
        host arrays: `scales`, `bias_scales` and, for fixed data, `xs` and `ys` [P, batch, dim]
        (else None); `probe.make_points(spec, **points)` puts them on the device."""
        cells = self.cells if cells is None else cells
        fixed_x, fixed_y = self.spec.inputs == "fixed", self.spec.targets == "fixed"
        return {
            "scales": np.array([c.options["scale"] for c in cells]),
            "bias_scales": np.array([c.options["bias_scale"] for c in cells]),
            "xs": np.stack([c.fixed_x() for c in cells]) if fixed_x else None,
            "ys": np.stack([c.fixed_y() for c in cells]) if fixed_y else None,
        }


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep file: its text (kept verbatim) and its expanded cells."""

    name: str
    seeds: int
    root_seed: int
    text: str
    source: str
    cells: tuple[Cell, ...]

    def buckets(self) -> list[Bucket]:
        """Cells grouped by `ProbeSpec`, buckets in order of their first cell."""
        groups: dict[ProbeSpec, list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault(cell.spec, []).append(cell)
        return [Bucket(spec, tuple(cells)) for spec, cells in groups.items()]

    def with_seeds(self, seeds: int) -> Sweep:
        return dataclasses.replace(self, seeds=seeds)


def _field_error(source: str, field: str):
    def wrap(bad: _Bad) -> SweepError:
        problem, allowed = bad.args
        return SweepError(source, field, problem, allowed)

    return wrap


def _checked(source: str, field: str, name: str, value: Any) -> Any:
    try:
        return check_option(name, value)
    except _Bad as bad:
        raise _field_error(source, field)(bad) from None


def _table(source: str, field: str, value: Any, allowed: str) -> dict:
    if not isinstance(value, dict):
        raise SweepError(source, field, f"{_show(value)} is not a table", allowed)
    return value


def _options(source: str, field: str, table: dict, skip: tuple[str, ...] = ()) -> dict:
    out = {}
    for name, value in table.items():
        if name in skip:
            continue
        if name not in OPTIONS:
            allowed = ", ".join((*skip, *OPTIONS))
            raise SweepError(source, f"{field}.{name}", "unknown key", allowed)
        out[name] = _checked(source, f"{field}.{name}", name, value)
    return out


def _range(source: str, field: str, name: str, spec: dict) -> list[float]:
    allowed = "{logspace = [start, stop, n]} or {linspace = [start, stop, n]}, n in 1..10000"
    if name not in FLOAT_OPTIONS:
        float_axes = ", ".join(FLOAT_OPTIONS)
        raise SweepError(source, field, f"a range is not allowed for {name}",
                         f"a list of values (ranges only for {float_axes})")
    if len(spec) != 1 or next(iter(spec)) not in ("logspace", "linspace"):
        raise SweepError(source, field, f"{_show(spec)} is not a range", allowed)
    kind, args = next(iter(spec.items()))
    ok = (
        isinstance(args, list) and len(args) == 3
        and all(_is_number(a) and math.isfinite(a) for a in args[:2])
        and isinstance(args[2], int) and not isinstance(args[2], bool)
        and 1 <= args[2] <= MAX_RANGE
    )
    if not ok:
        raise SweepError(source, f"{field}.{kind}", f"{_show(args)} is malformed", allowed)
    values = np.linspace(float(args[0]), float(args[1]), args[2])
    return [float(v) for v in (10.0**values if kind == "logspace" else values)]


def _axes(source: str, grid: dict) -> list[tuple[str, list]]:
    axes = []
    for name, spec in grid.items():
        field = f"grid.{name}"
        if name not in OPTIONS:
            raise SweepError(source, field, "unknown key", ", ".join(OPTIONS))
        if isinstance(spec, dict):
            raw = _range(source, field, name, spec)
        elif isinstance(spec, list) and spec:
            raw = spec
        else:
            raise SweepError(source, field, f"{_show(spec)} is not a non-empty list of values",
                             "a non-empty list" + (" or a range" if name in FLOAT_OPTIONS else ""))
        values = [_checked(source, f"{field}[{i}]", name, v) for i, v in enumerate(raw)]
        for i, v in enumerate(values):
            if v in values[:i]:
                raise SweepError(source, f"{field}[{i}]", f"{_show(raw[i])} is repeated",
                                 "each value once per axis")
        axes.append((name, values))
    return axes


def _cases(source: str, value: Any) -> list[tuple[str, dict, str]]:
    if not isinstance(value, list):
        raise SweepError(source, "cases", f"{_show(value)} is not an array of tables",
                         "[[cases]] tables with a label and option overrides")
    out, labels = [], set()
    for i, case in enumerate(value):
        field = f"cases[{i}]"
        case = _table(source, field, case, "a [[cases]] table: a label and option overrides")
        label = case.get("label")
        if not isinstance(label, str) or not label.strip():
            problem = "missing" if label is None else f"{_show(label)} is not a label"
            raise SweepError(source, f"{field}.label", problem,
                             "a non-empty string, unique among the cases")
        if label in labels:
            raise SweepError(source, f"{field}.label", f"{_show(label)} is used twice",
                             "a non-empty string, unique among the cases")
        labels.add(label)
        out.append((label, _options(source, field, case, skip=("label",)), field))
    return out


def _finish_cell(source: str, index: int, label: str, opts: dict, where: dict) -> Cell:
    """Defaults filled in, batch resolved, and cross-option checks done."""
    cell_id = f"cell {index}" + (f", label {_show(label)}" if label else "")

    def fail(name: str, problem: str, allowed: str):
        raise SweepError(source, where.get(name, name), f"{problem} ({cell_id})", allowed)

    for name in REQUIRED:
        if name not in opts:
            fail(name, "missing", "set it in [defaults], in [grid] or in every [[cases]] table")
    opts = {**DEFAULTS, **opts}
    x = opts["inputs"]
    if isinstance(x, tuple):
        if "batch" in opts and opts["batch"] != len(x):
            fail("batch", f"batch = {opts['batch']} but inputs has {len(x)} rows",
                 "the number of rows of a fixed inputs batch, or no batch")
        opts["batch"] = len(x)
        if len(x[0]) != opts["in_dim"]:
            fail("inputs", f"rows of length {len(x[0])} but in_dim = {opts['in_dim']}",
                 f"rows of in_dim = {opts['in_dim']} numbers")
    opts.setdefault("batch", 1)
    y = opts["targets"]
    if isinstance(y, tuple):
        if len(y[0]) != opts["out_dim"]:
            fail("targets", f"rows of length {len(y[0])} but out_dim = {opts['out_dim']}",
                 f"rows of out_dim = {opts['out_dim']} numbers")
        if len(y) != opts["batch"]:
            fail("targets", f"{len(y)} rows of targets for a batch of {opts['batch']}",
                 f"batch = {opts['batch']} rows, or a number, zeros, gaussian, random_labels")
    if opts["loss"] == "bce" and opts["output_activation"] != "sigmoid":
        fail("loss", f"bce with output_activation {_show(opts['output_activation'])}",
             'loss "bce" only with output_activation "sigmoid"')
    if opts["loss"] == "softmax_cross_entropy" and opts["out_dim"] < 2:
        fail("loss", f"softmax_cross_entropy with out_dim = {opts['out_dim']} (the softmax of "
             "one logit is 1, so every gradient is exactly 0)",
             'loss "softmax_cross_entropy" only with out_dim >= 2')
    if opts["norm"] == "batchnorm" and opts["batch"] < 2:
        fail("norm", f"batchnorm with batch = {opts['batch']}", "batchnorm only with batch >= 2")
    return Cell(index, label, {k: opts[k] for k in OPTIONS}, dict(where))


def expand(
    source: str, defaults: dict, axes: list[tuple[str, list]], cases: list[tuple[str, dict, str]]
) -> tuple[Cell, ...]:
    """The cells: the grid alone, then each case crossed with the grid (last axis fastest)."""
    cells: list[Cell] = []
    blocks = [("", {}, ""), *cases]
    for label, overrides, case_field in blocks:
        block_axes = [(n, v) for n, v in axes if n not in overrides]
        where = {n: f"defaults.{n}" for n in defaults}
        where.update({n: f"grid.{n}" for n, _ in block_axes})
        where.update({n: f"{case_field}.{n}" for n in overrides})
        for combo in itertools.product(*(v for _, v in block_axes)):
            opts = {**defaults, **dict(zip([n for n, _ in block_axes], combo, strict=True))}
            opts.update(overrides)
            cells.append(_finish_cell(source, len(cells), label, opts, where))
    return tuple(cells)


def _integer(source: str, field: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SweepError(source, field, f"{_show(value)} is not an integer in range",
                         f"an integer in {low}..{high}")
    return value


def parse_sweep(text: str, source: str = "<sweep>") -> Sweep:
    """Validate a sweep file's text and expand its cells; raises `SweepError`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(source, "toml", str(err), "TOML 1.0 syntax") from None
    for key in doc:
        if key not in TOP_LEVEL:
            raise SweepError(source, key, "unknown key", ", ".join(TOP_LEVEL))
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        problem = "missing" if name is None else f"{_show(name)} is not a plain folder name"
        if isinstance(name, str) and ("/" in name or "\\" in name or name.startswith(".")):
            problem = f"{_show(name)} would put results outside the results folder"
        raise SweepError(source, "name", problem,
                         "1-100 letters, digits, '.', '_', '-', starting with a letter or digit")
    if "seeds" not in doc:
        raise SweepError(source, "seeds", "missing", f"an integer in 1..{MAX_SEEDS}")
    seeds = _integer(source, "seeds", doc["seeds"], 1, MAX_SEEDS)
    root_seed = _integer(source, "root_seed", doc.get("root_seed", 0), 0, 2**32 - 1)
    defaults = _options(source, "defaults", _table(source, "defaults", doc.get("defaults", {}),
                                                   "a [defaults] table of option = value"))
    axes = _axes(source, _table(source, "grid", doc.get("grid", {}),
                                "a [grid] table of option = [values]"))
    cases = _cases(source, doc.get("cases", []))
    cells = expand(source, defaults, axes, cases)
    return Sweep(name, seeds, root_seed, text, source, cells)


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; raises `SweepError` (also for an unreadable file)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        problem = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SweepError(str(path), "file", problem.lower(), "a readable UTF-8 TOML file") from None
    return parse_sweep(text, str(path))
