"""Disk provisioning against the real libvirt daemon, qemu-img and file system.

Each test that needs a storage pool defines its own dir pool (``bkt-test-<random>``) in a
temporary directory and removes it afterwards, whatever happened.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bkt_core.errors import OperationError
from bkt_core.host import Host
from bkt_core.process import Completed, SubprocessRunner
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.provision import (
    DiskCreation,
    DiskRequest,
    ProvisionContext,
    disk_format,
    plan_disk,
    provision_all,
)
from bkt_vm_plugin.virsh import Virsh

pytestmark = pytest.mark.libvirtd

URI = os.environ.get("BKT_TEST_URI", "qemu:///system")
IS_ROOT = os.geteuid() == 0


@dataclass
class Counting:
    """The real runner, counting processes by program."""

    inner: SubprocessRunner = field(default_factory=SubprocessRunner)
    programs: list[str] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        self.programs.append(argv[0])
        return self.inner.run(argv, timeout=timeout, input=input)

    def count(self, program: str) -> int:
        return self.programs.count(program)


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, check=check
    )


def qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


@dataclass(frozen=True)
class ScratchPool:
    name: str
    target: Path


PoolFactory = Callable[..., ScratchPool]


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator[PoolFactory]:
    """``make_pool(active=True)`` defines (and builds and starts) a dir pool of its own."""
    made: list[str] = []

    def make(active: bool = True) -> ScratchPool:
        name = f"bkt-test-{secrets.token_hex(4)}"
        target = tmp_path / name
        made.append(name)
        virsh("pool-define-as", name, "dir", "--target", str(target))
        virsh("pool-build", name)
        if active:
            virsh("pool-start", name)
        return ScratchPool(name, target)

    try:
        yield make
    finally:
        for name in made:
            virsh("pool-destroy", name, check=False)
            virsh("pool-undefine", name, check=False)


@pytest.fixture
def runner() -> Counting:
    return Counting()


@pytest.fixture
def ctx(runner: Counting) -> ProvisionContext:
    return ProvisionContext(Virsh(runner, URI))


def default_host() -> Host:
    return Host(entry_points=False, plugins=default_plugins())


def plan(
    ctx: ProvisionContext, path: Path | str, create: bool = True, size: int = 1
) -> DiskCreation | None:
    return plan_disk(default_host(), "t", None, DiskRequest("t", str(path), size, create), ctx)


def planned(ctx: ProvisionContext, path: Path, size: int) -> DiskCreation:
    creation = plan(ctx, path, size=size)
    assert creation is not None
    return creation


def refusal(ctx: ProvisionContext, path: Path | str, create: bool = True) -> str:
    with pytest.raises(OperationError) as caught:
        plan(ctx, path, create)
    return caught.value.message


def volumes(pool: str) -> str:
    return virsh("vol-list", "--pool", pool).stdout


def test_a_disk_in_a_pool_is_a_volume_listed_without_a_refresh(
    make_pool: PoolFactory, ctx: ProvisionContext, runner: Counting
) -> None:
    pool = make_pool()
    disks = [pool.target / f"d{i}.qcow2" for i in range(10)]
    creations = [planned(ctx, disk, 2) for disk in disks]
    assert creations == [DiskCreation(str(d), 2, pool=pool.name) for d in disks]
    assert runner.count("virsh") == 2, "the pools were read once, in two processes"

    assert provision_all(default_host(), creations, ctx) == {str(d): None for d in disks}
    assert runner.count("virsh") == 3, "ten vol-create-as in one process"
    assert runner.count("qemu-img") == 0
    listed = volumes(pool.name)
    for disk in disks:
        assert disk.name in listed
        info = qemu_img_info(disk)
        assert (info["format"], info["virtual-size"]) == ("qcow2", 2 << 30)
    assert disk_format(str(disks[0]), ctx) == "qcow2"


def test_outside_any_pool_the_disk_is_made_with_qemu_img(
    tmp_path: Path, ctx: ProvisionContext, runner: Counting
) -> None:
    disks = [tmp_path / f"d{i}.qcow2" for i in range(3)]
    creations = [planned(ctx, disk, 3) for disk in disks]
    assert creations == [DiskCreation(str(d), 3) for d in disks]
    assert provision_all(default_host(), creations, ctx) == {str(d): None for d in disks}
    assert runner.count("qemu-img") == 6, "for each disk: create, and info to check it"
    for disk in disks:
        info = qemu_img_info(disk)
        assert (info["format"], info["virtual-size"]) == ("qcow2", 3 << 30)
        assert disk.stat().st_mode & 0o777 == 0o600
    assert disk_format(str(disks[0]), ctx) == "qcow2"


def test_every_path_safety_rule_refuses_and_creates_nothing(
    tmp_path: Path, make_pool: PoolFactory, ctx: ProvisionContext
) -> None:
    sleepy = make_pool(active=False)
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "adir.qcow2").mkdir()
    (tmp_path / "link.qcow2").symlink_to(tmp_path / "link-target.qcow2")
    (tmp_path / "gone").symlink_to(tmp_path / "no-such-dir")
    os.mkfifo(tmp_path / "fifo.qcow2")
    before = sorted(p.name for p in tmp_path.iterdir())
    t = tmp_path
    cases = {
        t / "new" / "a.qcow2": f"cannot create disk {t}/new/a.qcow2: directory {t}/new does "
        "not exist (bkt creates no directories: make it, or fix disk_path)",
        t / "file" / "a.qcow2": f"cannot create disk {t}/file/a.qcow2: {t}/file is not a "
        "directory",
        t / "link.qcow2": f"cannot create disk {t}/link.qcow2: it is a symbolic link to "
        f"{t}/link-target.qcow2, which does not exist, and bkt does not create disks through "
        "symbolic links (point disk_path at the real file)",
        t / "gone" / "a.qcow2": f"cannot create disk {t}/gone/a.qcow2: directory {t}/gone is a "
        f"symbolic link to {t}/no-such-dir, which does not exist",
        t / "adir.qcow2": f"disk {t}/adir.qcow2 is a directory, not a disk image",
        Path("/dev/null"): "disk /dev/null is a device; bkt manages disk image files "
        "(qcow2 or raw)",
        t / "fifo.qcow2": f"disk {t}/fifo.qcow2 is not a regular file",
        sleepy.target / "a.qcow2": f"cannot create disk {sleepy.target}/a.qcow2: its directory "
        f"{sleepy.target} is the target of storage pool {sleepy.name}, which is not active "
        f"(`virsh pool-start {sleepy.name}` starts it)",
    }
    for disk, message in cases.items():
        assert refusal(ctx, disk) == message, disk
    assert refusal(ctx, "relative/a.qcow2") == "disk relative/a.qcow2 is not an absolute path"
    assert refusal(ctx, f"{t}/x/../a.qcow2") == f'disk {t}/x/../a.qcow2 must not contain ".."'
    assert refusal(ctx, t / "absent.qcow2", create=False) == (
        f'disk {t}/absent.qcow2 does not exist: set "create_if_missing": true to create it, '
        "or create it yourself"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing appeared"
    assert list(sleepy.target.iterdir()) == []


@pytest.mark.skipif(IS_ROOT, reason="root may write to every directory")
def test_a_directory_the_user_cannot_write_is_refused(
    tmp_path: Path, ctx: ProvisionContext
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert refusal(ctx, locked / "a.qcow2") == (
        f"cannot create disk {locked}/a.qcow2: you cannot write to {locked} and no libvirt "
        "storage pool has it as its target"
    )


def test_existing_disks_are_never_touched(
    tmp_path: Path, make_pool: PoolFactory, ctx: ProvisionContext
) -> None:
    pool = make_pool()
    outside, raw = tmp_path / "old.qcow2", tmp_path / "old.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(outside), "1G"], check=True)
    raw.write_bytes(b"\0" * 4096)
    virsh("vol-create-as", pool.name, "inpool.qcow2", "1GiB", "--format", "qcow2")
    inpool = pool.target / "inpool.qcow2"
    disks = [outside, raw, inpool]
    before = {d: (d.stat().st_mtime_ns, d.read_bytes()) for d in disks}
    for disk in disks:
        assert plan(ctx, disk, size=50) is None
    assert [disk_format(str(d), ctx) for d in disks] == ["qcow2", "raw", "qcow2"]
    # Creations for them anyway (as if they appeared after planning): refused, not overwritten.
    creations = [
        DiskCreation(str(outside), 50),
        DiskCreation(str(raw), 50),
        DiskCreation(str(inpool), 50, pool=pool.name),
    ]
    results = provision_all(default_host(), creations, ctx)
    assert results == {
        str(d): f"disk {d} appeared after planning; it is left as it is" for d in disks
    }
    assert {d: (d.stat().st_mtime_ns, d.read_bytes()) for d in disks} == before


@pytest.fixture
def overlay_site(
    plugin_site: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    site = plugin_site("tests/plugins/bkt-overlay")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [m for m in sys.modules if m == "bkt_overlay" or m.startswith("bkt_overlay.")]:
        del sys.modules[name]


def test_a_plugin_installed_with_pip_takes_over_the_disks_it_wants(
    tmp_path: Path, make_pool: PoolFactory, ctx: ProvisionContext, overlay_site: Path
) -> None:
    host = Host()  # the entry points: the default plugins and bkt-overlay
    infos = {info.name: info for info in host.plugins()}
    assert infos["overlay"].distribution == "bkt-overlay"
    assert infos["overlay"].hooks == ("bkt_disk_plan", "bkt_disk_provision")

    pool = make_pool()
    base = pool.target / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "2G"], check=True)
    overlay, plain = pool.target / "win-overlay.qcow2", pool.target / "plain.qcow2"
    requests = [DiskRequest("a", str(overlay), 9, True), DiskRequest("b", str(plain), 1, True)]
    first, second = (plan_disk(host, r.vm, None, r, ctx) for r in requests)
    assert first is not None and second is not None
    assert (first.plugin, first.describe()) == (
        "overlay",
        f"create disk {overlay} (qcow2 overlay on {base})",
    )
    assert second == DiskCreation(str(plain), 1, pool=pool.name)

    assert provision_all(host, [first, second], ctx) == {str(overlay): None, str(plain): None}
    info = qemu_img_info(overlay)
    assert (info["format"], info["backing-filename"]) == ("qcow2", str(base))
    assert info["virtual-size"] == 9 << 30, "the overlay has the size planned, not its base's"
    assert "plain.qcow2" in volumes(pool.name)

    # Blocked, it plans nothing: the default takes its disks too.
    other = DiskRequest("c", str(pool.target / "other-overlay.qcow2"), 1, True)
    without = Host(disabled=["overlay"])
    assert plan_disk(without, "c", None, other, ctx) == DiskCreation(other.path, 1, pool=pool.name)
    # And an embedder can hand it over explicitly, without entry points.
    bkt_overlay = importlib.import_module("bkt_overlay")
    explicit = Host(entry_points=False, plugins=[*default_plugins(), ("overlay", bkt_overlay)])
    creation = plan_disk(explicit, "c", None, other, ctx)
    assert creation is not None and creation.plugin == "overlay"


# -- hardening: redirection, interruption, empty and system files, lying plugins -------------


NOBODY_CAN_ACT = IS_ROOT and shutil.which("runuser") is not None


def as_nobody(*argv: str) -> None:
    """Runs ``argv`` as user nobody: another user on the host, acting against bkt."""
    subprocess.run(["runuser", "-u", "nobody", "--", *argv], check=True, capture_output=True)


@dataclass
class Attacking(Counting):
    """The real runner, which lets ``attack`` run just before ``qemu-img create`` starts:
    when bkt's own file or directory for the new disk exists (there was a placeholder at the
    disk's name), and before the image is written."""

    attack: Callable[[], None] | None = None

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        if argv[:2] == ("qemu-img", "create") and self.attack is not None:
            self.attack()
        return super().run(argv, timeout=timeout, input=input)


