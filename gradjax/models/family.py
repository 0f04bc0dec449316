"""`Family`: what the sweep parser and the probe need to know about a model family, and
`resolve`, which finds it from a sweep's `model` value; no JAX."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable

from gradjax.option import Option

BUILT_IN: tuple[str, ...] = ("mlp", "resmlp")
SCALES = ("scale", "bias_scale")  # multiplied onto the leaves unless the factory takes them


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: its `model` value, its own options (beyond the common ones of
    `gradjax.spec`), and its factory, which takes the options named in its signature."""

    name: str
    options: tuple[Option, ...]
    factory: Callable = dataclasses.field(compare=False, repr=False)
    params: tuple[str, ...] = ()  # the option names the factory's signature takes

    @property
    def handles_scale(self) -> bool:
        """True when the factory takes `scale` or `bias_scale` itself: then nothing is
        multiplied onto its parameters."""
        return any(name in self.params for name in SCALES)


def factory_params(factory: Callable) -> tuple[str, ...]:
    """The names of a factory's parameters that can be passed by keyword."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in inspect.signature(factory).parameters.values()
                 if p.kind in kinds)


def built_in(name: str) -> Family:
    module = importlib.import_module(f"gradjax.models.{name}")
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
