"""Disk planning and provisioning without a daemon: the test kit's FakeLibvirt plays virsh
and qemu-img, and the file system is either described by a map or a real temporary
directory."""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bkt_core.errors import OperationError, PluginError
from bkt_core.hookspecs import hookimpl
from bkt_core.host import Host
from bkt_core.process import Completed
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.model import validate_vm
from bkt_vm_plugin.provision import (
    DiskCreation,
    DiskRequest,
    Entry,
    ProvisionContext,
    disk_format,
    disk_request,
    is_remote_uri,
    look,
    plan_disk,
    pool_target,
    provision_all,
    volume_format_of,
)
from bkt_vm_plugin.testing import FAKE_IMAGE_MAGIC, FakeLibvirt
from bkt_vm_plugin.virsh import Virsh


def pool_xml(name: str, target: str, kind: str = "dir") -> str:
    return (
        f"<pool type='{kind}'>\n  <name>{name}</name>\n  <target>\n"
        f"    <path>{target}</path>\n  </target>\n</pool>\n"
    )


def libvirt_with(*pools: tuple[str, str | Path, bool]) -> FakeLibvirt:
    """A FakeLibvirt with storage pools (name, target, active)."""
    libvirt = FakeLibvirt()
    for name, target, active in pools:
        libvirt.add_pool(name, target, active=active)
    return libvirt


def programs(libvirt: FakeLibvirt) -> list[str]:
    """The programs of every process started so far, in order."""
    return [os.path.basename(argv[0]) for argv in libvirt.calls]


def image_bytes(fmt: str, size: int) -> bytes:
    """The content of a ``fmt`` image file of ``size`` bytes as FakeLibvirt's qemu-img reads
    it (what a plugin that creates disks writes, in these tests)."""
    return FAKE_IMAGE_MAGIC + json.dumps({"format": fmt, "virtual-size": size}).encode() + b"\n"


def image_of(libvirt: FakeLibvirt, path: str | Path) -> tuple[str, int]:
    """The format and virtual size ``qemu-img info`` reads at ``path``."""
    argv = ["qemu-img", "info", "--output=json", "--", str(path)]
    info = json.loads(libvirt.run(argv, timeout=1).stdout)
    return str(info["format"]), int(info["virtual-size"])


@dataclass
class Fs:
    """A file system described by a map; anything not listed is missing. ``/``, ``/srv``
    and ``/srv/vm`` are directories."""

    entries: dict[str, Entry] = field(
        default_factory=lambda: {d: Entry("dir") for d in ("/", "/srv", "/srv/vm")}
    )
    writable: set[str] = field(default_factory=set)
    #: path -> why someone else could redirect a file created there
    exposed: dict[str, str] = field(default_factory=dict)

    def look(self, path: str) -> Entry:
        return self.entries.get(path, Entry("missing"))

    def with_(self, path: str, kind: str, detail: str = "") -> Fs:
        self.entries[path] = Entry(kind, detail)
        return self


def context(
    libvirt: FakeLibvirt, fs: Fs | None = None, *, remote: bool = False, uri: str | None = None
) -> ProvisionContext:
    virsh = Virsh(libvirt, uri)
    if fs is None:
        return ProvisionContext(virsh, remote=remote)
    return ProvisionContext(
        virsh,
        look=fs.look,
        writable=fs.writable.__contains__,
        confined=fs.exposed.get,
        remote=remote,
    )


def host(*extra: object) -> Host:
    return Host(entry_points=False, plugins=[*default_plugins(), *extra])


def request(path: str = "/srv/vm/a.qcow2", create: bool = True) -> DiskRequest:
    return DiskRequest("a", path, 20, create)


def plan(ctx: ProvisionContext, path: str = "/srv/vm/a.qcow2", create: bool = True) -> Any:
    return plan_disk(host(), "a", None, request(path, create), ctx)


def refusal(ctx: ProvisionContext, path: str = "/srv/vm/a.qcow2", create: bool = True) -> str:
    with pytest.raises(OperationError) as caught:
        plan(ctx, path, create)
    return caught.value.message


def test_the_plugin_module_names_everything_disk_provisioning_has() -> None:
    # The registered plugin module imports bkt_vm_plugin.disks only when a name of it is used
    # (or a hook runs); every name it had is still its own, the very same object.
    from bkt_vm_plugin import disks, provision

    for name in provision.__all__:
        value = getattr(provision, name)
        assert value is getattr(disks, name, value), name
    assert provision.Entry is provision.PathEntry is disks.PathEntry
    assert provision.QEMU_IMG_TIMEOUT == disks.QEMU_IMG_TIMEOUT
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        provision.nope  # noqa: B018


