"""The program store: compiled chunk programs of gradjax's own families, kept on disk under a
name known before tracing.

JAX's persistent compile cache names a program by its lowered module, so every process traces
and lowers a program before it can find it: for a small MLP bucket that is 1-3 s of the 3-4 s
a cache hit costs. A family whose code is all gradjax's (`Capabilities.gradjax_code`) has
programs fixed by gradjax's source (`source_digest`) and what `program_name` hashes (the
bucket's `ProbeSpec`, the chunk and point shapes, the device, XLA's options and flags, JAX's
configuration and the versions of jax, jaxlib and numpy), so its compiled program is named from
those and loaded without tracing (0.2-0.9 s). A plug-in's code is the user's and is not hashed:
its programs go through JAX's cache only. A stored program was compiled by XLA itself, never
loaded from JAX's cache (`gradjax.probe.compile_cache.compile_fresh` says why).

The store lives in the folder of JAX's persistent cache (`gradjax-programs/`), so it is on
exactly when that cache is on (`--no-cache` turns both off), and private to the user like it
(0700 folders, 0600 files): a program is code, and loading one runs it, as loading one from
JAX's cache does. Each file is one JSON line with the program's argument and result
structures, then the bytes of `jax.experimental.serialize_executable`. Each version of the
source has a folder of its own; the `KEPT_SOURCES` most recently used are kept and older ones
deleted. Every failure to read or write is a miss: the program is then built as if the store
were empty.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jaxlib
import numpy as np
from jax.experimental import serialize_executable

FOLDER = "gradjax-programs"  # inside JAX's cache folder
KEPT_SOURCES = 3  # folders of gradjax source versions kept (several clones share a cache)
_SUFFIX = ".program"
_off: list[bool] = []  # `suspended` blocks in progress


# the subpackages a probe program's code can come from: the probe and the layers below it
# (the import-linter contracts of pyproject.toml keep the probe from importing any other)
PROGRAM_PACKAGES = ("spec", "nn", "sweep", "results", "probe")


@functools.cache
def source_digest() -> str:
    """The SHA-256 of every .py file of `PROGRAM_PACKAGES`, with its path: the code that writes
    a gradjax family's programs. Editing the run layer, the report or the CLI keeps it."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(p for package in PROGRAM_PACKAGES for p in (root / package).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _environment() -> tuple:
    """What besides gradjax's source and the program's own arguments shapes a program."""
    config = sorted((k, v) for k, v in jax.config.values.items()
                    if v is None or isinstance(v, bool | int | float | str))
    env = sorted((k, v) for k, v in os.environ.items()
                 if k == "XLA_FLAGS" or k.startswith(("GRADJAX_", "JAX_")))
    return jax.__version__, jaxlib.__version__, np.__version__, tuple(config), tuple(env)


def program_name(*parts: Any, device: Any) -> str:
    """The store's name for a program: a hash of `parts` (each with a deterministic repr, e.g.
    the spec, chunk size and shapes), the device and `_environment()`."""
    text = repr((parts, device.platform, device.client.platform_version, device.device_kind,
                 device.id, _environment()))
    return hashlib.sha256(text.encode()).hexdigest()


def store_folder() -> Path | None:
    """This source version's folder of the store, or None while the store is off (JAX's
    persistent cache off, or inside `suspended`)."""
    cache = jax.config.jax_compilation_cache_dir
    if _off or not (jax.config.jax_enable_compilation_cache and cache):
        return None
    return Path(cache) / FOLDER / source_digest()[:32]


def load(name: str, device: Any) -> Any | None:
    """The program stored as `name`, loaded onto `device`, or None."""
    folder = store_folder()
    if folder is None:
        return None
    try:
        data = (folder / (name + _SUFFIX)).read_bytes()
        header, blob = data.split(b"\n", 1)
        in_tree, out_tree = (tree_of(t) for t in json.loads(header))
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
    try:
        blob, in_tree, out_tree = serialize_executable.serialize(program)
        header = json.dumps([layout_of(in_tree), layout_of(out_tree)]).encode()
        if [tree_of(t) for t in json.loads(header)] != [in_tree, out_tree]:
            return  # a container JSON does not spell (a named tuple, a custom node)
        blob = header + b"\n" + blob
        new = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = folder / f".{name}.{os.getpid()}.tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(blob)
        os.replace(temporary, folder / (name + _SUFFIX))
        if new:
            prune(folder.parent, KEPT_SOURCES)
    except Exception:  # a program the backend cannot serialize, a full disk: not kept
        return


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
