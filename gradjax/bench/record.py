"""The records and the table of `gradjax bench`: each measurement's fields made into one flat
record, the terminal table of them, and the JSON and Parquet files.

`make_record` adds to a measurement's fields (`gradjax.bench.measure.run_job`) what follows
from its workload and the run's matmul peak and draw rate (GFLOP/s, % of peak, the roofline,
whether the peak RSS kept to `--max-memory`), then the machine's `environment`; every record
has the keys `RECORD_KEYS`. `format_table` and `write_outputs` present them. Kept apart from the
measuring so that the records can be made and read without measuring anything.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from gradjax.bench.workloads import Workload

RECORD_KEYS: tuple[str, ...] = (
    "workload", "impl", "inits", "inits_timed", "extrapolated", "reps", "inits_per_s",
    "inits_per_s_min", "inits_per_s_max", "compile_s", "compiles", "recompiles", "cache_hits",
    "chunk", "peak_rss_mb", "base_rss_mb", "device_peak_mb", "memory_estimate_mb",
    "within_memory", "gflops", "pct_of_peak", "cpu_wall", "blas_threads", "torch_threads",
    "compute_s", "write_s", "other_s", "points", "normals_per_init", "bound_inits_per_s",
    "pct_of_bound", "error",
)


def environment() -> dict[str, Any]:
    """Versions, threads and load of this machine (the device comes from the peak job)."""
    versions = {}
    for pkg in ("jax", "jaxlib", "numpy", "torch"):
        try:
            versions[f"{pkg}_version"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[f"{pkg}_version"] = None
    threads = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    thread_env = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS",
                  "JAX_PLATFORMS")
        if k in os.environ
    }
    blas = np.__config__.CONFIG.get("Build Dependencies", {}).get("blas", {}).get("name")
    return {
        **versions,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "thread_env": json.dumps(thread_env, sort_keys=True),
        "numpy_blas": blas,
        "machine": platform.machine(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def make_record(
    workload: Workload, impl: str, fields: dict[str, Any], peak: dict[str, Any],
    env: dict[str, Any], max_memory: int | None,
) -> dict[str, Any]:
    """One flat record: RECORD_KEYS, then the peak's and the environment's fields."""
    record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    record.update(workload=workload.name, impl=impl, inits=workload.inits,
                  points=workload.points, normals_per_init=workload.normals / workload.inits)
    record.update(fields)
    rate = record["inits_per_s"]
    if rate is not None:
        record["gflops"] = rate * workload.flops / workload.inits / 1e9
        if peak.get("matmul_gflops"):
            record["pct_of_peak"] = 100.0 * record["gflops"] / peak["matmul_gflops"]
        if peak.get("matmul_gflops") and peak.get("draw_rate"):
            bound = workload.bound(peak["matmul_gflops"], peak["draw_rate"])
            record["bound_inits_per_s"] = bound
            record["pct_of_bound"] = 100.0 * rate / bound
    if max_memory is not None and record["peak_rss_mb"] is not None:
        record["within_memory"] = record["peak_rss_mb"] * 2**20 <= max_memory
    return {**record, "description": workload.description, **peak, **env}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rate(value: float | None) -> str:
    """A rate in 3 significant digits with k / M / G suffixes (1.75M, 249, 8.80)."""
    if value is None:
        return "-"
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def format_table(records: list[dict[str, Any]], peak: dict[str, Any]) -> str:
    """The terminal table: one row per workload x implementation."""
    if "error" in peak:
        head = f"matmul peak not measured: {peak['error']}"
    else:
        head = (
            f"device {peak['device_kind']} ({peak['platform']}), f32 matmul peak "
            f"{peak['matmul_gflops']:.1f} GFLOP/s [{peak['matmul_gflops_min']:.1f}.."
            f"{peak['matmul_gflops_max']:.1f}] at {peak['matmul_n']}^3, "
            f"cpu/wall {peak['matmul_cpu_wall']:.2f}; f32 normal draws "
            f"{_rate(peak['draw_rate'])}/s [{_rate(peak['draw_rate_min'])}.."
            f"{_rate(peak['draw_rate_max'])}]\n"
            "bound = 1 / (flops/peak + normals/draw rate) per init (the roofline of a "
            "workload's matmuls and draws)"
        )
    cols = ("workload", "impl", "points", "inits/s", "min..max", "compile s", "peak RSS MB",
            "GFLOP/s", "% peak", "bound", "% bound", "cpu/wall", "x numpy_vec")
    rows, skipped = [cols], []
    vec = {r["workload"]: r["inits_per_s"] for r in records if r["impl"] == "numpy_vec"}
    for r in records:
        if r["error"]:
            skipped.append(f"{r['workload']} {r['impl']}: not measured: {r['error']}")
            continue
        star = "*" if r["extrapolated"] else ""
        ratio = r["inits_per_s"] / vec[r["workload"]] if vec.get(r["workload"]) else None
        memory = _fmt(r["peak_rss_mb"], ".0f") + ("!" if r["within_memory"] is False else "")
        rows.append((
            r["workload"], r["impl"], str(r["points"]), _rate(r["inits_per_s"]) + star,
            f"{_rate(r['inits_per_s_min'])}..{_rate(r['inits_per_s_max'])}",
            _fmt(r["compile_s"], ".2f"), memory, _fmt(r["gflops"], ".3g"),
            _fmt(r["pct_of_peak"], ".1f"), _rate(r["bound_inits_per_s"]),
            _fmt(r["pct_of_bound"], ".1f"), _fmt(r["cpu_wall"], ".2f"), _fmt(ratio, ".3g"),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [head, ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    notes = []
    if any(r["extrapolated"] for r in records):
        notes.append("* extrapolated from fewer inits (numpy_loop)")
    if any(r["within_memory"] is False for r in records):
        notes.append("! peak RSS above --max-memory")
    notes += [f"{r['workload']} gradjax run, one timed run: compute {r['compute_s']:.3g} s, "
              f"write {r['write_s']:.3g} s, other {r['other_s']:.3g} s"
              for r in records if r["impl"] == "gradjax" and r["compute_s"] is not None]
    notes += [f"{r['workload']} {r['impl']}, per run: write {r['write_s']:.3g} s (the same "
              "per-seed table, pyarrow's defaults)"
              for r in records if r["impl"] != "gradjax" and r["write_s"] is not None]
    return "\n".join(lines + skipped + notes)


def write_outputs(records: list[dict[str, Any]], path: str | Path) -> tuple[Path, Path]:
    """The records as a JSON list at `path` and as Parquet beside it (same stem)."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1, default=_json_default) + "\n")
    parquet = path.with_suffix(".parquet")
    pd.DataFrame(records).to_parquet(parquet, index=False)
    return path, parquet


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
