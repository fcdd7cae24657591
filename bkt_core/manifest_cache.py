"""The cache of validated manifests: a manifest found valid is not validated again (nor pydantic
imported) until something its verdict depends on changes.

An entry is keyed by the SHA-256 of a canonical JSON document of everything the verdict
depends on:

- the format of the entries (:data:`FORMAT`) and bkt's version;
- the subsystem's name;
- each document of the manifest (:class:`~bkt_core.manifest.ManifestSource`, override files
  included): its path and the SHA-256 of its text, so that an edit is always seen (even one
  within the same second that keeps the size) and a ``touch`` that changes nothing is not;
- the active plugins in registration order: each one's name, distribution and version, and
  the path, modification time and size of the module it is defined in (an edited plugin, or
  an installed, removed or upgraded one, is another key);
- the user's home directory (``~`` in paths);
- what the plugins' :func:`~bkt_core.hookspecs.bkt_manifest_cache_key` say
  (:meth:`Host.manifest_cache_keys <bkt_core.host.Host.manifest_cache_keys>`), for verdicts
  that depend on outside data;
- the files of the subsystem's own validating code it names (``code``): a changed module of
  a source checkout is seen without a new version.

What an entry holds is the subsystem's: plain JSON it stores with :meth:`ManifestCache.put`
and rebuilds from with :meth:`ManifestCache.get`. Only manifests that validated are stored.
Entries are files ``manifest-<key>.json`` in :func:`bkt_core.cache.cache_dir`, written
atomically (a reader sees a whole entry or none; of two writers the last rename wins), at most
:data:`KEEP` of them (the least recently written are pruned). A missing, corrupt, truncated,
oversized, foreign, unreadable or unwritable entry means the manifest is validated as without
the cache; why goes to :attr:`Host.cache_notes <bkt_core.host.Host.cache_notes>` (``-v``
prints them). ``--no-cache``, ``$BKT_NO_CACHE=1`` and ``Host(cache=False)`` bypass it.

This module knows nothing about what a manifest describes.
"""

from __future__ import annotations

import json
import os

from bkt_core import cache

# Not `typing.TYPE_CHECKING`: importing typing costs every command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    from bkt_core.host import Host
    from bkt_core.manifest import ManifestSource

    T = TypeVar("T")

__all__ = ["FORMAT", "KEEP", "MAX_BYTES", "ManifestCache"]

#: The version of the entries' format and of their key; another version's are not read.
FORMAT = 1

#: The entries' names: ``manifest-<key>.json``.
PREFIX = "manifest-"
SUFFIX = ".json"

#: The largest entry read or written: a manifest is at most 16 MiB
#: (:data:`bkt_core.manifest.MAX_MANIFEST_BYTES`), and its validated form is about as large.
MAX_BYTES = 32 * 1024 * 1024

#: Entries kept: a few manifests, each with a few recent versions (a checkout of another
#: branch, a plugin disabled for one command) stay warm.
KEEP = 32

#: A module changed less than this many seconds ago keeps a verdict from being stored: a
#: second change within its timestamp's granularity would keep the key (see
#: :mod:`bkt_core.plugin_index`, which has the same problem).
RACY_SECONDS = 2.0

#: Temporary files of killed writers older than this are removed.
STALE_TEMPORARY_SECONDS = 600.0