@pytest.mark.skipif(not NOBODY_CAN_ACT, reason="needs root and runuser to act as user nobody")
def test_another_user_cannot_redirect_a_new_disk_onto_a_file(disks: Path) -> None:
    """In a directory everyone may write (0777, no sticky bit), user nobody renamed a link to
    root's file over bkt's placeholder while qemu-img ran, and qemu-img overwrote the file
    with a qcow2 header. Now such a directory is refused while planning, and again when the
    disk is created, so the attack finds nothing to swap."""
    victim = disks / "victim"
    victim.write_bytes(b"precious")
    shared = disks / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    disk = shared / "a.qcow2"

    def swap() -> None:
        as_nobody("ln", "-s", str(victim), str(shared / "swap"))
        as_nobody("mv", "-f", "-T", str(shared / "swap"), str(disk))

    runner = Attacking(attack=swap)
    ctx = ProvisionContext(Virsh(runner, URI))
    rule = (
        f"directory {shared} (mode 0777) is writable by group or others without the sticky "
        f"bit, so they could replace {disk}"
    )
    # As if planned before the directory was opened up: creation checks again.
    results = provision_all(default_host(), [DiskCreation(str(disk), 1)], ctx)
    assert victim.read_bytes() == b"precious", "root's file was overwritten"
    assert results == {str(disk): f"cannot create disk {disk}: {rule}"}
    assert list(shared.iterdir()) == []
    assert refusal(ctx, disk) == (
        f"cannot create disk {disk}: {rule}, and bkt creates disks only where no one but you "
        "and root can redirect them"
    )


