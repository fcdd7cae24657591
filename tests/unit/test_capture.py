"""Capture's merge, selection, writing and output, with parsed XML and a fake virsh (no
daemon): the domains are rendered by the host's own mapping and then edited as a person or
another tool would."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from bkt_core.errors import ManifestError, OperationError
from bkt_core.output import Printer
from bkt_core.plan import CaptureReport
from bkt_vm_plugin.iso import cached_path
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.report import format_capture, print_capture
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, vm_subsystem
from tests.unit.domain_xml_kvm_hidden import KvmHiddenPlugin

GIB = 1024**3


@dataclass
class World:
    """A manifest directory, a home, and the host capturing into it."""

    tmp: Path
    libvirt: FakeLibvirt
    plugins: tuple[tuple[str, object], ...] = ()

    @property
    def dir(self) -> Path:
        return self.tmp / "manifests"

    @property
    def file(self) -> Path:
        return self.dir / "vms.json"

    def sub(self) -> VmSubsystem:
        return vm_subsystem(self.libvirt.host(self.dir, self.plugins))

    def capture(self, *names: str, all: bool = False, dry_run: bool = False) -> CaptureReport:
        return self.sub().capture(names, all=all, dry_run=dry_run)

    def disk(self, name: str, size: int = GIB) -> str:
        """The path of VM ``name``'s disk, a qcow2 image of ``size`` bytes."""
        path = str(self.tmp / "disks" / f"{name}.qcow2")
        self.libvirt.add_image(path, size=size)
        return path

    def vm(self, name: str, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "memory_gb": 1,
            "vcpus": 1,
            "disk_path": self.disk(name),
            "disk_size_gb": 1,
            "boot": "bios",
            "network": "default",
            "graphics": "none",
            "virt_type": "qemu",
        }
        out.update(fields)
        return out

    def render(self, name: str, vm: dict[str, Any], disk_format: str = "qcow2") -> str:
        sub = self.sub()
        definition = sub.vm_definition(vm, home=str(self.tmp))
        ctx = resolve_context(
            name,
            definition,
            home=str(self.tmp),
            iso_cache=str(self.tmp / "cache" / "bkt" / "isos"),
            disk_format=disk_format,
            exists=os.path.exists,
        )
        return sub.mapping.render(definition, ctx)

    def define(self, name: str, vm: dict[str, Any], edit: tuple[str, str] | None = None) -> str:
        xml = self.render(name, vm)
        if edit is not None:
            assert edit[0] in xml, edit[0]
            xml = xml.replace(*edit)
        self.libvirt.define(xml)
        return xml

    def write(self, vms: dict[str, Any], **top: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file.write_text(json.dumps({**top, "vms": vms}, indent=2) + "\n")

    def manifest(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.file.read_text()))

    def in_sync(self, *names: str) -> None:
        """Sync's own diff finds nothing between each domain and the written manifest."""
        sub = self.sub()
        manifest = sub.load()
        for name in names:
            vm = manifest.vms[name]
            ctx = resolve_context(
                name,
                vm,
                home=str(self.tmp),
                iso_cache=str(self.tmp / "cache" / "bkt" / "isos"),
                exists=os.path.exists,
                facts={"autostart": self.libvirt.domains[name].autostart},
            )
            parsed = sub.mapping.parse(self.libvirt.xml(name), ctx)
            fmt = parsed.readings["disk_format"].value
            ctx = resolve_context(
                name,
                vm,
                home=str(self.tmp),
                iso_cache=str(self.tmp / "cache" / "bkt" / "isos"),
                disk_format=str(fmt),
                exists=os.path.exists,
                facts={"autostart": self.libvirt.domains[name].autostart},
            )
            assert sub.mapping.diff(parsed, vm, ctx) == [], name


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "disks").mkdir()
    yield World(tmp_path, FakeLibvirt())


def kinds(report: CaptureReport) -> dict[str, str]:
    return {e.name: e.kind for e in report.entries}


