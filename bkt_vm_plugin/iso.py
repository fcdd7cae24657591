"""The ISO cache, and ``bkt vm fetch-iso``: the one place that downloads.

Sync never downloads: it attaches a URL source only when its file is already in the cache
(:func:`bkt_vm_plugin.observe.resolve_context` decides). :func:`fetch` downloads one URL
with :mod:`urllib` into ``.<file>.part`` beside its final name and renames it into place only
when it is complete and, when the manifest gives a ``sha256``, verified: sync never sees half a
file or a wrong one.

The cache. A URL's file is ``<digest>-<name>``: the first 16 hex digits of the SHA-256 of the
URL as the manifest writes it, and the last segment of its path (:func:`cache_name`, the one
rule that both fetch-iso and sync's lookup use). Two URLs that end in the same file name
(``.../a/install.iso``, ``.../b/install.iso``) so never share a file.

Redirects are followed here, not by urllib (whose handler would follow one to ``ftp://``): at
most :data:`MAX_REDIRECTS`, each target checked by :func:`bkt_vm_plugin.paths.parse_url` (so
http and https only, and no credentials), with a note when the host changes. No message shows
a URL's ``user:password@`` (:func:`redact`).

Resuming. An interrupted transfer continues where it stopped with ``Range: bytes=N-``, within
the run (a bounded number of attempts with a growing pause) and in the next run (the part
file is kept). ``If-Range`` carries the validator of the response whose bytes the part holds
(its strong ETag, else its Last-Modified), so a file changed on the server is sent whole
instead of being spliced. The validator is kept beside the part file
(``.<file>.part.validator``, with the URL it belongs to); a part left by an earlier run without
one is started over, never continued blindly. Answers: ``206`` must start at the byte asked
for (anything else is an error, never a retry loop); ``200`` means the whole file again (a
server without ranges, or a changed file); ``416`` means the part is already the whole file
(when ``Content-Range: bytes */LENGTH`` says so) or is started over once. A checksum
mismatch deletes the download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bkt_core.errors import OperationError
from bkt_vm_plugin.iso_cache import (
    NO_CACHE_DIR,
    cache_dir,
    cache_name,
    cached_path,
    find_cache_dir,
)

if TYPE_CHECKING:
    import http.client
    from email.message import Message

    from bkt_vm_plugin.definition import VmDefinition

__all__ = [
    "ATTEMPTS",
    "NO_CACHE_DIR",
    "FetchFailed",
    "FetchResult",
    "Progress",
    "cache_dir",
    "cache_name",
    "cached_path",
    "fetch",
    "fetch_iso",
    "find_cache_dir",
    "format_size",
    "part_path",
    "redact",
    "sha256_of_file",
    "validator_path",
]

#: What a download reports: bytes in the file so far, and the whole length when known.
Progress = Callable[[int, "int | None"], None]

#: Attempts in a row that may end without one new byte before a download fails.
ATTEMPTS = 5
#: Attempts one download may take in all, progress or not: no server keeps bkt forever.
MAX_ATTEMPTS = 30
#: The pause before the first retry, doubled for each further one (reset after progress).
FIRST_BACKOFF = 0.25
#: Seconds connecting, and then each read, may take before the attempt counts as interrupted.
TIMEOUT = 60.0
CHUNK = 256 * 1024
#: Redirects one request may follow.
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def redact(url: str) -> str:
    """``url`` with its user information (``user:password@``) replaced by ``***@``: how
    messages show a URL, even one that does not parse."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    return url if at < 0 else f"{scheme}://***{rest[at:]}"


def part_path(path: Path) -> Path:
    """``.<name>.part`` beside ``path``: hidden, and never what sync looks for."""
    return path.with_name(f".{path.name}.part")


def validator_path(path: Path) -> Path:
    """``.<name>.part.validator``: which response the part file's bytes came from."""
    return path.with_name(f".{path.name}.part.validator")


# -- results -------------------------------------------------------------------------------


def format_size(n: int) -> str:
    """``X.Y GiB``, ``X.Y MiB``, ``X.Y KiB`` or ``N bytes``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class FetchResult:
    """What fetching one URL did. ``status`` is ``fetched``, ``cached`` (already there) or
    ``failed`` (``error`` says why). ``size`` is the file's length in bytes."""

    url: str
    path: Path
    status: str
    size: int = 0
    resumed: bool = False
    verified: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def describe(self) -> str:
        """The line the CLI prints for it."""
        checked = ", sha256 verified" if self.verified else ""
        url = redact(self.url)
        if self.status == "cached":
            return f"cached {url} -> {self.path} (already there{checked})"
        if self.status == "fetched":
            resumed = ", resumed" if self.resumed else ""
            return f"fetched {url} -> {self.path} ({format_size(self.size)}{resumed}{checked})"
        return f"{url}: {self.error}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": redact(self.url),
            "path": str(self.path),
            "status": self.status,
            "size": self.size,
            "resumed": self.resumed,
            "verified": self.verified,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