def test_the_plugins_hooks_are_its_two_defaults() -> None:
    infos = {i.name: i for i in Host(entry_points=False, plugins=default_plugins()).plugins()}
    assert infos["provision"].hooks == ("bkt_disk_plan", "bkt_disk_provision")


def test_the_request_and_the_creation_describe_themselves() -> None:
    vm = validate_vm(
        {
            "memory_gb": 1,
            "vcpus": 1,
            "disk_path": "~/vm/a.qcow2",
            "disk_size_gb": 40,
            "create_if_missing": True,
            "boot": "bios",
            "network": "none",
            "graphics": "none",
        },
        home="/home/u",
    )
    assert disk_request("a", vm, "/home/u") == DiskRequest("a", "/home/u/vm/a.qcow2", 40, True)
    in_pool = DiskCreation("/srv/vm/a.qcow2", 40, pool="images")
    assert (
        in_pool.describe() == "create disk /srv/vm/a.qcow2 (40 GiB, qcow2) in storage pool images"
    )
    assert in_pool.to_json() == {
        "path": "/srv/vm/a.qcow2",
        "size_gb": 40,
        "format": "qcow2",
        "pool": "images",
    }
    outside = DiskCreation("/srv/vm/a.qcow2", 40)
    assert outside.describe() == "create disk /srv/vm/a.qcow2 (40 GiB, qcow2)"
    assert "pool" not in outside.to_json()
    assert outside.plugin == "provision"


def test_an_existing_image_is_used_with_its_format_and_pools_are_not_read() -> None:
    libvirt = FakeLibvirt()
    libvirt.add_image("/srv/vm/a.qcow2", format="raw", virtual=True)
    ctx = context(libvirt, Fs().with_("/srv/vm/a.qcow2", "file"))
    assert plan(ctx) is None
    assert disk_format("/srv/vm/a.qcow2", ctx) == "raw"
    assert not ctx.pools_read
    assert programs(libvirt) == ["qemu-img"]
    libvirt.add_image("/srv/vm/a.qcow2", format="vmdk", virtual=True)
    with pytest.raises(OperationError) as caught:
        disk_format("/srv/vm/a.qcow2", ctx)
    assert caught.value.message == (
        "disk /srv/vm/a.qcow2 is a vmdk image; bkt manages qcow2 and raw images"
    )


def test_an_unreadable_image_in_a_pool_takes_its_format_from_the_volume() -> None:
    denied = "qemu-img: Could not open '/srv/vm/a.qcow2': Permission denied"
    libvirt = libvirt_with(("images", "/srv/vm", True))
    libvirt.add_volume("images", "a.qcow2", format="qcow2")
    libvirt.fail("qemu-img info", "/srv/vm/a.qcow2", denied)
    fs = Fs().with_("/srv/vm/a.qcow2", "file")
    assert disk_format("/srv/vm/a.qcow2", context(libvirt, fs)) == "qcow2"
    libvirt.pools["images"].volumes.clear()
    with pytest.raises(OperationError) as caught:
        disk_format("/srv/vm/a.qcow2", context(libvirt, fs))
    assert caught.value.message == (
        "cannot read the image format of /srv/vm/a.qcow2: qemu-img: Could not open "
        "'/srv/vm/a.qcow2': Permission denied"
    )


def test_an_absent_disk_without_create_if_missing_says_how_to_fix_it() -> None:
    ctx = context(FakeLibvirt(), Fs())
    assert refusal(ctx, create=False) == (
        'disk /srv/vm/a.qcow2 does not exist: set "create_if_missing": true to create it, '
        "or create it yourself"
    )
    assert not ctx.pools_read


def test_a_disk_in_an_active_pool_is_a_volume_of_it_and_pools_are_read_in_two_processes() -> None:
    libvirt = libvirt_with(("other", "/elsewhere", True), ("images", "/srv/vm/", True))
    libvirt.add_pool("lvm", "/srv/vm", type="logical")
    ctx = context(libvirt, Fs())
    assert plan(ctx) == DiskCreation("/srv/vm/a.qcow2", 20, pool="images")
    assert plan(ctx, "/srv/vm/b.qcow2") == DiskCreation("/srv/vm/b.qcow2", 20, pool="images")
    assert programs(libvirt) == ["virsh", "virsh"], "read once, in two processes"


