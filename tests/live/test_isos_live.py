"""Installer ISOs against the real libvirt daemon, through the CLI: CD-ROMs in manifest order,
a missing local ISO left out with a warning (and attached once it exists), a URL source
attached only once ``bkt vm fetch-iso`` has cached it (after a refused bad checksum and an
interrupted transfer), never downloaded by sync, and capture then sync a no-op for a VM whose
ISO is missing.

The ISOs are a few KiB of arbitrary bytes: a CD-ROM that is never booted needs no file
system. The ISO cache and the ISOs live in directories QEMU (the libvirt-qemu user) can reach.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bkt_vm_plugin.iso import cached_path
from tests.conftest import NO_PROXY, Run, RunBkt
from tests.integration.test_fetch_iso import ETAG, MIB, Serve, body_of, digest
from tests.integration.test_fetch_iso import serve as serve  # the fixture
from tests.livelib import domains, inactive_xml, unique_name, uri, vm, write_vms

pytestmark = pytest.mark.libvirtd


Bkt = Callable[..., Run]


def reachable_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def cache_home() -> Iterator[Path]:
    """``XDG_CACHE_HOME`` for every bkt the test runs: the ISO cache is ``bkt/isos`` in it."""
    path = reachable_dir("bkt-test-cache-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bkt(run_bkt: RunBkt, tmp_path: Path, cache_home: Path) -> Bkt:
    """``bkt -c URI -C tmp/manifests ARGS`` with the test's ISO cache."""
    env = {**NO_PROXY, "NO_COLOR": "1", "XDG_CACHE_HOME": str(cache_home)}

    def run(*args: str) -> Run:
        return run_bkt("-c", uri(), "-C", str(tmp_path / "manifests"), *args, env=env)

    return run


def iso_image(path: Path, size: int = 16 * 1024) -> Path:
    path.write_bytes(body_of(size, seed=len(path.name)))
    return path


def cdroms(name: str) -> list[dict[str, Any]]:
    """The domain's CD-ROMs in document order: source file, target, bus, read-only."""
    domain = etree.fromstring(inactive_xml(name).encode())
    found = []
    for disk in domain.iterfind("devices/disk[@device='cdrom']"):
        source, target = disk.find("source"), disk.find("target")
        assert source is not None and target is not None
        found.append(
            {
                "file": source.get("file"),
                "dev": target.get("dev"),
                "bus": target.get("bus"),
                "readonly": disk.find("readonly") is not None,
            }
        )
    return found


def cdrom_files(name: str) -> list[str]:
    return [str(c["file"]) for c in cdroms(name)]


def boot_order(name: str) -> list[str]:
    domain = etree.fromstring(inactive_xml(name).encode())
    return [str(b.get("dev")) for b in domain.iterfind("os/boot")]


def manifest(tmp_path: Path, name: str, disks: Path, sources: list[dict[str, Any]]) -> Path:
    return write_vms(tmp_path / "manifests", {name: vm(disks, name, iso_sources=sources)})


def missing_warning(name: str, path: Path) -> str:
    return f"warning: VM {name}: ISO {path} does not exist; its CD-ROM is left out until it does\n"


def uncached_warning(name: str, url: str, cached: Path) -> str:
    return (
        f"warning: VM {name}: ISO {url} is not in the ISO cache ({cached}); its CD-ROM is left "
        f"out until it is: `bkt vm fetch-iso {name}` downloads it\n"
    )


