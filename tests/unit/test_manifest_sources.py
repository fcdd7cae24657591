"""A manifest made of several documents: the merge rules, where problems are placed, the split
that capture writes back, the bkt_manifest_sources pipeline and the per-host overrides."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bkt_core.errors import ManifestError, OperationError
from bkt_core.hookspecs import hookimpl
from bkt_core.host import Host
from bkt_core.manifest import (
    ManifestSource,
    merge_documents,
    merge_sources,
    split_document,
)
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.host_overrides import HOSTNAME_ENV, hostname, override_file
from bkt_vm_plugin.subsystem import VmSubsystem

BASE = """{
  "vms": {
    "win11": {
      "memory_gb": 16, "vcpus": 4, "disk_path": "/var/lib/w.qcow2", "disk_size_gb": 64,
      "boot": "uefi", "network": "default", "graphics": "spice",
      "iso_sources": [{"path": "/isos/a.iso"}, {"path": "/isos/b.iso"}]
    }
  }
}
"""


def source(path: str, document: Any) -> ManifestSource:
    return ManifestSource.parse(Path(path), json.dumps(document, indent=2))


# -- the merge rules -------------------------------------------------------------------------


def test_objects_merge_member_by_member_and_other_values_replace_whole() -> None:
    base = {"vms": {"a": {"memory_gb": 16, "vcpus": 4, "iso_sources": [{"path": "/x"}, 1]}}}
    override = {"vms": {"a": {"memory_gb": 4, "iso_sources": [{"url": "https://h/y.iso"}]}}}
    assert merge_documents(base, override) == {
        "vms": {"a": {"memory_gb": 4, "vcpus": 4, "iso_sources": [{"url": "https://h/y.iso"}]}}
    }


def test_an_override_may_add_a_vm_and_an_object_over_a_value_replaces_it() -> None:
    merged = merge_documents({"vms": {"a": {"x": 1}}, "k": 5}, {"vms": {"b": {"y": 2}}, "k": {}})
    assert merged == {"vms": {"a": {"x": 1}, "b": {"y": 2}}, "k": {}}
    assert merge_documents({"k": {"a": 1}}, {"k": None}) == {"k": None}


def test_merging_changes_neither_document() -> None:
    base = {"vms": {"a": {"x": 1}}}
    merge_documents(base, {"vms": {"a": {"x": 2}}})
    assert base == {"vms": {"a": {"x": 1}}}


# -- where problems are placed ---------------------------------------------------------------


def load(tmp_path: Path, override: str | None, *, host: str = "laptop", **kw: Any) -> Any:
    directory = tmp_path / "m"
    directory.mkdir(exist_ok=True)
    (directory / "vms.json").write_text(kw.get("base", BASE))
    if override is not None:
        (directory / f"vms.{host}.json").write_text(override)
    plugins = [p for p in default_plugins() if p[0] not in kw.get("without", ())]
    sub = Host(directory, entry_points=False, plugins=plugins).subsystem("vm")
    assert isinstance(sub, VmSubsystem)
    return sub.load()


@pytest.fixture(autouse=True)
def laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOSTNAME_ENV, "laptop")
    monkeypatch.setenv("HOME", "/home/tester")


def problems(caught: pytest.ExceptionInfo[ManifestError]) -> list[tuple[str, int, int, str]]:
    return [(Path(d.file).name, d.line, d.column, d.path) for d in caught.value.diagnostics]


def test_the_override_wins_field_by_field(tmp_path: Path) -> None:
    manifest = load(tmp_path, '{"vms": {"win11": {"memory_gb": 4}}}')
    vm = manifest.vms["win11"]
    assert (vm.memory_gb, vm.vcpus, len(vm.iso_sources)) == (4, 4, 2)


def test_without_the_plugin_or_the_file_vms_json_is_read_alone(tmp_path: Path) -> None:
    override = '{"vms": {"win11": {"memory_gb": 4}}}'
    assert load(tmp_path, override, without=("host_overrides",)).vms["win11"].memory_gb == 16
    (tmp_path / "2").mkdir()
    assert load(tmp_path / "2", override, host="desktop").vms["win11"].memory_gb == 16


def test_an_error_in_the_override_names_the_override_at_its_line(tmp_path: Path) -> None:
    override = '{\n  "vms": {"win11": {"memory_gb": 0,\n    "memroy_gb": 2}}}\n'
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, override)
    assert problems(caught) == [
        ("vms.laptop.json", 2, 34, "vms.win11.memory_gb"),
        ("vms.laptop.json", 3, 5, "vms.win11.memroy_gb"),
    ]
    assert caught.value.message.startswith(f"{tmp_path / 'm' / 'vms.laptop.json'} is not valid")


def test_errors_in_both_files_name_each_file_base_first(tmp_path: Path) -> None:
    base = BASE.replace('"vcpus": 4', '"vcpus": 0')
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, '{"vms": {"win11": {"graphics": "vga"}}}', base=base)
    assert problems(caught) == [
        ("vms.json", 4, 33, "vms.win11.vcpus"),
        ("vms.laptop.json", 1, 32, "vms.win11.graphics"),
    ]
    assert " and " in caught.value.message


def test_a_value_the_override_replaces_is_not_reported(tmp_path: Path) -> None:
    base = BASE.replace('"memory_gb": 16', '"memory_gb": 0')
    assert load(tmp_path, '{"vms": {"win11": {"memory_gb": 4}}}', base=base).vms["win11"]


def test_a_vm_only_in_the_override_is_reported_there_and_rules_see_the_merge(
    tmp_path: Path,
) -> None:
    override = '{"vms": {"lab": {"vcpus": 1}}}'
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, override)
    assert {p[:3] for p in problems(caught)} == {("vms.laptop.json", 1, 17)}
    # A rule across VMs (one disk for two VMs) sees the merged manifest.
    vm = json.loads(BASE)["vms"]["win11"]
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, json.dumps({"vms": {"lab": vm}}))
    assert [p[0] for p in problems(caught)] == ["vms.laptop.json"]


def test_a_missing_field_of_a_merged_vm_is_placed_where_the_vm_starts(tmp_path: Path) -> None:
    base = BASE.replace('"boot": "uefi", ', "")
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, '{"vms": {"win11": {"memory_gb": 4}}}', base=base)
    assert problems(caught) == [("vms.json", 3, 14, "vms.win11")]


def test_an_override_that_is_not_json_is_refused_at_its_place(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, '{"vms": {}},')
    assert problems(caught) == [("vms.laptop.json", 1, 12, "")]


def test_a_number_written_in_the_override_is_quoted_as_written(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, '{"vms": {"win11": {"vcpus": 2.50}}}')
    assert caught.value.diagnostics[0].message == "expected an integer, found the number 2.50"


def test_a_value_replaced_twice_is_placed_in_the_last_file() -> None:
    sources = [
        source("a.json", {"vms": {"x": {"k": {"deep": 1}}}}),
        source("b.json", {"vms": {"x": 5}}),
        source("c.json", {"vms": {"x": {"k": {"other": 2}}}}),
    ]
    document, places = merge_sources(sources)
    assert document == {"vms": {"x": {"k": {"other": 2}}}}
    # The object at vms.x.k is c's: a's was replaced by b's 5 before c added its own.
    assert places.value(("vms", "x", "k"))[0] == "c.json"
    assert places.value(("vms",))[0] == "a.json"
    assert places.value(("nowhere",)) == ("a.json", (0, 0))


# -- the split capture writes back -----------------------------------------------------------


def test_each_value_goes_back_to_the_document_it_came_from() -> None:
    base = {"$schema": "s", "vms": {"a": {"memory_gb": 16, "vcpus": 4}}}
    override = {"vms": {"a": {"memory_gb": 4}, "lab": {"vcpus": 1}}}
    merged = merge_documents(base, override)
    merged["vms"]["a"].update(memory_gb=8, vcpus=2, tpm="2.0")
    merged["vms"]["lab"]["vcpus"] = 3
    merged["vms"]["new"] = {"vcpus": 1}
    new_base, new_override = split_document([base, override], merged)
    assert new_base == {
        "$schema": "s",
        "vms": {"a": {"memory_gb": 16, "vcpus": 2, "tpm": "2.0"}, "new": {"vcpus": 1}},
    }
    assert new_override == {"vms": {"a": {"memory_gb": 8}, "lab": {"vcpus": 3}}}


def test_a_member_left_out_goes_from_its_one_document_and_two_cannot_lose_it() -> None:
    base = {"vms": {"a": {"x": 1, "y": 1}}}
    override = {"vms": {"a": {"y": 2, "z": 3}}}
    assert split_document([base, override], {"vms": {"a": {"y": 2}}}) == [
        {"vms": {"a": {"y": 1}}},
        {"vms": {"a": {"y": 2}}},
    ]
    with pytest.raises(ValueError, match=r"vms\.a\.y"):
        split_document([base, override], {"vms": {"a": {"x": 1, "z": 3}}})


def test_one_document_is_the_merged_one() -> None:
    merged: dict[str, Any] = {"vms": {"b": {}, "a": {}}}
    assert split_document([{"vms": {}}], merged) == [merged]


_KEYS = st.sampled_from(["vms", "a", "b", "c"])
_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.integers(0, 3) | st.lists(st.integers(0, 3), max_size=2),
    lambda inner: st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(st.dictionaries(_KEYS, _JSON, max_size=3), min_size=2, max_size=3))
def test_splitting_what_the_documents_merge_into_gives_them_back(docs: list[Any]) -> None:
    merged = docs[0]
    for doc in docs[1:]:
        merged = merge_documents(merged, doc)
    assert split_document(docs, merged) == docs


# -- the pipeline ----------------------------------------------------------------------------


class Fragments:
    """Adds ``vms.d/*.json`` after the sources it is given."""

    @hookimpl
    def bkt_manifest_sources(
        self, manifest_dir: Path, sources: tuple[ManifestSource, ...]
    ) -> list[ManifestSource]:
        found = [ManifestSource.read(p) for p in sorted((manifest_dir / "vms.d").glob("*"))]
        return [*sources, *(s for s in found if s is not None)]


def test_a_plugin_adds_documents_and_the_host_override_still_wins(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    (directory / "vms.d").mkdir(parents=True)
    (directory / "vms.json").write_text(BASE)
    (directory / "vms.d" / "a.json").write_text('{"vms": {"win11": {"memory_gb": 8, "vcpus": 8}}}')
    (directory / "vms.laptop.json").write_text('{"vms": {"win11": {"memory_gb": 4}}}')
    host = Host(directory, entry_points=False, plugins=[*default_plugins(), Fragments()])
    names = [s.path.name for s in host.manifest_sources("vm", directory, "vms.json")]
    assert names == ["vms.json", "a.json", "vms.laptop.json"]
    vm = host.subsystem("vm").load().vms["win11"]  # type: ignore[attr-defined]
    assert (vm.memory_gb, vm.vcpus) == (4, 8)


def test_no_document_at_all_is_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "vms.laptop.json").write_text("{}")
    host = Host(tmp_path, entry_points=False, plugins=default_plugins())
    with pytest.raises(ManifestError, match="no manifest at"):
        host.subsystem("vm").validate()


def test_a_plugin_returning_something_else_is_named(tmp_path: Path) -> None:
    from bkt_core.errors import PluginError

    class Liar:
        @hookimpl
        def bkt_manifest_sources(self) -> list[str]:
            return ["vms.json"]

    (tmp_path / "vms.json").write_text(BASE)
    host = Host(tmp_path, entry_points=False, plugins=[*default_plugins(), ("liar", Liar())])
    with pytest.raises(PluginError) as caught:
        host.subsystem("vm").validate()
    assert caught.value.plugin == "liar"


# -- the host name ---------------------------------------------------------------------------


def test_the_host_name_comes_from_the_environment_else_the_short_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert hostname() == "laptop"
    monkeypatch.setenv(HOSTNAME_ENV, "")
    assert hostname() == socket.gethostname().split(".")[0]
    node = os.uname_result(("Linux", "desk.example.org", "6.1", "#1", "x86_64"))
    monkeypatch.setattr("os.uname", lambda: node)
    assert hostname() == "desk"
    assert override_file("vms.json", "desk") == "vms.desk.json"


@pytest.mark.parametrize("name", ["a/b", ".hidden", ".."])
def test_a_host_name_that_is_no_file_name_part_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(HOSTNAME_ENV, name)
    with pytest.raises(OperationError, match=HOSTNAME_ENV):
        hostname()
