"""The host against misbehaving plugins, with explicit hosts and an in-memory libvirt (no
process is started): a plugin that raises in each kind of hook is named with the hook, only
the VMs it was working on fail, and nothing half-written is left in libvirt or vms.json;
conflicting plugins are start-up errors naming both. Also the public surface of bkt_core."""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import Field

import bkt_core
from bkt_core import FakeRunner, Host, PluginError, SyncReport, hookimpl
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Element, Reading
from bkt_vm_plugin.provision import DiskCreation, DiskRequest
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.virsh import Reply, Virsh
from tests.livelib import vm

# -- the public surface ---------------------------------------------------------------------

#: What an embedder and a plugin author may import from bkt_core (SPEC: "Embedding").
PUBLIC = {
    "BktError", "CaptureEntry", "CaptureReport", "CommandError", "CommandRunner", "Completed",
    "Diagnostic", "EntryResult", "FakeRunner", "FieldChange", "Host", "ManifestError",
    "OperationError", "PlanEntry", "PluginError", "PluginInfo", "Problem", "StatusReport",
    "StatusRow", "SubprocessRunner", "Subsystem", "Summary", "SyncPlan", "SyncReport",
    "UsageError", "hookimpl", "hookspec",
}  # fmt: skip


def test_exported_members() -> None:
    """Every name of ``bkt_core.__all__`` resolves, is defined inside bkt_core and is
    documented; ``dir()`` shows exactly them; the names above stay exported."""
    exported = set(bkt_core.__all__)
    assert exported >= PUBLIC
    assert set(dir(bkt_core)) == exported
    for name in sorted(exported - {"__version__"}):
        member = getattr(bkt_core, name)
        if isinstance(member, types.FunctionType | type):
            assert member.__module__.startswith("bkt_core."), name
            assert inspect.getdoc(member), f"bkt_core.{name} has no docstring"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", bkt_core.__version__)
    with pytest.raises(AttributeError):
        bkt_core.not_a_member  # noqa: B018


# -- an in-memory libvirt ---------------------------------------------------------------------


#: What the host checks of a sync (``bkt doctor``'s) read, from a host where all is well.
HEALTHY_HOST = {
    "uri": "qemu:///session\n",
    "version": "Using library: libvirt 9.0.0\nRunning hypervisor: QEMU 7.2.22\n",
    "domcapabilities": (
        "<domainCapabilities><os supported='yes'><enum name='firmware'><value>efi</value>"
        "</enum><loader supported='yes'><enum name='secure'><value>yes</value></enum></loader>"
        "</os><devices><tpm supported='yes'><enum name='backendModel'><value>emulator</value>"
        "</enum></tpm></devices></domainCapabilities>"
    ),
    "net-list": "default\n",
    "create": "",
    "destroy": "",
}


class MemoryLibvirt(Virsh):
    """Answers the virsh batches bkt sends from a dict of domain XML. Every batch is recorded
    in :attr:`processes`; ``qemu-img`` goes to a :class:`FakeRunner` that records it and
    writes nothing."""

    def __init__(self) -> None:
        info = json.dumps({"format": "qcow2"})
        self.qemu = FakeRunner().reply(lambda argv: argv[:2] == ("qemu-img", "info"), info)
        self.qemu.reply(lambda argv: argv[:2] == ("qemu-img", "create"))
        super().__init__(self.qemu)
        self.xml: dict[str, str] = {}
        self.autostart: set[str] = set()
        self.processes: list[list[tuple[str, ...]]] = []

    def batch(self, commands: Sequence[Sequence[str]]) -> list[Reply]:
        if commands:
            self.processes.append([tuple(c) for c in commands])
        return [self._one(tuple(c)) for c in commands]

    def _one(self, c: tuple[str, ...]) -> Reply:
        def ok(out: str = "") -> Reply:
            return Reply(c, out, "", True)

        if c[0] == "list":
            names = self.autostart if "--autostart" in c else self.xml if "--all" in c else ()
            return ok("".join(f"{n}\n" for n in sorted(names)))
        if c[0] == "pool-list":
            return ok("")
        if c[0] in HEALTHY_HOST:
            return ok(HEALTHY_HOST[c[0]])
        if c[0] == "define":
            xml = Path(c[c.index("--file") + 1]).read_text()
            found = re.search(r"<name>([^<]+)</name>", xml)
            assert found
            self.xml[found.group(1)] = xml
            return ok()
        name = c[-1]
        if c[0] == "dumpxml":
            return ok(self.xml[name]) if name in self.xml else Reply(c, "", "error: no\n", False)
        if c[0] == "autostart":
            self.autostart.add(name)
            return ok()
        raise AssertionError(c)

    def defines(self) -> list[tuple[str, ...]]:
        return [c for p in self.processes for c in p if c[0] == "define"]


@pytest.fixture
def libvirt() -> MemoryLibvirt:
    return MemoryLibvirt()


@pytest.fixture
def disks(tmp_path: Path) -> Path:
    path = tmp_path / "disks"
    path.mkdir()
    return path


