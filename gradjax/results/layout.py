"""The results folder's layout: every name in it, and every parser of one. Nothing else spells
a path of the folder; `ResultsError` is the one error for a folder that cannot be used as asked.

results/<name>/
  sweep.toml              the sweep file exactly as given (the last run's)
  per_seed/cell-NNNNN.parquet   one row per (cell, seed, layer, param)
  summary/cell-NNNNN.parquet    one row per (cell, layer, param)
  manifest.json           written once every cell is finished (cells, seeds, rows per table)
  .run.json               what the folder's results are (`gradjax.results.folder.run_record`)
  .lock                   held (flock) only while a run opens or completes the folder
  .run.lock               shared by the runs of one version of the sweep; growing needs it alone
  .work/pieces/<cell key>/          finished pieces of a cell (`gradjax.results.ledger`)
  .work/locks/<cell key>[.<block>].lock   the lock of a cell, or of one block of its seeds
  .work/packs/<pack>/               a pack (cells run together) in progress, and its record
  .work/renumber/                   cells being moved to a grown sweep's new cell numbers
  .work/pushed.json                 what a staging folder last pushed (`gradjax.results.remote`)
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

TABLES: tuple[str, ...] = ("summary", "per_seed")
TUNE = "tune"  # in a tune's folder (`gradjax tune`): its table, beside rounds/
RESULTS = Path("results")  # a run writes to RESULTS/<sweep name> unless given a folder
SWEEP_FILE = "sweep.toml"
RUN_FILE = ".run.json"
MANIFEST_FILE = "manifest.json"  # written once every cell is finished
LOCK_FILE = ".lock"
RUN_LOCK = ".run.lock"  # shared by the runs of one version of the sweep (`ResultsFolder.open`)
WORK_DIR = ".work"
PIECES, LOCKS, PACKS, RENUMBER = "pieces", "locks", "packs", "renumber"  # under WORK_DIR
# under WORK_DIR: where an earlier version kept its packs (then "units"); a run still clears
# it (`Ledger.write_manifest`, `stale_packs`) and never pushes it (`remote.LOCAL_ONLY`)
LEGACY_UNITS = "units"
PUSHED = f"{WORK_DIR}/pushed.json"
PACK_RECORD = "pack.json"  # in a pack's folder: the pieces it holds
LEGACY_UNIT_RECORD = "unit.json"  # the same record in a LEGACY_UNITS folder
OWN_ENTRIES = frozenset({SWEEP_FILE, RUN_FILE, WORK_DIR, LOCK_FILE, RUN_LOCK, MANIFEST_FILE,
                         *TABLES})


class ResultsError(RuntimeError):
    """A results folder that cannot be used as asked (another sweep's, or busy)."""


def cell_file(root: Path, table: str, cell: int) -> Path:
    """A finished cell's Parquet file of `table`."""
    return Path(root) / table / f"cell-{cell:05d}.parquet"


def work(root: Path, sub: str = "") -> Path:
    """The folder's work folder, or one of its sub-folders (PIECES, LOCKS, PACKS, RENUMBER)."""
    return Path(root) / WORK_DIR / sub if sub else Path(root) / WORK_DIR


HOST = socket.gethostname().replace(".", "-")  # in temporary names: which host wrote them


def temporary(path: Path) -> Path:
    """The dot-prefixed temporary name a file is written under before its rename into place:
    it names the writing host and process, so a later run can tell a dead writer's leftovers."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.tmp")


def temporary_writer(tmp: Path) -> tuple[str, int]:
    """(host, pid) of the writer of a temporary file (`temporary`); ("", -1) if not named so."""
    parts = tmp.name.rsplit(".", 3)
    if len(parts) == 4 and parts[2].isdigit():
        return parts[1], int(parts[2])
    return "", -1
