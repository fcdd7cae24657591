"""The cached form of a validated VM manifest is stored only when it gives back exactly what
validation gave: same values, of the same types, and the host's field layout."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from bkt_vm_plugin.cached_manifest import _same, decode, encode
from bkt_vm_plugin.definition import BUILTIN_FIELDS, VmDefinition, VmFields, VmManifest

LAYOUT = VmFields((*BUILTIN_FIELDS.names, "extra"), {**BUILTIN_FIELDS.defaults, "extra": None})


class Colour(enum.StrEnum):
    RED = "red"


def _vm(extra: Any, layout: VmFields = LAYOUT) -> VmDefinition:
    return VmDefinition(
        memory_gb=1,
        vcpus=1,
        disk_path="/a",
        disk_size_gb=1,
        boot="bios",
        network="none",
        graphics="none",
        plugin_values={"extra": extra},
        layout=layout,
        written=frozenset({"memory_gb", "vcpus", "disk_path", "disk_size_gb", "boot", "extra"})
        | {"network", "graphics"},
    )


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (1, 1, True),
        ("x", "x", True),
        (None, None, True),
        (1, True, False),
        (1, 1.0, False),
        ("x", "y", False),
        ((1, "a"), (1, "a"), True),
        ((1,), [1], False),
        ((1,), (True,), False),
        ({"a": (1,)}, {"a": (1,)}, True),
        ({"a": 1}, {"a": 1.0}, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, False),
        (frozenset({"a"}), frozenset({"a"}), True),
        (frozenset({1.5}), frozenset({1.5}), False),
    ],
)
def test_same_is_equality_of_values_and_types_all_the_way_down(a: Any, b: Any, same: bool) -> None:
    assert _same(a, b) is same


@pytest.mark.parametrize("extra", [None, 3, 2.5, "text", ("a", 1), {"k": ("v",)}])
def test_a_manifest_of_plain_values_comes_back_exactly(extra: Any) -> None:
    manifest = VmManifest({"web": _vm(extra), "db": _vm(extra)}, schema="s")
    back = decode(encode(manifest, LAYOUT))
    assert back == manifest
    assert back.vms["web"].layout.names == LAYOUT.names
    assert type(back.vms["db"].field("extra")) is type(manifest.vms["db"].field("extra"))


@pytest.mark.parametrize("extra", [Colour.RED, {"k": Colour.RED}, (Colour.RED,)])
def test_a_value_json_cannot_tell_from_another_is_not_stored(extra: Any) -> None:
    manifest = VmManifest({"web": _vm("plain"), "db": _vm(extra)})
    with pytest.raises(ValueError, match="no exact JSON form"):
        encode(manifest, LAYOUT)


def test_a_vm_of_another_layout_is_not_stored() -> None:
    other = VmFields(LAYOUT.names, {**LAYOUT.defaults, "extra": 0})
    manifest = VmManifest({"web": _vm(None), "db": _vm(None, other)})
    with pytest.raises(ValueError, match="no exact JSON form"):
        encode(manifest, LAYOUT)