class FetchFailed(OperationError):
    """Some URL sources of a VM were not fetched; :attr:`results` has every source's result."""

    def __init__(self, name: str, results: list[FetchResult]) -> None:
        failed = [redact(r.url) for r in results if not r.ok]
        noun = "ISO" if len(failed) == 1 else "ISOs"
        super().__init__(
            f"VM {name}: {len(failed)} {noun} not fetched: {', '.join(failed)}",
            hint="run `bkt vm fetch-iso` again to continue interrupted downloads",
        )
        self.results = results


# -- fetching ------------------------------------------------------------------------------


def sha256_of_file(path: Path) -> str:
    """The SHA-256 of a file, in lower-case hex."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise OperationError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def fetch_iso(
    vm_name: str,
    vm: VmDefinition,
    cache: Path,
    progress: Callable[[str, int, int | None], None] | None = None,
    *,
    on_result: Callable[[FetchResult], None] | None = None,
    note: Callable[[str], None] | None = None,
    **options: Any,
) -> list[FetchResult]:
    """Fetch every URL source of VM ``vm_name`` into ``cache``, one after the other; one
    failure does not stop the others. ``progress`` hears ``(url, done, total)``,
    ``on_result`` each result as soon as it is known, ``note`` retries and replaced cache
    files. ``options`` go to :func:`fetch`. Returns the results in manifest order (empty: no
    URL sources); raises :class:`FetchFailed` at the end when any failed."""
    from bkt_vm_plugin.definition import IsoUrl

    results: list[FetchResult] = []
    for source in vm.iso_sources:
        if not isinstance(source, IsoUrl):
            continue
        url = source.url
        bar: Progress | None = None
        if progress is not None:
            bar = _bind(progress, url)
        try:
            result = fetch(url, source.sha256, cache, bar, note=note, **options)
        except OperationError as exc:
            try:
                where = cached_path(url, cache)
            except ValueError:
                where = cache
            result = FetchResult(url, where, "failed", error=exc.message)
        results.append(result)
        if on_result is not None:
            on_result(result)
    if any(not r.ok for r in results):
        raise FetchFailed(vm_name, results)
    return results


def _bind(progress: Callable[[str, int, int | None], None], url: str) -> Progress:
    return lambda done, total: progress(url, done, total)


def fetch(
    url: str,
    sha256: str | None,
    dest_dir: Path,
    progress: Progress | None = None,
    *,
    note: Callable[[str], None] | None = None,
    attempts: int = ATTEMPTS,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: float = FIRST_BACKOFF,
    timeout: float = TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch ``url`` into ``dest_dir`` (made if missing: the cache is bkt's own directory)
    unless a good copy is already there. Raises :class:`OperationError` when it cannot."""
    try:
        final = cached_path(url, dest_dir)
    except ValueError as exc:
        raise OperationError(f"cannot fetch {redact(url)}: {exc}") from None
    expected = sha256.lower() if sha256 else None
    say = note or (lambda _text: None)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationError(f"cannot create {dest_dir}: {exc.strerror or exc}") from None
    cached = _cached_copy(url, final, expected, say)
    if cached is not None:
        return cached

    part = part_path(final)
    try:
        handle = part.open("a+b")
    except OSError as exc:
        raise OperationError(f"cannot open {part}: {exc.strerror or exc}") from None
    with handle:
        _lock(handle, url, part)
        download = _Download(
            url=url,
            file=handle,
            part=part,
            progress=progress,
            note=say,
            timeout=timeout,
        )
        try:
            download.run(attempts, max_attempts, backoff, sleep)
        except BaseException:
            # Bytes already here are kept for the next run; an empty file helps no one.
            if _size(handle) == 0:
                _remove(part, validator_path(final))
            raise
        size = _size(handle)
        verified = _verify(part, final, expected, download.shown)
        _move_into_place(handle, part, final)
    _remove(validator_path(final))
    _fsync_dir(dest_dir)
    return FetchResult(url, final, "fetched", size, resumed=download.resumed, verified=verified)


def _cached_copy(
    url: str, final: Path, expected: str | None, say: Callable[[str], None]
) -> FetchResult | None:
    """The result for the copy of ``url`` already at ``final``, when it is a good one (with
    no ``expected`` digest, any copy is); None when it must be downloaded."""
    if not final.exists():
        return None
    if expected is None:
        return FetchResult(url, final, "cached", final.stat().st_size)
    actual = sha256_of_file(final)
    if actual == expected:
        return FetchResult(url, final, "cached", final.stat().st_size, verified=True)
    say(
        f"{final} is in the cache but its sha256 is {actual}, not {expected}; downloading it again"
    )
    return None


