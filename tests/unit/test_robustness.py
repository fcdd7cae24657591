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
from typing import Any

import pytest
from pydantic import Field

import bkt_core
from bkt_core import Completed, Host, PluginError, SyncReport, hookimpl
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading
from bkt_vm_plugin.provision import DiskCreation, DiskRequest
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, vm_subsystem
from bkt_vm_plugin.xmltree import Element
from tests.livelib import vm

# -- the public surface ---------------------------------------------------------------------

#: What an embedder and a plugin author may import from bkt_core: each stays in its ``__all__``.
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


@pytest.fixture
def libvirt() -> FakeLibvirt:
    return FakeLibvirt()


@pytest.fixture
def disks(tmp_path: Path) -> Path:
    path = tmp_path / "disks"
    path.mkdir()
    return path


class World:
    """A manifest of two VMs, ``bad`` (which the misbehaving plugins pick on) and ``good``,
    and a host with the default plugins plus ``plugins``."""

    def __init__(self, tmp_path: Path, disks: Path, libvirt: FakeLibvirt) -> None:
        self.dir = tmp_path / "manifests"
        self.dir.mkdir()
        self.file = self.dir / "vms.json"
        vms = {"bad": vm(disks, "bad"), "good": vm(disks, "good", autostart=True)}
        self.file.write_text(json.dumps({"vms": vms}, indent=2) + "\n")
        self.text = self.file.read_text()
        self.disks = disks
        self.libvirt = libvirt

    def sub(self, *plugins: object, disabled: Iterable[str] = ()) -> VmSubsystem:
        return vm_subsystem(self.libvirt.host(self.dir, plugins, disabled=disabled))

    def sync(self, *plugins: object) -> SyncReport:
        return self.sub(*plugins).sync()

    def untouched(self) -> None:
        """Nothing reached libvirt and the manifest is as it was."""
        assert self.libvirt.processes == []
        assert self.libvirt.qemu_img == []
        assert self.libvirt.domains == {}
        assert self.file.read_text() == self.text

    def autostarted(self) -> set[str]:
        """The domains libvirt starts at boot."""
        return {name for name, domain in self.libvirt.domains.items() if domain.autostart}


@pytest.fixture
def world(tmp_path: Path, disks: Path, libvirt: FakeLibvirt) -> World:
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
            "plugin boom in bkt_domain_fields: render failed for VM bad (field color): "
            "ValueError: cannot paint this one",
        ),
        "good": ("created", None),
    }
    assert set(world.libvirt.domains) == {"good"}
    assert [c[0] for c in world.libvirt.commands("define")] == ["define"]
    assert world.autostarted() == {"good"}
    assert not (world.disks / "bad.qcow2").exists(), "the failed VM's disk is not created"
    assert world.file.read_text() == world.text


def test_a_disk_plan_that_raises_fails_that_vm_only(world: World) -> None:
    report = world.sync(RaisingPlan())
    assert results(report) == {
        "bad": ("failed", "plugin boom in bkt_disk_plan: OSError: the array is offline"),
        "good": ("created", None),
    }
    assert set(world.libvirt.domains) == {"good"}
    assert not (world.disks / "bad.qcow2").exists()
    assert (world.disks / "good.qcow2").exists()
    assert world.file.read_text() == world.text


def test_a_disk_provision_that_raises_fails_that_vm_before_it_is_defined(world: World) -> None:
    report = world.sync(RaisingProvision())
    assert results(report) == {
        "bad": ("failed", "plugin boom in bkt_disk_provision: ConnectionError: LVM said no"),
        "good": ("created", None),
    }
    assert set(world.libvirt.domains) == {"good"}
    assert world.file.read_text() == world.text


def test_a_per_vm_post_sync_hook_that_raises_fails_that_vm_only(world: World) -> None:
    report = world.sync(RaisingPostSyncVm())
    assert results(report) == {
        "bad": ("failed", "plugin boom in bkt_post_sync_vm: RuntimeError: webhook timed out"),
        "good": ("created", None),
    }
    # The other post-sync plugins still ran.
    assert world.autostarted() == {"good"}