@pytest.mark.skipif(not NOBODY_CAN_ACT, reason="needs root and runuser to act as user nobody")
def test_a_name_another_user_takes_during_creation_is_left_to_them(disks: Path) -> None:
    """In a shared directory with the sticky bit (as /tmp), another user may still create the
    disk's name while qemu-img runs: the finished image is linked to its name, which never
    replaces anything, so their link stays and the file it points at is untouched."""
    victim = disks / "victim"
    victim.write_bytes(b"precious")
    shared = disks / "sticky"
    shared.mkdir()
    shared.chmod(0o1777)
    disk = shared / "a.qcow2"
    runner = Attacking(attack=lambda: as_nobody("ln", "-s", str(victim), str(disk)))
    ctx = ProvisionContext(Virsh(runner, URI))
    creation = planned(ctx, disk, 1)
    assert provision_all(default_host(), [creation], ctx) == {
        str(disk): f"disk {disk} appeared after planning; it is left as it is"
    }
    assert runner.count("qemu-img") == 1, "qemu-img ran, into bkt's private directory"
    assert victim.read_bytes() == b"precious"
    assert [p.name for p in shared.iterdir()] == ["a.qcow2"] and disk.is_symlink()
    assert disk.lstat().st_uid == 65534, "nobody's link, left as it is"


