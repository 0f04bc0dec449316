"""The program store: compiled chunk programs of gradjax's own families, kept on disk under a
name known before tracing.

JAX's persistent compile cache names a program by its lowered module, so every process traces
and lowers a program before it can find it: for a small MLP bucket that is 1-3 s of the 3-4 s
a cache hit costs. A family whose code is all gradjax's (`Capabilities.gradjax_code`) has
programs fixed by gradjax's source (`source_digest`) and what `program_name` hashes (the
bucket's `ProbeSpec`, the chunk and point shapes, the device, XLA's options and flags, JAX's
configuration, Python's version and those of the libraries traced into it), so its compiled
program is named from those and loaded without tracing (0.2-0.9 s). A plug-in's code is the
user's and is not hashed: its programs go through JAX's cache only. A stored program was
compiled by XLA itself, never loaded from JAX's cache (`gradjax.probe.compile_cache.
compile_fresh` says why).

The store lives in the folder of JAX's persistent cache (`gradjax-programs/`), so it is on
exactly when that cache is on (`--no-cache` turns both off), and private to the user like it
(0700 folders, 0600 files): a program is code, and loading one runs it, as loading one from
JAX's cache does; a folder that is not is never read. Each file is one JSON line with the
program's argument and result structures and the SHA-256 of the rest, then the bytes of
`jax.experimental.serialize_executable`. Each version of the
source has a folder of its own; the `KEPT_SOURCES` most recently used are kept and older ones
deleted. Every failure to read or write is a miss: the program is then built as if the store
were empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jaxlib
import numpy as np
from jax.experimental import serialize_executable

from gradjax.nn.xla import flags_in_effect

FOLDER = "gradjax-programs"  # inside JAX's cache folder
KEPT_SOURCES = 3  # folders of gradjax source versions kept (several clones share a cache)
_SUFFIX = ".program"
_off: list[bool] = []  # `suspended` blocks in progress


# the subpackages a probe program's code can come from: the probe and the layers below it
# (the import-linter contracts of pyproject.toml keep the probe from importing any other)
PROGRAM_PACKAGES = ("spec", "nn", "sweep", "results", "probe")
# the libraries whose code is traced into a gradjax family's programs besides jax's own
# (optax: the optimizer steps; scikit-learn: the digits images; ml_dtypes: bfloat16)
TRACED_LIBRARIES = ("jax", "jaxlib", "numpy", "optax", "scikit-learn", "ml_dtypes")


def source_digest() -> str:
    """The SHA-256 of every .py file of `PROGRAM_PACKAGES`, with its path: the code that writes
    a gradjax family's programs. Editing the run layer, the report or the CLI keeps it."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(p for package in PROGRAM_PACKAGES for p in (root / package).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


LOADED_SOURCE = source_digest()  # the code this process imported (checked again on saving)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _environment() -> tuple:
    """What besides gradjax's source and the program's own arguments shapes a program."""
    config = sorted((k, v) for k, v in jax.config.values.items()
                    if v is None or isinstance(v, bool | int | float | str))
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(("GRADJAX_", "JAX_")))
    versions = (jax.__version__, jaxlib.__version__, np.__version__, sys.version,
                *(_version(d) for d in TRACED_LIBRARIES))
    return versions, flags_in_effect(), tuple(config), tuple(env)


def program_name(*parts: Any, device: Any) -> str:
    """The store's name for a program: a hash of `parts` (each with a deterministic repr, e.g.
    the spec, chunk size and shapes), the device and `_environment()`."""
    text = repr((parts, device.platform, device.client.platform_version, device.device_kind,
                 device.id, _environment()))
    return hashlib.sha256(text.encode()).hexdigest()


def store_folder() -> Path | None:
    """This source version's folder of the store, or None while the store is off (JAX's
    persistent cache off, inside `suspended`, or JAX's backend started before gradjax set its
    XLA flags, so the flags in effect are unknown)."""
    cache = jax.config.jax_compilation_cache_dir
    if _off or not (jax.config.jax_enable_compilation_cache and cache) or (
            flags_in_effect() is None):
        return None
    return Path(cache) / FOLDER / LOADED_SOURCE[:32]


def _private(folder: Path) -> bool:
    """Whether `folder` and the store above it are this user's and nobody else's to write."""
    for path in (folder, folder.parent):
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return False
    return True


def load(name: str, device: Any) -> Any | None:
    """The program stored as `name`, loaded onto `device`, or None."""
    folder = store_folder()
    if folder is None:
        return None
    try:
        if not _private(folder):
            return None
        data = (folder / (name + _SUFFIX)).read_bytes()
        header, blob = data.split(b"\n", 1)
        trees, checksum = json.loads(header)
        if hashlib.sha256(blob).hexdigest() != checksum:
            return None
        in_tree, out_tree = (tree_of(t) for t in trees)
        program = serialize_executable.deserialize_and_load(
            blob, in_tree, out_tree, execution_devices=[device])
    except Exception:  # missing, partly deleted by another process, or unreadable: a miss
        return None
    with contextlib.suppress(OSError):
        os.utime(folder)  # most recently used
    return program


def save(name: str, program: Any) -> None:
    """Keep the compiled `program` as `name` (atomically: a reader sees all of it or none)."""
    folder = store_folder()
    if folder is None:
        return
    temporary = None
    try:
        if source_digest() != LOADED_SOURCE:  # the code changed under this process
            return
        blob, in_tree, out_tree = serialize_executable.serialize(program)
        trees = [layout_of(in_tree), layout_of(out_tree)]
        if [tree_of(t) for t in trees] != [in_tree, out_tree]:
            return  # a container JSON does not spell (a named tuple, a custom node)
        header = json.dumps([trees, hashlib.sha256(blob).hexdigest()]).encode()
        new = not folder.is_dir()
        for path in (folder.parent, folder):
            path.mkdir(exist_ok=True, mode=0o700)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with open(handle, "wb") as f:  # mkstemp: 0600, a name of its own
            f.write(header + b"\n" + blob)
        os.replace(temporary, folder / (name + _SUFFIX))
        temporary = None
        if new:
            prune(folder.parent, KEPT_SOURCES)
    except Exception:  # a program the backend cannot serialize, a full disk: not kept
        return
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def layout_of(tree: Any) -> Any:
    """A pytree structure of tuples, lists, dicts and None as JSON: {"t": [...]}, {"l": [...]},
    {"d": {key: ...}}, null, and 0 for a leaf (`tree_of` reads it back)."""
    def spell(node: Any) -> Any:
        if isinstance(node, tuple):
            return {"t": [spell(c) for c in node]}
        if isinstance(node, list):
            return {"l": [spell(c) for c in node]}
        if isinstance(node, dict):
            return {"d": {k: spell(v) for k, v in node.items()}}
        return node

    return spell(jax.tree.unflatten(tree, [0] * tree.num_leaves))


def tree_of(layout: Any) -> Any:
    """The pytree structure `layout_of` spelled."""
    def build(node: Any) -> Any:
        if isinstance(node, dict):
            (kind, children), = node.items()
            if kind == "d":
                return {k: build(v) for k, v in children.items()}
            return (tuple if kind == "t" else list)(build(c) for c in children)
        return node

    return jax.tree.structure(build(layout))


def prune(store: Path, keep: int) -> None:
    """Delete all but the `keep` most recently used source folders of `store`."""
    folders = sorted((p for p in store.iterdir() if p.is_dir()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Neither load nor save programs while the block runs (tests that count traces)."""
    _off.append(True)
    try:
        yield
    finally:
        _off.pop()