def test_a_post_sync_hook_that_raises_does_not_stop_the_others(world: World) -> None:
    report = world.sync(RaisingPostSync())
    message = "plugin boom in bkt_post_sync: RuntimeError: inventory is down"
    assert results(report) == {"bad": ("failed", message), "good": ("failed", message)}
    assert world.autostarted() == {"good"}, "autostart's post-sync action still ran"
    assert world.file.read_text() == world.text


# -- plugins that break the contract -------------------------------------------------------------


def liar(hook: str, value: object, only: str | None = None) -> object:
    """A plugin ``liar`` whose ``hook`` returns ``value`` (for the VM ``only``, when given;
    None for the others)."""

    def impl(self: object, **kwargs: Any) -> object:
        return value if only is None or kwargs.get("name") == only else None

    # pluggy passes only the arguments an implementation names: name them.
    names = {"bkt_disk_plan": "name", "bkt_post_sync_vm": "name"}
    if hook in names:

        def impl_named(self: object, name: str) -> object:
            return impl(self, name=name)

        return type("Liar", (), {"bkt_plugin_name": "liar", hook: hookimpl(impl_named)})()
    return type("Liar", (), {"bkt_plugin_name": "liar", hook: hookimpl(impl)})()


ITERABLE_OF = "expected an iterable of {} (or None)"
FIELDS = "expected a mapping of field names to (annotation, FieldInfo) pairs (or None)"


@pytest.mark.parametrize(
    ("hook", "value", "detail"),
    [
        ("bkt_subsystems", "vm", "returned a str, " + ITERABLE_OF.format("Subsystem")),
        (
            "bkt_subsystems",
            [object()],
            "returned an object among its items, " + ITERABLE_OF.format("Subsystem"),
        ),
        ("bkt_manifest_fields", ["color"], "returned a list, " + FIELDS),
        ("bkt_manifest_fields", {"color": str}, "returned a type for field 'color', " + FIELDS),
        (
            "bkt_manifest_fields",
            {"color": (str, "blue")},
            "returned a tuple for field 'color', " + FIELDS,
        ),
        ("bkt_validate_manifest", 7, "returned an int, " + ITERABLE_OF.format("Problem")),
        (
            "bkt_validate_manifest",
            ["vms.bad is bad"],
            "returned a str among its items, " + ITERABLE_OF.format("Problem"),
        ),
        (
            "bkt_domain_fields",
            {"color": 1},
            "returned a dict, " + ITERABLE_OF.format("DomainField"),
        ),
        (
            "bkt_domain_fields",
            (n for n in [ColorField(), "color"]),
            "returned a str among its items, " + ITERABLE_OF.format("DomainField"),
        ),
    ],
)
def test_a_hook_that_returns_the_wrong_type_is_an_error_naming_plugin_and_hook(
    world: World, hook: str, value: object, detail: str
) -> None:
    with pytest.raises(PluginError) as caught:
        world.sync(liar(hook, value))
    assert str(caught.value) == f"plugin liar in {hook}: {detail}"
    assert (caught.value.plugin, caught.value.hook, caught.value.exit_code) == ("liar", hook, 1)
    world.untouched()


@pytest.mark.parametrize(
    ("hook", "value", "detail"),
    [
        ("bkt_disk_plan", "/disks/bad.qcow2", "returned a str, expected DiskCreation or None"),
        ("bkt_post_sync_vm", False, "returned a bool, expected None"),
    ],
)
def test_a_per_vm_hook_that_returns_the_wrong_type_fails_that_vm_only(
    world: World, hook: str, value: object, detail: str
) -> None:
    report = world.sync(liar(hook, value, only="bad"))
    assert results(report) == {
        "bad": ("failed", f"plugin liar in {hook}: {detail}"),
        "good": ("created", None),
    }