def test_a_pool_whose_target_is_a_symbolic_link_to_the_directory_is_that_directory(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    libvirt = libvirt_with(("images", tmp_path / "link", True))
    ctx = context(libvirt)
    disk = str(real / "a.qcow2")
    assert plan(ctx, disk) == DiskCreation(disk, 20, pool="images")


def test_outside_any_pool_the_user_must_be_able_to_write_the_directory() -> None:
    libvirt = libvirt_with(("images", "/var/lib/libvirt/images", True))
    fs = Fs()
    with pytest.raises(OperationError) as caught:
        plan(context(libvirt, fs))
    assert caught.value.message == (
        "cannot create disk /srv/vm/a.qcow2: you cannot write to /srv/vm and no libvirt "
        "storage pool has it as its target"
    )
    assert caught.value.hint == (
        "define one (`virsh pool-define-as NAME dir --target /srv/vm` then "
        "`virsh pool-start NAME`), or create the disk yourself"
    )
    fs.writable.add("/srv/vm")
    assert plan(context(libvirt, fs)) == DiskCreation("/srv/vm/a.qcow2", 20)
    assert plan(context(FakeLibvirt(), fs)) == DiskCreation("/srv/vm/a.qcow2", 20), "no pools"


def test_an_inactive_pool_is_refused_and_an_active_one_preferred() -> None:
    libvirt = libvirt_with(("sleepy", "/srv/vm", False))
    fs = Fs(writable={"/srv/vm"})
    assert refusal(context(libvirt, fs)) == (
        "cannot create disk /srv/vm/a.qcow2: its directory /srv/vm is the target of storage "
        "pool sleepy, which is not active (`virsh pool-start sleepy` starts it)"
    )
    libvirt.add_pool("awake", "/srv/vm")
    assert plan(context(libvirt, fs)) == DiskCreation("/srv/vm/a.qcow2", 20, pool="awake")


@pytest.mark.parametrize(
    ("fs", "disk", "create", "message"),
    [
        (
            Fs(),
            "/srv/new/deeper/a.qcow2",
            True,
            "cannot create disk /srv/new/deeper/a.qcow2: directory /srv/new does not exist "
            "(bkt creates no directories: make it, or fix disk_path)",
        ),
        (
            Fs().with_("/srv/file", "file"),
            "/srv/file/a.qcow2",
            True,
            "cannot create disk /srv/file/a.qcow2: /srv/file is not a directory",
        ),
        (
            Fs().with_("/srv/vm/a.qcow2", "dangling", "/etc/shadow-new"),
            "/srv/vm/a.qcow2",
            True,
            "cannot create disk /srv/vm/a.qcow2: it is a symbolic link to /etc/shadow-new, "
            "which does not exist, and bkt does not create disks through symbolic links "
            "(point disk_path at the real file)",
        ),
        (
            Fs().with_("/srv/vm/a.qcow2", "dangling", "/etc/shadow-new"),
            "/srv/vm/a.qcow2",
            False,
            "disk /srv/vm/a.qcow2 is a symbolic link to /etc/shadow-new, which does not exist",
        ),
        (
            Fs().with_("/srv/gone", "dangling", "/mnt/usb"),
            "/srv/gone/a.qcow2",
            True,
            "cannot create disk /srv/gone/a.qcow2: directory /srv/gone is a symbolic link to "
            "/mnt/usb, which does not exist",
        ),
        (
            Fs().with_("/srv/locked", "unknown", "Permission denied"),
            "/srv/locked/a.qcow2",
            True,
            "cannot create disk /srv/locked/a.qcow2: cannot look at /srv/locked: "
            "Permission denied",
        ),
        (
            Fs().with_("/srv/vm/a.qcow2", "dir"),
            "/srv/vm/a.qcow2",
            True,
            "disk /srv/vm/a.qcow2 is a directory, not a disk image",
        ),
        (
            Fs().with_("/srv/vm/a.qcow2", "device"),
            "/srv/vm/a.qcow2",
            True,
            "disk /srv/vm/a.qcow2 is a device; bkt manages disk image files (qcow2 or raw)",
        ),
        (
            Fs().with_("/srv/vm/a.qcow2", "other"),
            "/srv/vm/a.qcow2",
            True,
            "disk /srv/vm/a.qcow2 is not a regular file",
        ),
        (
            Fs().with_("/srv/vm/a.qcow2", "unknown", "Permission denied"),
            "/srv/vm/a.qcow2",
            True,
            "cannot look at disk /srv/vm/a.qcow2: Permission denied",
        ),
        (Fs(), "srv/vm/a.qcow2", True, "disk srv/vm/a.qcow2 is not an absolute path"),
        (Fs(), "/srv/vm/../a.qcow2", True, 'disk /srv/vm/../a.qcow2 must not contain ".."'),
        (Fs(), "/srv/vm/", True, "disk /srv/vm/ has no file name"),
    ],
)
def test_every_path_rule_names_what_is_wrong(
    fs: Fs, disk: str, create: bool, message: str
) -> None:
    libvirt = FakeLibvirt()
    fs.writable.update(fs.entries)
    assert refusal(context(libvirt, fs), disk, create) == message
    assert libvirt.calls == [], "a refusal by path needs no process"


def test_the_real_file_system_is_looked_at_as_the_rules_need(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"QFI")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "to-file").symlink_to(tmp_path / "file")
    (tmp_path / "to-empty").symlink_to(tmp_path / "empty")
    os.mkfifo(tmp_path / "fifo")
    assert look(str(tmp_path / "file")) == Entry("file")
    assert look(str(tmp_path / "to-file")) == Entry("file")
    assert look(str(tmp_path / "empty")) == Entry("empty")
    assert look(str(tmp_path / "to-empty")) == Entry("empty")
    assert look(str(tmp_path)) == Entry("dir")
    assert look("/dev/null") == Entry("device")
    assert look(str(tmp_path / "fifo")) == Entry("other")
    assert look(str(tmp_path / "dangling")) == Entry("dangling", str(tmp_path / "nowhere"))
    assert look(str(tmp_path / "none")) == Entry("missing")
    assert look(str(tmp_path / "file" / "under")) == Entry("missing"), "the ancestors say why"


