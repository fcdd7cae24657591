"""bkt_vm_plugin.iso.fetch against an HTTP server on 127.0.0.1 that the tests start.

The server serves one generated body at every path ending in its file name, honours
``Range`` and ``If-Range`` (with an ETag), records every request, and misbehaves on demand:
it drops the connection midway, stalls midway, ignores ranges, sends no validator, answers a
range request at the wrong offset, or redirects.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bkt_core.errors import OperationError
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.iso import (
    FetchFailed,
    FetchResult,
    cache_name,
    cached_path,
    fetch,
    fetch_iso,
    part_path,
    validator_path,
)
from bkt_vm_plugin.model import validate_vm

MIB = 1 << 20
ETAG = '"bkt-test-v1"'


@dataclass
class Seen:
    path: str
    range: str | None
    if_range: str | None


@dataclass
class Server:
    """A file server. Set its fields between requests to change how it answers."""

    file: str
    body: bytes
    etag: str | None = ETAG
    ranges: bool = True
    #: Answers (0-based) that announce the whole rest, send this many bytes, and hang up.
    drop: dict[int, int] = field(default_factory=dict)
    #: Answers (0-based) that announce the whole rest, send this many bytes, and then send
    #: nothing more until the test ends.
    stall: dict[int, int] = field(default_factory=dict)
    #: Answer every range request with 206 from this byte instead.
    wrong_start: int | None = None
    #: Paths answered with a redirect: (status, Location).
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"
    released: threading.Event = field(default_factory=threading.Event)

    def url(self, name: str | None = None) -> str:
        return f"http://{self.host}:{self.port}/isos/{name or self.file}"


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            index = len(server.seen)
            rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            server.seen.append(Seen(self.path, rng, if_range))
            if self.path in server.redirects:
                status, location = server.redirects[self.path]
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if not self.path.split("?")[0].endswith("/" + server.file):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, total = server.body, len(server.body)
            start = 0
            if rng and server.ranges and (if_range is None or if_range == server.etag):
                start = int(rng.removeprefix("bytes=").removesuffix("-"))
                if server.wrong_start is not None:
                    start = server.wrong_start
                if start >= total:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{total}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            else:
                self.send_response(200)
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
            if server.etag is not None:
                self.send_header("ETag", server.etag)
            self.send_header("Content-Length", str(total - start))
            self.send_header("Connection", "close")
            self.end_headers()
            rest = body[start:]
            if index in server.drop:
                self.wfile.write(rest[: server.drop[index]])
                self.wfile.flush()
                self.close_connection = True
                return
            if index in server.stall:
                self.wfile.write(rest[: server.stall[index]])
                self.wfile.flush()
                server.released.wait()
                self.close_connection = True
                return
            self.wfile.write(rest)

    return Handler


Serve = Callable[..., Server]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(file, body, **fields)`` starts a :class:`Server` (on ``[::1]`` when ``host`` is
    ``"[::1]"``); all stop after the test."""
    running: list[tuple[Server, http.server.ThreadingHTTPServer]] = []

    def start(file: str, body: bytes, **fields: Any) -> Server:
        server = Server(file, body, **fields)
        ipv6 = server.host == "[::1]"

        class Httpd(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that hangs up mid-answer, as some tests make it, is no error here.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        httpd = Httpd(("::1" if ipv6 else server.host, 0), _handler(server))
        server.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
        running.append((server, httpd))
        return server

    yield start
    for server, httpd in running:
        server.released.set()
        httpd.shutdown()
        httpd.server_close()


def body_of(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def no_sleep(_seconds: float) -> None:
    pass


def files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_complete_download_is_verified_and_a_cached_file_is_not_fetched_again(
    serve: Serve, tmp_path: Path
) -> None:
    body = body_of(3 * MIB + 5)
    server = serve("virtio-win.iso", body)
    cache = tmp_path / "cache" / "bkt" / "isos"
    seen: list[tuple[int, int | None]] = []

    result = fetch(server.url(), digest(body).upper(), cache, lambda d, t: seen.append((d, t)))

    final = cached_path(server.url(), cache)
    assert result == FetchResult(server.url(), final, "fetched", len(body), verified=True)
    assert result.describe() == f"fetched {server.url()} -> {final} (3.0 MiB, sha256 verified)"
    assert final.read_bytes() == body
    assert final.name.endswith("-virtio-win.iso")
    assert files(cache) == [final.name], "no part or validator file is left"
    assert seen[0] == (0, len(body)) and seen[-1] == (len(body), len(body))
    assert [s.range for s in server.seen] == [None]

    again = fetch(server.url(), digest(body), cache)
    assert again == FetchResult(server.url(), final, "cached", len(body), verified=True)
    assert again.describe() == f"cached {server.url()} -> {final} (already there, sha256 verified)"
    unchecked = fetch(server.url(), None, cache)
    assert (unchecked.status, unchecked.verified) == ("cached", False)
    assert len(server.seen) == 1, "the cached file was not asked for again"


def test_a_bad_checksum_is_refused_and_the_download_deleted(serve: Serve, tmp_path: Path) -> None:
    body = body_of(MIB)
    server = serve("bad.iso", body)
    wrong = "0" * 64
    with pytest.raises(OperationError) as caught:
        fetch(server.url(), wrong, tmp_path)
    assert caught.value.message == (
        f"the download of {server.url()} has sha256 {digest(body)}, not {wrong} as the "
        "manifest says; it was deleted"
    )
    assert files(tmp_path) == []


def test_a_cached_file_that_does_not_match_is_downloaded_again(
    serve: Serve, tmp_path: Path
) -> None:
    body = body_of(MIB)
    server = serve("x.iso", body)
    final = cached_path(server.url(), tmp_path)
    final.write_bytes(b"stale")
    notes: list[str] = []
    result = fetch(server.url(), digest(body), tmp_path, note=notes.append)
    assert (result.status, result.verified) == ("fetched", True)
    assert final.read_bytes() == body
    assert notes == [
        f"{final} is in the cache but its sha256 is {digest(b'stale')}, "
        f"not {digest(body)}; downloading it again"
    ]


def test_an_interrupted_transfer_resumes_within_the_run(serve: Serve, tmp_path: Path) -> None:
    body = body_of(4 * MIB)
    server = serve("big.iso", body, drop={0: MIB + 7})
    notes: list[str] = []
    result = fetch(server.url(), digest(body), tmp_path, note=notes.append, sleep=no_sleep)
    assert (result.status, result.resumed, result.verified) == ("fetched", True, True)
    assert result.describe().endswith("(4.0 MiB, resumed, sha256 verified)")
    assert cached_path(server.url(), tmp_path).read_bytes() == body
    assert [(s.range, s.if_range) for s in server.seen] == [
        (None, None),
        (f"bytes={MIB + 7}-", ETAG),
    ]
    assert notes == [
        f"{server.url()}: the connection closed after {MIB + 7} of {4 * MIB} bytes; "
        f"continuing from byte {MIB + 7} in 250 ms"
    ]
    assert files(tmp_path) == [cache_name(server.url())]


def test_an_interrupted_transfer_is_resumed_by_the_next_run(serve: Serve, tmp_path: Path) -> None:
    body = body_of(2 * MIB)
    server = serve("half.iso", body, drop={0: MIB})
    with pytest.raises(OperationError) as caught:
        fetch(server.url(), None, tmp_path, attempts=1, sleep=no_sleep)
    assert caught.value.message == (
        f"cannot download {server.url()}: the connection closed after {MIB} of {2 * MIB} bytes "
        f"(1 attempt in a row made no progress, 1 in all; run fetch-iso again to continue from "
        f"{MIB} bytes)"
    )
    final = cached_path(server.url(), tmp_path)
    assert part_path(final).stat().st_size == MIB
    assert json.loads(validator_path(final).read_text()) == {
        "url": server.url(),
        "validator": ETAG,
    }

    result = fetch(server.url(), None, tmp_path)
    assert (result.status, result.resumed, result.size) == ("fetched", True, 2 * MIB)
    assert final.read_bytes() == body
    assert server.seen[-1].range == f"bytes={MIB}-"
    assert server.seen[-1].if_range == ETAG
    assert files(tmp_path) == [final.name]


def test_a_part_of_a_file_that_changed_on_the_server_is_not_spliced(
    serve: Serve, tmp_path: Path
) -> None:
    old, new = body_of(2 * MIB, seed=1), body_of(2 * MIB, seed=2)
    server = serve("moving.iso", old, drop={0: MIB})
    with pytest.raises(OperationError, match="connection closed"):
        fetch(server.url(), None, tmp_path, attempts=1, sleep=no_sleep)
    server.body, server.etag = new, '"bkt-test-v2"'

    result = fetch(server.url(), None, tmp_path)
    assert (result.status, result.resumed) == ("fetched", False)
    assert cached_path(server.url(), tmp_path).read_bytes() == new
    assert (server.seen[-1].range, server.seen[-1].if_range) == (f"bytes={MIB}-", ETAG)


def test_a_part_without_a_recorded_validator_is_started_over(serve: Serve, tmp_path: Path) -> None:
    body = body_of(2 * MIB)
    server = serve("old.iso", body)
    part_path(cached_path(server.url(), tmp_path)).write_bytes(b"x" * MIB)  # a crashed bkt
    notes: list[str] = []
    result = fetch(server.url(), digest(body), tmp_path, note=notes.append)
    assert (result.status, result.resumed, result.verified) == ("fetched", False, True)
    assert [s.range for s in server.seen] == [None]
    assert "starting over" in notes[0]

    # A server that gives no validator at all: resumed within the run, restarted next run.
    server.etag = None
    server.drop = {len(server.seen): MIB}
    again = cached_path(server.url("old.iso?again"), tmp_path / "b")
    with pytest.raises(OperationError, match="connection closed"):
        fetch(server.url("old.iso?again"), None, tmp_path / "b", attempts=1, sleep=no_sleep)
    assert part_path(again).stat().st_size == MIB
    assert not validator_path(again).exists()
    fetch(server.url("old.iso?again"), None, tmp_path / "b")
    assert server.seen[-1].range is None
    assert again.read_bytes() == body


def test_a_server_without_range_support_sends_the_whole_file_again(
    serve: Serve, tmp_path: Path
) -> None:
    body = body_of(2 * MIB)
    server = serve("whole.iso", body, ranges=False, drop={0: MIB // 2})
    result = fetch(server.url(), digest(body), tmp_path, sleep=no_sleep)
    assert (result.status, result.resumed, result.verified) == ("fetched", False, True)
    assert result.describe().endswith("(2.0 MiB, sha256 verified)")
    assert cached_path(server.url(), tmp_path).read_bytes() == body
    assert [s.range for s in server.seen] == [None, f"bytes={MIB // 2}-"]


def test_a_range_answered_at_the_wrong_offset_is_an_error_not_a_loop(
    serve: Serve, tmp_path: Path
) -> None:
    body = body_of(2 * MIB)
    server = serve("odd.iso", body, drop={0: MIB}, wrong_start=7)
    with pytest.raises(OperationError) as caught:
        fetch(server.url(), None, tmp_path, sleep=no_sleep)
    assert caught.value.message == (
        f"{server.url()} answered 206 from byte 7, not from byte {MIB} as asked"
    )
    assert len(server.seen) == 2
    kept = part_path(cached_path(server.url(), tmp_path))
    assert kept.stat().st_size == MIB, "kept for a later run"


def test_a_part_that_is_already_complete_is_accepted_on_416(serve: Serve, tmp_path: Path) -> None:
    body = body_of(MIB)
    server = serve("done.iso", body)
    final = cached_path(server.url(), tmp_path)
    part_path(final).write_bytes(body)
    validator_path(final).write_text(json.dumps({"url": server.url(), "validator": ETAG}))
    result = fetch(server.url(), digest(body), tmp_path)
    assert (result.status, result.verified) == ("fetched", True)
    assert server.seen[0].range == f"bytes={MIB}-"
    assert files(tmp_path) == [final.name]


def test_failures_are_bounded_and_reported(serve: Serve, tmp_path: Path) -> None:
    server = serve("there.iso", b"")
    with pytest.raises(OperationError) as caught:
        fetch(server.url("missing.iso"), None, tmp_path)
    assert caught.value.message == f"{server.url('missing.iso')} answered HTTP 404"

    # Nothing listens on the port of a closed server: a few attempts, then an error.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pauses: list[float] = []
    with pytest.raises(OperationError) as caught:
        fetch(f"http://127.0.0.1:{port}/gone.iso", None, tmp_path, sleep=pauses.append)
    assert "5 attempts in a row made no progress" in caught.value.message
    assert pauses == [0.25, 0.5, 1.0, 2.0]
    assert files(tmp_path) == []

    with pytest.raises(OperationError, match="must be an http:// or https:// URL"):
        fetch("ftp://example.org/x.iso", None, tmp_path)


def test_fetch_iso_fetches_every_url_source_and_reports_the_failures(
    serve: Serve, tmp_path: Path
) -> None:
    body = body_of(MIB)
    server = serve("good.iso", body)
    vm = validate_vm(
        {
            "memory_gb": 1,
            "vcpus": 1,
            "disk_path": "/srv/a.qcow2",
            "disk_size_gb": 1,
            "boot": "uefi",
            "network": "none",
            "graphics": "none",
            "iso_sources": [
                {"path": "/srv/local.iso"},
                {"url": server.url("missing.iso")},
                {"url": server.url(), "sha256": digest(body)},
            ],
        }
    )
    heard: list[FetchResult] = []
    progress: list[str] = []
    with pytest.raises(FetchFailed) as caught:
        fetch_iso(
            "win11",
            vm,
            tmp_path,
            lambda url, done, total: progress.append(url),
            on_result=heard.append,
        )
    assert caught.value.message == f"VM win11: 1 ISO not fetched: {server.url('missing.iso')}"
    assert [r.status for r in caught.value.results] == ["failed", "fetched"]
    assert caught.value.results == heard
    assert heard[0].error == f"{server.url('missing.iso')} answered HTTP 404"
    assert set(progress) == {server.url()}
    assert cached_path(server.url(), tmp_path).read_bytes() == body

    # Now everything is there: nothing fails, nothing is downloaded.
    vm_ok = vm.replace(iso_sources=vm.iso_sources[2:])
    assert [r.status for r in fetch_iso("win11", vm_ok, tmp_path)] == ["cached"]


def test_a_stalled_transfer_keeps_its_bytes_and_resumes_from_them(
    serve: Serve, tmp_path: Path
) -> None:
    # Less than one read's worth arrives, then nothing: the read times out mid-body.
    body = body_of(MIB)
    server = serve("stall.iso", body, stall={0: 100_000})
    notes: list[str] = []
    result = fetch(
        server.url(), digest(body), tmp_path, note=notes.append, timeout=2, sleep=no_sleep
    )
    assert (result.status, result.resumed, result.verified) == ("fetched", True, True)
    assert cached_path(server.url(), tmp_path).read_bytes() == body
    assert (server.seen[1].range, server.seen[1].if_range) == ("bytes=100000-", ETAG)
    assert notes[0].endswith("; continuing from byte 100000 in 250 ms"), notes


def test_urls_with_the_same_file_name_get_their_own_files(serve: Serve, tmp_path: Path) -> None:
    from bkt_vm_plugin.observe import resolve_context

    body_a, body_b = body_of(MIB, seed=1), body_of(MIB, seed=2)
    a, b = serve("install.iso", body_a), serve("install.iso", body_b)
    url_a, url_b = a.url("a/install.iso"), b.url("b/install.iso")

    def installer(url: str) -> VmDefinition:
        return validate_vm(
            {
                "memory_gb": 1,
                "vcpus": 1,
                "disk_path": "/srv/a.qcow2",
                "disk_size_gb": 1,
                "boot": "uefi",
                "network": "none",
                "graphics": "none",
                "iso_sources": [{"url": url}],
            }
        )

    (first,) = fetch_iso("a", installer(url_a), tmp_path)
    (second,) = fetch_iso("b", installer(url_b), tmp_path)
    assert (first.status, second.status) == ("fetched", "fetched")
    assert first.path != second.path
    assert (first.path.read_bytes(), second.path.read_bytes()) == (body_a, body_b)
    # sync's lookup finds the same file fetch-iso wrote: VM b gets installer b.
    for name, url, path in (("a", url_a, first.path), ("b", url_b, second.path)):
        ctx = resolve_context(
            name, installer(url), home=None, iso_cache=str(tmp_path), exists=os.path.exists
        )
        assert ctx.isos == (str(path),)


def test_redirects_stay_on_http_and_a_new_host_is_noted(serve: Serve, tmp_path: Path) -> None:
    body = body_of(MIB)
    there = serve("moved.iso", body, host="[::1]")
    here = serve("start.iso", b"")
    here.redirects = {
        "/isos/start.iso": (301, "/isos/step.iso"),  # relative: same host
        "/isos/step.iso": (307, there.url()),
    }
    notes: list[str] = []
    result = fetch(here.url(), digest(body), tmp_path, note=notes.append)
    assert (result.status, result.verified, result.path) == (
        "fetched",
        True,
        cached_path(here.url(), tmp_path),
    )
    assert result.path.read_bytes() == body
    assert [s.path for s in here.seen] == ["/isos/start.iso", "/isos/step.iso"]
    assert notes == [f"{here.url()}: redirected from host 127.0.0.1 to host ::1"]

    # A loop ends after a bounded number of redirects.
    here.redirects = {"/isos/start.iso": (302, here.url())}
    with pytest.raises(OperationError) as caught:
        fetch(here.url(), None, tmp_path / "loop")
    assert caught.value.message == f"{here.url()} was redirected more than 10 times"
    assert files(tmp_path / "loop") == []


def test_a_redirect_off_http_is_refused_before_anything_connects(
    serve: Serve, tmp_path: Path
) -> None:
    server = serve("x.iso", b"")
    with socket.socket() as ftp:
        ftp.bind(("127.0.0.1", 0))
        ftp.listen()
        target = f"ftp://127.0.0.1:{ftp.getsockname()[1]}/x.iso"
        server.redirects = {"/isos/x.iso": (302, target)}
        with pytest.raises(OperationError) as caught:
            fetch(server.url(), None, tmp_path, timeout=5, sleep=no_sleep)
        assert caught.value.message == (
            f"{server.url()} was redirected to {target}, which bkt does not follow (must be "
            "an http:// or https:// URL)"
        )
        ftp.setblocking(False)
        with pytest.raises(BlockingIOError):
            ftp.accept()  # nothing connected to the ftp server
    assert files(tmp_path) == [], "no empty part file is left"

    # A redirect that carries credentials is refused, and they are not shown.
    secret = f"http://user:secret@127.0.0.1:{server.port}/isos/y.iso"
    server.redirects = {"/isos/x.iso": (302, secret)}
    with pytest.raises(OperationError) as caught:
        fetch(server.url(), None, tmp_path, sleep=no_sleep)
    assert caught.value.message == (
        f"{server.url()} was redirected to http://***@127.0.0.1:{server.port}/isos/y.iso, "
        "which bkt does not follow (must not contain a user name or password "
        "(user:password@))"
    )


def test_an_interruption_before_the_first_byte_leaves_no_part_file(
    serve: Serve, tmp_path: Path
) -> None:
    server = serve("x.iso", body_of(MIB))

    def interrupt(done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(server.url(), None, tmp_path, interrupt)
    assert files(tmp_path) == []
