"""`gradjax run --distributed`: the processes of a multi-host JAX job (TPU pods, multi-node GPU).

Every process runs the same command. `jax.distributed.initialize` connects them (with no
arguments it reads the cluster's environment: Slurm, Open MPI, Cloud TPU; on other clusters
pass the coordinator, the process count and this process's id). Process p of P then runs shard
p + 1 of P (`gradjax.results.ledger`) on its own local devices, into the one results folder on
shared storage, and the process that finishes last completes the folder. No collective operation is
needed: per-seed numbers depend on the seed alone, so the folder is the one a single process would
write.
"""

from __future__ import annotations


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> tuple[int, int]:
    """Join the multi-host JAX job; returns this process's shard (p + 1, P)."""
    import jax

    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return jax.process_index() + 1, jax.process_count()
