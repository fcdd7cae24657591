"""The plain VM definition: immutable, equal by value, plugin fields through ``field()``, the
same JSON as the author wrote and as capture writes; and reading it needs no pydantic."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from bkt_core.hookspecs import hookimpl
from bkt_core.host import Host
from bkt_core.manifest import dump_manifest
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import (
    BUILTIN_FIELDS,
    IsoPath,
    IsoUrl,
    VmDefinition,
    VmManifest,
    frozen,
    plain,
)
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, ManifestDir, vm_subsystem
from bkt_vm_plugin.xmltree import (
    Element,
    child,
    ensure_child,
    insert_child,
    make,
    set_text,
    text_of,
)

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
        "assert m.vms['a'].field('tags') == ('a',) and hash(m) == hash(VmManifest({'a': vm}))\n"
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
    assert vm.field("tags") == ("web",)
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
    assert (changed.memory_gb, changed.field("tags")) == (4, ("b",))
    assert (vm.memory_gb, vm.field("tags")) == (2, ())
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
    assert set(layout.plugin_names) == {"cpu_model", "autostart", "os", "tags", "owner"}
    assert layout.is_required("memory_gb") and not layout.is_required("tags")
    assert layout.default("iso_sources") == () and layout.default("tags") == ()
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
    assert manifest.vms["a"].field("tags") == ("t",)
    with pytest.raises(TypeError):
        manifest.vms["b"] = manifest.vms["a"]  # type: ignore[index]


def test_plain_gives_json_data() -> None:
    assert plain((IsoPath("/a"), IsoUrl("http://h/x.iso"))) == [
        {"path": "/a"},
        {"url": "http://h/x.iso"},
    ]
    assert plain(3) == 3


# -- plugin values are plain and immutable all the way down --------------------------------


class Nic(BaseModel):
    """A plugin's model field: a second NIC."""

    mac: str
    model: str | None = None
    queues: list[int] = []


#: Where the deep plugin's DomainField keeps its values in the domain: ``<description>``.
DEEP = ("tags", "nic", "labels")


class DeepField(DomainField):
    """Maps the deep plugin's three fields to the domain's ``<description>``, as JSON: its
    parse reads plain lists and dicts, which diff must see equal to the definition's tuples
    and read-only mappings."""

    fields = DEEP

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        insert_child(domain, make("description", text=self._text(vm)))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        node = child(domain, "description")
        data = json.loads(text_of(node)) if node is not None else {}
        return {
            "tags": Reading.clean(data.get("tags", [])),
            "nic": Reading.clean(data.get("nic")),
            "labels": Reading.clean(data.get("labels", {})),
        }

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        set_text(ensure_child(domain, "description"), self._text(vm))

    @staticmethod
    def _text(vm: VmDefinition) -> str:
        data = vm.as_json()
        return json.dumps({name: data[name] for name in DEEP}, sort_keys=True)


class Deep:
    """A plugin declaring a list, a model and a dict field, mapped by :class:`DeepField`."""

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> dict[str, Any] | None:
        if subsystem != "vm":
            return None
        return {
            "tags": (list[str], Field(default_factory=list)),
            "nic": (Nic | None, Field(default=None)),
            "labels": (dict[str, list[int]], Field(default_factory=dict)),
        }

    @hookimpl
    def bkt_domain_fields(self) -> list[DomainField]:
        return [DeepField()]


DEEP_SUB = vm_sub(("deep", Deep()))
DEEP_ENTRY = ENTRY | {
    "tags": ["web", "db"],
    "nic": {"mac": "52:54:00:00:00:01", "queues": [1, 2]},
    "labels": {"rack": [1, 2], "row": []},
}


def test_plugin_values_are_tuples_and_read_only_mappings() -> None:
    vm = DEEP_SUB.vm_definition(DEEP_ENTRY, home=HOME)
    tags, nic, labels = (vm.field(name) for name in DEEP)
    assert tags == ("web", "db")
    assert isinstance(nic, types.MappingProxyType)
    # The model is dumped as capture writes it: its None fields left out.
    assert dict(nic) == {"mac": "52:54:00:00:00:01", "queues": (1, 2)}
    assert isinstance(labels, types.MappingProxyType)
    assert dict(labels) == {"rack": (1, 2), "row": ()}
    with pytest.raises(AttributeError):
        tags.append("x")
    with pytest.raises(TypeError):
        nic["mac"] = "52:54:00:00:00:02"  # type: ignore[index]
    with pytest.raises(AttributeError):
        nic["queues"].append(3)
    with pytest.raises(TypeError):
        labels["rack"] = [3]  # type: ignore[index]
    assert vm == DEEP_SUB.vm_definition(DEEP_ENTRY, home=HOME)


def test_a_vm_with_list_model_and_dict_fields_hashes_by_value() -> None:
    vm = DEEP_SUB.vm_definition(DEEP_ENTRY, home=HOME)
    same = DEEP_SUB.vm_definition(json.loads(json.dumps(DEEP_ENTRY)), home=HOME)
    other = DEEP_SUB.vm_definition(DEEP_ENTRY | {"labels": {"rack": [2, 1]}}, home=HOME)
    assert hash(vm) == hash(same) and len({vm, same, other}) == 2
    assert vm != other
    assert hash(VmManifest({"a": vm})) == hash(VmManifest({"a": same}))