# -- new domains -----------------------------------------------------------------------------


def test_a_domain_is_added_with_every_field_and_sync_then_sees_no_drift(world: World) -> None:
    vm = world.vm("web", memory_gb=2, vcpus=2, graphics="vnc", tpm="2.0", boot="uefi")
    world.define("web", vm)
    world.disk("web", 20 * GIB)
    report = world.capture("web")
    assert kinds(report) == {"web": "added"}
    assert report.written and report.created and report.warnings == ()
    assert world.manifest() == {
        "$schema": "vms.schema.json",
        "vms": {"web": {**vm, "disk_size_gb": 20}},
    }
    assert report.entries[0].changes[0] == ("memory_gb", "", "2")
    assert json.loads((world.dir / "vms.schema.json").read_text()) == world.sub().schema()
    world.in_sync("web")


def test_virsh_processes_do_not_grow_with_the_number_of_domains(world: World) -> None:
    for name in ("a", "b", "c", "d", "e"):
        world.define(name, world.vm(name))
    world.write({n: world.vm(n) for n in ("a", "b")})
    # The manifest's VMs: one observation batch, one domblkinfo batch.
    world.capture()
    assert [p[0][0] for p in world.libvirt.processes] == ["list", "domblkinfo"]
    # --all: the domain list first, then the definitions of the domains the manifest lacks.
    world.libvirt.processes.clear()
    world.capture(all=True)
    assert [p[0][0] for p in world.libvirt.processes] == ["list", "list", "domblkinfo"]
    assert len(world.libvirt.processes[2]) == 5


def test_a_new_domain_that_cannot_round_trip_is_skipped_naming_each_field(world: World) -> None:
    world.define("odd", world.vm("odd"), edit=(">1048576<", ">1572864<"))
    report = world.capture("odd")
    (entry,) = report.entries
    assert entry.kind == "skipped"
    assert entry.reasons == ("memory_gb: 1572864 KiB is not a whole number of GiB",)
    # A new manifest is still created, with no VMs, and a note says why.
    assert world.manifest() == {"$schema": "vms.schema.json", "vms": {}}
    assert any("every domain was skipped" in n for n in report.notes)


def test_several_interfaces_are_lossy_so_a_new_vm_is_skipped(world: World) -> None:
    xml = world.define("two", world.vm("two"))
    iface = xml[xml.index("<interface") : xml.index("</interface>") + len("</interface>")]
    world.libvirt.define(xml.replace(iface, iface + "\n    " + iface))
    (entry,) = world.capture("two").entries
    assert entry.kind == "skipped"
    assert entry.reasons[0].startswith("network: 2 interfaces")


def test_a_domain_without_a_disk_file_is_skipped(world: World) -> None:
    vm = world.vm("nodisk")
    world.define("nodisk", vm)
    os.remove(vm["disk_path"])
    (entry,) = world.capture("nodisk").entries
    assert entry.reasons == ("disk_size_gb: the disk file does not exist",)


def test_an_image_format_bkt_does_not_manage_is_not_captured(world: World) -> None:
    world.define("vmdk", world.vm("vmdk"), edit=('type="qcow2"', 'type="vmdk"'))
    (entry,) = world.capture("vmdk").entries
    assert entry.kind == "skipped"
    assert entry.reasons == ("disk_path: image format 'vmdk' (bkt knows qcow2 and raw)",)


def test_a_cdrom_whose_file_is_missing_is_captured_and_kept_by_sync(world: World) -> None:
    iso = world.tmp / "installer.iso"
    iso.write_text("iso")
    world.define("inst", world.vm("inst", iso_sources=[{"path": str(iso)}]))
    iso.unlink()
    # Sync keeps a CD-ROM the domain has even while its file is missing, so capture writes
    # it: capture then sync is a no-op.
    (entry,) = world.capture("inst").entries
    assert entry.kind == "added"
    assert ("iso_sources", "", f'[{{"path":"{iso}"}}]') in entry.changes
    report = world.capture("inst")
    assert kinds(report) == {"inst": "unchanged"}
    assert report.warnings == ()


