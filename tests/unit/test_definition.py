"""The plain VM definition: immutable, equal by value, plugin fields through ``field()``, the
same JSON as the author wrote and as capture writes; and reading it needs no pydantic."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, cast

import pytest
from pydantic import Field

from bkt_core.hookspecs import hookimpl
from bkt_core.host import Host
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import (
    BUILTIN_FIELDS,
    IsoPath,
    IsoUrl,
    VmDefinition,
    VmManifest,
    plain,
)
from bkt_vm_plugin.subsystem import VmSubsystem

HOME = "/home/u"
ENTRY: dict[str, Any] = {
    "memory_gb": 2,
    "vcpus": 2,
    "disk_path": "~/vm/a.qcow2",
    "disk_size_gb": 10,
    "boot": "uefi",
    "network": "default",
    "graphics": "spice",
}


class Tags:
    """A plugin with a list field, an optional string and a required one."""

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> dict[str, Any] | None:
        if subsystem != "vm":
            return None
        return {
            "tags": (list[str], Field(default_factory=list, description="Tags.")),
            "owner": (str | None, Field(default=None, description="Owner.")),
        }


def vm_sub(*plugins: tuple[str, object]) -> VmSubsystem:
    host = Host(entry_points=False, plugins=[*default_plugins(), *plugins])
    return cast(VmSubsystem, host.subsystem("vm"))


SUB = vm_sub(("tags", Tags()))


def test_importing_and_using_the_definition_imports_no_pydantic() -> None:
    code = (
        "import sys\n"
        "from bkt_vm_plugin.definition import VmDefinition, VmManifest, IsoPath, IsoUrl\n"
        "from bkt_vm_plugin.paths import expand_home, home_dir, local_path_problem, xml_problem\n"
        "vm = VmDefinition(memory_gb=1, vcpus=1, disk_path='/a', disk_size_gb=1, boot='bios',\n"
        "    network='none', graphics='none', iso_sources=[IsoPath('/i.iso'), IsoUrl('http://h/x.iso')],\n"
        "    plugin_values={'tags': ['a']})\n"
        "m = VmManifest({'a': vm})\n"
        "assert m.vms['a'].field('tags') == ['a'] and hash(m) == hash(VmManifest({'a': vm}))\n"
        "assert vm.normalized() and vm.as_written() and vm.as_json()\n"
        "assert local_path_problem(expand_home('~/x', '/h'), '/h') is None\n"
        "assert xml_problem('a') is None\n"
        "bad = [m for m in sys.modules if m.startswith('pydantic')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_validated_vm_is_plain_and_frozen() -> None:
    vm = SUB.vm_definition(ENTRY | {"iso_sources": [{"path": "/a.iso"}]}, home=HOME)
    assert type(vm) is VmDefinition
    assert vm.iso_sources == (IsoPath("/a.iso"),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vm.memory_gb = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        vm.plugin_values["tags"] = ["x"]  # type: ignore[index]


def test_field_reads_plugin_fields_with_their_defaults_and_built_in_fields() -> None:
    vm = SUB.vm_definition(ENTRY | {"tags": ["web"]}, home=HOME)
    assert vm.field("tags") == ["web"]
    assert vm.field("owner") is None
    assert vm.field("memory_gb") == 2 == vm.memory_gb
    assert vm.field("cpu_model") is None
    with pytest.raises(KeyError, match="'nope'"):
        vm.field("nope")


def test_two_vms_with_the_same_values_are_equal_and_hash_alike() -> None:
    written = SUB.vm_definition(ENTRY | {"tpm": "none", "tags": []}, home=HOME)
    implied = SUB.vm_definition(ENTRY, home=HOME)
    assert written == implied
    assert hash(written) == hash(implied)
    assert len({written, implied}) == 1
    other = SUB.vm_definition(ENTRY | {"tags": ["x"]}, home=HOME)
    assert other != implied
    assert len({other, implied}) == 2


def test_normalized_and_as_written_give_the_json_the_model_gave() -> None:
    data = ENTRY | {
        "tpm": "none",
        "iso_sources": [{"url": "https://h/x.iso"}, {"path": "/b.iso"}],
        "tags": ["a"],
        "autostart": False,
    }
    vm = SUB.vm_definition(data, home=HOME)
    assert vm.as_written() == {
        "memory_gb": 2,
        "vcpus": 2,
        "disk_path": "~/vm/a.qcow2",
        "disk_size_gb": 10,
        "boot": "uefi",
        "tpm": "none",
        "network": "default",
        "graphics": "spice",
        "iso_sources": [{"url": "https://h/x.iso"}, {"path": "/b.iso"}],
        "autostart": False,
        "tags": ["a"],
    }
    normalized = vm.normalized()
    assert "tpm" not in normalized and "autostart" not in normalized
    assert list(normalized) == [
        "memory_gb", "vcpus", "disk_path", "disk_size_gb", "boot", "network", "graphics",
        "iso_sources", "tags",
    ]  # fmt: skip
    assert list(vm.as_json()) == list(SUB.vm_fields.names)
    assert SUB.vm_definition(ENTRY, home=HOME).normalized() == ENTRY


def test_replace_changes_any_field_and_counts_it_as_written() -> None:
    vm = SUB.vm_definition(ENTRY, home=HOME)
    changed = vm.replace(memory_gb=4, tags=["b"])
    assert (changed.memory_gb, changed.field("tags")) == (4, ["b"])
    assert (vm.memory_gb, vm.field("tags")) == (2, [])
    assert {"memory_gb", "tags"} <= set(changed.as_written())
    assert "tags" not in vm.as_written()
    with pytest.raises(KeyError):
        vm.replace(colour="red")


def test_a_vm_built_in_code_states_every_field() -> None:
    vm = VmDefinition(
        memory_gb=1,
        vcpus=1,
        disk_path="/a",
        disk_size_gb=1,
        boot="bios",
        network="none",
        graphics="none",
        iso_sources=(IsoUrl("http://h/x.iso", "ab" * 32),),
    )
    assert vm.iso_sources == (IsoUrl("http://h/x.iso", "ab" * 32),)
    assert list(vm.as_written()) == list(BUILTIN_FIELDS.names)
    assert vm.normalized()["iso_sources"] == [{"url": "http://h/x.iso", "sha256": "ab" * 32}]
    with pytest.raises(ValueError, match="'vcpus'"):
        dataclasses.replace(vm, plugin_values={"vcpus": 3})


def test_the_layout_knows_the_host_fields_and_defaults() -> None:
    layout = SUB.vm_fields
    assert layout.names[: len(BUILTIN_FIELDS.names)] == BUILTIN_FIELDS.names
    assert set(layout.plugin_names) == {"cpu_model", "autostart", "tags", "owner"}
    assert layout.is_required("memory_gb") and not layout.is_required("tags")
    assert layout.default("iso_sources") == () and layout.default("tags") == []
    assert SUB.vm_definition(ENTRY, home=HOME).layout is layout


def test_the_manifest_loads_into_plain_definitions(tmp_path: Any) -> None:
    (tmp_path / "vms.json").write_text(
        '{"$schema": "vms.schema.json", "vms": {"a": '
        '{"memory_gb": 1, "vcpus": 1, "disk_path": "/a.qcow2", "disk_size_gb": 1, '
        '"boot": "bios", "network": "none", "graphics": "none", "tags": ["t"]}}}'
    )
    host = Host(tmp_path, entry_points=False, plugins=[*default_plugins(), ("tags", Tags())])
    sub = cast(VmSubsystem, host.subsystem("vm"))
    manifest = sub.load()
    assert type(manifest) is VmManifest
    assert manifest.schema == "vms.schema.json"
    assert manifest.vms["a"].field("tags") == ["t"]
    with pytest.raises(TypeError):
        manifest.vms["b"] = manifest.vms["a"]  # type: ignore[index]


def test_plain_gives_json_data() -> None:
    assert plain((IsoPath("/a"), IsoUrl("http://h/x.iso"))) == [
        {"path": "/a"},
        {"url": "http://h/x.iso"},
    ]
    assert plain(3) == 3
