"""The workloads `gradjax bench` measures, as data: what one benchmark row runs and how much
work it is.

A `Workload` is `n_inits` seeds probed at every point of each of its `WorkloadBucket`s (one compiled
program each: a `ProbeSpec` and its points); an "init" is one (seed, point) evaluation. Each
workload renders itself as the sweep file `gradjax run` would be given (`Workload.sweep_text`),
and counts its useful matmul FLOPs (`flops_per_init`) and random draws (`draws_per_seed`) for
the roofline (`Workload.bound`). The built-in ones are `WORKLOADS` (S, M, L and their grids at
`GRID_POINTS` scales per draw); `sweep_workload` makes one from a sweep file. They live apart
from the measuring (`gradjax.bench.measure`) so that a test or a script can build and measure
its own.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from gradjax.spec import ProbeSpec, layer_sizes
from gradjax.sweep import load_sweep


@dataclasses.dataclass(frozen=True, eq=False)
class WorkloadBucket:
    """One compiled program of a workload: a `ProbeSpec` and its points (one per cell)."""

    spec: ProbeSpec
    scales: tuple[float, ...] = (1.0,)
    bias_scales: tuple[float, ...] = (1.0,)
    xs: np.ndarray | None = None  # [P, batch, in_dim] when spec.inputs == "fixed"
    ys: np.ndarray | None = None  # [P, batch, out_dim] when spec.targets == "fixed"

    @property
    def n_points(self) -> int:
        return len(self.scales)


@dataclasses.dataclass(frozen=True, eq=False)
class Workload:
    """What one benchmark row measures: `n_inits` seeds, each probed at every point of every
    bucket; an "init" below is one (seed, point) evaluation."""

    name: str
    description: str
    buckets: tuple[WorkloadBucket, ...]
    n_inits: int
    chunk: int  # seeds per numpy_vec / torch_func step (gradjax plans its own, as `run` does)
    loop_inits: int  # seeds the numpy loop times (then extrapolated)
    root_seed: int = 0
    text: str | None = None  # the sweep file a workload was made from (`sweep_workload`)
    source: str = ""  # that file's path: plug-in models are imported from its folder

    def sweep_text(self) -> str:
        """The workload as a sweep file: what `gradjax run` would be given (its own text for
        `sweep_workload`; otherwise one cell per (bucket, point), the first as [defaults])."""
        if self.text is not None:
            return self.text
        cells = [_cell_options(p, i) for p in self.buckets for i in range(p.n_points)]
        lines = [f'name = "bench-{self.name}"', f"seeds = {self.n_inits}",
                 f"root_seed = {self.root_seed}", "", "[defaults]",
                 *(f"{k} = {_toml(v)}" for k, v in cells[0].items())]
        for j, options in enumerate(cells[1:], 1):
            lines += ["", "[[cases]]", f'label = "cell {j}"',
                      *(f"{k} = {_toml(v)}" for k, v in options.items())]
        return "\n".join(lines) + "\n"

    @property
    def inits(self) -> int:
        return self.n_inits * sum(p.n_points for p in self.buckets)

    @property
    def flops(self) -> float:
        """Useful forward + backward matmul FLOPs of the whole workload (every point's)."""
        return self.n_inits * sum(p.n_points * flops_per_init(p.spec) for p in self.buckets)

    @property
    def normals(self) -> float:
        """Random numbers the whole workload draws: once per seed and bucket, shared by the
        bucket's points (common random numbers)."""
        return self.n_inits * sum(draws_per_seed(p.spec) for p in self.buckets)

    @property
    def points(self) -> int:
        """Points (cells) evaluated per draw, the largest over the buckets."""
        return max(p.n_points for p in self.buckets)

    def bound(self, peak_gflops: float, draws_per_s: float) -> float:
        """The roofline in inits/s: every useful FLOP at the matmul peak P plus every draw at
        the measured draw rate R, sharing the same device: 1 / (flops/P + normals/R) per init."""
        seconds = self.flops / (peak_gflops * 1e9) + self.normals / draws_per_s
        return self.inits / seconds


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    return repr(value)


def _cell_options(bucket: WorkloadBucket, i: int) -> dict[str, Any]:
    """The sweep-file options of point i of a bucket (an MLP one)."""
    spec, sizes = bucket.spec, bucket.spec.sizes
    options = {
        "in_dim": sizes[0], "width": sizes[1] if len(sizes) > 2 else 1, "depth": spec.depth,
        "out_dim": sizes[-1], "activation": spec.activation,
        "output_activation": spec.output_activation, "loss": spec.loss, "norm": spec.norm,
        "leaky_slope": spec.leaky_slope, "init": spec.init, "bias_init": spec.bias_init,
        "dtype": spec.dtype, "structural_zeros": spec.structural_zeros,
        "scale": float(bucket.scales[i]), "bias_scale": float(bucket.bias_scales[i]),
        "inputs": "gaussian" if spec.inputs == "gaussian" else bucket.xs[i],
        "targets": spec.targets if spec.targets != "fixed" else bucket.ys[i],
    }
    if spec.inputs == "gaussian":
        options["batch"] = spec.batch
    return options


def flops_per_init(spec: ProbeSpec) -> float:
    """6 * batch * sum(fan_in * fan_out): the forward matmul (2 per multiply-add) and the two
    backward ones (input and weight gradients), per init; biases and activations left out."""
    pairs = zip(spec.sizes[:-1], spec.sizes[1:], strict=True)
    return 6.0 * spec.batch * sum(a * b for a, b in pairs)


def draws_per_seed(spec: ProbeSpec) -> float:
    """Random numbers one seed draws for a bucket: every weight (unit scale), the biases where
    `bias_init` draws them, and the Gaussian inputs and targets where they are drawn."""
    sizes, count = spec.sizes, 0.0
    count += sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    if spec.bias_init == "normal":
        count += sum(sizes[1:])
    if spec.inputs == "gaussian":
        count += spec.batch * sizes[0]
    if spec.targets != "fixed":
        count += spec.batch * sizes[-1]
    return count


def _gaussian_mlp(in_dim: int, width: int, depth: int, activation: str, batch: int) -> ProbeSpec:
    return ProbeSpec(
        sizes=layer_sizes(in_dim, width, depth, 1), activation=activation,
        init="fan_in_normal", bias_init="zeros", batch=batch, inputs="gaussian",
        targets="gaussian",
    )


WORKLOADS: dict[str, Workload] = {
    "S": Workload(
        "S", "seed net 2-3-1 sigmoid/sigmoid, x=[0.5,0.7], y=1, MSE, N(0,1) weights and biases",
        (WorkloadBucket(
            ProbeSpec(sizes=(2, 3, 1), activation="sigmoid", output_activation="sigmoid",
                      inputs="fixed", targets="fixed"),
            xs=np.array([[[0.5, 0.7]]]), ys=np.array([[[1.0]]]),
        ),),
        n_inits=100_000, chunk=100_000, loop_inits=500,
    ),
    "M": Workload(
        "M", "depth 10 x width 128 tanh, batch 64 Gaussian x/y (dim 128 -> 1), LeCun normal",
        (WorkloadBucket(_gaussian_mlp(128, 128, 10, "tanh", 64)),),
        n_inits=1024, chunk=64, loop_inits=8,
    ),
    "L": Workload(
        "L", "depth 20 x width 512 relu, batch 128 Gaussian x/y (dim 512 -> 1), He normal",
        (WorkloadBucket(_gaussian_mlp(512, 512, 20, "relu", 128), scales=(math.sqrt(2.0),)),),
        n_inits=64, chunk=8, loop_inits=2,
    ),
}
GRID_POINTS = 16
WORKLOADS["M-grid"] = dataclasses.replace(
    WORKLOADS["M"], name="M-grid", n_inits=64, chunk=8, loop_inits=1,
    description=f"M at {GRID_POINTS} scales per draw (1/sqrt(2)..sqrt(2), log-spaced)",
    buckets=(dataclasses.replace(WORKLOADS["M"].buckets[0], scales=tuple(
        float(v) for v in np.logspace(-0.15, 0.15, GRID_POINTS)),
        bias_scales=(1.0,) * GRID_POINTS),),
)
WORKLOADS["L-grid"] = dataclasses.replace(
    WORKLOADS["L"], name="L-grid", n_inits=4, chunk=2, loop_inits=1,
    description=f"L at {GRID_POINTS} scales per draw (sqrt(2) x 0.9..1.1, log-spaced)",
    buckets=(dataclasses.replace(WORKLOADS["L"].buckets[0], scales=tuple(
        float(v) for v in math.sqrt(2.0) * np.logspace(-0.046, 0.046, GRID_POINTS)),
        bias_scales=(1.0,) * GRID_POINTS),),
)


def sweep_workload(path: str | Path, chunk: int = 256, loop_inits: int = 10) -> Workload:
    """A workload from a sweep file: one `WorkloadBucket` per shape bucket, all its seeds and
    cells."""
    sweep = load_sweep(path)
    buckets = []
    for bucket in sweep.buckets():
        points = bucket.points()
        buckets.append(WorkloadBucket(
            bucket.spec, scales=tuple(float(v) for v in points["scales"]),
            bias_scales=tuple(float(v) for v in points["bias_scales"]),
            xs=points["xs"], ys=points["ys"],
        ))
    return Workload(
        sweep.name, f"sweep file {path}: {len(sweep.cells)} cells, {sweep.seeds} seeds",
        tuple(buckets), n_inits=sweep.seeds, chunk=min(chunk, sweep.seeds),
        loop_inits=min(loop_inits, sweep.seeds), root_seed=sweep.root_seed, text=sweep.text,
        source=str(path),
    )

