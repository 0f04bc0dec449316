"""The across-seed moments of a run's chunks on the host: per entry of every gradient tensor,
the count, mean and M2 over the seeds computed so far, merged chunk by chunk in float64 with
Chan et al.'s formula (`gradjax.results.summary.chan_merge`), and cut into a cell's
`CellMoments` per result row when a piece is written."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from gradjax.probe.chunking import is_scaled_moments, moments_by_layer, moments_to_host
from gradjax.results.summary import CellMoments, chan_merge


def _is_pair(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"mean", "m2"}


@dataclasses.dataclass(frozen=True)
class ChunkMoments:
    """Per-entry count n, mean and M2 (sum of squared deviations) over the seeds seen so far,
    float64, in the structure of the probe's chunk moments ({"mean", "m2"} pairs)."""

    n: int
    tree: Any

    @classmethod
    def from_chunk(cls, moments: dict) -> ChunkMoments:
        """The probe's moments of one chunk ({"n", "moments"}) on the host, unscaled in float64."""
        host = moments_to_host(moments)
        return cls(host["n"], host["moments"])

    def merge(self, other: ChunkMoments, *, in_place: bool = False) -> ChunkMoments:
        """Chan et al. (1979): combine two disjoint sets of seeds. `in_place` writes the
        result into this object's arrays (same bits; `chan_merge`), for a caller that keeps
        only the result, as a run's loop over chunks does."""
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        def pair(a: dict, b: dict) -> dict:
            mean, m2 = chan_merge(self.n, a["mean"], a["m2"], other.n, b["mean"], b["m2"],
                                  into_a=in_place)
            return {"mean": mean, "m2": m2}

        return ChunkMoments(self.n + other.n,
                       jax.tree.map(pair, self.tree, other.tree, is_leaf=_is_pair))

    def leaves(self) -> list[np.ndarray]:
        return jax.tree.leaves(self.tree)

    @classmethod
    def from_leaves(cls, n: int, leaves: list[np.ndarray], like: Any) -> ChunkMoments:
        """Rebuild from `leaves()`; `like` is the probe's chunk moments (or their shapes)."""
        pairs = jax.tree.map(lambda _: {"mean": 0, "m2": 0}, like, is_leaf=is_scaled_moments)
        return cls(n, jax.tree.unflatten(jax.tree.structure(pairs), leaves))

    def var_across_seeds(self) -> np.ndarray:
        """[P, L, 2]: per (point, layer, W/b) the mean over entries of the per-entry population
        variance across seeds (M2 / n)."""
        n_points = self.leaves()[0].shape[0]
        layers = moments_by_layer({"n": self.n, "moments": self.tree}, n_points)["moments"]
        with np.errstate(invalid="ignore", over="ignore"):
            out = [
                [np.mean(layer[p]["m2"].reshape(layer[p]["m2"].shape[0], -1), axis=1) / self.n
                 for p in ("W", "b")]
                for layer in layers
            ]
        return np.stack([np.stack(pair, axis=-1) for pair in out], axis=1)

    def rows(self, point: int, n_rows: int, layered: bool) -> CellMoments:
        """One point's moments per result row (the layered probe's (layer, W/b) rows, or a model's
        parameter leaves in `jax.tree_util` order; rows past them, the taps, have none),
        each flattened to the tensor's entries: a form that merges and reduces with no
        knowledge of the probe's structure."""
        n_points = self.leaves()[0].shape[0]
        if layered:
            layers = moments_by_layer({"n": self.n, "moments": self.tree}, n_points)["moments"]
            pairs = [layer[p] for layer in layers for p in ("W", "b")]
        else:
            pairs = jax.tree.leaves(self.tree, is_leaf=_is_pair)
        flat = [(np.ravel(pair["mean"][point]), np.ravel(pair["m2"][point])) for pair in pairs]
        return CellMoments(self.n, tuple(flat) + (None,) * (n_rows - len(flat)))
