"""Defaults a plugin fills (``bkt_vm_defaults``): applied to what the author did not write,
recorded as the VM's defaults, checked (a plugin's mistake names it), never written back by
capture; and the manifest rules of the device fields."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bkt_core import hookimpl
from bkt_core.errors import ManifestError, PluginError
from bkt_vm_plugin.definition import builtin_value_problem
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, vm_subsystem
from tests.unit.test_capture import World


class Windows:
    """Fills Windows devices for every VM whose disk is named win*."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values = dict(
            values
            if values is not None
            else {"disk_bus": "sata", "nic_model": "e1000e", "clock": "localtime", "sound": "ich9"}
        )
        self.seen: list[frozenset[str] | None] = []

    @hookimpl
    def bkt_vm_defaults(self, vm: Any) -> Mapping[str, Any] | None:
        self.seen.append(vm.written)
        if not vm.disk_path.rsplit("/", 1)[-1].startswith("win"):
            return None
        return self.values


class Returns:
    """Returns ``value`` for every VM."""

    def __init__(self, value: Any) -> None:
        self.value = value

    @hookimpl
    def bkt_vm_defaults(self) -> Any:
        return self.value


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "disks").mkdir()
    yield World(tmp_path, FakeLibvirt())


def sub_with(world: World, *plugins: tuple[str, object]) -> VmSubsystem:
    world.plugins = plugins
    return vm_subsystem(world.libvirt.host(world.dir, plugins))


# -- filling -------------------------------------------------------------------------------------


def test_a_plugin_fills_what_the_author_left_out_and_the_author_wins(world: World) -> None:
    plugin = Windows()
    world.write(
        {
            "win": world.vm("win", clock="utc"),
            "linux": world.vm("linux"),
        }
    )
    manifest = sub_with(world, ("windows", plugin)).load()
    win, linux = manifest.vms["win"], manifest.vms["linux"]
    assert (win.disk_bus, win.nic_model, win.clock, win.sound) == ("sata", "e1000e", "utc", "ich9")
    assert dict(win.filled) == {"disk_bus": "sata", "nic_model": "e1000e", "sound": "ich9"}
    assert "clock" in (win.written or ()) and "disk_bus" not in (win.written or ())
    assert win.default("disk_bus") == "sata"
    assert win.default("clock") is None  # the author's value is not a default
    assert win.default("tpm") == "none"
    # Filled values are defaults: not what capture writes.
    assert win.normalized() == {**_normalized(world.vm("win", clock="utc"))}
    assert dict(linux.filled) == {}
    assert linux.disk_bus is None
    # The hook saw each VM as its author wrote it.
    assert all(written is not None and "disk_bus" not in written for written in plugin.seen)


def _normalized(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "virt_type" or v != "kvm"}


def test_when_nothing_is_filled_the_manifest_is_not_copied(world: World) -> None:
    world.write({"a": world.vm("a")})
    sub = sub_with(world)
    manifest = sub.load()
    assert dict(manifest.vms["a"].filled) == {}
    from bkt_vm_plugin.defaults import fill_defaults

    assert fill_defaults(manifest, sub.hooks) is manifest


def test_a_field_stated_as_null_is_written_and_stays_unmanaged(world: World) -> None:
    world.write({"win": world.vm("win", disk_bus=None)})
    win = sub_with(world, ("windows", Windows())).load().vms["win"]
    assert win.disk_bus is None
    assert win.nic_model == "e1000e"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"disk_bus": "ide"},
            "plugin bad in bkt_vm_defaults: fills disk_bus of VM win: must be one of "
            "'virtio', 'sata', not 'ide'",
        ),
        (
            {"usb_redirection": 9},
            "plugin bad in bkt_vm_defaults: fills usb_redirection of VM win: must be 0 to 8, "
            "not 9",
        ),
        (
            {"hyperv": "yes"},
            "plugin bad in bkt_vm_defaults: fills hyperv of VM win: must be true or false, "
            "not 'yes'",
        ),
        (
            {"no_such_field": 1},
            "plugin bad in bkt_vm_defaults: fills VM field 'no_such_field', which is not a "
            "field of this host",
        ),
        (
            {"iso_sources": []},
            "plugin bad in bkt_vm_defaults: fills iso_sources of VM win: 'iso_sources' cannot "
            "be filled by a plugin",
        ),
        (
            {"autostart": "yes"},
            'plugin bad in bkt_vm_defaults: fills autostart of VM win with "yes": Input should '
            "be a valid boolean",
        ),
        (
            {"usb_redirection": 2},
            "plugin bad in bkt_vm_defaults: fills usb_redirection of VM win: needs graphics "
            '"spice" (USB redirection is a SPICE channel)',
        ),
        (
            {"hyperv": True},
            "plugin bad in bkt_vm_defaults: fills hyperv of VM win: Hyper-V enlightenments need "
            'virt_type "kvm" (QEMU\'s software emulation cannot start such a guest)',
        ),
        (
            ["disk_bus"],
            "plugin bad in bkt_vm_defaults: returned a list, expected Mapping or None",
        ),
    ],
)
def test_a_bad_value_is_an_error_naming_the_plugin_and_the_hook(
    world: World, value: Any, message: str
) -> None:
    world.write({"win": world.vm("win")})  # graphics none, virt_type qemu
    with pytest.raises(PluginError) as caught:
        sub_with(world, ("bad", Returns(value))).load()
    assert str(caught.value).splitlines()[0] == message