class ManifestCache:
    """The cache entry of one manifest of ``subsystem``, made of ``sources``, on ``host``,
    with ``~`` meaning ``home``; ``code`` names the files of the subsystem's own validating
    code. The key is computed on first use (it calls the plugins'
    :func:`~bkt_core.hookspecs.bkt_manifest_cache_key`). Nothing here raises for the
    cache's sake."""

    def __init__(
        self,
        host: Host,
        subsystem: str,
        sources: Sequence[ManifestSource],
        *,
        home: str | None,
        code: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.subsystem = subsystem
        self.sources = tuple(sources)
        self.home = home
        self.code = tuple(code)
        self._key: str | None = None
        self._watched: list[list[Any]] = []

    @property
    def directory(self) -> str | None:
        """Where the entries are; None when the cache is off (``--no-cache``,
        ``$BKT_NO_CACHE``, ``Host(cache=False)``) or there is no cache directory."""
        if not (self.host.cache and cache.cache_enabled()):
            return None
        return cache.cache_dir()

    @property
    def key(self) -> str:
        """The hexadecimal SHA-256 of everything the verdict depends on."""
        if self._key is None:
            from bkt_core import __version__

            sources = [
                [os.path.abspath(source.path), cache.sha256_hex(source.text.encode("utf-8"))]
                for source in self.sources
            ]
            plugins = self.host.plugin_identity()
            watched: list[list[Any]] = [[plugin[3], plugin[5]] for plugin in plugins]
            code = [[path, cache.file_signature(path)] for path in self.code]
            watched += code
            document = {
                "format": FORMAT,
                "bkt": __version__,
                "subsystem": self.subsystem,
                "sources": sources,
                "plugins": plugins,
                "home": self.home,
                "keys": self.host.manifest_cache_keys(self.subsystem),
                "code": code,
            }
            text = json.dumps(document, sort_keys=True, separators=(",", ":"))
            self._key = cache.sha256_hex(text.encode("utf-8", "surrogateescape"))
            self._watched = watched
        return self._key

    def _path(self, directory: str) -> str:
        return os.path.join(directory, f"{PREFIX}{self.key}{SUFFIX}")

    def _note(self, text: str) -> None:
        self.host.cache_notes.append(text)

    def get(self, decode: Callable[[Any], T]) -> T | None:
        """What :meth:`put` stored under this key, rebuilt by ``decode`` (which raises for
        a value it cannot use: ``ValueError``, ``KeyError``, ``TypeError``...); None when
        there is none or it cannot be used (the reason goes to the host's notes)."""
        directory = self.directory
        if directory is None:
            return None
        path = self._path(directory)
        try:
            data = cache.read_limited(path, MAX_BYTES)
        except cache.CacheUnusable as exc:
            self._note(f"the validated manifest {path} {exc}: not used")
            return None
        if data is None:
            return None
        try:
            entry = json.loads(data)
        except (ValueError, RecursionError) as exc:
            self._note(f"the validated manifest {path} is not valid JSON ({exc}): not used")
            return None
        if not (isinstance(entry, dict) and {"format", "key", "subsystem", "value"} <= set(entry)):
            self._note(f"the validated manifest {path} is not a cache entry: not used")
            return None
        if entry["format"] != FORMAT:
            self._note(
                f"the validated manifest {path} has format {entry['format']!r}, not {FORMAT} "
                "(another version of bkt wrote it): not used"
            )
            return None
        if entry["key"] != self.key or entry["subsystem"] != self.subsystem:
            self._note(f"the validated manifest {path} is not this manifest's: not used")
            return None
        try:
            return decode(entry["value"])
        # Whatever a damaged entry makes the subsystem's decoder raise: the cache only saves
        # time, and the manifest is validated instead.
        except Exception as exc:
            self._note(
                f"the validated manifest {path} cannot be used "
                f"({type(exc).__name__}: {exc}): not used"
            )
            return None

    def put(self, make: Callable[[], Any]) -> None:
        """Store what ``make()`` returns (plain JSON: dicts, lists, strings, numbers,
        booleans, None) as the validated form of this manifest; ``make`` raises ValueError
        for a manifest it cannot store, saying why. Nothing is stored (and ``make`` not
        called) when the cache is off, or a watched module changed less than
        :data:`RACY_SECONDS` ago; nor when the entry cannot be written. The reason goes to
        the host's notes."""
        directory = self.directory
        if directory is None:
            return
        import time

        path = self._path(directory)
        since_ns = time.time_ns() - int(RACY_SECONDS * 1e9)
        for file, signature in self._watched:
            if signature is not None and signature[0] >= since_ns:
                self._note(f"the validated manifest {path} was not written: {file} just changed")
                return
        try:
            value = make()
        except ValueError as exc:
            self._note(f"the validated manifest {path} was not written: {exc}")
            return
        entry = {"format": FORMAT, "key": self.key, "subsystem": self.subsystem, "value": value}
        try:
            text = json.dumps(entry, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            self._note(f"the validated manifest {path} was not written: {exc}")
            return
        data = text.encode("utf-8", "surrogateescape")
        if len(data) > MAX_BYTES:
            self._note(
                f"the validated manifest {path} was not written: larger than {MAX_BYTES} bytes"
            )
            return
        try:
            cache.write_atomic(path, data)
        except OSError as exc:
            self._note(f"the validated manifest {path} was not written: {exc.strerror or exc}")
            return
        cache.prune(directory, PREFIX, SUFFIX, KEEP, STALE_TEMPORARY_SECONDS)
