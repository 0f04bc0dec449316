"""Ctrl-C during a run: SIGINT only sets a flag (`STOP`), which the run polls between chunks
and every POLL_S while it waits, so it stops where it is safe (`Interrupted`), never inside a JAX
call: an exception thrown into a thread of XLA aborts the process."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator

POLL_S = 0.05  # the longest a run waits (on a compile, on a chunk's results) without polling


class Interrupted(KeyboardInterrupt):
    """SIGINT during a run, raised where it is safe: between chunks, or while the main thread
    waits on a compile or on a chunk's results; never inside a JAX call (an exception thrown
    into a thread of XLA aborts the process). The finished chunks are checkpointed first."""


STOP = threading.Event()  # set by the run's SIGINT handler


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[None]:
    """While a run goes on in the main thread, SIGINT only sets a flag that the run polls
    (`check_stop`); a second SIGINT while it stops does nothing more. Off the main thread
    (where Python cannot install a handler) SIGINT is left as it is."""
    STOP.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: STOP.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None
                      else previous)


def check_stop() -> None:
    if STOP.is_set():
        raise Interrupted


def wait_until(ready: Callable[[], bool]) -> None:
    """Return once `ready()`; meanwhile poll for SIGINT, sleeping 1 ms at first and at most
    POLL_S (a chunk that is ready at once costs no sleep, a slow one at most ~POLL_S)."""
    pause = 0.001
    while not ready():
        check_stop()
        time.sleep(pause)
        pause = min(2 * pause, POLL_S)


def busy_threads() -> list[str]:
    """gradjax's background threads still alive (a compile in XLA cannot be stopped)."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith("gradjax-") and t.is_alive()]