def test_a_plugin_field_takes_a_filled_value(world: World) -> None:
    world.write({"win": world.vm("win")})
    win = sub_with(world, ("auto", Returns({"autostart": True}))).load().vms["win"]
    assert win.field("autostart") is True
    assert dict(win.filled) == {"autostart": True}
    assert "autostart" not in win.normalized()


def test_two_plugins_filling_a_field_differently_is_an_error_naming_both(world: World) -> None:
    world.write({"win": world.vm("win")})
    same = sub_with(
        world, ("one", Returns({"sound": "ich9"})), ("two", Returns({"sound": "ich9"}))
    )
    assert same.load().vms["win"].sound == "ich9"
    other = sub_with(
        world, ("one", Returns({"sound": "ich9"})), ("two", Returns({"sound": "ac97"}))
    )
    with pytest.raises(PluginError) as caught:
        other.load()
    assert caught.value.message in (
        'plugin two in bkt_vm_defaults: fills sound of VM win with "ac97", but plugin one '
        'fills it with "ich9"',
        'plugin one in bkt_vm_defaults: fills sound of VM win with "ich9", but plugin two '
        'fills it with "ac97"',
    )
    assert caught.value.hint is not None and "--disable-plugin" in caught.value.hint
    # The author settles it.
    world.write({"win": world.vm("win", sound="none")})
    assert other.load().vms["win"].sound == "none"


def test_the_builtin_check_needs_no_model() -> None:
    assert builtin_value_problem("video", "virtio") is None
    assert builtin_value_problem("usb_redirection", True) == "must be an integer, not True"
    assert builtin_value_problem("memory_gb", 0) == "must be 1 to 4294967295, not 0"
    assert builtin_value_problem("network", "default") is None
    assert builtin_value_problem("cpu_model", "x") == "'cpu_model' is not a built-in field"


# -- sync, status and capture with filled values -------------------------------------------------


def test_a_filled_value_is_managed_and_shows_as_drift(world: World) -> None:
    world.define("win", world.vm("win"))
    world.write({"win": world.vm("win")})
    assert [e.action for e in sub_with(world).plan().entries] == ["unchanged"]
    sub = sub_with(world, ("windows", Windows({"sound": "ich9"})))
    assert sub.status().rows[0].drift == ("sound",)
    # ... which sync does not make to an existing domain (the author states it, or not)
    assert sub.plan().entries[0].action == "error"


def test_capture_does_not_write_a_filled_value_back(world: World) -> None:
    filled = {"nic_model": "e1000e", "sound": "ich9", "clock": "localtime"}
    world.define("win", world.vm("win", **filled))
    world.write({"win": world.vm("win")})
    sub_with(world, ("windows", Windows(filled)))
    report = world.capture("win")
    assert [e.kind for e in report.entries] == ["unchanged"]
    assert "sound" not in world.manifest()["vms"]["win"]
    world.in_sync("win")
    # A domain that differs from the filled value gets it written, so that sync leaves it.
    world.libvirt.define(world.libvirt.xml("win").replace('model="ich9"', 'model="ac97"'))
    world.capture("win")
    assert world.manifest()["vms"]["win"]["sound"] == "ac97"
    world.in_sync("win")


