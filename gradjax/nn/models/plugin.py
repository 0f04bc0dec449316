"""Plug-in models: `model = "package.module:factory"` in a sweep file.

The module is imported from the sweep file's folder first, then from the installed packages;
it is user code and runs as such (importing it runs it), so name only modules you trust. The
factory's keyword parameters are its options:

  * a parameter named like a gradjax option (`in_dim`, `activation`, `width`, `dtype`, ...) is
    that option, validated as documented in docs/sweeps.md; its default is gradjax's, or the
    factory's where gradjax has none;
  * any other parameter is an option of this model: its kind comes from its annotation
    (int, float, str, bool, or `Literal["a", "b"]` for a choice) or else from the type of its
    default, which is also the option's default (no default: required). Float options are
    traced (a grid over them compiles once): the factory receives them as JAX scalars;
  * `scale` and `bias_scale` are multiplied onto every parameter leaf with ndim >= 2 and every
    1-D leaf, unless the factory names either one: then it receives the one(s) it names (traced),
    nothing is multiplied, and an unnamed one is not an option of this model;
  * a parameter named like a result column (`seed`, `layer`, `param`, `n`, a statistic, ...)
    is refused, and so are `*args`, `**kwargs` and required positional-only parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path

from gradjax.nn.models.family import Family, factory_params
from gradjax.spec import OPTION_BY_NAME, RESERVED_COLUMNS
from gradjax.spec.option import Option

MODEL = re.compile(r"([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_]\w*)")
_KIND_OF_TYPE = {bool: "bool", int: "int", float: "float", str: "text"}


@contextlib.contextmanager
def _importing_from(folder: str, top: str) -> Iterator[None]:
    """`folder` first on sys.path while importing; when it holds package or module `top`,
    any imported `top` (and its submodules) is set aside meanwhile and put back after, so
    the sweep's own module is the one imported and nothing else is disturbed."""
    path = Path(folder) if folder else None
    local = path is not None and ((path / f"{top}.py").is_file()
                                  or (path / top / "__init__.py").is_file())
    aside = {k: sys.modules.pop(k) for k in list(sys.modules)
             if local and (k == top or k.startswith(f"{top}."))}
    if folder:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
        sys.modules.update(aside)


def load_factory(model: str, folder: str = ""):
    """(module, the callable named by "package.module:factory"); ValueError saying what is
    missing."""
    match = MODEL.fullmatch(model)
    if match is None:
        raise ValueError(f"{model!r} is neither a built-in model nor \"package.module:factory\"")
    module_name, attr = match.groups()
    with _importing_from(folder, module_name.split(".")[0]):
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ValueError(f"cannot import {module_name!r} (looked in {folder or '.'} and "
                             f"the installed packages): {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name!r} has no callable {attr!r}")
    return module, factory


def option_of(param: inspect.Parameter, hints: dict) -> Option:
    """The option a factory parameter declares: its kind from its annotation, else from its
    default, else ("value") from the sweep's values; ValueError for an annotation or default
    of another type."""
    hint = hints.get(param.name, inspect.Parameter.empty)
    default = None if param.default is inspect.Parameter.empty else param.default
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        if all(isinstance(c, str) for c in choices):
            return Option(param.name, "name", "a plug-in option", default, choices=choices)
    kind = _KIND_OF_TYPE.get(hint) or _KIND_OF_TYPE.get(type(default))
    if kind is None and hint is inspect.Parameter.empty and param.default is param.empty:
        # neither annotation nor default: the sweep's values settle its kind (TOML is typed)
        return Option(param.name, "value", "a plug-in option (its kind from the sweep's "
                      "values; annotate it `float` to have it traced)")
    if kind is None:
        raise ValueError(f"factory parameter {param.name!r} needs a default or an annotation "
                         "of int, float, str, bool or Literal[...] strings")
    if kind == "float" and default is not None:
        default = float(default)
    return Option(param.name, kind, "a plug-in option", default, traced=kind == "float")


def _source_sha256(module) -> str:
    path = getattr(module, "__file__", None)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else ""


def plugin_family(model: str, folder: str = "") -> Family:
    """The `Family` of a plug-in: its factory, and an `Option` per parameter that is not a
    gradjax option (gradjax's own are validated as declared in `gradjax.spec`)."""
    module, factory = load_factory(model, folder)
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 (unresolvable annotations: fall back to the defaults)
        hints = {}
    names = factory_params(factory)
    params = inspect.signature(factory).parameters
    own = []
    for name in names:
        known = OPTION_BY_NAME.get(name)
        if name in RESERVED_COLUMNS:
            raise ValueError(f"factory parameter {name!r} would clash with the result column "
                             "of that name; rename it")
        if known is None:
            own.append(option_of(params[name], hints))
        elif known.default is None and params[name].default is not inspect.Parameter.empty:
            own.append(dataclasses.replace(known, default=params[name].default))
    return Family(model, tuple(own), factory, names, _source_sha256(module))
