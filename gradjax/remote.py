"""Results folders in object stores: `--out s3://...` / `gs://...` and `gradjax.load` of them.

A run needs what object stores do not give: atomic renames and file locks (`gradjax.storage`,
`gradjax.ledger`). So a run into a URI computes into a local *staging* folder
(results/.stage/<name>-<hash of the URI>), pulled from the URI first when the staging folder
is new (to resume or grow on another machine), and pushes the folder to the URI at the end:
every file whose size differs or that is missing there, and the removal of the pieces that
finishing a cell replaced. Locks and in-progress units stay local. Readers see each object
whole (a PUT is atomic), and a folder is complete once its manifest.json is there.

Any pyarrow filesystem URI works (`pyarrow.fs.FileSystem.from_uri`), with its options in the
query: s3://bucket/x?endpoint_override=host:9000&scheme=http for a local emulator or MinIO.
Credentials come from the environment, as for any pyarrow or AWS tool.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.fs as pafs

from gradjax.storage import LOCK_FILE, WORK_DIR

LOCAL_ONLY = (LOCK_FILE, f"{WORK_DIR}/units", f"{WORK_DIR}/locks", f"{WORK_DIR}/renumber")


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


def pull(uri: str, folder: Path) -> int:
    """Copy the URI's folder into a new staging `folder`; the number of files copied."""
    if (folder / ".run.json").exists():
        return 0
    fs, root = pafs.FileSystem.from_uri(uri)
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
    changed = sorted(rel for rel, size in here.items() if there.get(rel) != size)
    changed.sort(key=lambda rel: rel == "manifest.json")
    for rel in changed:
        fs.create_dir(f"{root}/{rel}".rsplit("/", 1)[0], recursive=True)
        with open(folder / rel, "rb") as src, fs.open_output_stream(f"{root}/{rel}") as dst:
            dst.write(src.read())
    for rel in sorted(set(there) - set(here)):
        # pieces that finishing a cell here replaced; not what another machine pushed for
        # cells this folder never had
        if rel.startswith(f"{WORK_DIR}/pieces/") and (folder / rel).parent.is_dir():
            fs.delete_file(f"{root}/{rel}")
    return len(changed)
