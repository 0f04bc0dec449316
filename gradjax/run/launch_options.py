"""Which launch options go together: the one place a conflicting pair is refused, for the CLI
(before anything is imported or written) and for `gradjax.run.engine.execute_sweep` (called
from a notebook, a Ray task or a multi-host process) alike. No JAX here."""

from __future__ import annotations


def conflict(*, shard: tuple[int, int] = (1, 1), distributed: bool = False,
             executor: str = "local", overwrite: bool = False, address: str | None = None
             ) -> str | None:
    """The text of one error line for launch options that do not go together, or None.

    Args:
        shard: (i, n), the i-th of n fixed shares of the work (`--shard I/N`).
        distributed: a multi-host JAX job (`--distributed`), which sets each process's shard.
        executor: "local" or "ray".
        overwrite: discard earlier results (`--overwrite`).
        address: a Ray cluster's address (`--address`).
    """
    sharded = shard != (1, 1) or distributed
    if shard != (1, 1) and distributed:
        return "--shard and --distributed: the multi-host job sets each process's shard"
    if executor == "ray" and sharded:
        return "--executor ray with --shard or --distributed: Ray splits the work itself"
    if overwrite and sharded:
        return ("--overwrite with shards: each would discard the others' work; clear the "
                "folder once (or run with --overwrite once), then start the shards")
    if address and executor != "ray":
        return "--address is the Ray cluster's: use it with --executor ray"
    return None
