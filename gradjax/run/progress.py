"""What a run reports: time per phase (compile, compute, write), the progress line (cells
complete and in progress, inits, rate, time left) and the run's last line (`RunReport`)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from tqdm import tqdm

from gradjax.sweep.budget import (
    format_bytes,
)

# where a run's time goes: compiling programs, computing (dispatching chunks and waiting for
# their results on the host), and writing files (Parquet parts, checkpoints, final tables)
PHASES: tuple[str, ...] = ("compile", "compute", "write")


@dataclasses.dataclass
class Phases:
    """Seconds spent in each of `PHASES`."""

    seconds: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


@dataclasses.dataclass
class RunReport:
    """What a run did."""

    cells: int = 0
    cells_skipped: int = 0
    inits: int = 0
    wall_s: float = 0.0
    compiled: int = 0  # chunk programs compiled
    from_cache: int = 0  # chunk programs loaded from the persistent compile cache
    in_memory: int = 0  # chunk programs this process had compiled already ("already compiled")
    cache_misses: int | None = None  # every program of the run; None with the cache off
    packs: list[dict] = dataclasses.field(default_factory=list)
    peak_rss: int | None = None  # the process's peak resident bytes at the end of the run
    phases: Phases = dataclasses.field(default_factory=lambda: Phases())

    @property
    def inits_per_s(self) -> float:
        return self.inits / self.wall_s if self.wall_s > 0 else math.nan

    def time_spent(self) -> dict[str, float]:
        """Seconds per phase (`PHASES`), and `other`: the wall time not in any of them."""
        spent = dict(self.phases.seconds)
        spent["other"] = max(self.wall_s - sum(spent.values()), 0.0)
        return spent


PROGRESS_EVERY_S = 30.0  # without a terminal, a progress line at most this often


def progress_line(name: str, cells: tuple[int, int, int], inits: tuple[int, int],
                  rate: float, left: float) -> str:
    """The progress line. `cells` is (complete, in progress, total) over the whole sweep: a
    cell is complete when all its seeds are (in this run or before), in progress while some
    of its seeds are computed and others not yet (every cell of the pack running now, as a
    pack computes its cells together); so complete + in progress <= total. `inits` is (done,
    to do) of this run's share, counting inits found done in a checkpoint."""
    complete, running, total = cells
    return (f"{name}: cells {complete}/{total} complete, {running} in progress; inits "
            f"{inits[0]:,}/{inits[1]:,} of this run, {rate_text(rate)} inits/s, about "
            f"{duration(left)} left")


class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, a pipe) a line at most every
    PROGRESS_EVERY_S seconds (`progress_line`): cells complete and in progress, inits done,
    the rate and the time left."""

    def __init__(self, name: str, cells_total: int, cells_done: int, todo: int, quiet: bool,
                 say: Callable[[str], None]):
        self.name, self.cells_total, self.cells_done = name, cells_total, cells_done
        self.running: set[int] = set()  # cells with some seeds computed, not yet complete
        self.total, self.done = todo, 0  # the inits of this run's share
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=self.total, initial=self.done, unit="init", unit_scale=True,
                        desc=name, dynamic_ncols=True, disable=quiet or not terminal,
                        file=sys.stderr)
        self.say = None if quiet or terminal else say
        self.computed, self.started = 0, time.perf_counter()
        self.last_line = self.started
        self.finish_cells(())

    def resumed(self, inits: int) -> None:
        """Inits found done in a pack's checkpoint or by another process (not computed by
        this one)."""
        self.done += inits
        self.bar.update(inits)

    def advance(self, inits: int) -> None:
        self.done += inits
        self.computed += inits
        self.bar.update(inits)
        self._line()

    def start_cells(self, cells: Sequence[int]) -> None:
        """Cells whose seeds start to be computed (a pack's)."""
        self.running.update(cells)
        self._postfix()

    def finish_cells(self, cells: Sequence[int]) -> None:
        """Cells now complete (every seed, every piece: a pack's cells are not complete
        while other seed blocks of theirs are still to do)."""
        self.cells_done += len(set(cells))
        self.running.difference_update(cells)
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix_str(f"cells {self.cells_done}/{self.cells_total} complete, "
                                 f"{len(self.running)} in progress")

    def _line(self) -> None:
        now = time.perf_counter()
        if self.say is None or now - self.last_line < PROGRESS_EVERY_S:
            return
        self.last_line = now
        rate = self.computed / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else math.inf
        self.say(progress_line(self.name, (self.cells_done, len(self.running),
                                           self.cells_total), (self.done, self.total),
                               rate, left))

    def close(self) -> None:
        self.bar.close()


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "? s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else (
        f"{secs}s")


def peak_memory_text(peak: int | None, budget: int) -> str:
    if peak is None:
        return "peak RSS unknown"
    over = " (over --max-memory)" if peak > budget else ""
    return f"peak RSS {format_bytes(peak)} of {format_bytes(budget)}{over}"


def rate_text(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.3g}"