def test_defaults_are_frozen_too() -> None:
    vm = DEEP_SUB.vm_definition(ENTRY, home=HOME)
    assert (vm.field("tags"), vm.field("nic"), vm.field("labels")) == ((), None, {})
    assert isinstance(DEEP_SUB.vm_fields.default("labels"), types.MappingProxyType)
    assert hash(vm) == hash(DEEP_SUB.vm_definition(ENTRY | {"tags": []}, home=HOME))
    assert vm.normalized() == ENTRY


def test_plain_gives_the_json_the_author_wrote_back() -> None:
    vm = DEEP_SUB.vm_definition(DEEP_ENTRY, home=HOME)
    assert vm.as_written() == DEEP_ENTRY
    assert vm.normalized() == DEEP_ENTRY
    written = vm.as_written()
    assert type(written["tags"]) is list and type(written["nic"]) is dict
    assert type(written["labels"]["rack"]) is list
    # What capture writes: byte for byte what json writes of the author's data.
    assert json.dumps(vm.normalized(), indent=2) == json.dumps(DEEP_ENTRY, indent=2)


def test_replace_and_code_built_definitions_freeze_what_they_are_given() -> None:
    tags = ["a"]
    nic = Nic(mac="52:54:00:00:00:09", model=None, queues=[4])
    vm = DEEP_SUB.vm_definition(ENTRY, home=HOME).replace(tags=tags, nic=nic)
    tags.append("b")
    nic.queues.append(5)
    assert vm.field("tags") == ("a",)
    assert vm.field("nic") == {"mac": "52:54:00:00:00:09", "queues": (4,)}
    built = VmDefinition(
        memory_gb=1,
        vcpus=1,
        disk_path="/a",
        disk_size_gb=1,
        boot="bios",
        network="none",
        graphics="none",
        plugin_values={"tags": tags, "nested": {"a": [{"b": [1]}]}},
    )
    assert built.field("nested") == {"a": ({"b": (1,)},)}
    assert built.as_json()["nested"] == {"a": [{"b": [1]}]}
    hash(built)


JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_frozen_json_is_immutable_hashable_and_plain_gives_it_back(value: Any) -> None:
    kept = json.loads(json.dumps(value))
    vm = VmDefinition(
        memory_gb=1,
        vcpus=1,
        disk_path="/a",
        disk_size_gb=1,
        boot="bios",
        network="none",
        graphics="none",
        plugin_values={"x": value},
    )
    got = vm.field("x")
    assert plain(got) == kept
    assert plain(frozen(got)) == kept  # freezing twice changes nothing
    assert json.dumps(vm.as_json()["x"]) == json.dumps(kept)
    twin = VmDefinition(**{**_builtins(vm), "plugin_values": {"x": kept}})
    assert twin == vm and hash(twin) == hash(vm)

    def mutable(v: Any) -> bool:
        if isinstance(v, list | dict | set):
            return True
        if isinstance(v, tuple):
            return any(mutable(i) for i in v)
        if isinstance(v, Mapping):
            return any(mutable(i) for i in v.values())
        return False

    assert not mutable(got)


def _builtins(vm: VmDefinition) -> dict[str, Any]:
    return {name: getattr(vm, name) for name in BUILTIN_FIELDS.names}


def test_capture_writes_back_list_model_and_dict_fields_unchanged(tmp_path: Path) -> None:
    libvirt = FakeLibvirt()
    disks = tmp_path / "disks"
    disks.mkdir()
    manifests = ManifestDir(tmp_path / "manifests")

    def entry(name: str, **fields: Any) -> dict[str, Any]:
        path = disks / f"{name}.qcow2"
        if not path.exists():
            libvirt.add_image(path, size=1 << 30)
        return DEEP_ENTRY | {"disk_path": str(path), "disk_size_gb": 1} | fields

    vms = {"a": entry("a"), "b": entry("b", tags=[], nic=None, labels={})}
    # As bkt writes a manifest, so that a rewrite of the same values is the same text.
    manifests.file.write_text(dump_manifest({"vms": vms}), encoding="utf-8")
    sub = vm_subsystem(libvirt.host(manifests, [("deep", Deep())]))
    assert [r.result for r in sub.sync().results or ()] == ["created", "created"]
    assert [e.action for e in sub.plan().entries] == ["unchanged", "unchanged"]
    before = manifests.file.read_text(encoding="utf-8")
    report = sub.capture()
    assert {e.name: e.kind for e in report.entries} == {"a": "unchanged", "b": "unchanged"}
    assert not report.written
    # Rewritten because another VM changed: every entry is written as it was.
    libvirt.define(libvirt.xml("b").replace('"tags": []', '"tags": ["new"]'))
    report = sub.capture()
    assert {e.name: e.kind for e in report.entries} == {"a": "unchanged", "b": "changed"}
    after = manifests.read()["vms"]
    assert after["a"] == vms["a"]
    assert after["b"] == {**vms["b"], "tags": ["new"]}
    text = manifests.file.read_text(encoding="utf-8")
    assert text == before.replace('"tags": [],', '"tags": [\n        "new"\n      ],')