class World:
    """A manifest of two VMs, ``bad`` (which the misbehaving plugins pick on) and ``good``,
    and a host with the default plugins plus ``plugins``."""

    def __init__(self, tmp_path: Path, disks: Path, libvirt: MemoryLibvirt) -> None:
        self.dir = tmp_path / "manifests"
        self.dir.mkdir()
        self.file = self.dir / "vms.json"
        vms = {"bad": vm(disks, "bad"), "good": vm(disks, "good", autostart=True)}
        self.file.write_text(json.dumps({"vms": vms}, indent=2) + "\n")
        self.text = self.file.read_text()
        self.disks = disks
        self.libvirt = libvirt

    def sub(self, *plugins: object, disabled: Iterable[str] = ()) -> VmSubsystem:
        host = Host(
            self.dir,
            entry_points=False,
            plugins=[*default_plugins(), *plugins],
            disabled=disabled,
        )
        sub = cast(VmSubsystem, host.subsystem("vm"))
        sub.__dict__["virsh"] = self.libvirt  # the cached property, replaced
        return sub

    def sync(self, *plugins: object) -> SyncReport:
        return self.sub(*plugins).sync()

    def untouched(self) -> None:
        """Nothing reached libvirt and the manifest is as it was."""
        assert self.libvirt.processes == []
        assert self.libvirt.xml == {}
        assert self.file.read_text() == self.text


@pytest.fixture
def world(tmp_path: Path, disks: Path, libvirt: MemoryLibvirt) -> World:
    return World(tmp_path, disks, libvirt)


def results(report: SyncReport) -> dict[str, tuple[str, str | None]]:
    return {r.name: (r.result, r.message) for r in report.results or ()}


# -- plugins that raise ------------------------------------------------------------------------


class RaisingFields:
    bkt_plugin_name = "boom"

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
        raise RuntimeError("no fields today")


class RaisingRule:
    bkt_plugin_name = "boom"

    @hookimpl
    def bkt_validate_manifest(self, subsystem: str, document: Any) -> None:
        raise KeyError("vms")


class ColorField(DomainField):
    """``color`` in nothing at all; render raises for the VM named ``bad``."""

    fields = ("color",)
    in_xml = True

    def render(self, domain: Element, vm: Any, ctx: DomainContext) -> None:
        if ctx.name == "bad":
            raise ValueError("cannot paint this one")

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        return {"color": Reading.clean("blue")}


class RaisingRender:
    bkt_plugin_name = "boom"

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
        return {"color": (str, Field(default="blue"))}

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        return [ColorField()]


class RaisingPlan:
    bkt_plugin_name = "boom"

    @hookimpl
    def bkt_disk_plan(self, name: str, disk: DiskRequest) -> DiskCreation | None:
        if name == "bad":
            raise OSError("the array is offline")
        return None


class RaisingProvision:
    """Plans bad's disk itself, then fails to create it."""

    bkt_plugin_name = "boom"

    @hookimpl
    def bkt_disk_plan(self, name: str, disk: DiskRequest) -> DiskCreation | None:
        return DiskCreation(disk.path, disk.size_gb, plugin="boom") if name == "bad" else None

    @hookimpl
    def bkt_disk_provision(self, creation: DiskCreation) -> bool | None:
        if creation.plugin == "boom":
            raise ConnectionError("LVM said no")
        return None


class RaisingPostSyncVm:
    bkt_plugin_name = "boom"

    @hookimpl
    def bkt_post_sync_vm(self, name: str) -> None:
        if name == "bad":
            raise RuntimeError("webhook timed out")


class RaisingPostSync:
    bkt_plugin_name = "boom"

    @hookimpl
    def bkt_post_sync(self, report: SyncReport) -> None:
        raise RuntimeError("inventory is down")


@pytest.mark.parametrize(
    ("plugin", "hook", "detail"),
    [
        (RaisingFields(), "bkt_manifest_fields", "RuntimeError: no fields today"),
        (RaisingRule(), "bkt_validate_manifest", "KeyError: 'vms'"),
    ],
)
def test_a_manifest_hook_that_raises_stops_everything_before_libvirt(
    world: World, plugin: object, hook: str, detail: str
) -> None:
    with pytest.raises(PluginError) as caught:
        world.sync(plugin)
    assert str(caught.value) == f"plugin boom in {hook}: {detail}"
    assert (caught.value.plugin, caught.value.hook) == ("boom", hook)
    assert caught.value.exit_code == 1
    world.untouched()


def test_a_render_that_raises_fails_that_vm_only(world: World) -> None:
    report = world.sync(RaisingRender())
    assert results(report) == {
        "bad": (
            "failed",
            "plugin boom in bkt_domain_fields: render failed: ValueError: cannot paint this one",
        ),
        "good": ("created", None),
    }
    assert set(world.libvirt.xml) == {"good"}
    assert [c[0] for c in world.libvirt.defines()] == ["define"]
    assert world.libvirt.autostart == {"good"}
    assert not (world.disks / "bad.qcow2").exists(), "the failed VM's disk is not created"
    assert world.file.read_text() == world.text