def test_pool_and_volume_xml_are_read_for_file_pools_only() -> None:
    target = "/var/lib/libvirt/images &amp; more"
    assert pool_target(pool_xml("images", target)) == "/var/lib/libvirt/images & more"
    assert pool_target(pool_xml("n", "/mnt/n", kind="netfs")) == "/mnt/n"
    assert pool_target(pool_xml("vg", "/dev/vg", kind="logical")) is None
    assert pool_target(pool_xml("rel", "relative")) is None
    assert pool_target("not xml") is None
    volume = (
        "<volume type='file'><name>a.qcow2</name><target><path>/x/a.qcow2</path>"
        "<format type='qcow2'/></target></volume>"
    )
    assert volume_format_of(volume) == "qcow2"
    assert volume_format_of("<volume/>") is None


def test_pool_xml_is_read_by_the_hardened_parser() -> None:
    # libvirt never writes a DOCTYPE: a pool XML with one (entities that could expand or
    # reach a file) is not read at all.
    entity = (
        '<!DOCTYPE pool [<!ENTITY t "/var/lib/images">]>'
        "<pool type='dir'><target><path>&t;</path></target></pool>"
    )
    assert pool_target(entity) is None
    external = (
        '<!DOCTYPE pool [<!ENTITY t SYSTEM "file:///etc/hostname">]>'
        "<pool type='dir'><target><path>/x&t;</path></target></pool>"
    )
    assert pool_target(external) is None
    commented = "<pool type='dir'><!-- c --><target><path>/p</path></target></pool>"
    assert pool_target(commented) == "/p"


def test_pools_that_cannot_be_read_fail_planning_with_the_reason() -> None:
    down = FakeLibvirt()
    down.disconnect("error: failed to connect to the hypervisor\n")
    ctx = ProvisionContext(Virsh(down), look=Fs().look, writable=lambda _d: True)
    with pytest.raises(OperationError) as caught:
        plan(ctx)
    assert caught.value.message.startswith("cannot list libvirt's storage pools: ")
    assert "failed to connect to the hypervisor" in caught.value.message


def test_creation_batches_pool_volumes_never_touches_what_appeared_and_cleans_up(
    tmp_path: Path,
) -> None:
    libvirt = libvirt_with(("images", tmp_path, True))
    libvirt.fail("qemu-img create", None, "qemu-img: out of space\n")
    ctx = context(libvirt)
    there = tmp_path / "there.qcow2"
    there.write_bytes(b"precious")
    link = tmp_path / "link.qcow2"
    link.symlink_to(tmp_path / "elsewhere")
    new = tmp_path / "new.qcow2"
    creations = [
        DiskCreation(str(there), 1),
        DiskCreation(str(there), 1, pool="images"),
        DiskCreation(str(link), 1),
        DiskCreation(str(new), 1),
        DiskCreation(str(tmp_path / "v1.qcow2"), 1, pool="images"),
        DiskCreation(str(tmp_path / "v2.qcow2"), 2, pool="images"),
        DiskCreation(str(tmp_path / "v2.qcow2"), 2, pool="images"),
    ]
    # libvirt refuses this one
    libvirt.fail("vol-create-as", "v2.qcow2", "storage volume 'v2.qcow2' exists already")
    results = provision_all(host(), creations, ctx)
    appeared = "disk {} appeared after planning; it is left as it is"
    assert results == {
        str(there): appeared.format(there),
        str(link): appeared.format(link),
        str(new): f"cannot create disk {new}: qemu-img: out of space",
        str(tmp_path / "v1.qcow2"): None,
        str(tmp_path / "v2.qcow2"): f"cannot create disk {tmp_path / 'v2.qcow2'} in storage "
        "pool images: storage volume 'v2.qcow2' exists already",
    }
    assert programs(libvirt) == ["qemu-img", "virsh"], "one qemu-img, one virsh for both"
    assert libvirt.commands("vol-create-as") == [
        ("vol-create-as", "--pool", "images", "--name", "v1.qcow2", "--capacity", "1GiB",
         "--format", "qcow2"),
        ("vol-create-as", "--pool", "images", "--name", "v2.qcow2", "--capacity", "2GiB",
         "--format", "qcow2"),
    ]  # fmt: skip
    assert there.read_bytes() == b"precious"
    assert not (tmp_path / "elsewhere").exists()
    assert not new.exists(), "the placeholder was taken away"


