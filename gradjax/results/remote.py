"""Results folders in object stores: `--out s3://...` / `gs://...` and `gradjax.load` of them.

A run needs what object stores do not give: atomic renames and file locks
(`gradjax.results.layout`,
`gradjax.results.ledger`). So a run into a URI computes into a local *staging* folder
(results/.stage/<name>-<hash of the URI>), pulled from the URI first when the staging folder
is new (to resume or grow on another machine; a staging folder older than the store's is
refused), and pushes the folder to the URI at the end: every file that is missing there or
changed since this staging folder last pushed it, and the removal of the pieces that finishing
a cell replaced. Locks and in-progress packs stay local. Readers see each object
whole (a PUT is atomic), and a folder is complete once its manifest.json is there.

Any pyarrow filesystem URI works (`pyarrow.fs.FileSystem.from_uri`), with its options in the
query: s3://bucket/x?endpoint_override=host:9000&scheme=http for a local emulator or MinIO.
Credentials come from the environment, as for any pyarrow or AWS tool.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from pathlib import Path

import pyarrow.fs as pafs

from gradjax.results.layout import (
    LEGACY_UNITS,
    LOCK_FILE,
    LOCKS,
    PACKS,
    PIECES,
    PUSHED,
    RENUMBER,
    RUN_FILE,
    RUN_LOCK,
    WORK_DIR,
    ResultsError,
)

LOCAL_ONLY = (LOCK_FILE, RUN_LOCK, PUSHED, f"{WORK_DIR}/{PACKS}", f"{WORK_DIR}/{LEGACY_UNITS}",
              f"{WORK_DIR}/{LOCKS}", f"{WORK_DIR}/{RENUMBER}")


def is_remote(out: str) -> bool:
    """A URI that names an object store (file:// is a local folder)."""
    return "://" in out and not out.startswith("file://")


def staging_folder(uri: str, results: Path, name: str) -> Path:
    digest = hashlib.sha1(uri.encode()).hexdigest()[:10]
    return results / ".stage" / f"{name}-{digest}"


def _files(fs: pafs.FileSystem, root: str) -> dict[str, int]:
    """Relative path -> size of every file under `root` (none if it does not exist)."""
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return {info.path[len(root.rstrip("/")) + 1 :]: info.size
            for info in fs.get_file_info(selector) if info.type == pafs.FileType.File}


def _local_files(folder: Path) -> dict[str, int]:
    out = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(LOCAL_ONLY) and not path.name.endswith(".tmp"):
            out[rel] = path.stat().st_size
    return out


def _read(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as src:
            return src.read()
    except FileNotFoundError:
        return None


def pull(uri: str, folder: Path) -> int:
    """Copy the URI's folder into a new staging `folder`; the number of files copied. An
    existing staging folder whose record differs from the store's (another machine ran since)
    is refused: computing on from a stale copy would overwrite newer results."""
    fs, root = pafs.FileSystem.from_uri(uri)
    if (folder / RUN_FILE).exists():
        there = _read(fs, f"{root}/{RUN_FILE}")
        if there is not None and there != (folder / RUN_FILE).read_bytes():
            raise ResultsError(f"{uri} changed since {folder} was staged from it (another "
                               f"machine ran); remove {folder} to stage it again")
        return 0
    files = _files(fs, root)
    for rel in files:
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(f"{root}/{rel}") as src, open(target, "wb") as dst:
            dst.write(src.read())
    return len(files)


def push(folder: Path, uri: str) -> int:
    """Mirror the staging `folder` to the URI: copy what is new or changed (the manifest last,
    so a reader never sees a manifest before the files it counts) and remove the pieces of
    cells finished here. Returns the number of files copied."""
    fs, root = pafs.FileSystem.from_uri(uri)
    there, here = _files(fs, root), _local_files(folder)
    record = folder / PUSHED
    pushed = json.loads(record.read_text()) if record.exists() else {}
    stamps = {rel: [here[rel], (folder / rel).stat().st_mtime_ns] for rel in here}
    # new, or changed since this folder pushed it (a rewrite of the same size included)
    changed = sorted(rel for rel in here if rel not in there or pushed.get(rel) != stamps[rel])
    changed.sort(key=lambda rel: rel == "manifest.json")
    for rel in changed:
        fs.create_dir(f"{root}/{rel}".rsplit("/", 1)[0], recursive=True)
        with open(folder / rel, "rb") as src, fs.open_output_stream(f"{root}/{rel}") as dst:
            dst.write(src.read())
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(stamps))
    for rel in sorted(set(there) - set(here)):
        # pieces that finishing a cell here replaced; not what another machine pushed for
        # cells this folder never had
        if rel.startswith(f"{WORK_DIR}/{PIECES}/") and (folder / rel).parent.is_dir():
            fs.delete_file(f"{root}/{rel}")
    return len(changed)


def output_folder(out: str | None, results: Path, name: str) -> Path:
    """Where a run writes: `results/<name>` (the name is a plain folder name, so it stays
    inside `results`), or `--out`: a path or a file:// URI. For an object store's URI, the
    local staging folder (`staging_folder`)."""
    if out is None:
        return results / name
    if "://" in out:
        scheme, _, rest = out.partition("://")
        if scheme != "file":
            return staging_folder(out, results, name)
        return Path(urllib.parse.unquote(rest))
    return Path(out)
