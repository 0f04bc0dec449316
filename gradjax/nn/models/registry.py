"""`resolve`: the `Family` of a sweep's `model` value, a built-in name or a plug-in
("package.module:factory"); no JAX (a built-in family imports JAX only inside its factory)."""

from __future__ import annotations

import functools
import importlib

from gradjax.nn.models.family import Family, factory_params
from gradjax.nn.models.plugin import plugin_family
from gradjax.spec.families import BUILT_IN


def family_module(name: str):
    """The module of built-in family `name` (gradjax/nn/models/<name>.py)."""
    return importlib.import_module(f"gradjax.nn.models.{name}")


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
    return plugin_family(model, folder)