def test_a_disk_provision_that_answers_yes_is_not_taken_for_true(world: World) -> None:
    class SaysYes(RaisingProvision):
        @hookimpl
        def bkt_disk_provision(self, creation: DiskCreation) -> Any:
            return "yes" if creation.plugin == "boom" else None

    report = world.sync(SaysYes())
    assert results(report)["bad"] == (
        "failed",
        "plugin boom in bkt_disk_provision: returned a str, expected bool or None",
    )
    assert set(world.libvirt.domains) == {"good"}, "bad is not defined without its disk"


def test_a_post_sync_hook_that_returns_something_fails_what_the_run_changed(
    world: World,
) -> None:
    report = world.sync(liar("bkt_post_sync", ["done"]))
    message = "plugin liar in bkt_post_sync: returned a list, expected None"
    assert results(report) == {"bad": ("failed", message), "good": ("failed", message)}


class Exits:
    """A plugin whose ``hook`` raises ``exc`` (for the VM ``bad`` in the per-VM hooks)."""

    bkt_plugin_name = "exits"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @hookimpl
    def bkt_validate_manifest(self, document: Any) -> None:
        if "fail-validate" in document.get("vms", {}).get("bad", {}).get("network", ""):
            raise self.exc

    @hookimpl
    def bkt_disk_plan(self, name: str) -> None:
        if name == "bad":
            raise self.exc

    @hookimpl
    def bkt_post_sync(self) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (SystemExit(7), "SystemExit: 7"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (GeneratorExit("odd"), "GeneratorExit: odd"),
    ],
)
def test_a_plugin_that_exits_or_interrupts_is_an_error_naming_plugin_and_hook(
    world: World, exc: BaseException, detail: str
) -> None:
    report = world.sync(Exits(exc))
    plan_failure = f"plugin exits in bkt_disk_plan: {detail}"
    post_failure = f"plugin exits in bkt_post_sync: {detail}"
    assert results(report) == {"bad": ("failed", plan_failure), "good": ("failed", post_failure)}

    world.file.write_text(world.text.replace('"none"', '"fail-validate"', 1))
    with pytest.raises(PluginError) as caught:
        world.sub(Exits(exc)).validate()
    assert str(caught.value) == f"plugin exits in bkt_validate_manifest: {detail}"
    assert caught.value.__cause__ is exc


class ExitingField(ColorField):
    def render(self, domain: Element, vm: Any, ctx: DomainContext) -> None:
        if ctx.name == "bad":
            raise SystemExit(3)


def test_a_field_method_that_exits_fails_that_vm_only(world: World) -> None:
    class ExitingRender(RaisingRender):
        @hookimpl
        def bkt_domain_fields(self) -> Iterable[DomainField]:
            return [ExitingField()]

    report = world.sync(ExitingRender())
    assert results(report) == {
        "bad": (
            "failed",
            "plugin boom in bkt_domain_fields: render failed for VM bad (field color): "
            "SystemExit: 3",
        ),
        "good": ("created", None),
    }


class Sleeps:
    """A manifest rule that takes a minute and swallows every ``Exception`` meanwhile."""

    bkt_plugin_name = "sleeps"

    @hookimpl
    def bkt_validate_manifest(self) -> None:
        import contextlib
        import time

        with contextlib.suppress(Exception):
            time.sleep(60)


