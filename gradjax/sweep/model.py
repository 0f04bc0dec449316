"""The parsed sweep, no JAX: `Sweep` (a validated file's text and its expanded cells), `Cell`
(one cell's options in canonical form, and what derives from them: its shape bucket's
`ProbeSpec`, its fixed data, its result columns) and `Bucket` (cells that share one compiled
program, and their per-point values). The parser builds them; the runner, the results and the
estimates read them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gradjax.nn.models import Family
from gradjax.nn.models.family import SCALES
from gradjax.spec import (
    DRAWN_INPUTS,
    DRAWN_TARGETS,
    OPTION_BY_NAME,
    STATS,
    TRAINING_OPTIONS,
    ProbeSpec,
    capabilities,
    layer_sizes,
)
from gradjax.spec.option import JSON_KINDS, Option

SHAPE_OPTIONS: tuple[str, ...] = ("in_dim", "width", "depth", "out_dim")  # ProbeSpec.sizes


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of a sweep: a label and a value for every option (canonical forms)."""

    index: int
    label: str
    # every column option of the sweep; None where the cell's model does not take it
    options: Mapping[str, Any]
    # option -> the field that set it ("grid.width", "cases[0].width", ...), for error lines
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    family: Family | None = dataclasses.field(default=None, compare=False, repr=False)
    folder: str = dataclasses.field(default="", compare=False, repr=False)
    # option -> its declaration for this cell's model (a plug-in's own, else gradjax's)
    declared: Mapping[str, Option] = dataclasses.field(default_factory=dict, compare=False,
                                                       repr=False)

    def field(self, option: str) -> str:
        """Where `option` was set for this cell (the option's name if it is a default)."""
        return self.fields.get(option, option)

    def takes(self, option: str) -> bool:
        return self.options.get(option) is not None

    def traced(self, option: str) -> bool:
        return self.declared.get(option, OPTION_BY_NAME.get(option)).traced

    def model_traced(self) -> tuple[str, ...]:
        """Traced options passed to the model's factory per point, beyond scale/bias_scale."""
        if capabilities(self.options["model"]).shapes_from_options:
            return ()
        return tuple(n for n in self.family.params if self.traced(n) and n not in SCALES)

    @property
    def spec(self) -> ProbeSpec:
        """The shape bucket: every option the model takes that is not traced, fixed data as
        "fixed"; for models other than the MLP, the factory's untraced options as
        `model_options`."""
        o = self.options
        data = {"inputs": o["inputs"] if o["inputs"] in DRAWN_INPUTS else "fixed",
                "targets": o["targets"] if o["targets"] in DRAWN_TARGETS else "fixed",
                # cells at step 0 run the init-only program, whatever their optimizer
                "optimizer": o["optimizer"] if o["step"] else ""}
        program = {f.name: o[f.name] for f in dataclasses.fields(ProbeSpec)
                   if f.name in o and self.takes(f.name) and not self.traced(f.name)
                   and f.name not in data}
        data["scaled_layers"] = len(o.get("layer_scale") or ())
        if capabilities(o["model"]).shapes_from_options:
            return ProbeSpec(sizes=layer_sizes(*(o[k] for k in SHAPE_OPTIONS)), **program,
                             **data)
        program.setdefault("activation", None)
        program.pop("structural_zeros", None)  # the MLP's probe only
        return ProbeSpec(sizes=(o["in_dim"], o["out_dim"]), **program, **data,
                         structural_zeros=False, model_options=self.model_options(),
                         model_folder=self.folder)

    def model_options(self) -> tuple[tuple[str, object], ...]:
        """The factory's options that fix the program: (name, value) of its parameters that
        are not traced, sorted by name (`ProbeSpec.model_options`)."""
        return tuple(sorted((n, self.options[n]) for n in self.family.params
                            if n in self.options and not self.traced(n)))

    def columns(self) -> dict[str, Any]:
        """Option values for the result tables; fixed inputs/targets (rows or a number) and
        lists of scales as JSON text (`JSON_KINDS`)."""
        out = dict(self.options)
        for name, value in self.options.items():
            option = self.declared.get(name, OPTION_BY_NAME.get(name))
            if option is not None and option.kind in JSON_KINDS and not isinstance(value, str):
                out[name] = json.dumps(value)
        return out

    def fixed_x(self) -> np.ndarray | None:
        o = self.options
        return None if o["inputs"] in DRAWN_INPUTS else np.asarray(o["inputs"], np.float64)

    def fixed_y(self) -> np.ndarray | None:
        o, shape = self.options, (self.options["batch"], self.options["out_dim"])
        if o["targets"] in DRAWN_TARGETS:
            return None
        if o["targets"] == "zeros":
            return np.zeros(shape)
        if isinstance(o["targets"], float):
            return np.full(shape, o["targets"])
        return np.asarray(o["targets"], np.float64)


def _or_one(value: float | None) -> float:
    return 1.0 if value is None else value


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Cells that share one compiled program: same `ProbeSpec`, different points."""

    spec: ProbeSpec
    cells: tuple[Cell, ...]

    def points(self, cells: Sequence[Cell] | None = None) -> dict[str, np.ndarray | None]:
        """The per-point values of `cells` (default: all of the bucket's cells), in order, as
        host arrays: `scales`, `bias_scales` and, for fixed data, `xs` and `ys` [P, batch, dim]
        (else None); `layer_scales` [P, layers] where the cells set `layer_scale`; for a model
        with traced options of its own, `model` (name -> [P]).
        `gradjax.probe.chunking.make_points(spec, **points)` puts them on the device."""
        cells = self.cells if cells is None else cells
        fixed_x, fixed_y = self.spec.inputs == "fixed", self.spec.targets == "fixed"
        points = {
            # 1 where the model's factory takes the other scale itself (the option is unset)
            "scales": np.array([_or_one(c.options["scale"]) for c in cells]),
            "bias_scales": np.array([_or_one(c.options["bias_scale"]) for c in cells]),
            "xs": np.stack([c.fixed_x() for c in cells]) if fixed_x else None,
            "ys": np.stack([c.fixed_y() for c in cells]) if fixed_y else None,
        }
        if self.spec.scaled_layers:
            points["layer_scales"] = np.array([c.options["layer_scale"] for c in cells])
        traced = cells[0].model_traced()
        if traced:
            points["model"] = {n: np.array([c.options[n] for c in cells]) for n in traced}
        if self.spec.trains:
            points["train"] = {n: np.array([c.options[n] for c in cells])
                               for n in ("step", *TRAINING_OPTIONS) if n != "optimizer"}
        return points


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A validated sweep file: its text (kept verbatim) and its expanded cells."""

    name: str
    seeds: int
    root_seed: int
    text: str
    source: str
    cells: tuple[Cell, ...]
    # plug-in options that are not gradjax options: result columns after gradjax's own
    extra_options: tuple[Option, ...] = ()
    # (plug-in model, sha256 of its module's source): part of what a results folder records
    model_sources: tuple[tuple[str, str], ...] = ()
    per_seed: tuple[str, ...] = STATS  # the statistics the per-seed table keeps; () for none

    def buckets(self) -> list[Bucket]:
        """Cells grouped by `ProbeSpec`, buckets in order of their first cell."""
        groups: dict[ProbeSpec, list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault(cell.spec, []).append(cell)
        return [Bucket(spec, tuple(cells)) for spec, cells in groups.items()]

    def with_seeds(self, seeds: int) -> Sweep:
        return dataclasses.replace(self, seeds=seeds)