def test_a_disk_outside_any_pool_is_created_only_for_this_user(tmp_path: Path) -> None:
    libvirt = FakeLibvirt()
    disk = tmp_path / "a.qcow2"
    assert provision_all(host(), [DiskCreation(str(disk), 3)], context(libvirt)) == {
        str(disk): None
    }
    assert image_of(libvirt, disk) == ("qcow2", 3 << 30)
    assert stat.S_IMODE(disk.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["a.qcow2"], "the private directory is gone"


def test_a_creation_planned_by_another_plugin_is_left_to_it() -> None:
    ctx = context(FakeLibvirt(), Fs())
    results = provision_all(host(), [DiskCreation("/srv/vm/x.qcow2", 1, plugin="gone")], ctx)
    assert results == {
        "/srv/vm/x.qcow2": "cannot create disk /srv/vm/x.qcow2: plugin gone, which planned it, "
        "did not create it (is it disabled?)"
    }


class Thin:
    """A plugin that plans and creates disks named thin-* itself, with the context's safe
    ``create_image``."""

    bkt_plugin_name = "thin"

    def __init__(self) -> None:
        self.created: list[str] = []

    @hookimpl
    def bkt_disk_plan(self, disk: DiskRequest) -> DiskCreation | None:
        if "thin-" not in disk.path:
            return None
        return DiskCreation(disk.path, disk.size_gb, plugin="thin")

    @hookimpl
    def bkt_disk_provision(self, creation: DiskCreation, context: ProvisionContext) -> bool | None:
        if creation.plugin != "thin":
            return None
        context.create_image(creation)
        self.created.append(creation.path)
        return True


def test_a_plugin_takes_over_the_disks_it_wants_and_the_default_keeps_the_rest(
    tmp_path: Path,
) -> None:
    thin = Thin()
    libvirt = libvirt_with(("images", tmp_path, True))
    ctx = context(libvirt)
    with_thin = host(thin)
    a, b = str(tmp_path / "thin-a.qcow2"), str(tmp_path / "b.qcow2")
    first = plan_disk(with_thin, "a", None, request(a), ctx)
    second = plan_disk(with_thin, "b", None, request(b), ctx)
    assert first == DiskCreation(a, 20, plugin="thin")
    assert second == DiskCreation(b, 20, pool="images")
    assert first is not None and second is not None
    assert provision_all(with_thin, [first, second], ctx) == {a: None, b: None}
    assert thin.created == [a]
    assert "b.qcow2" in libvirt.pools["images"].volumes


def test_without_the_default_plugin_a_missing_disk_is_refused_with_a_hint() -> None:
    bare = Host(entry_points=False, plugins=[p for p in default_plugins() if p[0] != "provision"])
    with pytest.raises(OperationError) as caught:
        plan_disk(bare, "a", None, request(), context(FakeLibvirt(), Fs(writable={"/srv/vm"})))
    assert caught.value.message == (
        "cannot create disk /srv/vm/a.qcow2: no plugin plans the creation of disks"
    )
    assert caught.value.hint is not None and "provision" in caught.value.hint


def test_remote_uris_are_recognised() -> None:
    assert not is_remote_uri("qemu:///system")
    assert not is_remote_uri("test:///default")
    assert not is_remote_uri("qemu+unix:///system")
    assert is_remote_uri("qemu+ssh://root@example.org/system")
    assert is_remote_uri(None, {"LIBVIRT_DEFAULT_URI": "qemu+tcp://h/system"})
    assert not is_remote_uri(None, {})


def test_with_a_remote_libvirt_disks_are_known_only_through_its_pools() -> None:
    uri = "qemu+ssh://far/system"
    libvirt = libvirt_with(("images", "/srv/vm", True))
    libvirt.add_volume("images", "old.qcow2", format="raw")

    def never(_path: str) -> Entry:
        raise AssertionError("the local file system says nothing about a remote host")

    virsh = Virsh(libvirt, uri)
    ctx = ProvisionContext(virsh, look=never, writable=lambda _d: True)
    assert ctx.remote
    assert plan(ctx, "/srv/vm/old.qcow2") is None
    assert disk_format("/srv/vm/old.qcow2", ctx) == "raw"
    assert plan(ctx, "/srv/vm/new.qcow2") == DiskCreation("/srv/vm/new.qcow2", 20, pool="images")
    assert refusal(ctx, "/srv/vm/new.qcow2", create=False).startswith(
        "disk /srv/vm/new.qcow2 does not exist"
    )
    message = refusal(ctx, "/home/u/a.qcow2")
    assert message.startswith(
        f"cannot check disk /home/u/a.qcow2: libvirt at {uri} may be on another host and "
        "/home/u is not the target of one of its storage pools"
    )
    assert "qemu-img" not in programs(libvirt)
    creation = DiskCreation("/srv/vm/new.qcow2", 20, pool="images")
    assert provision_all(host(), [creation], ctx) == {"/srv/vm/new.qcow2": None}


# -- system files, empty files, redirection, verification -------------------------------------


def test_system_files_are_refused_as_disks_unless_the_vm_allows_them(tmp_path: Path) -> None:
    """/etc/passwd (or a link to it) was attached as a writable raw disk without a word."""
    (tmp_path / "passwd.img").symlink_to("/etc/passwd")
    ctx = context(FakeLibvirt())
    rule = (
        "a system directory: bkt attaches no file there to a VM unless the VM says "
        '"allow_system_paths": true'
    )
    for disk, shown in [
        ("/etc/passwd", "disk /etc/passwd is in /etc"),
        ("/proc/self/environ", "disk /proc/self/environ is in /proc"),
        ("/usr/lib/new.qcow2", "disk /usr/lib/new.qcow2 is in /usr"),
        (
            str(tmp_path / "passwd.img"),
            f"disk {tmp_path}/passwd.img leads to /etc/passwd, which is in /etc",
        ),
    ]:
        assert refusal(ctx, disk, create=False) == f"{shown}, {rule}", disk
    allowed = DiskRequest("a", "/etc/passwd", 20, False, allow_system_paths=True)
    assert plan_disk(host(), "a", None, allowed, ctx) is None
    assert plan(ctx, str(tmp_path / "etcetera.qcow2")) == DiskCreation(
        str(tmp_path / "etcetera.qcow2"), 20
    ), "only whole directory names count"


def test_the_manifest_field_reaches_the_request() -> None:
    fields = {
        "memory_gb": 1, "vcpus": 1, "disk_path": "/etc/a.img", "disk_size_gb": 1,
        "boot": "bios", "network": "none", "graphics": "none",
    }  # fmt: skip
    assert not disk_request("a", validate_vm(fields), None).allow_system_paths
    allowed = validate_vm({**fields, "allow_system_paths": True})
    assert disk_request("a", allowed, None).allow_system_paths


def test_an_empty_file_is_not_taken_for_a_disk(tmp_path: Path) -> None:
    """The 0-byte placeholder an interrupted creation left was adopted as a raw disk."""
    empty = tmp_path / "a.qcow2"
    empty.write_bytes(b"")
    (tmp_path / "link.qcow2").symlink_to(empty)
    ctx = context(FakeLibvirt())
    for disk, create in [(empty, True), (empty, False), (tmp_path / "link.qcow2", True)]:
        with pytest.raises(OperationError) as caught:
            plan(ctx, str(disk), create)
        assert caught.value.message == (
            f"disk {disk} is an empty file (0 bytes), which is what an interrupted creation "
            "leaves, not a disk image: bkt does not use it"
        )
        assert caught.value.hint is not None and caught.value.hint.startswith("remove it")
    assert empty.read_bytes() == b""


def test_a_directory_others_could_change_is_refused_for_creation(tmp_path: Path) -> None:
    """In a directory others may write (0777, no sticky bit) another user could rename a
    link over what bkt creates; in one another user owns, so could they."""
    open_dir, sticky, theirs = tmp_path / "open", tmp_path / "sticky", tmp_path / "theirs"
    for d in (open_dir, sticky, theirs):
        d.mkdir()
    open_dir.chmod(0o777)
    sticky.chmod(0o1777)
    (sticky / "inner").mkdir()
    (sticky / "link").symlink_to(sticky / "inner")
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o2770)
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)  # nobody
        os.lchown(sticky / "link", 65534, 65534)
    ctx = context(FakeLibvirt())
    why = ", and bkt creates disks only where no one but you and root can redirect them"
    assert refusal(ctx, str(open_dir / "a.qcow2")) == (
        f"cannot create disk {open_dir}/a.qcow2: directory {open_dir} (mode 0777) is writable "
        f"by group or others without the sticky bit, so they could replace {open_dir}/a.qcow2{why}"
    )
    assert refusal(ctx, str(group / "a.qcow2")) == (
        f"cannot create disk {group}/a.qcow2: directory {group} (mode 2770) is writable by "
        f"group or others without the sticky bit, so they could replace {group}/a.qcow2{why}"
    )
    assert plan(ctx, str(sticky / "a.qcow2")) == DiskCreation(str(sticky / "a.qcow2"), 20)
    assert plan(ctx, str(sticky / "inner" / "a.qcow2")) is not None
    if os.geteuid() == 0:
        assert refusal(ctx, str(theirs / "a.qcow2")) == (
            f"cannot create disk {theirs}/a.qcow2: directory {theirs} belongs to user nobody, "
            f"who could replace {theirs}/a.qcow2{why}"
        )
        assert refusal(ctx, str(sticky / "link" / "a.qcow2")) == (
            f"cannot create disk {sticky}/link/a.qcow2: {sticky}/link belongs to user nobody, "
            f"in the shared directory {sticky}{why}"
        )
    # Provisioning checks again, whatever was planned.
    results = provision_all(host(), [DiskCreation(str(open_dir / "a.qcow2"), 1)], ctx)
    assert results[str(open_dir / "a.qcow2")] is not None
    assert os.listdir(open_dir) == []