def test_local_isos_are_read_only_sata_cdroms_in_manifest_order(
    bkt: Bkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("iso-order")
    isos = [iso_image(disks / f) for f in ("z installer.iso", "a-drivers.iso", "m-tools.iso")]
    with domains(name):
        manifest(tmp_path, name, disks, [{"path": str(p)} for p in isos])
        result = bkt("vm", "sync")
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
        assert f"+ create {name}\n" in result.stdout
        assert cdroms(name) == [
            {"file": str(path), "dev": dev, "bus": "sata", "readonly": True}
            for path, dev in zip(isos, ["sda", "sdb", "sdc"], strict=True)
        ]
        assert boot_order(name) == ["hd", "cdrom"]
        status = bkt("vm", "status", name)
        assert status.stdout.splitlines()[1].endswith("in sync"), status.stdout
        again = bkt("vm", "sync")
        assert (again.returncode, again.stdout) == (0, "nothing to do: 1 VM in sync\n")


def test_a_missing_local_iso_is_left_out_until_it_exists(
    bkt: Bkt, tmp_path: Path, disks: Path
) -> None:
    name = unique_name("iso-missing")
    a, later, b = disks / "a installer.iso", disks / "later.iso", disks / "b-drivers.iso"
    iso_image(a)
    iso_image(b)
    with domains(name):
        manifest(tmp_path, name, disks, [{"path": str(p)} for p in (a, later, b)])
        result = bkt("vm", "sync")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr == missing_warning(name, later)
        assert cdrom_files(name) == [str(a), str(b)]
        status = bkt("vm", "status", name)
        assert status.stdout.splitlines()[1].endswith("in sync"), "a CD-ROM left out is no drift"
        again = bkt("vm", "sync")
        assert (again.returncode, again.stdout) == (0, "nothing to do: 1 VM in sync\n")

        # The file arrives: now its CD-ROM is wanted, in its place.
        iso_image(later)
        status = bkt("vm", "status", name)
        assert "drift: iso_sources" in status.stdout, status.stdout
        result = bkt("vm", "sync")
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
        assert f"    iso_sources: {a}, {b} -> {a}, {later}, {b}\n" in result.stdout, result.stdout
        assert cdrom_files(name) == [str(a), str(later), str(b)]
        assert [c["dev"] for c in cdroms(name)] == ["sda", "sdb", "sdc"]
        assert boot_order(name) == ["hd", "cdrom"]
        status = bkt("vm", "status", name)
        assert status.stdout.splitlines()[1].endswith("in sync"), status.stdout


def test_a_url_iso_is_attached_once_fetch_iso_has_cached_it(
    bkt: Bkt, serve: Serve, tmp_path: Path, disks: Path, cache_home: Path
) -> None:
    name = unique_name("iso-url")
    body = body_of(3 * MIB, seed=7)
    server = serve("virtio-win.iso", body)
    local = iso_image(disks / "installer.iso")
    url = server.url("stable/virtio-win.iso")
    cached = cached_path(url, cache_home / "bkt" / "isos")
    with domains(name):
        manifest(tmp_path, name, disks, [{"path": str(local)}, {"url": url, "sha256": "0" * 64}])

        # Sync never downloads: it warns, says how to get the ISO, and leaves the CD-ROM out.
        result = bkt("vm", "sync")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stderr == uncached_warning(name, url, cached)
        assert server.seen == [], "sync asked the server nothing"
        assert cdrom_files(name) == [str(local)]
        status = bkt("vm", "status", name)
        assert status.stdout.splitlines()[1].endswith("in sync"), status.stdout

        # A wrong checksum: refused, and nothing reaches the cache or the domain.
        refused = bkt("vm", "fetch-iso", name)
        assert (refused.returncode, refused.stdout) == (1, ""), refused.stderr
        assert "as the manifest says; it was deleted\n" in refused.stderr, refused.stderr
        assert f"error: VM {name}: 1 ISO not fetched: {url}\n" in refused.stderr
        assert not cached.exists()
        assert sorted(p.name for p in cached.parent.iterdir()) == []
        again = bkt("vm", "sync")
        assert (again.returncode, again.stdout) == (0, "nothing to do: 1 VM in sync\n")

        # The right checksum, from a server whose first answer breaks off after 1 MiB:
        # fetched (the interrupted transfer continued), then attached.
        server.drop = {len(server.seen): MIB}
        manifest(
            tmp_path, name, disks, [{"path": str(local)}, {"url": url, "sha256": digest(body)}]
        )
        fetched = bkt("vm", "fetch-iso", name)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert fetched.stdout == f"fetched {url} -> {cached} (3.0 MiB, resumed, sha256 verified)\n"
        assert f"continuing from byte {MIB}" in fetched.stderr, fetched.stderr
        assert (server.seen[-1].range, server.seen[-1].if_range) == (f"bytes={MIB}-", ETAG)
        assert cached.read_bytes() == body
        asked = len(server.seen)

        status = bkt("vm", "status", name)
        assert "drift: iso_sources" in status.stdout, status.stdout
        result = bkt("vm", "sync")
        assert (result.returncode, result.stderr) == (0, ""), "no warning once it is cached"
        assert f"    iso_sources: {local} -> {local}, {cached}\n" in result.stdout, result.stdout
        assert cdroms(name) == [
            {"file": str(local), "dev": "sda", "bus": "sata", "readonly": True},
            {"file": str(cached), "dev": "sdb", "bus": "sata", "readonly": True},
        ]
        status = bkt("vm", "status", name)
        assert status.stdout.splitlines()[1].endswith("in sync"), status.stdout

        # Cached now: fetch-iso does not ask the server again.
        cached_run = bkt("vm", "fetch-iso", name)
        assert cached_run.stdout == f"cached {url} -> {cached} (already there, sha256 verified)\n"
        assert len(server.seen) == asked


def test_two_vms_whose_installers_share_a_file_name_each_get_their_own(
    bkt: Bkt, serve: Serve, tmp_path: Path, disks: Path, cache_home: Path
) -> None:
    a, b = unique_name("iso-a"), unique_name("iso-b")
    body_a, body_b = body_of(64 * 1024, seed=1), body_of(64 * 1024, seed=2)
    server_a, server_b = serve("install.iso", body_a), serve("install.iso", body_b)
    url_a, url_b = server_a.url("a/install.iso"), server_b.url("b/install.iso")
    cache = cache_home / "bkt" / "isos"
    with domains(a, b):
        write_vms(
            tmp_path / "manifests",
            {
                a: vm(disks, a, iso_sources=[{"url": url_a}]),
                b: vm(disks, b, iso_sources=[{"url": url_b}]),
            },
        )
        for name, url in ((a, url_a), (b, url_b)):
            fetched = bkt("vm", "fetch-iso", name)
            assert fetched.stdout.startswith(f"fetched {url} -> "), fetched.stdout
        result = bkt("vm", "sync")
        assert (result.returncode, result.stderr) == (0, ""), result.stdout + result.stderr
        assert cdrom_files(a) == [str(cached_path(url_a, cache))]
        assert cdrom_files(b) == [str(cached_path(url_b, cache))]
        assert Path(cdrom_files(b)[0]).read_bytes() == body_b, "VM b gets installer b"


def test_capture_then_sync_is_a_no_op_for_a_vm_with_a_missing_iso(
    bkt: Bkt, tmp_path: Path, disks: Path, cache_home: Path
) -> None:
    name = unique_name("iso-capture")
    here, gone = iso_image(disks / "here.iso"), disks / "gone.iso"
    url = "http://127.0.0.1:9/never-fetched.iso"
    sources = [{"path": str(here)}, {"path": str(gone)}, {"url": url}]
    with domains(name):
        path = manifest(tmp_path, name, disks, sources)
        result = bkt("vm", "sync")
        assert result.returncode == 0, result.stdout + result.stderr
        assert cdrom_files(name) == [str(here)]
        before = inactive_xml(name)

        captured = bkt("vm", "capture", name)
        assert captured.returncode == 0, captured.stdout + captured.stderr
        document = json.loads(path.read_text())
        assert document["vms"][name]["iso_sources"] == sources, "the sources are kept"

        after = bkt("vm", "sync")
        assert (after.returncode, after.stdout) == (0, "nothing to do: 1 VM in sync\n"), (
            after.stdout + after.stderr
        )
        assert after.stderr == missing_warning(name, gone) + uncached_warning(
            name, url, cached_path(url, cache_home / "bkt" / "isos")
        )
        assert inactive_xml(name) == before
