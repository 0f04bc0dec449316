"""`Family`: what the sweep parser and the probe need to know about a model family, and
`resolve`, which finds it from a sweep's `model` value; no JAX."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable

from gradjax.option import Option

BUILT_IN: tuple[str, ...] = ("mlp", "resmlp")  # a module gradjax/models/<name>.py each
SCALES: tuple[str, ...] = ("scale", "bias_scale")  # on the leaves unless the factory takes them


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: its `model` value, its own options (beyond the common ones of
    `gradjax.spec`), its factory, which takes the options named in its signature, and, for a
    plug-in, the sha256 of its module's source (a results folder records it)."""

    name: str
    options: tuple[Option, ...]
    factory: Callable = dataclasses.field(compare=False, repr=False)
    params: tuple[str, ...] = ()  # the option names the factory's signature takes
    source_sha256: str = ""

    @property
    def handles_scale(self) -> bool:
        """True when the factory takes `scale` or `bias_scale` itself: it gets the one(s) it
        names and nothing is multiplied onto its parameters."""
        return any(name in self.params for name in SCALES)


def factory_params(factory: Callable) -> tuple[str, ...]:
    """The names of a factory's keyword parameters; ValueError for a signature whose options
    cannot be told (`*args`, `**kwargs`, a required positional-only parameter)."""
    out = []
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ValueError(f"the factory takes {p}: name each option as a keyword parameter")
        if p.kind == p.POSITIONAL_ONLY:
            if p.default is p.empty:
                raise ValueError(f"the factory's parameter {p.name!r} is positional-only and "
                                 "required: options are passed by keyword")
            continue
        out.append(p.name)
    return tuple(out)


def family_module(name: str):
    """The module of built-in family `name` (gradjax/models/<name>.py)."""
    return importlib.import_module(f"gradjax.models.{name}")


def built_in(name: str) -> Family:
    module = family_module(name)
    return Family(name, module.OPTIONS, module.factory, factory_params(module.factory))


@functools.cache
def resolve(model: str, folder: str = "") -> Family:
    """The family of a `model` value: a built-in name, or "package.module:factory", imported
    from `folder` (the sweep file's folder) first, then from the installed packages. Raises
    ValueError saying what is wrong."""
    if model in BUILT_IN:
        return built_in(model)
    from gradjax.models.plugin import plugin_family

    return plugin_family(model, folder)
