"""``bkt vm fetch-iso`` through the CLI, without libvirtd, against an HTTP server on 127.0.0.1
that the test starts (``serve`` from ``test_fetch_iso``): what it prints where, exit codes,
``-q``, an invalid manifest, a transfer resumed by the next run, and the progress bar on a
terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import termios
import threading
from pathlib import Path
from typing import Any

from bkt_vm_plugin.iso import cached_path
from tests.conftest import BKT, NO_PROXY, Run, RunBkt
from tests.integration.test_fetch_iso import ETAG, MIB, Serve, body_of, digest, files
from tests.integration.test_fetch_iso import serve as serve  # the fixture


class Setup:
    """A manifest directory whose VM ``win`` has a local ISO (which fetch-iso leaves alone)
    and the given URL sources, and an empty cache home."""

    def __init__(self, run_bkt: RunBkt, tmp_path: Path, urls: list[dict[str, Any]]) -> None:
        self.run_bkt = run_bkt
        self.manifests = tmp_path / "manifests"
        self.cache_home = tmp_path / "cache-home"
        self.write(urls)

    def write(self, urls: list[dict[str, Any]]) -> None:
        sources: list[dict[str, Any]] = [{"path": "/nowhere/local.iso"}, *urls]
        vm = {
            "memory_gb": 1,
            "vcpus": 1,
            "disk_path": "/nowhere/win.qcow2",
            "disk_size_gb": 1,
            "boot": "uefi",
            "network": "none",
            "graphics": "spice",
            "iso_sources": sources,
        }
        self.manifests.mkdir(parents=True, exist_ok=True)
        (self.manifests / "vms.json").write_text(json.dumps({"vms": {"win": vm}}, indent=2))

    @property
    def cache(self) -> Path:
        return self.cache_home / "bkt" / "isos"

    @property
    def env(self) -> dict[str, str]:
        return {**NO_PROXY, "XDG_CACHE_HOME": str(self.cache_home), "NO_COLOR": "1"}

    def run(self, *args: str) -> Run:
        return self.run_bkt("-C", str(self.manifests), *args, env=self.env)

    def fetch(self, *options: str, name: str = "win") -> Run:
        return self.run(*options, "vm", "fetch-iso", name)


def test_result_lines_on_stdout_and_nothing_on_stderr_off_a_terminal(
    serve: Serve, run_bkt: RunBkt, tmp_path: Path
) -> None:
    body = body_of(3 * MIB + 123)
    server = serve("virtio-win.iso", body)
    url = server.url()
    setup = Setup(run_bkt, tmp_path, [{"url": url, "sha256": digest(body).upper()}])
    file = cached_path(url, setup.cache)

    first = setup.fetch()
    assert (first.returncode, first.stderr) == (0, ""), "no progress bar off a terminal"
    assert first.stdout == f"fetched {url} -> {file} (3.0 MiB, sha256 verified)\n"
    assert file.read_bytes() == body
    assert files(setup.cache) == [file.name]

    again = setup.fetch()
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == f"cached {url} -> {file} (already there, sha256 verified)\n"
    assert len(server.seen) == 1, "the cached file was not asked for again"

    # Without a checksum a cached file is taken as it is.
    setup.write([{"url": url}])
    unchecked = setup.fetch()
    assert (unchecked.returncode, unchecked.stdout, unchecked.stderr) == (
        0,
        f"cached {url} -> {file} (already there)\n",
        "",
    )


def test_quiet_silences_the_result_lines(serve: Serve, run_bkt: RunBkt, tmp_path: Path) -> None:
    body = body_of(MIB)
    server = serve("q.iso", body)
    setup = Setup(run_bkt, tmp_path, [{"url": server.url(), "sha256": digest(body)}])
    for _ in range(2):  # fetched, then cached
        quiet = setup.fetch("-q")
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert cached_path(server.url(), setup.cache).read_bytes() == body
    assert len(server.seen) == 1


def test_a_vm_not_in_the_manifest_fails_with_a_hint(run_bkt: RunBkt, tmp_path: Path) -> None:
    setup = Setup(run_bkt, tmp_path, [{"url": "http://127.0.0.1:9/x.iso"}])
    result = setup.fetch(name="other")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: VM other is not in {setup.manifests / 'vms.json'}\n"
        "hint: `bkt vm status` lists the VMs\n"
    )
    assert not setup.cache.exists()


def test_a_vm_without_url_sources_has_nothing_to_fetch(run_bkt: RunBkt, tmp_path: Path) -> None:
    setup = Setup(run_bkt, tmp_path, [])
    result = setup.fetch()
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "",
        "VM win has no URL ISO sources: nothing to fetch\n",
    )


def test_the_manifest_is_validated_first(serve: Serve, run_bkt: RunBkt, tmp_path: Path) -> None:
    server = serve("v.iso", body_of(MIB))
    setup = Setup(run_bkt, tmp_path, [{"url": server.url()}])
    manifest = setup.manifests / "vms.json"
    document = json.loads(manifest.read_text())
    document["vms"]["win"]["vcpus"] = "two"
    manifest.write_text(json.dumps(document, indent=2))

    result = setup.fetch()
    assert (result.returncode, result.stdout) == (2, "")
    assert f"{manifest}:" in result.stderr and "vms.win.vcpus" in result.stderr, result.stderr
    assert result.stderr.endswith(
        f"error: {manifest} is not valid (1 error); nothing was changed\n"
    )
    assert server.seen == [], "nothing was downloaded"
    assert not setup.cache.exists()


def test_an_interrupted_transfer_is_resumed_by_the_next_run(
    serve: Serve, run_bkt: RunBkt, tmp_path: Path
) -> None:
    body = body_of(2 * MIB)
    # The first answer breaks off after 1 MiB, the next four send nothing: five attempts in a
    # row without progress end the run, keeping the part file for the next one.
    server = serve("half.iso", body, drop={0: MIB, 1: 0, 2: 0, 3: 0, 4: 0})
    url = server.url()
    setup = Setup(run_bkt, tmp_path, [{"url": url, "sha256": digest(body)}])

    broken = setup.fetch()
    assert (broken.returncode, broken.stdout) == (1, ""), broken.stderr
    lines = broken.stderr.splitlines()
    assert lines[0] == (
        f"{url}: the connection closed after {MIB} of {2 * MIB} bytes; "
        f"continuing from byte {MIB} in 250 ms"
    )
    assert lines[-3].startswith(f"error: VM win: cannot download {url}: "), lines
    assert lines[-3].endswith(f"run fetch-iso again to continue from {MIB} bytes)"), lines
    assert lines[-2:] == [
        f"error: VM win: 1 ISO not fetched: {url}",
        "hint: run `bkt vm fetch-iso` again to continue interrupted downloads",
    ]
    file = cached_path(url, setup.cache)
    assert files(setup.cache) == [f".{file.name}.part", f".{file.name}.part.validator"]
    assert (setup.cache / f".{file.name}.part").stat().st_size == MIB

    resumed = setup.fetch()
    assert (resumed.returncode, resumed.stderr) == (0, "")
    assert resumed.stdout == f"fetched {url} -> {file} (2.0 MiB, resumed, sha256 verified)\n"
    assert file.read_bytes() == body
    assert (server.seen[-1].range, server.seen[-1].if_range) == (f"bytes={MIB}-", ETAG)
    assert files(setup.cache) == [file.name]


def test_a_bad_checksum_is_refused_and_the_download_deleted(
    serve: Serve, run_bkt: RunBkt, tmp_path: Path
) -> None:
    body = body_of(MIB)
    server = serve("bad.iso", body)
    url, wrong = server.url(), "0" * 64
    setup = Setup(run_bkt, tmp_path, [{"url": url, "sha256": wrong}])

    result = setup.fetch()
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: VM win: the download of {url} has sha256 {digest(body)}, not {wrong} as the "
        "manifest says; it was deleted\n"
        f"error: VM win: 1 ISO not fetched: {url}\n"
        "hint: run `bkt vm fetch-iso` again to continue interrupted downloads\n"
    )
    assert files(setup.cache) == [], "nothing is left behind"


def test_one_failure_does_not_stop_the_other_sources(
    serve: Serve, run_bkt: RunBkt, tmp_path: Path
) -> None:
    server = serve("there.iso", body_of(MIB))
    missing, there = server.url("missing.iso"), server.url()
    setup = Setup(run_bkt, tmp_path, [{"url": missing}, {"url": there}])

    result = setup.fetch()
    assert result.returncode == 1
    assert result.stdout == f"fetched {there} -> {cached_path(there, setup.cache)} (1.0 MiB)\n"
    assert result.stderr.splitlines()[:2] == [
        f"error: VM win: {missing} answered HTTP 404",
        f"error: VM win: 1 ISO not fetched: {missing}",
    ]
    assert files(setup.cache) == [cached_path(there, setup.cache).name]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_a_terminal_gets_a_progress_bar_on_stderr(
    serve: Serve, run_bkt: RunBkt, tmp_path: Path
) -> None:
    body = body_of(2 * MIB)
    server = serve("tty.iso", body)
    setup = Setup(run_bkt, tmp_path, [{"url": server.url()}])
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
    environ.update(setup.env, TERM="xterm-256color", COLUMNS="100", LINES="24")

    # stderr alone is a terminal; stdout stays a pipe.
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (24, 100))
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with subprocess.Popen(
            [BKT, "-C", str(setup.manifests), "vm", "fetch-iso", "win"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=environ,
            cwd=tmp_path,
        ) as proc:
            os.close(slave)
            stdout, _ = proc.communicate(timeout=120)
        reader.join(timeout=10)
    finally:
        os.close(master)

    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    file = cached_path(server.url(), setup.cache)
    assert stdout.decode() == f"fetched {server.url()} -> {file} (2.0 MiB)\n"
    plain = ANSI.sub("", text)
    assert "tty.iso" in plain and "2.0/2.0 MiB" in plain, repr(text)
    # The bar is erased when the download is done: what the terminal gets last is the erase
    # of the bar's line.
    assert text.endswith("\x1b[2K"), repr(text)
    assert text.rindex("\x1b[2K") > text.rindex("2.0/2.0 MiB"), repr(text)
    assert "fetched" not in text, "result lines stay on stdout"


def test_a_malformed_or_credentialed_url_is_refused_at_its_place_in_the_file(
    run_bkt: RunBkt, tmp_path: Path
) -> None:
    setup = Setup(
        run_bkt,
        tmp_path,
        [{"url": "http://[::1/x.iso"}, {"url": "https://user:secret@127.0.0.1:9/x.iso"}],
    )
    manifest = setup.manifests / "vms.json"
    result = setup.fetch()
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"{manifest}:16:18: vms.win.iso_sources[1].url: URL has an [IPv6] address without "
        "its closing ]\n"
        f"{manifest}:19:18: vms.win.iso_sources[2].url: must not contain a user name or "
        "password (user:password@)\n"
        f"error: {manifest} is not valid (2 errors); nothing was changed\n"
    )
    assert not setup.cache.exists(), "no part file, no cache directory"


def test_a_redirect_to_another_host_is_noted_on_stderr(
    serve: Serve, run_bkt: RunBkt, tmp_path: Path
) -> None:
    body = body_of(MIB)
    there = serve("r.iso", body, host="[::1]")
    here = serve("r.iso", b"", redirects={"/isos/r.iso": (302, there.url())})
    url = here.url()
    setup = Setup(run_bkt, tmp_path, [{"url": url, "sha256": digest(body)}])
    result = setup.fetch()
    file = cached_path(url, setup.cache)
    assert (result.returncode, result.stderr) == (
        0,
        f"{url}: redirected from host 127.0.0.1 to host ::1\n",
    )
    assert result.stdout == f"fetched {url} -> {file} (1.0 MiB, sha256 verified)\n"
    assert file.read_bytes() == body