def test_a_disk_plan_that_raises_fails_that_vm_only(world: World) -> None:
    report = world.sync(RaisingPlan())
    assert results(report) == {
        "bad": ("failed", "plugin boom in bkt_disk_plan: OSError: the array is offline"),
        "good": ("created", None),
    }
    assert set(world.libvirt.xml) == {"good"}
    assert not (world.disks / "bad.qcow2").exists()
    assert (world.disks / "good.qcow2").exists()
    assert world.file.read_text() == world.text


def test_a_disk_provision_that_raises_fails_that_vm_before_it_is_defined(world: World) -> None:
    report = world.sync(RaisingProvision())
    assert results(report) == {
        "bad": ("failed", "plugin boom in bkt_disk_provision: ConnectionError: LVM said no"),
        "good": ("created", None),
    }
    assert set(world.libvirt.xml) == {"good"}
    assert world.file.read_text() == world.text


def test_a_per_vm_post_sync_hook_that_raises_fails_that_vm_only(world: World) -> None:
    report = world.sync(RaisingPostSyncVm())
    assert results(report) == {
        "bad": ("failed", "plugin boom in bkt_post_sync_vm: RuntimeError: webhook timed out"),
        "good": ("created", None),
    }
    # The other post-sync plugins still ran.
    assert world.libvirt.autostart == {"good"}


def test_a_post_sync_hook_that_raises_does_not_stop_the_others(world: World) -> None:
    report = world.sync(RaisingPostSync())
    message = "plugin boom in bkt_post_sync: RuntimeError: inventory is down"
    assert results(report) == {"bad": ("failed", message), "good": ("failed", message)}
    assert world.libvirt.autostart == {"good"}, "autostart's post-sync action still ran"
    assert world.file.read_text() == world.text


# -- conflicts are start-up errors ---------------------------------------------------------------


class Owner:
    def __init__(self, name: str) -> None:
        self.bkt_plugin_name = name

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
        return {"owner": (str | None, Field(default=None))}


class MyCpuModel:
    """A replacement of the default ``cpu_model`` plugin: declares the field itself."""

    bkt_plugin_name = "my-cpu-model"

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
        return {"cpu_model": (str | None, Field(default=None))}

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        from bkt_vm_plugin.mapping import CpuModelField

        return [CpuModelField()]


class ColorMapper:
    """Maps ``color`` too, which :class:`RaisingRender` maps."""

    bkt_plugin_name = "paint"

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        return [ColorField()]


def test_two_plugins_declaring_one_field_is_an_error_naming_both(world: World) -> None:
    with pytest.raises(PluginError) as caught:
        world.sub(Owner("alice"), Owner("bob")).validate()
    assert str(caught.value) == (
        "plugin alice in bkt_manifest_fields: declares VM field 'owner', which plugin bob "
        "declares too"
    )
    assert caught.value.hint == "block one of them: --disable-plugin alice or --disable-plugin bob"
    world.untouched()


def test_a_replacement_is_an_error_until_the_default_is_blocked(world: World) -> None:
    with pytest.raises(PluginError) as caught:
        world.sub(MyCpuModel()).validate()
    assert "'cpu_model'" in str(caught.value)
    assert {"my-cpu-model", "cpu_model"} <= set(re.findall(r"plugin ([\w-]+)", str(caught.value)))
    assert "--disable-plugin cpu_model" in (caught.value.hint or "")
    world.untouched()

    replaced = world.sub(MyCpuModel(), disabled=["cpu_model"])
    assert replaced.validate() == 2
    assert replaced.field_owners["cpu_model"] == "my-cpu-model"
    assert replaced.mapping.owners["cpu_model"] == "my-cpu-model"


def test_two_plugins_mapping_one_field_is_an_error_naming_both(world: World) -> None:
    with pytest.raises(PluginError) as caught:
        world.sub(RaisingRender(), ColorMapper()).plan()
    message = str(caught.value)
    assert "'color'" in message and "paint" in message and "boom" in message
    world.untouched()


def test_two_hosts_in_one_process_keep_their_own_plugins(world: World) -> None:
    with_owner = world.sub(Owner("alice"))
    plain = world.sub()
    assert "owner" in with_owner.vm_model.model_fields
    assert "owner" not in plain.vm_model.model_fields


def _names(infos: Iterator[Any] | list[Any]) -> list[str]:
    return [i.name for i in infos]


def test_plugins_lists_an_explicit_plugin_without_a_distribution() -> None:
    host = Host(entry_points=False, plugins=[*default_plugins(), Owner("alice")])
    infos = {i.name: i for i in host.plugins()}
    assert (infos["alice"].distribution, infos["alice"].version) == (None, None)
    assert infos["alice"].hooks == ("bkt_manifest_fields",)
    assert _names(host.plugins())[:1] == ["alice"]