class Swapping(FakeLibvirt):
    """A qemu-img whose ``create`` first lets ``attack`` run: another user acting at the
    worst moment, once bkt's file or directory exists and before the image is written."""

    def __init__(self, attack: Callable[[tuple[str, ...]], None]) -> None:
        super().__init__()
        self.attack = attack

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        if tuple(argv[:2]) == ("qemu-img", "create"):
            self.attack(tuple(argv))
        return super().run(argv, timeout=timeout, input=input)


def test_a_link_swapped_in_during_creation_redirects_nothing(tmp_path: Path) -> None:
    """The placeholder bkt created at the disk's name could be replaced by a link to any
    file, which qemu-img then overwrote: now nothing is at the disk's name until the image
    is complete, and a link never replaces what appeared there."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    disk = tmp_path / "a.qcow2"

    def swap(argv: tuple[str, ...]) -> None:
        # Whatever bkt has at the disk's name now is replaced by a link to the victim.
        tmp = tmp_path / "swap"
        tmp.symlink_to(victim)
        os.rename(tmp, disk)

    libvirt = Swapping(attack=swap)
    results = provision_all(host(), [DiskCreation(str(disk), 1)], context(libvirt))
    assert results == {str(disk): f"disk {disk} appeared after planning; it is left as it is"}
    assert victim.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["a.qcow2", "victim"], "no private directory left"


def test_qemu_img_writes_where_no_one_else_can_reach(tmp_path: Path) -> None:
    seen: list[str] = []

    def look_at(argv: tuple[str, ...]) -> None:
        target = argv[-2]
        seen.append(target)
        folder = os.stat(os.path.dirname(target))
        assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.geteuid()
        assert target.startswith(f"/proc/{os.getpid()}/fd/"), "a path no one can re-point"

    disk = tmp_path / "a.qcow2"
    libvirt = Swapping(attack=look_at)
    assert provision_all(host(), [DiskCreation(str(disk), 2)], context(libvirt)) == {
        str(disk): None
    }
    assert len(seen) == 1 and image_of(libvirt, disk) == ("qcow2", 2 << 30)


def test_ctrl_c_during_qemu_img_leaves_nothing_behind(tmp_path: Path) -> None:
    """An interrupted creation left a 0-byte placeholder that the next sync adopted."""

    def interrupt(argv: tuple[str, ...]) -> None:
        Path(argv[-2]).write_bytes(b"QFI")
        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, during the hook

    disk = tmp_path / "a.qcow2"
    with pytest.raises(KeyboardInterrupt):
        provision_all(host(), [DiskCreation(str(disk), 1)], context(Swapping(attack=interrupt)))
    assert os.listdir(tmp_path) == []


class Liar:
    """A provisioning plugin that says it created disks it did not create as planned."""

    bkt_plugin_name = "liar"

    def __init__(self, answer: object, write: bytes | None = None) -> None:
        self.answer, self.write = answer, write

    @hookimpl
    def bkt_disk_plan(self, disk: DiskRequest) -> DiskCreation:
        return DiskCreation(disk.path, disk.size_gb, plugin="liar")

    @hookimpl
    def bkt_disk_provision(self, creation: DiskCreation) -> object:
        if self.write is not None:
            Path(creation.path).write_bytes(self.write)
        return self.answer


@pytest.mark.parametrize(
    ("answer", "write", "why"),
    [
        (
            "yes",
            None,
            "plugin liar in bkt_disk_provision: returned a str, expected bool or None",
        ),
        (1, None, "plugin liar in bkt_disk_provision: returned an int, expected bool or None"),
        (
            False,
            None,
            "plugin liar's bkt_disk_provision returned False, not True (created) or None (not "
            "its disk)",
        ),
        (True, None, "(plugin liar said its bkt_disk_provision created it): it does not exist"),
        (True, b"", "(plugin liar said its bkt_disk_provision created it): it is empty (0 bytes)"),
        (
            True,
            image_bytes("raw", 20 << 30),
            "(plugin liar said its bkt_disk_provision created it): it is a raw image, not qcow2",
        ),
        (
            True,
            image_bytes("qcow2", 2 << 30),
            "(plugin liar said its bkt_disk_provision created it): its virtual size is "
            "2147483648 bytes, not 20 GiB",
        ),
    ],
)  # fmt: skip
def test_a_disk_a_plugin_did_not_create_as_planned_fails(
    tmp_path: Path, answer: object, write: bytes | None, why: str
) -> None:
    disk = str(tmp_path / "a.qcow2")
    with_liar = host(Liar(answer, write))
    ctx = context(FakeLibvirt())
    creation = plan_disk(with_liar, "a", None, request(disk), ctx)
    assert creation == DiskCreation(disk, 20, plugin="liar")
    message = provision_all(with_liar, [creation], ctx)[disk]
    assert message is not None
    assert message.removeprefix(f"cannot create disk {disk}").lstrip(": ") == why


class Elsewhere:
    """A provisioning plugin that plans another file than the VM's disk."""

    bkt_plugin_name = "elsewhere"

    @hookimpl
    def bkt_disk_plan(self, disk: DiskRequest) -> DiskCreation:
        return DiskCreation(disk.path + ".other", disk.size_gb, plugin="elsewhere")