def _verify(part: Path, final: Path, expected: str | None, shown: str) -> bool:
    """Whether the download at ``part`` was checked against the ``expected`` digest (none:
    not checked). One that does not match is deleted: raises :class:`OperationError`."""
    if expected is None:
        return False
    actual = sha256_of_file(part)
    if actual != expected:
        _remove(part, validator_path(final))
        raise OperationError(
            f"the download of {shown} has sha256 {actual}, not {expected} as "
            "the manifest says; it was deleted"
        )
    return True


def _move_into_place(handle: IO[bytes], part: Path, final: Path) -> None:
    """The complete download at ``part`` (open as ``handle``) made durable and renamed to
    ``final``."""
    try:
        handle.flush()
        os.fsync(handle.fileno())
        os.replace(part, final)
    except OSError as exc:
        raise OperationError(f"cannot move {part} to {final}: {exc.strerror or exc}") from None


def _lock(handle: IO[bytes], url: str, part: Path) -> None:
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise OperationError(
            f"another bkt is downloading {redact(url)} ({part} is locked)"
        ) from None


def _size(handle: IO[bytes]) -> int:
    return os.fstat(handle.fileno()).st_size


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"bkt/{version('bkt')}"
    except PackageNotFoundError:
        return "bkt"


def _opener() -> Any:
    """urllib's opener (proxies from the environment, https), except that it follows no
    redirect: :meth:`_Download._attempt` does, after checking where it leads."""
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    return urllib.request.build_opener(NoRedirects)


class _Interrupted(Exception):
    """An attempt ended early (the connection dropped, a read timed out): worth retrying."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes FIRST-LAST/LENGTH`` -> (FIRST, LENGTH); ``bytes */LENGTH`` -> (None, LENGTH);
    None for what cannot be read (``*`` lengths too)."""
    if not value or not value.startswith("bytes "):
        return None, None
    spec, _, length = value[len("bytes ") :].partition("/")
    first: int | None = None
    if spec.strip() != "*":
        head = spec.split("-", 1)[0].strip()
        first = int(head) if head.isdigit() else None
    total = int(length) if length.strip().isdigit() else None
    return first, total


def _validator_of(headers: Message[str, str]) -> str | None:
    etag = headers.get("ETag")
    # A weak ETag cannot be used in If-Range (RFC 9110 13.1.5).
    if etag and not etag.startswith("W/"):
        return etag.strip()
    modified = headers.get("Last-Modified")
    return modified.strip() if modified else None


