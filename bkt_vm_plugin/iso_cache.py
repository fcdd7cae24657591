"""The ISO cache: where ``bkt vm fetch-iso`` puts a URL's file, and where sync and status
look for it (:func:`bkt_vm_plugin.observe.resolve_context`).

Kept apart from the downloader (:mod:`bkt_vm_plugin.iso`, which re-exports these): status
and sync look here on every run, and importing the downloader would cost each of them its
dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bkt_core.cache import cache_dir as bkt_cache_dir
from bkt_core.cache import sha256_hex
from bkt_core.errors import OperationError

__all__ = ["NO_CACHE_DIR", "cache_dir", "cache_name", "cached_path", "find_cache_dir"]

NO_CACHE_DIR = "neither XDG_CACHE_HOME (absolute) nor HOME is set"


def find_cache_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """``isos`` in bkt's cache directory (:func:`bkt_core.cache.cache_dir`:
    ``$XDG_CACHE_HOME/bkt`` when that is an absolute path, else ``~/.cache/bkt``); None when
    neither is set (there is no ISO cache: URL sources cannot be attached)."""
    directory = bkt_cache_dir(environ)
    return None if directory is None else Path(directory) / "isos"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """:func:`find_cache_dir`, for what must write there (``fetch-iso``). Raises
    :class:`OperationError` when there is none."""
    found = find_cache_dir(environ)
    if found is None:
        raise OperationError(f"cannot find the ISO cache: {NO_CACHE_DIR}")
    return found


def cache_name(url: str) -> str:
    """The name of ``url``'s file in the cache: ``<16 hex digits>-<file name>``, the digits
    from the SHA-256 of the whole URL, so that two URLs never share a file and a listing still
    says what each file is. Raises ``ValueError`` for a URL that cannot be an ISO source."""
    from bkt_vm_plugin.paths import iso_url_file_name

    name = iso_url_file_name(url)
    return f"{sha256_hex(url.encode())[:16]}-{name}"


def cached_path(url: str, cache: Path | None = None) -> Path:
    """Where the cache keeps ``url``'s file (:func:`cache_name`). Raises ``ValueError`` for a
    URL that cannot be an ISO source."""
    return (cache_dir() if cache is None else cache) / cache_name(url)