def test_a_name_that_cannot_be_a_manifest_name_is_skipped(world: World) -> None:
    world.define("ok", world.vm("ok"))
    world.libvirt.define(world.libvirt.xml("ok").replace("<name>ok<", "<name>-bad<"))
    report = world.capture(all=True)
    assert kinds(report) == {"-bad": "skipped", "ok": "added"}
    assert report.entries[0].reasons[0].startswith("its name cannot be a manifest VM name:")


# -- existing VMs ------------------------------------------------------------------------------


def test_changed_fields_are_listed_old_to_new_in_schema_order(world: World) -> None:
    world.write({"db": world.vm("db")})
    world.define("db", world.vm("db", memory_gb=4, vcpus=2, graphics="spice"))
    report = world.capture()
    (entry,) = report.entries
    assert entry.kind == "changed"
    assert entry.changes == (
        ("memory_gb", "1", "4"),
        ("vcpus", "1", "2"),
        ("graphics", '"none"', '"spice"'),
    )
    assert world.manifest()["vms"]["db"]["memory_gb"] == 4
    world.in_sync("db")


def test_a_field_that_cannot_round_trip_keeps_its_value_with_a_warning(world: World) -> None:
    world.write({"db": world.vm("db")})
    xml = world.render("db", world.vm("db", vcpus=3))
    xml = xml.replace(">1048576<", ">1572864<")
    world.libvirt.define(xml)
    report = world.capture("db")
    assert report.warnings == (
        "VM db: memory_gb keeps its manifest value: 1572864 KiB is not a whole number of GiB",
    )
    assert report.entries[0].changes == (("vcpus", "1", "3"),)
    assert world.manifest()["vms"]["db"]["memory_gb"] == 1


def test_explicit_defaults_paths_with_tilde_and_unknowable_fields_survive(
    world: World,
) -> None:
    world.disk("keep")
    vm = world.vm(
        "keep",
        disk_path="~/disks/keep.qcow2",
        create_if_missing=True,
        tpm="none",
        secure_boot=False,
        virt_type="kvm",
        cpu_model="host-passthrough",
        autostart=False,
        iso_sources=[
            {"url": "https://example.org/os.iso", "sha256": "a" * 64},
            {"path": "~/gone.iso"},
        ],
    )
    world.write({"keep": vm}, **{"$schema": "vms.schema.json"})
    world.define("keep", vm)
    before = world.file.stat()
    report = world.capture("keep")
    assert kinds(report) == {"keep": "unchanged"}
    assert not report.written and report.warnings == ()
    assert world.file.stat().st_mtime_ns == before.st_mtime_ns  # not rewritten
    # Rewritten because another VM changes, the entry is still spelt as written.
    world.write({"keep": vm, "other": world.vm("other")})
    world.define("other", world.vm("other", vcpus=2))
    world.capture()
    assert world.manifest()["vms"]["keep"] == vm
    world.in_sync("keep", "other")


def test_a_spelling_that_would_mean_something_else_is_not_kept(world: World) -> None:
    # host-passthrough is the default under kvm; under qemu it would be a different model.
    world.write({"cpu": world.vm("cpu", virt_type="kvm", cpu_model="host-model")})
    world.define("cpu", world.vm("cpu", virt_type="qemu"))
    (entry,) = world.capture("cpu").entries
    assert entry.changes == (
        ("virt_type", '"kvm"', '"qemu"'),
        ("cpu_model", '"host-model"', ABSENT),
    )
    assert "cpu_model" not in world.manifest()["vms"]["cpu"]
    world.in_sync("cpu")


