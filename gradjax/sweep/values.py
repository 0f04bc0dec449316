"""Checking a sweep file's values one at a time, no JAX: `check_value` gives an option value's
canonical form or raises `Bad` (what is wrong, what is allowed), which the parser ties to the
field the value came from; the checks of the top-level fields (`seeds`, `per_seed`, `steps`)
and of a table's type raise `SweepError` directly. `SweepError` is the one error a sweep file's
problem raises, and lives here, below both the parser and the budget, so that nothing imports
upward.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from gradjax.spec import INPUT_KINDS, STATS, TARGET_KINDS
from gradjax.spec.option import Option

if TYPE_CHECKING:
    from gradjax.sweep.model import Cell

MAX_STEP = 10**7
MAX_SEEDS = 2**31 - 1
MAX_RANGE = 10_000

INPUT_NAMES: tuple[str, ...] = tuple(k for k in INPUT_KINDS if k != "fixed")
TARGET_NAMES: tuple[str, ...] = tuple(k for k in TARGET_KINDS if k != "fixed")
Rows = tuple[tuple[float, ...], ...]


class SweepError(ValueError):
    """A sweep file problem, tied to the file and the field it is in."""

    def __init__(self, source: str, field: str, problem: str, allowed: str):
        super().__init__(f"{source}: {field}: {problem}; allowed: {allowed}")
        self.source, self.field, self.problem, self.allowed = source, field, problem, allowed

    def line(self) -> str:
        return f"error: {self}"


class Bad(Exception):
    """A value problem not yet tied to a field: (problem, allowed)."""


def show(value: Any) -> str:
    """`value` as an error line quotes it: JSON for strings, lists, tables and booleans."""
    return json.dumps(value) if isinstance(value, str | list | dict | bool) else repr(value)


def is_number(v: Any) -> bool:
    """Whether `v` is an int or a float (not a bool)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def _rows(value: Any, what: str) -> Rows:
    number = ", a number" if what == "targets" else ""
    allowed = f"{_kinds(what)}{number} or a list of rows, each a list of numbers"
    if not isinstance(value, list) or not value:
        raise Bad(f"{show(value)} is not a non-empty list of rows", allowed)
    if not all(isinstance(r, list) and r for r in value):
        raise Bad(f"{show(value)} is not a list of rows (a batch is [[...], ...])", allowed)
    if not all(is_number(v) and math.isfinite(v) for r in value for v in r):
        raise Bad(f"{show(value)} holds a value that is not a finite number", allowed)
    if len({len(r) for r in value}) != 1:
        raise Bad(f"{show(value)} has rows of different lengths", allowed)
    return tuple(tuple(float(v) for v in r) for r in value)


def _kinds(what: str) -> str:
    return ", ".join(INPUT_NAMES if what == "inputs" else TARGET_NAMES)


