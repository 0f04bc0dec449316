"""JAX's persistent compile cache as the probe sees it: the process's count of its hits and
misses (`cache_events`), and a compile that neither reads nor writes it (`compile_fresh`)."""

from __future__ import annotations

import functools
import threading
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache


class CacheEvents:
    """Counts persistent compilation cache hits and misses (jax.monitoring events), for every
    program this process compiles."""

    HIT, MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"

    def __init__(self):
        self.hits = self.misses = 0

    def __call__(self, event: str, **kwargs: Any) -> None:
        self.hits += event == self.HIT
        self.misses += event == self.MISS


@functools.cache
def cache_events() -> CacheEvents:
    """The process's counter of compile-cache events, listening from the first call on."""
    events = CacheEvents()
    jax.monitoring.register_event_listener(events)
    return events


_FRESH = threading.Lock()  # one cache-bypassing compile at a time (they toggle JAX's config)


def compile_fresh(lowered: Any, options: dict | None) -> tuple[Any, bool]:
    """(`lowered` compiled by XLA itself, whether no cache hit happened meanwhile). An
    executable JAX loaded from its cache cannot be serialized again (its functions are missing
    from what it would write: XLA:CPU, jax 0.10), so a program meant for the program store is
    compiled with JAX's cache off. JAX decides whether to use its cache once per process, so the
    switch is its config plus `reset_cache`, under a lock; a hit counted meanwhile (another
    thread's program) makes the caller keep the program in memory only. Another thread's
    compile meanwhile skips JAX's cache too: slower, never different."""
    events = cache_events()
    with _FRESH:
        enabled = jax.config.jax_enable_compilation_cache
        hits = events.hits
        jax.config.update("jax_enable_compilation_cache", False)
        compilation_cache.reset_cache()
        try:
            program = lowered.compile(options or None)
        finally:
            jax.config.update("jax_enable_compilation_cache", enabled)
            compilation_cache.reset_cache()
        return program, events.hits == hits