def test_capture_of_a_new_vm_leaves_out_what_a_plugin_fills(world: World) -> None:
    world.define("win", world.vm("win", nic_model="e1000e", sound="ich9", clock="utc"))
    sub_with(world, ("windows", Windows()))
    report = world.capture("win")
    assert [e.kind for e in report.entries] == ["added"]
    entry = world.manifest()["vms"]["win"]
    # e1000e and ich9 are what the plugin fills; the virtio disk differs from its sata, and
    # utc from its localtime (though bkt writes both when nothing is managed), so they are
    # written; no other device field is (each is what bkt gives a new domain).
    assert {k: entry.get(k) for k in ("disk_bus", "nic_model", "clock", "sound")} == {
        "disk_bus": "virtio",
        "nic_model": None,
        "clock": "utc",
        "sound": None,
    }
    assert not {"clock_timers", "hyperv", "usb_redirection", "video"} & set(entry)
    world.in_sync("win")


def test_an_existing_entry_does_not_start_writing_an_unmanaged_field(world: World) -> None:
    world.define(
        "vm",
        world.vm("vm", graphics="spice", sound="ich9", usb_redirection=2, clock_timers=True),
    )
    world.write({"vm": world.vm("vm", graphics="spice")})
    report = world.capture("vm")
    assert [e.kind for e in report.entries] == ["unchanged"]
    assert report.warnings == ()
    world.in_sync("vm")
    # Captured as a new VM, the same domain is written with its devices.
    world.file.unlink()
    world.capture("vm")
    entry = world.manifest()["vms"]["vm"]
    assert (entry["sound"], entry["usb_redirection"], entry["clock_timers"]) == ("ich9", 2, True)
    assert not {"disk_bus", "nic_model", "clock", "hyperv", "video"} & set(entry)


def test_an_unclean_device_reading_does_not_keep_a_new_vm_out(world: World) -> None:
    world.define(
        "old",
        world.vm("old"),
        edit=('bus="virtio"', 'bus="ide"'),
    )
    report = world.capture("old")
    assert [e.kind for e in report.entries] == ["added"]
    assert "disk_bus" not in world.manifest()["vms"]["old"]
    world.in_sync("old")


# -- the manifest's rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"hyperv": True, "virt_type": "qemu"},
            'vms.a.hyperv: Hyper-V enlightenments need virt_type "kvm" (QEMU\'s software '
            "emulation cannot start such a guest)",
        ),
        (
            {"usb_redirection": 1, "graphics": "vnc"},
            'vms.a.usb_redirection: needs graphics "spice" (USB redirection is a SPICE channel)',
        ),
        ({"usb_redirection": 9, "graphics": "spice"}, "vms.a.usb_redirection: must be <= 8"),
        (
            {"usb_redirection": -1, "graphics": "spice"},
            "vms.a.usb_redirection: must be >= 0",
        ),
    ],
)
def test_the_device_rules(world: World, fields: dict[str, Any], message: str) -> None:
    world.write({"a": world.vm("a", **fields)})
    with pytest.raises(ManifestError) as caught:
        sub_with(world).load()
    shown = [str(d).split(": ", 1)[1] for d in caught.value.diagnostics]
    assert shown == [message]


def test_the_device_rules_accept_what_they_should(world: World) -> None:
    world.write(
        {
            "a": world.vm("a", hyperv=False, virt_type="qemu", usb_redirection=0),
            "b": world.vm("b", hyperv=True, virt_type="kvm", usb_redirection=8, graphics="spice"),
        }
    )
    assert len(sub_with(world).load().vms) == 2


def test_the_schema_lists_the_device_fields(world: World) -> None:
    props = sub_with(world).schema()["$defs"]["VmDefinition"]["properties"]
    # null is "not managed", as absent is: bkt accepts it, and so does the schema
    assert props["disk_bus"]["enum"] == ["virtio", "sata", None]
    assert props["usb_redirection"]["maximum"] == 8
    assert props["hyperv"]["type"] == ["boolean", "null"]


def test_the_schema_accepts_null_where_bkt_does(world: World) -> None:
    import jsonschema

    schema = sub_with(world).schema()
    devices = ("disk_bus", "nic_model", "clock", "clock_timers", "hyperv", "sound")
    nulls = {name: None for name in (*devices, "usb_redirection", "video")}
    document = {"vms": {"a": world.vm("a", **nulls)}}
    jsonschema.validate(document, schema)
    sub_with(world).vm_definition(document["vms"]["a"], home=str(world.tmp))  # bkt agrees
    for wrong in ({"disk_bus": "ide"}, {"hyperv": "yes"}, {"usb_redirection": -1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"vms": {"a": world.vm("a", **wrong)}}, schema)


