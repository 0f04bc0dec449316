"""`Family`: what the sweep parser and the probe need to know about a model family; no JAX.
`gradjax.nn.models.registry.resolve` finds it from a sweep's `model` value."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

from gradjax.spec.option import Option

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