def test_a_spelling_with_the_same_meaning_is_kept_across_a_domain_type_change(
    world: World,
) -> None:
    # qemu64 is libvirt's default under qemu and a named model under kvm: the same CPU.
    world.write({"cpu": world.vm("cpu", virt_type="qemu", cpu_model="qemu64")})
    world.define("cpu", world.vm("cpu", virt_type="kvm", cpu_model="qemu64"))
    (entry,) = world.capture("cpu").entries
    assert entry.changes == (("virt_type", '"qemu"', ABSENT),)
    assert world.manifest()["vms"]["cpu"]["cpu_model"] == "qemu64"
    world.in_sync("cpu")


ABSENT = "(absent)"


def test_iso_sources_map_back_to_their_manifest_sources(world: World) -> None:
    cache = world.tmp / "cache" / "bkt" / "isos"
    cache.mkdir(parents=True)
    url = {"url": "https://example.org/os.iso"}
    cached_path(url["url"], cache).write_text("iso")
    extra = world.tmp / "drivers.iso"
    extra.write_text("iso")
    uncached = {"url": "https://example.org/other.iso"}
    world.write({"i": world.vm("i", iso_sources=[url, uncached])})
    world.define("i", world.vm("i", iso_sources=[url, {"path": str(extra)}]))
    (entry,) = world.capture("i").entries
    assert world.manifest()["vms"]["i"]["iso_sources"] == [url, {"path": str(extra)}, uncached]
    assert entry.changes[0][0] == "iso_sources"
    world.in_sync("i")


def test_disk_size_is_the_disks_real_size_when_it_is_a_whole_gib(world: World) -> None:
    world.write(
        {
            "big": world.vm("big", disk_size_gb=5),
            "odd": world.vm("odd", disk_size_gb=5),
            "err": world.vm("err", disk_size_gb=5),
            "gone": world.vm("gone", disk_size_gb=5),
        }
    )
    for name in ("big", "odd", "err", "gone"):
        world.define(name, world.vm(name))
    world.disk("big", 30 * GIB)
    world.disk("odd", GIB + 512)
    world.libvirt.fail("domblkinfo", world.disk("err"), "Permission denied")
    os.remove(world.disk("gone"))
    report = world.capture()
    vms = world.manifest()["vms"]
    assert [vms[n]["disk_size_gb"] for n in ("big", "odd", "err", "gone")] == [30, 5, 5, 5]
    assert report.warnings == (
        "VM err: disk_size_gb keeps its manifest value: cannot read the disk's size: "
        "Permission denied",
        f"VM odd: disk_size_gb keeps its manifest value: the disk's virtual size, {GIB + 512} "
        "bytes, is not a whole GiB",
    )


def test_a_vm_not_in_libvirt_is_kept_as_it_is(world: World) -> None:
    world.write({"away": world.vm("away")})
    report = world.capture()
    assert kinds(report) == {"away": "unchanged"}
    assert report.warnings == (
        "VM away is not defined in libvirt; its manifest entry is kept as it is",
    )


def test_a_name_that_is_not_a_domain_is_an_error(world: World) -> None:
    world.write({"away": world.vm("away")})
    with pytest.raises(OperationError, match="VM away is not a libvirt domain") as info:
        world.capture("away")
    assert info.value.hint is not None and "bkt vm sync away" in info.value.hint
    with pytest.raises(OperationError, match="VM nope is not a libvirt domain"):
        world.capture("nope")


def test_an_invalid_manifest_is_refused_and_nothing_is_written(world: World) -> None:
    world.dir.mkdir()
    world.file.write_text('{"vms": {"a": {"memory_gb": 0}}}\n')
    with pytest.raises(ManifestError):
        world.capture(all=True)
    assert world.file.read_text() == '{"vms": {"a": {"memory_gb": 0}}}\n'


