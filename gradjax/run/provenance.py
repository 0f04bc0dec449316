"""Where a run's numbers come from, as it writes them beside the results: the options that
fix each bucket's program (`describe_spec`), and the sweep, versions, device and git revision
(`run_metadata`)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import subprocess
from pathlib import Path

import jax
import jaxlib

from gradjax.nn.models.family import SCALES
from gradjax.nn.models.registry import resolve
from gradjax.probe.programs import MATMUL_PRECISION
from gradjax.spec import COMMON, ProbeSpec, capabilities
from gradjax.sweep import Sweep
from gradjax.version import VERSION


def describe_spec(spec: ProbeSpec) -> str:
    """Every option that fixes a bucket's compiled program, by its sweep-file name. For a
    model other than the MLP: what its factory takes (a traced one "per cell") and the options
    of the probe around it (loss, data, dtype, ...), never the MLP's own (init, bias_init,
    activation, norm), which it does not take."""
    if not capabilities(spec.model).shapes_from_options:
        return _describe_model(spec)
    sizes = spec.sizes
    shape = {"in_dim": sizes[0], "width": sizes[1] if len(sizes) > 2 else "-",
             "depth": spec.depth, "out_dim": sizes[-1]}
    skip = ("sizes", "model_options", "model_folder")
    options = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
               if f.name not in skip and f.name not in shape}
    options["optimizer"] = spec.optimizer or "none (step 0)"
    return ", ".join(f"{k} {v}" for k, v in {**shape, **options}.items())


def _describe_model(spec: ProbeSpec) -> str:
    family = resolve(spec.model, spec.model_folder)
    static = dict(spec.model_options)
    takes = ", ".join(f"{n} {static[n]}" if n in static else f"{n} per cell"
                      for n in family.params) or "no options"
    if not family.handles_scale:
        takes += "; scale and bias_scale multiplied onto its leaves"
    dims = {"in_dim": spec.sizes[0], "out_dim": spec.sizes[-1]}
    common = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name in COMMON and f.name not in ("model", *SCALES)}
    if spec.output_activation != "leaky_relu":
        common.pop("leaky_slope", None)
    common["optimizer"] = spec.optimizer or "none (step 0)"
    shown = {k: v for k, v in dims.items() if k not in family.params} | common
    return (f"model {spec.model} ({takes}), "
            + ", ".join(f"{k} {v}" for k, v in shown.items()))


@functools.cache
def git_revision() -> tuple[str, bool] | None:
    """(commit, has uncommitted changes) of the checkout gradjax runs from, if it is one."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head, bool(dirty)


def run_metadata(sweep: Sweep) -> dict[str, str]:
    """Provenance for every Parquet file of a run (the UTC time is added per file)."""
    device = jax.devices()[0]
    meta = {
        "sweep_name": sweep.name,
        "sweep_text": sweep.text,
        "sweep_sha256": hashlib.sha256(sweep.text.encode()).hexdigest(),
        "seeds": str(sweep.seeds),
        "root_seed": str(sweep.root_seed),
        "gradjax_version": VERSION,
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": str(jax.device_count()),
        "matmul_precision": MATMUL_PRECISION,
    }
    if sweep.model_sources:
        meta["model_sources"] = json.dumps(dict(sweep.model_sources))
    git = git_revision()
    if git is not None:
        meta["git_revision"], meta["git_dirty"] = git[0], str(git[1]).lower()
    return meta