QEMU_IMG_THAT_HANGS = """#!/bin/sh
if [ "$1" = create ]; then
    : > "$HANG_MARKER"
    exec sleep 600
fi
exec {qemu_img} "$@"
"""


def test_ctrl_c_during_qemu_img_leaves_no_disk_for_the_next_sync(
    tmp_path: Path, disks: Path
) -> None:
    """Ctrl-C while qemu-img ran left the 0-byte placeholder, which the next sync took for a
    raw disk: `1 created`, and status said in sync. Now the disk's name stays free, and the
    next sync creates the disk."""
    from tests.conftest import BKT
    from tests.livelib import domains, unique_name, vm, write_vms

    name = unique_name("ctrlc")
    manifests = tmp_path / "manifests"
    write_vms(manifests, {name: vm(disks, name)})
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    qemu_img = wrapper / "qemu-img"
    qemu_img.write_text(QEMU_IMG_THAT_HANGS.format(qemu_img=shutil.which("qemu-img")))
    qemu_img.chmod(0o755)
    marker = tmp_path / "qemu-img-started"
    env = {**os.environ, "PATH": f"{wrapper}:{os.environ['PATH']}", "HANG_MARKER": str(marker)}
    argv = [BKT, "-c", URI, "-C", str(manifests), "vm", "sync"]
    disk = disks / f"{name}.qcow2"
    with domains(name):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            while not marker.exists() and proc.poll() is None:
                time.sleep(0.05)
            assert marker.exists(), proc.communicate()
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode != 0
        assert list(disks.iterdir()) == [], "no disk, no placeholder, no private directory"
        assert name not in virsh("list", "--all", "--name").stdout.split()
        again = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        info = qemu_img_info(disk)
        assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 30)


