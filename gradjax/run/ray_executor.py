"""`gradjax run --executor ray`: groups of work as Ray tasks (the optional `ray` extra).

The driver opens the results folder (checks, growth, renumbering) exactly as a local run, then
sends each group of the work (`engine.share_of`: cells of one bucket × one seed range) to Ray
as a task, with one GPU per task where the cluster has GPUs. A task is `engine.execute_sweep`
restricted to its group, in a worker that reads the sweep file and writes the results folder
itself, so the folder must be on storage every node sees (NFS, Lustre, a mounted bucket).

A worker that dies (killed, out of memory, its node lost) fails its task; Ray runs it again
(`MAX_RETRIES`), and the retry resumes from the pack's checkpoint: pieces already written are
skipped and part files past the checkpoint are dropped, so a retry computes each seed once
into the folder. When every task has returned, the driver finishes the cells and writes the
manifest, as the last shard of a job array does; its last log line adds up the chunk programs
the tasks' last attempts compiled, loaded from the persistent compile cache, or found compiled
already in their worker process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gradjax.results import results_folder
from gradjax.results.results_folder import SEED_BLOCK
from gradjax.run import engine, executables, provenance
from gradjax.run.preflight import check_sweep
from gradjax.sweep import Sweep, parse_sweep
from gradjax.sweep.budget import DEFAULT_MAX_MEMORY

MAX_RETRIES = 3


def _task(text: str, source: str, seeds: int, out: str, cells: list[int],
          seed_range: tuple[int, int], max_memory: int, chunk: int | None,
          cache: str | None) -> dict[str, int]:
    """One group of work in a Ray worker: the inits it computed, and the chunk programs it
    compiled, loaded from the persistent compile cache, or found compiled already in the
    worker (Ray reuses a worker process for later tasks)."""
    sweep = parse_sweep(text, source).with_seeds(seeds)
    if cache:
        executables.enable_compile_cache(Path(cache))
    report = engine.execute_sweep(sweep, out, max_memory=max_memory, chunk=chunk, quiet=True,
                              only=[(tuple(cells), seed_range)])
    return {"inits": report.inits, "compiled": report.compiled, "from_cache": report.from_cache,
            "in_memory": report.in_memory}


def run_on_ray(
    sweep: Sweep, out: str | Path, *, address: str | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY, chunk: int | None = None, overwrite: bool = False,
    seed_block: int | None = None, cache: Path | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Run `sweep` into `out` as Ray tasks (connecting to `address`, or starting a local Ray
    when none is running); returns the inits computed. Workers parse the sweep's text again,
    importing plug-in models from the sweep file's folder, as a local run does."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    folder = results_folder.ResultsFolder(Path(out))
    check_sweep(sweep, max_memory)
    ledger = engine.open_ledger(sweep, folder, provenance.run_metadata(sweep), overwrite,
                                seed_block or SEED_BLOCK, log)
    try:  # the driver holds the folder's run lock (shared with its tasks) until the end
        groups = engine.share_of(sweep, ledger, (1, 1))
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, max_retries=MAX_RETRIES)(_task)
        # absolute paths: a worker's working folder is not the driver's
        source, where = str(Path(sweep.source).resolve()), str(Path(out).resolve())
        pending = [task.remote(sweep.text, source, sweep.seeds, where,
                               [c.index for c in cells], seed_range, max_memory, chunk,
                               str(cache) if cache else None)
                   for _, _, cells, seed_range in groups]
        log(f"{sweep.name}: {len(pending)} Ray task(s), {gpus} GPU each")
        done = ray.get(pending)
        engine.complete_folder(ledger, log)
    finally:
        folder.release()
    inits, compiled, loaded, held = (sum(task[k] for task in done)
                                     for k in ("inits", "compiled", "from_cache", "in_memory"))
    cache_text = (f"loaded {loaded} from the persistent compile cache" if cache
                  else "persistent compile cache off")
    log(f"{sweep.name}: {inits:,} inits computed by Ray workers; over the tasks' last attempts, "
        f"compiled {compiled} chunk programs, {cache_text}, {held} already compiled in the "
        f"worker; results in {folder.root}")
    return inits