def test_two_vms_on_one_disk_skip_the_new_one_instead_of_failing_the_capture(
    world: World,
) -> None:
    world.write({"a": world.vm("a")})
    world.define("a", world.vm("a"))
    world.define("b", world.vm("b", disk_path=world.disk("a")))
    world.define("c", world.vm("c"))
    report = world.capture(all=True)
    assert kinds(report) == {"a": "unchanged", "b": "skipped", "c": "added"}
    assert report.entries[1].reasons == (
        'disk_path: the same disk as VM "a" (two VMs must not share a disk)',
    )
    assert sorted(world.manifest()["vms"]) == ["a", "c"]


# -- plugin fields -----------------------------------------------------------------------------


def test_autostart_comes_from_libvirt_when_its_plugin_is_installed(world: World) -> None:
    world.define("auto", world.vm("auto"))
    world.libvirt.domains["auto"].autostart = True
    world.capture("auto")
    assert world.manifest()["vms"]["auto"]["autostart"] is True
    world.in_sync("auto")
    world.libvirt.domains["auto"].autostart = False
    (entry,) = world.capture("auto").entries
    assert entry.changes == (("autostart", "true", ABSENT),)


def test_without_the_autostart_plugin_there_is_no_autostart_field(world: World) -> None:
    world.define("auto", world.vm("auto"))
    world.libvirt.domains["auto"].autostart = True
    host = world.libvirt.host(world.dir, disabled=["autostart"])
    vm_subsystem(host).capture(["auto"])
    assert "autostart" not in world.manifest()["vms"]["auto"]


def test_a_plugin_field_is_captured_like_a_built_in_one(world: World) -> None:
    world.plugins = (("kvm_hidden", KvmHiddenPlugin()),)
    world.define("win", world.vm("win", kvm_hidden=True))
    world.capture("win")
    assert world.manifest()["vms"]["win"]["kvm_hidden"] is True
    world.in_sync("win")
    # Its reading that cannot round-trip keeps the manifest value.
    world.libvirt.define(world.libvirt.xml("win").replace("kvmclock", "tsc"))
    report = world.capture("win")
    assert report.warnings == (
        "VM win: kvm_hidden keeps its manifest value: KVM hidden with the kvmclock timer on",
    )


# -- writing -----------------------------------------------------------------------------------


def test_the_file_is_sorted_indented_in_schema_order_with_a_final_newline(world: World) -> None:
    for name in ("zz", "aa"):
        world.define(name, world.vm(name, autostart=True, tpm="2.0"))
        world.libvirt.domains[name].autostart = True
    world.capture(all=True)
    text = world.file.read_text()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text.startswith('{\n  "$schema": "vms.schema.json",\n  "vms": {\n    "aa": {\n')
    fields = list(world.manifest()["vms"]["aa"])
    schema_order = list(world.sub().vm_fields.names)
    assert fields == sorted(fields, key=schema_order.index)


def test_schema_is_kept_as_it_was_null_included(world: World) -> None:
    world.write({"a": world.vm("a")}, **{"$schema": None})
    world.define("a", world.vm("a", vcpus=2))
    world.capture()
    assert world.manifest()["$schema"] is None
    world.write({"a": world.vm("a")})
    world.capture()
    assert "$schema" not in world.manifest()
    assert not (world.dir / "vms.schema.json").exists()  # only written with a new manifest


def test_a_missing_directory_is_created_and_said(world: World) -> None:
    world.define("a", world.vm("a"))
    report = world.capture("a")
    assert report.notes[0] == f"created directory {world.dir}"
    assert report.notes[-1] == f"created {world.file} and {world.dir / 'vms.schema.json'}"


def test_dry_run_writes_and_creates_nothing(world: World) -> None:
    world.define("a", world.vm("a"))
    report = world.capture("a", dry_run=True)
    assert kinds(report) == {"a": "added"} and not report.written
    assert not world.dir.exists()
    assert report.notes[-1] == "dry run: nothing was written"
    world.write({"a": world.vm("a", vcpus=4)})
    before = world.file.read_text()
    report = world.capture("a", dry_run=True)
    assert kinds(report) == {"a": "changed"}
    assert world.file.read_text() == before


