"""The validated VM manifest as the cache of validated manifests (:mod:`bkt_core.manifest_cache`)
stores it, and back, without pydantic and without asking the plugins for their fields.

An entry holds the field layout (:class:`~bkt_vm_plugin.definition.VmFields`: every field's
name, in schema order, and each optional field's default), the ``$schema``, and for each VM
the fields its author wrote with their validated values, as plain JSON. A field the author
left out holds its default: that is what validation gives it. :func:`encode` stores a
manifest only when :func:`decode` gives back exactly what validation gave (every value of the
same type, a plugin's too: a value that JSON cannot tell apart from another, such as a tuple
key or an enum member, is not stored), so that the cached path and the validating one cannot
differ.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from typing import Any

from bkt_vm_plugin.definition import (
    BUILTIN_FIELDS,
    IsoPath,
    IsoUrl,
    VmDefinition,
    VmFields,
    VmManifest,
    plain,
)

__all__ = ["CODE", "decode", "encode"]

#: The modules whose code decides whether a manifest is valid, and what validation makes of
#: it: a change to one (in a source checkout) is a new key.
CODE = tuple(
    os.path.join(os.path.dirname(__file__), name)
    for name in (
        "cached_manifest.py",
        "definition.py",
        "model.py",
        "paths.py",
        "rules.py",
        "subsystem.py",
    )
)


def encode(manifest: VmManifest, layout: VmFields) -> dict[str, Any]:
    """``manifest``, validated with the fields ``layout``, as plain JSON. Raises ValueError
    when :func:`decode` would not give it back exactly (a value without a JSON form)."""
    import json

    value = {
        "layout": {
            "names": list(layout.names),
            "defaults": {name: plain(v) for name, v in layout.defaults.items()},
        },
        "schema": manifest.schema,
        "vms": {name: vm.as_written() for name, vm in manifest.vms.items()},
    }
    try:
        copy = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a value has no JSON form ({exc})") from None
    back = decode(copy)
    if not (
        _same_layout(_layout(copy["layout"]), layout) and _same_manifest(manifest, back, layout)
    ):
        raise ValueError("a value has no exact JSON form")
    return value


def decode(value: Any) -> VmManifest:
    """The manifest that :func:`encode` gave ``value`` for. Raises ValueError (or KeyError,
    TypeError) for a value of another shape."""
    if not isinstance(value, dict):
        raise ValueError("not an object")
    layout = _layout(value["layout"])
    schema = value["schema"]
    if schema is not None and not isinstance(schema, str):
        raise ValueError("$schema is not a string")
    entries = value["vms"]
    if not isinstance(entries, dict):
        raise ValueError("vms is not an object")
    return VmManifest(
        {name: _definition(written, layout) for name, written in entries.items()},
        schema=schema,
    )


def _layout(value: Any) -> VmFields:
    names = value["names"]
    defaults = value["defaults"]
    if not (
        isinstance(names, list)
        and all(isinstance(n, str) for n in names)
        and isinstance(defaults, dict)
        and set(defaults) <= set(names)
        and set(BUILTIN_FIELDS.names) <= set(names)
    ):
        raise ValueError("not a field layout")
    return VmFields(tuple(names), {n: _runtime(n, v) for n, v in defaults.items()})


def _definition(written: Any, layout: VmFields) -> VmDefinition:
    if not isinstance(written, dict):
        raise ValueError("a VM is not an object")
    unknown = set(written).difference(layout.names)
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]!r}")
    values = dict(layout.defaults)
    values.update((name, _runtime(name, v)) for name, v in written.items())
    missing = [name for name in layout.names if name not in values]
    if missing:
        raise ValueError(f"required field {missing[0]!r} missing")
    builtin = {name: values.pop(name) for name in BUILTIN_FIELDS.names}
    return VmDefinition(**builtin, plugin_values=values, layout=layout, written=frozenset(written))


def _runtime(name: str, value: Any) -> Any:
    """Field ``name``'s JSON value as a definition holds it: ISO sources as their plain
    objects, anything else as it is (the definition makes it immutable)."""
    if name != "iso_sources":
        return value
    if not isinstance(value, list):
        raise ValueError("iso_sources is not a list")
    return tuple(IsoPath(s["path"]) if "path" in s else IsoUrl(**s) for s in value)


# -- the same, value for value -----------------------------------------------------------------


#: The types of the values that hold no others: equal and of the same type is all there is.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _same(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are equal and of the same types all the way down (``1`` is not
    ``True`` nor ``1.0`` here)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in _SCALARS:
        # Most values are; the checks below (against abstract classes) cost more.
        return bool(a == b)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping | types.MappingProxyType):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, frozenset | set):
        return a == b and all(type(x) in (str, int, bool) for x in a)
    return bool(a == b)


def _same_layout(a: VmFields, b: VmFields) -> bool:
    return _same(a.names, b.names) and _same(a.defaults, b.defaults)


def _same_manifest(a: VmManifest, b: VmManifest, layout: VmFields) -> bool:
    if a.schema != b.schema or list(a.vms) != list(b.vms):
        return False
    # The VMs of a manifest share one layout (each side its own): each is compared once.
    layouts = {id(vm.layout): vm.layout for vm in (*a.vms.values(), *b.vms.values())}
    if not all(_same_layout(each, layout) for each in layouts.values()):
        return False
    for name, vm in a.vms.items():
        other = b.vms[name]
        if vm.written != other.written:
            return False
        if not all(_same(vm.field(f), other.field(f)) for f in layout.names):
            return False
    return True