def sync_cli(
    tmp_path: Path,
    vms: dict[str, dict[str, object]],
    *extra: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    from tests.conftest import BKT
    from tests.livelib import write_vms

    manifests = tmp_path / "manifests"
    write_vms(manifests, vms)
    return subprocess.run(
        [BKT, "-c", URI, "-C", str(manifests), "vm", "sync", *extra],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_an_empty_disk_file_is_refused_not_adopted(tmp_path: Path, disks: Path) -> None:
    """An empty file (what an interrupted creation leaves) was attached as a raw disk."""
    from tests.livelib import domains, unique_name, vm

    name = unique_name("empty")
    disk = disks / f"{name}.qcow2"
    disk.write_bytes(b"")
    with domains(name):
        done = sync_cli(tmp_path, {name: vm(disks, name)})
        assert done.returncode == 1
        assert (
            f"! error {name}: disk {disk} is an empty file (0 bytes), which is what an "
            "interrupted creation leaves, not a disk image: bkt does not use it"
        ) in done.stdout
        assert name not in virsh("list", "--all", "--name").stdout.split()
        assert disk.read_bytes() == b""


def test_system_files_are_refused_as_disks_and_isos(tmp_path: Path, disks: Path) -> None:
    """/etc/passwd (or a link to it) was attached as a writable raw disk, /etc/shadow as an
    ISO, without a word."""
    from tests.livelib import domains, unique_name, vm

    names = [unique_name(t) for t in ("passwd", "link", "shadow", "environ")]
    (disks / "passwd.img").symlink_to("/etc/passwd")
    iso_vm = vm(disks, names[2], iso_sources=[{"path": "/etc/shadow"}])
    vms = {
        names[0]: vm(disks, names[0], disk_path="/etc/passwd", create_if_missing=False),
        names[1]: vm(disks, names[1], disk_path=str(disks / "passwd.img")),
        names[2]: iso_vm,
        names[3]: vm(disks, names[3], disk_path="/proc/self/environ"),
    }
    rule = (
        "a system directory: bkt attaches no file there to a VM unless the VM says "
        '"allow_system_paths": true'
    )
    with domains(*names):
        done = sync_cli(tmp_path, vms)
        assert done.returncode == 1
        for name, problem in [
            (names[0], "disk /etc/passwd is in /etc"),
            (names[1], f"disk {disks}/passwd.img leads to /etc/passwd, which is in /etc"),
            (names[2], "ISO /etc/shadow is in /etc"),
            (names[3], "disk /proc/self/environ is in /proc"),
        ]:
            assert f"! error {name}: {problem}, {rule}" in done.stdout, done.stdout
        assert not set(names) & set(virsh("list", "--all", "--name").stdout.split())
        assert not (disks / f"{names[2]}.qcow2").exists(), "no disk made for a refused VM"
        # Said explicitly, the ISO is what the author wants.
        iso_vm["allow_system_paths"] = True
        dry = sync_cli(tmp_path, {names[2]: iso_vm}, "--dry-run")
        assert dry.returncode == 0 and f"+ create {names[2]}" in dry.stdout, dry.stdout


def test_a_domain_already_on_a_system_file_is_not_kept_there(tmp_path: Path, disks: Path) -> None:
    """A domain defined on a system file (as main did for /etc/passwd) was then `unchanged`
    at every sync; without the explicit opt-in it is now an error of that VM."""
    from tests.livelib import domains, unique_name, vm

    name = unique_name("keptsys")
    link = disks / "hostname.img"
    link.symlink_to("/etc/hostname")
    entry = vm(disks, name, disk_path=str(link), create_if_missing=False)
    with domains(name):
        first = sync_cli(tmp_path, {name: {**entry, "allow_system_paths": True}})
        assert first.returncode == 0, first.stdout + first.stderr
        assert name in virsh("list", "--all", "--name").stdout.split()
        again = sync_cli(tmp_path, {name: entry})
        assert again.returncode == 1
        assert (
            f"! error {name}: disk {link} leads to /etc/hostname, which is in /etc, a system "
            "directory"
        ) in again.stdout, again.stdout


@pytest.fixture
def liar_site(plugin_site: Callable[[str], Path]) -> Path:
    return plugin_site("tests/plugins/bkt-liar")


@pytest.mark.parametrize(
    ("does", "why"),
    [
        ("yes", "plugin liar in bkt_disk_provision: returned a str, expected bool or None"),
        ("nothing", "(plugin liar said its bkt_disk_provision created it): it does not exist"),
        ("empty", "(plugin liar said its bkt_disk_provision created it): it is empty (0 bytes)"),
        ("small", "(plugin liar said its bkt_disk_provision created it): its virtual size is "
         "1073741824 bytes, not 2 GiB"),
    ],
)  # fmt: skip
def test_a_provisioning_plugin_that_lies_fails_its_vm(
    tmp_path: Path, disks: Path, liar_site: Path, does: str, why: str
) -> None:
    """A plugin's bkt_disk_provision returning "yes" without creating anything was
    `created`, and status said in sync."""
    from tests.livelib import domains, unique_name, vm

    name, honest = unique_name("liar"), unique_name("honest")
    disk = disks / f"{name}-liar.qcow2"
    vms = {
        name: vm(disks, name, disk_path=str(disk), disk_size_gb=2),
        honest: vm(disks, honest),
    }
    env = {"PYTHONPATH": str(liar_site), "BKT_LIAR_DOES": does}
    with domains(name, honest):
        done = sync_cli(tmp_path, vms, env=env)
        assert done.returncode == 1
        sep = ": " if does == "yes" else " "
        assert f"cannot create disk {disk}{sep}{why}" in done.stderr, done.stderr
        defined = virsh("list", "--all", "--name").stdout.split()
        assert name not in defined and honest in defined, "the other VM goes on"