def test_a_plugin_that_plans_another_file_than_the_disk_fails_that_vm(tmp_path: Path) -> None:
    disk = str(tmp_path / "a.qcow2")
    with pytest.raises(PluginError) as caught:
        plan_disk(host(Elsewhere()), "a", None, request(disk), context(FakeLibvirt()))
    assert str(caught.value) == (
        f"plugin elsewhere in bkt_disk_plan: planned disk {disk}.other for VM a, whose disk "
        f"is {disk}"
    )


def test_a_plugin_is_believed_only_when_the_disk_is_as_planned(tmp_path: Path) -> None:
    disk = str(tmp_path / "a.qcow2")
    honest = host(Liar(True, image_bytes("qcow2", 20 << 30)))
    assert provision_all(
        honest, [DiskCreation(disk, 20, plugin="liar")], context(FakeLibvirt())
    ) == {disk: None}
    (tmp_path / "b.qcow2").symlink_to(disk)
    linked = str(tmp_path / "b.qcow2")
    results = provision_all(
        host(Liar(True)), [DiskCreation(linked, 20, plugin="liar")], context(FakeLibvirt())
    )
    assert results[linked] == (
        f"cannot create disk {linked} (plugin liar said its bkt_disk_provision created it): "
        "it is a symbolic link, not the image itself"
    )


def test_a_pool_volume_is_checked_as_libvirt_records_it_in_the_same_process() -> None:
    libvirt = libvirt_with(("images", "/srv/vm", True))
    ctx = context(libvirt, Fs())
    creations = [
        DiskCreation("/srv/vm/a.qcow2", 2, pool="images"),
        DiskCreation("/srv/vm/b.qcow2", 3, pool="images", plugin="liar"),
    ]

    class PoolLiar:
        bkt_plugin_name = "liar"

        @hookimpl
        def bkt_disk_provision(self, creation: DiskCreation) -> bool | None:
            return True if creation.plugin == "liar" else None

    results = provision_all(host(PoolLiar()), creations, ctx)
    assert results == {
        "/srv/vm/a.qcow2": None,
        "/srv/vm/b.qcow2": "cannot create disk /srv/vm/b.qcow2 (plugin liar said its "
        "bkt_disk_provision created it): storage pool images has no volume b.qcow2",
    }
    assert programs(libvirt) == ["virsh"], "creation and check in one virsh process"
    libvirt.add_volume("images", "b.qcow2", format="qcow2", capacity=3 << 30)
    results = provision_all(host(PoolLiar()), creations[1:], ctx)
    assert results == {"/srv/vm/b.qcow2": None}
