"""The ``bkt`` entry points, found without reading every installed distribution each time.

:func:`importlib.metadata.entry_points` lists every directory of the import path and reads
the ``entry_points.txt`` of every distribution in them, after importing itself (``email``,
``zipfile``, ``csv``): 15 to 40 ms of every command. The per-user index (one file per import
path, in :func:`bkt_core.cache.cache_dir`) keeps its answer, each entry point's name and
value and the name and version of its distribution, with the stat signature (modification
and change times, inode, device, size) of everything the answer was read from:

- every entry of ``sys.path`` (made absolute; the list itself is part of the key, so a
  ``.pth`` file or ``PYTHONPATH`` that adds a directory makes another index);
- every ``*.dist-info`` and ``*.egg-info`` in them, and its ``entry_points.txt``;
- the metadata file (``METADATA``, ``PKG-INFO``) of each plugin's distribution.

``pip install``, ``pip uninstall`` and an upgrade add and remove a distribution's
``.dist-info`` directory, which changes its ``site-packages`` directory; an editable install
adds a ``.pth`` file and a ``.dist-info`` there too; an older ``setup.py develop`` rewrites
the ``entry_points.txt`` of an ``.egg-info`` in place. Any of these changes a signature, and
the next command reads the distributions again and rewrites the index. The index is used
only when every signature is what it was: a stat of each, well under a millisecond.

A timestamp has the granularity of the filesystem's clock (a few milliseconds; a second or
two on some filesystems), so a change made in the same tick as the signature was taken
could go unseen. An answer read from anything changed less than :data:`RACY_SECONDS` ago is
used but not stored (git's "racily clean" entries, the same problem).

The index is never trusted blindly: its shape is checked, and a missing, corrupt, truncated,
oversized, foreign-version or unreadable index, or one that cannot be written, means the
distributions are read as without it (the reason goes to ``notes``, which ``-v`` prints).
When a finder other than the standard path finder can provide distributions
(``sys.meta_path``), there is no index: what such a finder finds has no signature.

Entry points are imported by :func:`load`, the way :meth:`importlib.metadata.EntryPoint.load`
does, without importing :mod:`importlib.metadata`.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

from bkt_core import cache

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "FORMAT",
    "GROUP",
    "IndexedEntryPoint",
    "entry_points",
    "index_path",
    "load",
    "scan",
]

#: The entry-point group of bkt's plugins.
GROUP = "bkt"

#: The version of the index's format; an index of another format is not read.
FORMAT = 1

#: The index files' names: ``entry-points-<8 hex digits>.json``, the digits from the key.
PREFIX = "entry-points-"
SUFFIX = ".json"

#: The largest index read or written. One names every distribution installed (about 150
#: bytes each): 2 MiB is some ten thousand distributions, far more than any import path has.
MAX_BYTES = 2 * 1024 * 1024

#: Index files kept in the cache directory (one per import path: virtual environments,
#: PYTHONPATH values); the least recently written go first.
KEEP = 16

#: A signature newer than this, when the index is built, keeps the index from being stored
#: (see the module's docstring); 2 s covers the coarsest common timestamps (FAT's).
RACY_SECONDS = 2.0

#: Temporary files of killed writers older than this are removed.
STALE_TEMPORARY_SECONDS = 600.0


class IndexedEntryPoint(NamedTuple):
    """One entry point of the group ``bkt``: its ``name`` (the plugin's), its ``value``
    (``module`` or ``module:attribute``), and the name and version of the distribution
    that declares it (None when its metadata does not say).

    A named tuple, not a dataclass: every command makes some, and creating the class costs
    some 0.2 ms where a frozen dataclass costs 0.9 ms."""

    name: str
    value: str
    distribution: str | None
    version: str | None

    def to_json(self) -> dict[str, str | None]:
        """The entry point as the index stores it."""
        return {
            "name": self.name,
            "value": self.value,
            "distribution": self.distribution,
            "version": self.version,
        }


def load(value: str) -> object:
    """Import the object an entry point's ``value`` names: ``module``, ``module:attribute``
    or ``module:attribute.attribute``, optionally followed by ``[extras]`` (ignored), as
    :meth:`importlib.metadata.EntryPoint.load` does. Raises ``ValueError`` for a value of
    another form, and whatever importing the module raises."""
    import functools
    import importlib

    text = value.strip()
    if text.endswith("]") and "[" in text:
        text = text[: text.index("[")]
    module, colon, attribute = (part.strip() for part in text.partition(":"))
    if not _dotted(module) or (colon and not _dotted(attribute)):
        raise ValueError(f"{value!r} is not module or module:attribute")
    found: object = importlib.import_module(module)
    return functools.reduce(getattr, [a for a in attribute.split(".") if a], found)


def _dotted(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._" for c in name)


# -- what the answer depends on ----------------------------------------------------------------


def _import_path() -> list[str] | None:
    """``sys.path`` with its entries made absolute (``""`` is the working directory, as
    for importlib.metadata); None when the distributions may come from elsewhere too."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if finder is not PathFinder and getattr(finder, "find_distributions", None):
            return None
    paths: list[str] = []
    for entry in sys.path:
        if not isinstance(entry, str):
            return None
        paths.append(os.path.abspath(entry or "."))
    return paths


def _python() -> str:
    return f"{sys.implementation.cache_tag}:{sys.version}"


def index_path(directory: str, paths: list[str]) -> str:
    """The index file in ``directory`` for the import path ``paths``."""
    import zlib

    key = "\0".join([_python(), *paths]).encode("utf-8", "surrogateescape")
    return os.path.join(directory, f"{PREFIX}{zlib.crc32(key):08x}{SUFFIX}")


def _signature(path: str) -> list[int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return [info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev, info.st_size]


def _snapshot(paths: list[str]) -> list[list[Any]]:
    """``[path, signature]`` of every entry of ``paths``, of every distribution's metadata
    directory in them, and of its ``entry_points.txt``, as importlib.metadata finds them."""
    watched: list[list[Any]] = []
    seen: set[str] = set()
    for entry in paths:
        if entry in seen:
            continue
        seen.add(entry)
        watched.append([entry, _signature(entry)])
        try:
            names = os.listdir(entry)
        except OSError:  # missing, not a directory (a zip file: its signature is enough)
            continue
        egg = entry.lower().endswith(".egg")
        for name in sorted(names):
            low = name.lower()
            if low.endswith((".dist-info", ".egg-info")) or (egg and low == "egg-info"):
                meta = os.path.join(entry, name)
                watched.append([meta, _signature(meta)])
                points = os.path.join(meta, "entry_points.txt")
                watched.append([points, _signature(points)])
    return watched


def _racy(watched: list[list[Any]], since_ns: int) -> bool:
    for _path, signature in watched:
        if signature is not None and max(signature[0], signature[1]) >= since_ns:
            return True
    return False


def _current(watched: list[list[Any]]) -> bool:
    return all(_signature(path) == signature for path, signature in watched)


# -- reading the distributions ----------------------------------------------------------------


def scan() -> tuple[list[IndexedEntryPoint], list[list[Any]] | None]:
    """The entry points of the group ``bkt`` as :func:`importlib.metadata.entry_points`
    finds them, in its order, and ``[path, signature]`` of each metadata file their names
    and versions were read from (None when a distribution is not a directory on disk)."""
    from importlib.metadata import entry_points

    found: list[IndexedEntryPoint] = []
    metadata_files: list[list[Any]] | None = []
    described: dict[int, tuple[str | None, str | None]] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist
        if dist is None:
            found.append(IndexedEntryPoint(ep.name, ep.value, None, None))
            continue
        if id(dist) not in described:
            location = getattr(dist, "_path", None)
            if metadata_files is not None and isinstance(location, os.PathLike):
                # Each signature before the file is read: a change after it is seen.
                for file in ("METADATA", "PKG-INFO"):
                    path = os.path.abspath(os.path.join(location, file))
                    metadata_files.append([path, _signature(path)])
            else:
                metadata_files = None
            text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
            described[id(dist)] = _name_and_version(text)
        name, version = described[id(dist)]
        found.append(IndexedEntryPoint(ep.name, ep.value, name, version))
    return found, metadata_files


def _name_and_version(metadata: str) -> tuple[str | None, str | None]:
    """The first ``Name`` and ``Version`` headers of a distribution's metadata, as
    ``Distribution.name`` and ``.version`` read them, without the email parser they use
    (importing it costs every command a few milliseconds): both are one-line headers."""
    found: dict[str, str] = {}
    for line in metadata.splitlines():
        if not line.strip():
            break  # the end of the headers
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if colon and key in ("name", "version") and key not in found:
            found[key] = value.strip()
    return found.get("name"), found.get("version")


# -- the index file ---------------------------------------------------------------------------


def _parse(data: bytes) -> dict[str, Any]:
    """The index in ``data``, its shape checked. Raises :class:`~bkt_core.cache.CacheUnusable`."""
    import json

    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise cache.CacheUnusable(f"is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise cache.CacheUnusable("is not an index")
    if document.get("format") != FORMAT:
        raise cache.CacheUnusable(
            f"has format {document.get('format')!r}, not {FORMAT} (another version of bkt "
            "wrote it)"
        )
    python = document.get("python")
    paths = document.get("sys_path")
    watched = document.get("watch")
    points = document.get("entry_points")
    if not (
        isinstance(python, str)
        and isinstance(paths, list)
        and all(isinstance(p, str) for p in paths)
        and isinstance(watched, list)
        and all(_watch_item(item) for item in watched)
        and isinstance(points, list)
        and all(_entry_point_item(item) for item in points)
    ):
        raise cache.CacheUnusable("is not an index (unexpected shape)")
    return document


def _watch_item(item: object) -> bool:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        return False
    signature = item[1]
    return signature is None or (
        isinstance(signature, list)
        and len(signature) == 5
        and all(type(n) is int for n in signature)
    )


def _entry_point_item(item: object) -> bool:
    return (
        isinstance(item, dict)
        and set(item) == {"name", "value", "distribution", "version"}
        and isinstance(item["name"], str)
        and isinstance(item["value"], str)
        and all(item[k] is None or isinstance(item[k], str) for k in ("distribution", "version"))
    )


def _read(file: str, paths: list[str], notes: list[str]) -> list[IndexedEntryPoint] | None:
    """The entry points in the index ``file`` when it is the index of ``paths`` and
    nothing it was read from has changed since; else None."""
    try:
        data = cache.read_limited(file, MAX_BYTES)
        if data is None:
            return None
        document = _parse(data)
    except cache.CacheUnusable as exc:
        notes.append(f"the plugin index {file} {exc}: not used")
        return None
    if document["python"] != _python() or document["sys_path"] != paths:
        return None
    if not _current(document["watch"]):
        return None
    return [
        IndexedEntryPoint(p["name"], p["value"], p["distribution"], p["version"])
        for p in document["entry_points"]
    ]


def _write(
    file: str,
    paths: list[str],
    watched: list[list[Any]],
    points: list[IndexedEntryPoint],
    notes: list[str],
) -> None:
    import json

    document = {
        "format": FORMAT,
        "python": _python(),
        "sys_path": paths,
        "watch": watched,
        "entry_points": [p.to_json() for p in points],
    }
    data = json.dumps(document, separators=(",", ":")).encode("utf-8", "surrogateescape")
    if len(data) > MAX_BYTES:
        notes.append(f"the plugin index {file} was not written: larger than {MAX_BYTES} bytes")
        return
    try:
        cache.write_atomic(file, data)
    except OSError as exc:
        notes.append(f"the plugin index {file} was not written: {exc.strerror or exc}")
        return
    directory = os.path.dirname(file)
    cache.prune(directory, PREFIX, SUFFIX, KEEP, STALE_TEMPORARY_SECONDS)


def entry_points(
    *,
    use_cache: bool = True,
    notes: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[IndexedEntryPoint]:
    """The entry points of the group ``bkt``, in :func:`importlib.metadata.entry_points`'s
    order: from the index when nothing it was read from has changed, else read from the
    distributions (and the index rewritten). ``use_cache=False`` neither reads nor writes
    the index. Why an index could not be used or written is appended to ``notes``; nothing
    here raises for the index's sake."""
    import time

    notes = [] if notes is None else notes
    paths = _import_path() if use_cache else None
    directory = cache.cache_dir(environ) if paths is not None else None
    if paths is None or directory is None:
        return scan()[0]
    file = index_path(directory, paths)
    indexed = _read(file, paths, notes)
    if indexed is not None:
        return indexed
    since_ns = time.time_ns() - int(RACY_SECONDS * 1e9)
    # Every signature is taken before the distributions are read: a change made while they
    # are read is then seen by the next command.
    watched = _snapshot(paths)
    points, metadata_files = scan()
    if metadata_files is None:
        return points
    watched += metadata_files
    if not _racy(watched, since_ns):
        _write(file, paths, watched, points, notes)
    return points