def test_with_every_domain_skipped_an_existing_manifest_is_not_rewritten(world: World) -> None:
    world.write({})
    before = world.file.stat().st_mtime_ns
    world.define("odd", world.vm("odd"), edit=(">1048576<", ">1572864<"))
    report = world.capture(all=True)
    assert kinds(report) == {"odd": "skipped"} and not report.written
    assert world.file.stat().st_mtime_ns == before
    assert report.notes == ("every domain was skipped: nothing was captured",)


def test_nothing_to_capture_says_how_to_capture(world: World) -> None:
    report = world.capture()
    assert report.entries == ()
    assert "pass --all" in report.notes[-2]


def test_concurrent_captures_lose_no_write(world: World) -> None:
    names = ["c1", "c2", "c3", "c4"]
    for name in names:
        world.define(name, world.vm(name))
    world.write({})
    world.libvirt.delay = 0.05
    errors: list[BaseException] = []

    def one(name: str) -> None:
        try:
            world.capture(name)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(world.manifest()["vms"]) == names
    assert [p.name for p in world.dir.iterdir()] == ["vms.json"]  # no temporary file left


# -- output ------------------------------------------------------------------------------------


def test_the_printed_lines(world: World) -> None:
    world.write({"chg": world.vm("chg"), "same": world.vm("same")})
    world.define("chg", world.vm("chg", vcpus=2))
    world.define("same", world.vm("same"))
    world.define("new", world.vm("new"))
    world.define("bad", world.vm("bad"), edit=(">1048576<", ">1572864<"))
    report = world.capture("chg", "same", "new", "bad", dry_run=True)
    lines = format_capture(report, verbosity=0)
    assert lines == [
        ("out", "! skip bad: memory_gb: 1572864 KiB is not a whole number of GiB"),
        ("out", "~ change chg"),
        ("out", "    vcpus: 1 -> 2"),
        ("out", "+ add new"),
        ("out", "    memory_gb: 1"),
        ("out", "    vcpus: 1"),
        ("out", f'    disk_path: "{world.disk("new")}"'),
        ("out", "    disk_size_gb: 1"),
        ("out", '    boot: "bios"'),
        ("out", '    network: "default"'),
        ("out", '    graphics: "none"'),
        ("out", '    virt_type: "qemu"'),
        ("out", "captured 3 VMs: 1 added, 1 changed, 1 unchanged; skipped 1"),
        ("note", "dry run: nothing was written"),
    ]
    assert ("out", "= unchanged same") in format_capture(report, verbosity=1)
    out, err = io.StringIO(), io.StringIO()
    print_capture(Printer(0, "never", out, err), report)
    assert out.getvalue().splitlines()[1] == "~ change chg"
    assert err.getvalue() == "dry run: nothing was written\n"


def test_one_vm_is_singular_and_warnings_come_first(world: World) -> None:
    world.write({"away": world.vm("away")})
    lines = format_capture(world.capture(), verbosity=0)
    assert lines == [
        ("warning", "VM away is not defined in libvirt; its manifest entry is kept as it is"),
        ("out", "captured 1 VM: 0 added, 0 changed, 1 unchanged; skipped 0"),
    ]


# -- per-host overrides ----------------------------------------------------------------------