@dataclass
class _Download:
    url: str
    file: IO[bytes]
    part: Path
    progress: Progress | None
    note: Callable[[str], None]
    timeout: float
    resumed: bool = False
    #: The validator of the response the part's bytes came from (None: unknown).
    validator: str | None = None
    _restarted_416: bool = field(default=False)
    #: Host changes already noted: a retry that is redirected the same way says nothing new.
    _moves: set[tuple[str, str]] = field(default_factory=set)

    @property
    def shown(self) -> str:
        """The URL as messages show it."""
        return redact(self.url)

    @property
    def _validator_file(self) -> Path:
        return self.part.with_name(self.part.name + ".validator")

    def _load_validator(self) -> str | None:
        try:
            data = json.loads(self._validator_file.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(data, dict) and data.get("url") == self.url:
            value = data.get("validator")
            return value if isinstance(value, str) and value else None
        return None

    def _store_validator(self, value: str | None) -> None:
        self.validator = value
        try:
            if value is None:
                _remove(self._validator_file)
            else:
                tmp = self._validator_file.with_name(self._validator_file.name + ".tmp")
                tmp.write_text(json.dumps({"url": self.url, "validator": value}) + "\n")
                os.replace(tmp, self._validator_file)
        except OSError as exc:
            raise OperationError(
                f"cannot write {self._validator_file}: {exc.strerror or exc}"
            ) from None

    def _truncate(self) -> None:
        try:
            self.file.truncate(0)
        except OSError as exc:
            raise OperationError(f"cannot write {self.part}: {exc.strerror or exc}") from None

    def run(
        self, attempts: int, max_attempts: int, backoff: float, sleep: Callable[[float], None]
    ) -> None:
        if _size(self.file) > 0:
            self.validator = self._load_validator()
            if self.validator is None:
                # Bytes of an unknown response: continuing them could splice two files.
                self.note(f"{self.part} has no record of the response it came from; starting over")
                self._truncate()
        failures = 0
        pause = backoff
        for attempt in range(1, max_attempts + 1):
            have = _size(self.file)
            try:
                self._attempt(have)
                return
            except _Interrupted as exc:
                why = str(exc)
            now = _size(self.file)
            failures = 1 if now > have else failures + 1
            if now > have:
                pause = backoff
            if failures >= attempts or attempt == max_attempts:
                raise OperationError(
                    f"cannot download {self.shown}: {why} ({failures} attempt"
                    f"{'' if failures == 1 else 's'} in a row made no progress, {attempt} in "
                    f"all; run fetch-iso again to continue from {now} bytes)"
                )
            self.note(f"{self.shown}: {why}; continuing from byte {now} in {pause * 1000:.0f} ms")
            sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, have: int) -> None:
        import http.client
        import urllib.error
        import urllib.request

        headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
        if have > 0:
            headers["Range"] = f"bytes={have}-"
            if self.validator is not None:
                headers["If-Range"] = self.validator
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            request = urllib.request.Request(url, headers=headers)
            try:
                response = _opener().open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                with exc:
                    if exc.code in _REDIRECTS:
                        url = self._redirect(url, exc.code, exc.headers.get("Location"))
                        continue
                    self._refused(exc.code, exc.headers, have)
                return
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                raise _Interrupted(f"cannot connect: {reason}") from None
            except ValueError as exc:
                # Nothing parse_url accepts should get here, but a hand-edited validator file
                # (an invalid header) could: a message, never a traceback.
                raise OperationError(f"cannot fetch {redact(url)}: {exc}") from None
            break
        else:
            raise OperationError(f"{self.shown} was redirected more than {MAX_REDIRECTS} times")
        with response:
            status = response.status
            if status == 206:
                first, length = _content_range(response.headers.get("Content-Range"))
                if first != have:
                    shown = "an unreadable range" if first is None else f"byte {first}"
                    raise OperationError(
                        f"{self.shown} answered 206 from {shown}, not from byte {have} as asked"
                    )
                start = have
                self.resumed = self.resumed or have > 0
            elif status == 200:
                if have > 0:
                    self.resumed = False
                self._truncate()
                start, length = 0, None
            else:
                raise OperationError(f"{self.shown} answered HTTP {status}")
            self._store_validator(_validator_of(response.headers))
            declared = response.headers.get("Content-Length")
            total = length
            if total is None and declared is not None and declared.strip().isdigit():
                total = start + int(declared)
            self._copy(response, start, total)

    def _redirect(self, url: str, status: int, location: str | None) -> str:
        """Where a redirect from ``url`` leads, when bkt follows it there."""
        from urllib.parse import urljoin, urlsplit

        from bkt_vm_plugin.paths import parse_url

        if not location:
            raise OperationError(f"{redact(url)} answered HTTP {status} without a Location")
        target = urljoin(url, location.strip())
        try:
            new = parse_url(target).hostname or ""
        except ValueError as exc:
            raise OperationError(
                f"{self.shown} was redirected to {redact(target)}, which bkt does not follow "
                f"({exc})"
            ) from None
        old = urlsplit(url).hostname or ""
        if new != old and (old, new) not in self._moves:
            self._moves.add((old, new))
            self.note(f"{self.shown}: redirected from host {old} to host {new}")
        return target

    def _refused(self, status: int, headers: Message[str, str], have: int) -> None:
        if status == 416 and have > 0:
            _, length = _content_range(headers.get("Content-Range"))
            if length == have:
                return  # the part is the whole file already (an earlier run stopped at rename)
            if not self._restarted_416:
                self._restarted_416 = True
                self._truncate()
                self._store_validator(None)
                raise _Interrupted("the server cannot continue the partial file; starting over")
        raise OperationError(f"{self.shown} answered HTTP {status}")

    def _copy(self, response: http.client.HTTPResponse, start: int, total: int | None) -> None:
        import http.client

        done = start
        if self.progress is not None:
            self.progress(done, total)
        self.file.seek(0, os.SEEK_END)
        while True:
            try:
                # read1: what has arrived, at most CHUNK. read(CHUNK) waits for all of it, and a
                # stall in the middle would lose the bytes it had read so far.
                chunk = response.read1(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                self.file.flush()
                raise _Interrupted(
                    f"the transfer broke off: {exc or type(exc).__name__}"
                ) from None
            if not chunk:
                break
            try:
                self.file.write(chunk)
            except OSError as exc:
                # A full disk is not an interruption that a retry fixes.
                raise OperationError(f"cannot write {self.part}: {exc.strerror or exc}") from None
            done += len(chunk)
            if self.progress is not None:
                self.progress(done, total)
        self.file.flush()
        if total is not None and done < total:
            raise _Interrupted(f"the connection closed after {done} of {total} bytes")


def url_sources(vm: VmDefinition) -> Iterable[str]:
    """The URLs of ``vm``'s URL sources, in manifest order."""
    from bkt_vm_plugin.definition import IsoUrl

    return [s.url for s in vm.iso_sources if isinstance(s, IsoUrl)]
