"""One results folder as a run holds it: whether it belongs to the sweep (`run_record`),
its locks (the folder's own while opening or completing it, `.run.lock` shared by the runs of one
version of the sweep), clearing it, and the temporaries of killed runs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gradjax.results.files import write_text
from gradjax.results.layout import (
    HOST,
    LOCK_FILE,
    MANIFEST_FILE,
    OWN_ENTRIES,
    PACKS,
    RUN_FILE,
    RUN_LOCK,
    SWEEP_FILE,
    TABLES,
    WORK_DIR,
    ResultsError,
    cell_file,
    temporary_writer,
    work,
)
from gradjax.sweep import Sweep

SEED_BLOCK = 65536  # seeds per block of a new folder (`results.ledger`): most cells have one


LOCK_WAIT_S = 600.0  # opening (renumbering) or completing a folder: well under 1 s per cell


def wait_for_lock(file: Any, seconds: float) -> bool:
    """flock `file` exclusively, waiting up to `seconds`; whether it was taken."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


FORMAT = 2  # of .run.json; 1 (text hash and seeds) was written before shards and growth


def run_record(sweep: Sweep, keys: Sequence[str], seed_block: int) -> dict[str, Any]:
    """What a folder's results are: per cell index the key of what fixes its numbers
    (`gradjax.results.ledger.cell_key`), the seeds per cell, the statistics per_seed keeps and the
    seed block its pieces use. Not the sweep file's text: a comment is not a change."""
    return {"format": FORMAT, "name": sweep.name, "seeds": sweep.seeds,
            "per_seed": list(sweep.per_seed), "seed_block": seed_block, "cells": list(keys)}


def _difference(recorded: dict[str, Any], new: dict[str, Any], sweep: Sweep) -> str | None:
    """Why `sweep` cannot continue the recorded results (None if it can: the same cells, or
    more of them, or more seeds)."""
    if recorded.get("format") != FORMAT:
        return "written by an earlier gradjax"
    if recorded["name"] != new["name"]:
        return f"its name is {recorded['name']!r}"
    if recorded["per_seed"] != new["per_seed"]:
        return "it keeps other per-seed statistics"
    if new["seeds"] < recorded["seeds"]:
        return (f"it has {recorded['seeds']} seeds per cell and {sweep.source} asks for "
                f"{new['seeds']}; seeds can be added, not removed")
    present = set(new["cells"])
    for index, key in enumerate(recorded["cells"]):
        if key not in present:
            return (f"its cell {index} is not a cell of {sweep.source}: options, labels, "
                    "root_seed or a plug-in model's source changed")
    return None


class ResultsFolder:
    """The results folder of one sweep; `open` checks it belongs to that sweep."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def per_seed_path(self, cell: int) -> Path:
        return cell_file(self.root, "per_seed", cell)

    def summary_path(self, cell: int) -> Path:
        return cell_file(self.root, "summary", cell)

    def work_dir(self, pack: str) -> Path:
        return work(self.root, PACKS) / pack

    def done(self, cell: int) -> bool:
        """A cell's summary file exists (written after its per-seed file)."""
        return self.summary_path(cell).exists()

    def recorded(self) -> dict[str, Any] | None:
        run_file = self.root / RUN_FILE
        return json.loads(run_file.read_text()) if run_file.exists() else None

    def check(self, sweep: Sweep, record: dict[str, Any], overwrite: bool) -> None:
        """Refuse a folder that holds results another sweep made (unless `overwrite`) or that
        is not a results folder at all. A sweep with more seeds or more cells continues the
        folder. Writes nothing."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ResultsError(f"{root}: exists and is not a folder")
        recorded = self.recorded()
        if recorded is not None:
            why = None if overwrite else _difference(recorded, record, sweep)
            if why is not None:
                raise ResultsError(
                    f"{root}: holds results of a different sweep ({why}); use --overwrite to "
                    "replace them or --out to write elsewhere")
        elif root.exists() and any(p.name not in OWN_ENTRIES and not p.name.endswith(".tmp")
                                   for p in root.iterdir()):
            raise ResultsError(f"{root}: exists, is not empty and is not a gradjax results "
                               "folder; choose another --out")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The folder's own lock, held only while a run opens the folder or completes it
        (pieces have locks of their own, `gradjax.results.ledger`): runs on one folder wait here,
        up to LOCK_WAIT_S."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as lock:
            if not wait_for_lock(lock, LOCK_WAIT_S):
                raise ResultsError(f"{self.root}: another gradjax run has held the folder's "
                                   f"lock for {LOCK_WAIT_S:g} s (opening or completing it)")
            yield

    def open(self, sweep: Sweep, record: dict[str, Any], overwrite: bool,
             renumber: Any) -> dict[str, Any]:
        """Check and prepare the folder (clearing it with `overwrite`) and record `record`;
        `renumber(old_record)` moves finished cells whose index the sweep changed. Returns
        the record in force (an existing folder keeps its seed block)."""
        self.check(sweep, record, overwrite)
        with self.locked():
            self.check(sweep, record, overwrite)  # another run may have changed it meanwhile
            old = None if overwrite else self.recorded()
            if old is not None:
                record = {**record, "seed_block": old["seed_block"]}
            self._hold_run_lock(changing=overwrite or record != old)
            if overwrite:
                self.clear()
            if old is not None:
                renumber(old)
            for sub in (*TABLES, WORK_DIR):
                (self.root / sub).mkdir(exist_ok=True)
            self.remove_temporaries(only_dead=True)
            write_text(sweep.text, self.root / SWEEP_FILE)
            if record != old:  # more seeds or cells: the folder is no longer complete
                with contextlib.suppress(FileNotFoundError):
                    (self.root / MANIFEST_FILE).unlink()
                write_text(json.dumps(record, indent=1) + "\n", self.root / RUN_FILE)
            fcntl.flock(self._run_lock, fcntl.LOCK_SH)
        return record

    def _hold_run_lock(self, changing: bool) -> None:
        """Share `.run.lock` with the other runs of this version of the sweep for the rest of
        this run (`release`); a run that changes what the folder holds (growth, --overwrite)
        needs it alone, so that no run of the previous version writes on meanwhile."""
        self._run_lock = open(self.root / RUN_LOCK, "a")  # noqa: SIM115 (held past this call)
        try:
            fcntl.flock(self._run_lock, (fcntl.LOCK_EX if changing else fcntl.LOCK_SH)
                        | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise ResultsError(f"{self.root}: a run of another version of this sweep (fewer "
                               "seeds or cells) is still writing here; let it finish or stop "
                               "it, then run again") from None

    def release(self) -> None:
        """Let go of `.run.lock` (the run is over)."""
        lock = getattr(self, "_run_lock", None)
        if lock is not None:
            lock.close()
            self._run_lock = None

    def clear(self) -> None:
        """Remove what a run writes (and nothing else in the folder)."""
        for sub in (*TABLES, WORK_DIR):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        for name in (SWEEP_FILE, RUN_FILE, MANIFEST_FILE):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()

    def remove_temporaries(self, only_dead: bool) -> None:
        """Temporary files of killed runs (the rename never happened); with `only_dead`, only
        those of this host's processes that are gone (another run may be writing the rest)."""
        for tmp in self.root.rglob(".*.tmp"):
            host, pid = temporary_writer(tmp)
            if only_dead and (host != HOST or _alive(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()



def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