@pytest.fixture
def laptop(world: World, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The override file of this machine, ``laptop`` (not created)."""
    monkeypatch.setenv("BKT_HOSTNAME", "laptop")
    return world.dir / "vms.laptop.json"


def test_each_captured_field_goes_back_to_the_file_that_owns_it(
    world: World, laptop: Path
) -> None:
    world.write({"db": world.vm("db", memory_gb=16), "web": world.vm("web")})
    laptop.write_text(json.dumps({"vms": {"db": {"memory_gb": 4}}}))
    world.define("db", world.vm("db", memory_gb=8, vcpus=2))
    world.define("web", world.vm("web"))
    report = world.capture()
    assert kinds(report) == {"db": "changed", "web": "unchanged"}
    assert report.entries[0].changes == (("memory_gb", "4", "8"), ("vcpus", "1", "2"))
    # memory_gb is the override's, vcpus vms.json's; vms.json's own memory_gb stays.
    assert json.loads(laptop.read_text()) == {"vms": {"db": {"memory_gb": 8}}}
    assert world.manifest()["vms"]["db"] == world.vm("db", memory_gb=16, vcpus=2)
    assert report.notes == (f"wrote {world.file}", f"wrote {laptop}")
    world.in_sync("db", "web")


def test_only_the_file_that_changes_is_written(world: World, laptop: Path) -> None:
    world.write({"db": world.vm("db")})
    laptop.write_text('{"vms": {"db": {"vcpus": 1}}}')
    world.define("db", world.vm("db", vcpus=4))
    before = world.file.read_text()
    report = world.capture()
    assert world.file.read_text() == before
    assert json.loads(laptop.read_text()) == {"vms": {"db": {"vcpus": 4}}}
    assert report.notes == (f"wrote {laptop}",)


def test_capture_never_creates_an_override_file(world: World, laptop: Path) -> None:
    world.write({"db": world.vm("db")})
    world.define("db", world.vm("db", memory_gb=2))
    world.define("new", world.vm("new"))
    world.capture(all=True)
    assert not laptop.exists()
    assert set(world.manifest()["vms"]) == {"db", "new"}


def test_a_vm_of_the_override_alone_stays_in_the_override(world: World, laptop: Path) -> None:
    world.write({"db": world.vm("db")})
    laptop.write_text(json.dumps({"vms": {"lab": world.vm("lab")}}))
    world.define("db", world.vm("db"))
    world.define("lab", world.vm("lab", vcpus=2, tpm="2.0"))
    world.define("new", world.vm("new"))
    world.capture(all=True)
    assert json.loads(laptop.read_text()) == {"vms": {"lab": world.vm("lab", vcpus=2, tpm="2.0")}}
    assert set(world.manifest()["vms"]) == {"db", "new"}
    world.in_sync("db", "lab", "new")


def test_a_default_the_override_sets_over_vms_json_is_written_explicitly(
    world: World, laptop: Path
) -> None:
    world.write({"db": world.vm("db", tpm="2.0")})
    laptop.write_text('{"vms": {"db": {"tpm": "2.0"}}}')
    world.define("db", world.vm("db"))  # no TPM: capture leaves tpm out, its default
    world.capture()
    # Left out of the override, vms.json's "2.0" would win again.
    assert json.loads(laptop.read_text()) == {"vms": {"db": {"tpm": "none"}}}
    assert world.manifest()["vms"]["db"]["tpm"] == "2.0"
    world.in_sync("db")


def test_an_invalid_override_is_refused_naming_it(world: World, laptop: Path) -> None:
    world.write({"db": world.vm("db")})
    laptop.write_text('{"vms": {"db": {"vcpus": 0}}}')
    world.define("db", world.vm("db", vcpus=2))
    with pytest.raises(ManifestError) as caught:
        world.capture()
    assert [Path(d.file).name for d in caught.value.diagnostics] == ["vms.laptop.json"]
    assert json.loads(laptop.read_text()) == {"vms": {"db": {"vcpus": 0}}}


def test_status_compares_the_domain_with_the_merged_manifest(world: World, laptop: Path) -> None:
    world.write({"db": world.vm("db", memory_gb=16)})
    world.define("db", world.vm("db", memory_gb=4))
    (row,) = world.sub().status().rows
    assert (row.in_sync, row.drift) == (False, ("memory_gb",))
    laptop.write_text('{"vms": {"db": {"memory_gb": 4}}}')
    (row,) = world.sub().status().rows
    assert (row.in_sync, row.drift) == (True, ())
