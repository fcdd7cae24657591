"""Where bkt keeps its per-user caches, and how a cache file is read and written safely.

A cache only ever saves time: whatever goes wrong with one (a missing, corrupt, truncated,
foreign or oversized file, a directory that cannot be written) the caller does the work
again, as it would without the cache. The files live in ``$XDG_CACHE_HOME/bkt/`` (when that
is an absolute path), else ``~/.cache/bkt/``. A file is written to a temporary name in the
same directory and renamed over the old one, so that a concurrent reader sees the old file
or the new one, never half of one, and two writers do not mix their bytes (the last rename
wins). ``--no-cache`` or ``$BKT_NO_CACHE=1`` makes bkt neither read nor write them.

A plugin that keeps a cache of its own asks :func:`cache_enabled`, in its hooks (or in what
they build, such as a domain field), whether it may use it: that honours ``$BKT_NO_CACHE``,
``--no-cache`` and ``Host(cache=False)`` alike.

Only :mod:`os` (and :mod:`contextvars`, which is tiny) is imported up front: this runs on
every command.
"""

from __future__ import annotations

import os
from contextvars import ContextVar

# Not `typing.TYPE_CHECKING`: importing typing costs every command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "NO_CACHE_ENV",
    "CacheUnusable",
    "cache_dir",
    "cache_enabled",
    "hook_caching",
    "prune",
    "read_limited",
    "read_past",
    "sha256_hex",
    "write_atomic",
]

NO_CACHE_ENV = "BKT_NO_CACHE"


class CacheUnusable(Exception):
    """A cache file that exists but cannot be used; the message says why."""


#: While a host calls a plugin's hook: whether that host may use caches (``Host.cache``).
#: Set by the host around each call (:func:`hook_caching`), read by :func:`cache_enabled`.
hook_caching: ContextVar[bool] = ContextVar("bkt_hook_caching", default=True)


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, as the caches' keys and names are made. From the
    builtin module, not hashlib: importing hashlib loads OpenSSL (some 3 ms of every command
    that would need it), and these digests are small."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - Python 3.12 renamed it
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment,unused-ignore]
    return str(sha256(data).hexdigest())


def cache_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether bkt's caches may be read and written: False when ``$BKT_NO_CACHE`` is set to
    anything but empty or ``0``, and, while a host calls a plugin's hook, when that host
    runs without caches (``--no-cache``, ``Host(cache=False)``). A plugin with a cache of
    its own calls this from its hooks (an object a hook returns, such as a domain field,
    asks when the hook builds it and keeps the answer)."""
    if not hook_caching.get():
        return False
    value = (os.environ if environ is None else environ).get(NO_CACHE_ENV, "").strip()
    return value in ("", "0")


def cache_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """``$XDG_CACHE_HOME/bkt`` when that is an absolute path, else ``$HOME/.cache/bkt``;
    None when neither is set (then there is no cache)."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "bkt")
    home = env.get("HOME", "")
    if not home.startswith("/"):
        return None
    return os.path.join(home, ".cache", "bkt")


def file_signature(path: str | None) -> list[int] | None:
    """``[mtime_ns, size]`` of ``path``: what tells a cache that a file changed; None when
    there is no such file."""
    if not path:
        return None
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return [info.st_mtime_ns, info.st_size]


def read_past(fd: int, limit: int) -> bytes:
    """What the open file ``fd`` holds, read up to one byte past ``limit``: a result longer
    than ``limit`` means the file is too large. Read from the descriptor rather than trusting
    the size ``fstat`` gave, since the file may grow meanwhile. Raises OSError."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_limited(path: str, limit: int) -> bytes | None:
    """The bytes of the cache file ``path``; None when it does not exist. Raises
    :class:`CacheUnusable` when it cannot be read, is larger than ``limit`` bytes, is not a
    regular file, or belongs to another user (whose file must not steer this one's
    commands)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheUnusable(f"cannot be read: {exc.strerror or exc}") from None
    try:
        import stat

        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CacheUnusable("is not a regular file")
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise CacheUnusable(f"belongs to another user (uid {info.st_uid})")
        if info.st_size > limit:
            raise CacheUnusable(f"is larger than {limit} bytes")
        data = read_past(fd, limit)
        if len(data) > limit:  # it grew while being read
            raise CacheUnusable(f"is larger than {limit} bytes")
        return data
    except OSError as exc:
        raise CacheUnusable(f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600, its directory created when missing) through a
    temporary file in the same directory renamed over it. Raises OSError; the
    temporary file never outlives a failure. No fsync: a file lost or emptied by a crash is
    a cache miss, which costs less than an fsync on every write."""
    import time

    directory = os.path.dirname(path)
    # The directory keeps the umask's mode, as every other directory bkt creates: a subsystem's
    # own cache below it (the VM subsystem's ISOs) must stay reachable by the processes that
    # read from it (QEMU, as another user). The files themselves are the user's alone.
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        import contextlib

        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def prune(directory: str, prefix: str, suffix: str, keep: int, stale_after: float) -> None:
    """Keep at most ``keep`` files named ``prefix...suffix`` in ``directory``, removing the
    least recently written first, and remove their temporary files (``.prefix...tmp``) older
    than ``stale_after`` seconds, left by a writer that was killed. Best effort: another
    process may be pruning too, and nothing here raises."""
    import contextlib
    import time

    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    kept: list[tuple[float, str]] = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            if name.startswith(prefix) and name.endswith(suffix):
                kept.append((os.stat(path).st_mtime, path))
            elif (
                name.startswith("." + prefix)
                and name.endswith(".tmp")
                and now - os.stat(path).st_mtime > stale_after
            ):
                os.unlink(path)
        except OSError:
            continue
    kept.sort(reverse=True)
    for _mtime, path in kept[keep:]:
        with contextlib.suppress(OSError):
            os.unlink(path)
