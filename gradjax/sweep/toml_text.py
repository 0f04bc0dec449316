"""A sweep written as a Python dict, as TOML text: what `parse_sweep` reads and a results
folder keeps (`sweep.toml`), so a sweep from a notebook is validated, hashed, resumed and
re-run from the command line exactly like a file.

The dict has the TOML's shape: top-level keys (name, seeds, root_seed, per_seed, steps), the
tables `defaults` and `grid` of option = value, and `cases`, a list of tables. Values are
strings, booleans, integers, floats, lists of them, and tables (a grid axis such as
{"logspace": [-1, 1, 9]}), which are written inline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

TABLES = ("defaults", "grid")
ALLOWED = "strings, booleans, numbers, lists and tables (dicts)"


class NotToml(TypeError):
    """A value of a sweep dict that TOML cannot hold: args are (where, problem)."""


def dumps(doc: Mapping[str, Any]) -> str:
    """TOML text of a sweep dict. A value TOML cannot hold raises `NotToml(where, problem)`."""
    top = {k: v for k, v in doc.items() if k not in (*TABLES, "cases")}
    lines = [f"{_key(k)} = {_value(v, k)}" for k, v in top.items()]
    for table in TABLES:
        if table in doc:
            lines += ["", f"[{table}]", *_pairs(doc[table], table)]
    for i, case in enumerate(doc.get("cases", ())):
        lines += ["", "[[cases]]", *_pairs(case, f"cases[{i}]")]
    return "\n".join(lines) + "\n"


def _pairs(table: Any, where: str) -> list[str]:
    if not isinstance(table, Mapping):
        raise NotToml(where, f"a {type(table).__name__}, not a table of option = value")
    return [f"{_key(k)} = {_value(v, f'{where}.{k}')}" for k, v in table.items()]


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise NotToml(repr(key), "a key that is not a string")
    bare = key and all(c.isalnum() or c in "_-" for c in key) and key.isascii()
    return key if bare else json.dumps(key)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
                if math.isinf(value) else repr(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v, f'{where}.{k}')}"
                               for k, v in value.items()) + "}"
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy scalar
        return _value(value.item(), where)
    raise NotToml(where, f"{type(value).__name__} {value!r} has no TOML form")