def _check_number(option: Option, value: Any) -> Any:
    low = option.low
    if option.kind == "int":
        allowed = "an integer" + ("" if low is None else f" >= {low:g}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise Bad(f"{show(value)} is not an integer", allowed)
        if low is not None and value < low:
            raise Bad(f"{value} is {'negative' if value < 0 else 'not positive'}", allowed)
        return value
    allowed = "a finite number" + ("" if low is None else f" >= {low:g}")
    if not is_number(value) or not math.isfinite(value):
        raise Bad(f"{show(value)} is not a finite number", allowed)
    if low is not None and value < low:
        raise Bad(f"{value!r} is below {low:g}", allowed)
    return float(value)


def _check_data(name: str, value: Any) -> Any:
    """inputs: "gaussian" or rows; targets: a name, a number or rows."""
    names = INPUT_NAMES if name == "inputs" else TARGET_NAMES
    more = " or a list of rows" if name == "inputs" else ", a number or a list of rows"
    if isinstance(value, str):
        if value not in names:
            raise Bad(f"unknown {name} {show(value)}", f"{_kinds(name)}{more}")
        return value
    if name == "targets" and is_number(value):
        if not math.isfinite(value):
            raise Bad(f"{value!r} is not finite", "a finite number")
        return float(value)
    return _rows(value, name)


def _check_scales(value: Any) -> tuple[float, ...]:
    """layer_scale: a list of finite numbers > 0 (possibly empty)."""
    allowed = "a list of numbers > 0, one per layer in forward order, or []"
    if not isinstance(value, list):
        raise Bad(f"{show(value)} is not a list", allowed)
    for v in value:
        if not (is_number(v) and math.isfinite(v) and v > 0):
            raise Bad(f"{show(value)} holds {show(v)}, not a finite number > 0", allowed)
    return tuple(float(v) for v in value)


def check_value(option: Option, value: Any) -> Any:
    """The canonical value of `option` (raises `Bad` with what is wrong and what is allowed).

    inputs: "gaussian" or a fixed batch (tuple of rows); targets: "zeros" | "gaussian" |
    "random_labels", a number (every target entry) or a fixed batch of rows; model: a built-in
    family or "package.module:factory" (resolved by the parser, which knows the file's folder).
    """
    if option.kind in ("int", "float"):
        return _check_number(option, value)
    if option.kind in ("inputs", "targets"):
        return _check_data(option.name, value)
    if option.kind == "scales":
        return _check_scales(value)
    if option.kind == "value":
        if not isinstance(value, bool | int | float | str) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise Bad(f"{show(value)} is not a number, string or boolean", option.allowed())
        return value
    if option.kind == "bool":
        if not isinstance(value, bool):
            raise Bad(f"{show(value)} is not a boolean", "true, false")
        return value
    if not isinstance(value, str):
        raise Bad(f"{show(value)} is not a string", option.allowed())
    if option.kind == "name" and value not in option.choices:
        raise Bad(f"unknown {option.name} {show(value)}", ", ".join(option.choices))
    return value



def check_table(source: str, field: str, value: Any, allowed: str) -> dict:
    """`value` if it is a table (a dict), else a `SweepError` at `field`."""
    if not isinstance(value, dict):
        raise SweepError(source, field, f"{show(value)} is not a table", allowed)
    return value


def check_integer(source: str, field: str, value: Any, low: int, high: int) -> int:
    """`value` if it is an integer in low..high, else a `SweepError` at `field`."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SweepError(source, field, f"{show(value)} is not an integer in range",
                         f"an integer in {low}..{high}")
    return value


def check_layer_scale(source: str, cell: Cell, layers: int) -> None:
    """`SweepError` at the cell's `layer_scale` unless it is empty or has one number for each
    of the model's `layers` layers."""
    given = cell.options.get("layer_scale") or ()
    if given and len(given) != layers:
        raise SweepError(source, cell.field("layer_scale"),
                         f"{len(given)} numbers for a model of {layers} layers (cell "
                         f"{cell.index})", f"a list of {layers} numbers > 0, or []")


def check_per_seed(source: str, value: Any) -> tuple[str, ...]:
    """`per_seed = true | false | ["grad_var", ...]`: the statistics of the per-seed table."""
    allowed = f"true, false, or a list of statistics: {', '.join(STATS)}"
    if isinstance(value, bool):
        return STATS if value else ()
    if not isinstance(value, list) or not value:
        raise SweepError(source, "per_seed", f"{show(value)} is not true, false or a "
                         "non-empty list", allowed)
    for i, name in enumerate(value):
        if name not in STATS or name in value[:i]:
            problem = "is repeated" if name in value[:i] else "is not a per-init statistic"
            raise SweepError(source, f"per_seed[{i}]", f"{show(name)} {problem}", allowed)
    return tuple(s for s in STATS if s in value)


def check_steps(source: str, value: Any, defaults: dict, axes: list, cases: list) -> list[int]:
    """`steps = [0, 1, 10, 100]`: the recorded steps, the sweep's last (fastest) axis."""
    allowed = f"a non-empty list of distinct integers in 0..{MAX_STEP}, e.g. [0, 1, 10, 100]"
    for where, names in (("defaults", defaults), ("grid", dict(axes)),
                         *((field, case) for _, case, field in cases)):
        if "step" in names:
            raise SweepError(source, f"{where}.step", "step is set by the top-level steps list",
                             "steps = [...] at the top of the file, and no step elsewhere")
    if not isinstance(value, list) or not value:
        raise SweepError(source, "steps", f"{show(value)} is not a non-empty list", allowed)
    for i, step in enumerate(value):
        ok = isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= MAX_STEP
        if not ok or step in value[:i]:
            problem = "is repeated" if ok else "is not an integer in range"
            raise SweepError(source, f"steps[{i}]", f"{show(step)} {problem}", allowed)
    return sorted(value)