def test_the_guides_example_fills_windows_devices(world: World) -> None:
    import types

    from tests.unit.test_docs import GUIDES, python_blocks

    (body,) = [b for _, b, _ in python_blocks(GUIDES[0]) if "def bkt_vm_defaults" in b]
    module = types.ModuleType("guide_defaults")
    exec(compile(body, "plugins.md", "exec"), module.__dict__)
    world.write({"win11": world.vm("win11", virt_type="kvm"), "web": world.vm("web")})
    manifest = sub_with(world, ("guide", module)).load()
    assert dict(manifest.vms["win11"].filled) == {
        "disk_bus": "sata",
        "nic_model": "e1000e",
        "clock": "localtime",
        "hyperv": True,
    }
    assert dict(manifest.vms["web"].filled) == {}


# -- a filled value never changes an existing domain ---------------------------------------------


def test_a_filled_value_does_not_change_an_existing_domain(world: World) -> None:
    # An installed guest on e1000e; then the plugin's default becomes virtio (a new osinfo
    # database, say): sync refuses, status shows the drift, the domain keeps its NIC.
    world.define("win", world.vm("win", nic_model="e1000e"))
    world.write({"win": world.vm("win")})
    before = world.libvirt.xml("win")
    sub = sub_with(world, ("windows", Windows({"nic_model": "virtio"})))
    report = sub.sync()
    (result,) = report.results or ()
    assert result.result == "failed"
    message, hint = result.message or "", result.hint or ""
    assert "nic_model would change from e1000e (the domain's) to virtio" in message
    assert "filled by plugin windows" in message and "nothing was changed for win" in message
    assert '"nic_model": "e1000e" keeps the domain as it is' in hint
    assert '"nic_model": "virtio" changes it' in hint
    assert world.libvirt.xml("win") == before
    (row,) = sub.status().rows
    assert row.in_sync is False and row.drift == ("nic_model",)


def test_a_filled_value_is_refused_with_every_field_named(world: World) -> None:
    world.define("win", world.vm("win", nic_model="e1000e"))
    world.write({"win": world.vm("win", memory_gb=2)})
    plugin = Windows({"nic_model": "virtio", "sound": "ich9"})
    (entry,) = sub_with(world, ("windows", plugin)).plan().entries
    assert entry.action == "error"
    # the author's own change (memory) is not made either: the VM is refused as a whole
    assert "nic_model would change" in (entry.message or "")
    assert "sound would change from none (the domain's) to ich9" in (entry.message or "")
    assert '"sound": "none" keeps' in (entry.hint or "")


def test_stating_the_field_keeps_or_changes_the_domain(world: World) -> None:
    world.define("win", world.vm("win", nic_model="e1000e"))
    plugin = ("windows", Windows({"nic_model": "virtio"}))
    world.write({"win": world.vm("win", nic_model="e1000e")})
    assert [e.action for e in sub_with(world, plugin).plan().entries] == ["unchanged"]
    world.write({"win": world.vm("win", nic_model="virtio")})
    (result,) = sub_with(world, plugin).sync().results or ()
    assert result.result == "updated"
    assert '<model type="virtio"/>' in world.libvirt.xml("win")


def test_a_new_domain_takes_filled_values(world: World) -> None:
    world.write({"win": world.vm("win")})
    (result,) = sub_with(world, ("windows", Windows({"nic_model": "e1000e"}))).sync().results or ()
    assert result.result == "created"
    assert '<model type="e1000e"/>' in world.libvirt.xml("win")


def test_the_disk_bus_refusal_of_a_filled_bus_says_to_state_it(world: World) -> None:
    from bkt_vm_plugin.api import PatchRefused
    from bkt_vm_plugin.observe import resolve_context

    world.define("win", world.vm("win", disk_bus="virtio"))
    for written, expected in (
        (False, '"disk_bus": "virtio" keeps the domain as it is, "disk_bus": "sata" changes it'),
        (True, "`bkt vm capture NAME`"),
    ):
        world.write({"win": world.vm("win", **({"disk_bus": "sata"} if written else {}))})
        sub = sub_with(world, ("windows", Windows({"disk_bus": "sata"})))
        vm = sub.load().vms["win"]
        ctx = resolve_context(
            "win", vm, home=str(world.tmp), iso_cache=None, exists=lambda p: True
        )
        with pytest.raises(PatchRefused) as caught:
            sub.mapping.patch(world.libvirt.xml("win"), vm, ctx)
        assert expected in (caught.value.hint or "")