def test_a_hook_past_the_time_limit_is_an_error_naming_plugin_and_hook(tmp_path: Path) -> None:
    import signal

    (tmp_path / "vms.json").write_text('{"vms": {}}')
    host = Host(
        tmp_path, entry_points=False, plugins=[*default_plugins(), Sleeps()], hook_timeout=0.05
    )
    with pytest.raises(PluginError) as caught:
        host.validate("vm")
    assert (
        str(caught.value) == "plugin sleeps in bkt_validate_manifest: did not return within 0.05 s"
    )
    assert "BKT_HOOK_TIMEOUT" in (caught.value.hint or "")
    # The watchdog is gone: no timer, no handler of bkt's left behind.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_the_hook_time_limit_comes_from_the_environment() -> None:
    from bkt_core.errors import UsageError
    from bkt_core.host import DEFAULT_HOOK_TIMEOUT, hook_timeout_from_env

    assert hook_timeout_from_env({}) == DEFAULT_HOOK_TIMEOUT
    assert hook_timeout_from_env({"BKT_HOOK_TIMEOUT": " 2.5 "}) == 2.5
    assert hook_timeout_from_env({"BKT_HOOK_TIMEOUT": "0"}) is None
    # Beyond what the interval timer holds (a timer that overflows, or fires before the hook
    # runs): a usage error, not a broken command group.
    for bad in ("soon", "-1", "nan", "inf", "1e12", "1e-9"):
        with pytest.raises(UsageError, match="BKT_HOOK_TIMEOUT must be a number of seconds"):
            hook_timeout_from_env({"BKT_HOOK_TIMEOUT": bad})


def test_every_hook_declares_the_type_its_results_are_checked_against() -> None:
    """The result table and the hook specifications name the same hooks, each with the
    shape its return annotation has."""
    from bkt_core import hookspecs as core
    from bkt_vm_plugin import hookspecs as vm

    starts = {"none": "None", "value": "", "iterable": "Iterable[", "fields": "Mapping[str, "}
    for hookspecs in (core, vm):
        assert set(hookspecs.RESULTS) == set(hookspecs.hook_names())
        assert set(hookspecs.hook_names()) >= hookspecs.CALLED_ONE_BY_ONE
        for name, (shape, spelling) in hookspecs.RESULTS.items():
            annotation = getattr(hookspecs, name).__annotations__["return"]
            assert annotation.startswith(starts[shape]), name
            assert annotation == "None" if shape == "none" else annotation.endswith(" | None")
            # The checked type is the one the annotation names.
            if shape in ("value", "iterable"):
                assert spelling.rpartition(":")[2] in annotation, name


def test_sync_holds_the_manifest_lock_that_capture_takes(world: World) -> None:
    """From reading the manifest to the last post-sync hook, another lock of the manifest
    directory (capture's) has to wait."""
    import fcntl
    import os

    seen: list[str] = []

    class Probe:
        bkt_plugin_name = "probe"

        @hookimpl
        def bkt_validate_manifest(self) -> None:
            seen.append(probe())

        @hookimpl
        def bkt_post_sync(self) -> None:
            seen.append(probe())

    def probe() -> str:
        fd = os.open(world.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "locked"
        finally:
            os.close(fd)
        return "free"

    world.sync(Probe())
    assert seen == ["locked", "locked"]
    seen.clear()
    # Without the cache of validated manifests, so that the manifest is validated (and the
    # probe runs) again.
    vm_subsystem(world.libvirt.host(world.dir, [Probe()], cache=False)).sync(dry_run=True)
    assert seen == ["free"], "a dry run only reads: it does not wait for a capture"


def test_the_define_batch_writes_no_file(
    tmp_path: Path, disks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The XML to define reaches virsh through an in-memory file: nothing in the temporary
    directory even while virsh runs (a signal or a crash can leave nothing behind)."""
    import tempfile

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    seen: list[list[Path]] = []

    class Watching(FakeLibvirt):
        def run(
            self, argv: Sequence[str], *, timeout: float, input: str | None = None
        ) -> Completed:
            done = super().run(argv, timeout=timeout, input=input)
            if self.processes and any(c[0] == "define" for c in self.processes[-1]):
                seen.append(list(private.iterdir()))
            return done

    world = World(tmp_path, disks, Watching())
    report = world.sync()
    assert results(report) == {"bad": ("created", None), "good": ("created", None)}
    assert seen == [[]], "one define process, and no file while it ran"
    defines = world.libvirt.commands("define")
    assert len(defines) == 2
    assert all(c[c.index("--file") + 1].startswith("/proc/") for c in defines)


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
        from bkt_vm_plugin.cpu_model import CpuModelField

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
