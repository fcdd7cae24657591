"""The plugin API module: its names, their documentation, and what importing it costs."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import bkt_vm_plugin.api as api

#: The API as of 1.0. Within 1.x, names may be added here; none may go.
API_1_0 = {
    "API_VERSION",
    "AttachedIso",
    "CommandError",
    "DiskCreation",
    "DiskRequest",
    "DomainContext",
    "DomainField",
    "DomainMapping",
    "DomainState",
    "DomainXmlError",
    "Element",
    "IsoPath",
    "IsoSource",
    "IsoUrl",
    "OperationError",
    "Parsed",
    "PatchRefused",
    "PathEntry",
    "Pool",
    "PostSyncContext",
    "Problem",
    "ProvisionContext",
    "Reading",
    "Reply",
    "Virsh",
    "VmDefinition",
    "VmManifest",
    "VmSubsystem",
    "append",
    "at",
    "child",
    "children",
    "default_plugins",
    "devices",
    "elements",
    "ensure_child",
    "expand_home",
    "home_dir",
    "hookimpl",
    "insert_after",
    "insert_before",
    "insert_child",
    "local_path_problem",
    "make",
    "parse_xml",
    "remove",
    "replace",
    "serialize",
    "set_text",
    "text_of",
}


def test_the_api_exports_exactly_its_names_in_order() -> None:
    assert set(api.__all__) == API_1_0
    assert len(api.__all__) == len(API_1_0)
    assert api.__all__ == sorted(api.__all__, key=lambda n: (not n[0].isupper(), n))
    assert dir(api) == api.__all__


def test_the_api_version_is_1_1() -> None:
    assert api.API_VERSION == "1.1"
    # The compatibility promise is stated where a plugin author reads it.
    doc = " ".join((api.__doc__ or "").split())
    assert "for every 1.x version of this API" in doc and "takes 2.0" in doc


def test_every_name_resolves() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    try:
        api.__getattr__("NotAName")
    except AttributeError as exc:
        assert "NotAName" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_every_name_is_documented() -> None:
    """A class or function by its own docstring, anything else (a constant, a type alias, a
    marker) in the module's docstring."""
    module_doc = api.__doc__ or ""
    undocumented = []
    for name in api.__all__:
        value = getattr(api, name)
        if inspect.isclass(value) or inspect.isroutine(value):
            documented = bool((value.__doc__ or "").strip())
        else:
            documented = f"``{name}``" in module_doc or f":data:`{name}`" in module_doc
        if not documented:
            undocumented.append(name)
    assert undocumented == []


def test_importing_the_api_imports_neither_pydantic_nor_lxml() -> None:
    code = (
        "import sys, bkt_vm_plugin.api\n"
        "print(sorted(m for m in ('pydantic', 'lxml', 'rich', 'click') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "[]"


def _own_members(cls: type) -> Iterator[tuple[type, str, Any]]:
    """The public methods and properties ``cls`` defines or inherits from bkt (not from
    ``object``, ``Exception`` or another base outside bkt), each with the class that
    defines it."""
    for klass in cls.__mro__:
        if not klass.__module__.startswith(("bkt_core", "bkt_vm_plugin")):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name != "__init__":
                continue
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                yield klass, name, value
            elif inspect.isfunction(getattr(value, "func", None)):  # a cached property
                yield klass, name, value.func


def _parameters(function: Callable[..., Any]) -> list[str]:
    names = list(inspect.signature(function).parameters)
    return [n for n in names if n not in ("self", "cls")]


def _mentions(doc: str, name: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", doc) is not None


def _documented_api() -> Iterator[tuple[str, Any, str]]:
    """Every public function, method and property of the API and of the test kit with the
    docstring that documents it: its own, or for a constructor, its class's."""
    import bkt_vm_plugin.testing as testing

    seen: set[str] = set()
    for module, name in [
        *((api, n) for n in api.__all__),
        *((testing, n) for n in testing.__all__),
    ]:
        value = getattr(module, name)
        if inspect.isroutine(value):
            yield name, value, value.__doc__ or ""
        elif inspect.isclass(value) and value.__module__.startswith(("bkt_core", "bkt_vm_plugin")):
            for klass, member_name, member in _own_members(value):
                where = f"{klass.__name__}.{member_name}"
                if where in seen:
                    continue
                seen.add(where)
                function = member.fget if isinstance(member, property) else member
                doc = function.__doc__ or ""
                if member_name == "__init__":
                    doc = klass.__doc__ or ""  # a constructor is documented by its class
                yield where, function, doc


def test_every_public_method_has_a_docstring_naming_its_parameters() -> None:
    missing: list[str] = []
    for where, function, doc in _documented_api():
        if not doc.strip():
            missing.append(f"{where}: no docstring")
            continue
        unnamed = [p for p in _parameters(function) if not _mentions(doc, p)]
        if unnamed:
            missing.append(f"{where}: {', '.join(unnamed)} not described")
    assert missing == []


def test_the_docstring_check_sees_a_parameter_left_out() -> None:
    def documented(size: int, path: str) -> None:
        """Create ``path`` of ``size`` bytes."""

    def undocumented(size: int, path: str) -> None:
        """Create a file."""

    assert all(_mentions(documented.__doc__ or "", p) for p in _parameters(documented))
    assert not any(_mentions(undocumented.__doc__ or "", p) for p in _parameters(undocumented))
    assert not _mentions("the paths", "path") and _mentions("``path``.", "path")


def test_every_hook_documents_its_parameters() -> None:
    import bkt_core.hookspecs
    import bkt_vm_plugin.hookspecs

    missing = []
    for module in (bkt_core.hookspecs, bkt_vm_plugin.hookspecs):
        for name in module.hook_names():
            spec = getattr(module, name)
            doc = spec.__doc__ or ""
            unnamed = [p for p in _parameters(spec) if not _mentions(doc, p)]
            if not doc.strip() or unnamed:
                missing.append(f"{name}: {', '.join(unnamed) or 'no docstring'}")
    assert missing == []


#: Names the API's signatures use that a plugin need not import, with why.
NOT_EXPORTED = {
    # The built-in fields' literal types, spelled out in VmDefinition's documentation.
    "Boot": "literal",
    "Clock": "literal",
    "DiskBus": "literal",
    "Graphics": "literal",
    "NicModel": "literal",
    "Sound": "literal",
    "Tpm": "literal",
    "Video": "literal",
    "VirtType": "literal",
    # bkt's own bookkeeping: VmDefinition.layout, PostSyncContext.observation.
    "VmFields": "bkt's own",
    "Observation": "bkt's own",
    # The members of VmSubsystem its docstring calls bkt's own (hooks, the pydantic models).
    "VmHooks": "bkt's own",
    "VmModel": "bkt's own",
    "ManifestModel": "bkt's own",
    # bkt_core's alias of a JSON path, tuple[str | int, ...].
    "JsonPath": "bkt_core's",
    # The standard library's.
    "Path": "pathlib",
    "PathLike": "os",
}


def _annotated() -> Iterator[tuple[str, str]]:
    """Every annotation of the API and of the test kit, as written (``from __future__
    import annotations``), with where it is: the parameters and returns of public functions
    and methods, and the attributes of public classes."""
    import bkt_vm_plugin.testing as testing

    for module in (api, testing):
        for name in module.__all__:
            value = getattr(module, name)
            functions: list[tuple[str, Any]] = []
            if inspect.isroutine(value):
                functions.append((name, value))
            elif inspect.isclass(value) and value.__module__.startswith("bkt_vm_plugin"):
                for klass in value.__mro__:
                    if not klass.__module__.startswith(("bkt_core", "bkt_vm_plugin")):
                        continue
                    for attribute, annotation in vars(klass).get("__annotations__", {}).items():
                        if not attribute.startswith("_"):
                            yield f"{name}.{attribute}", str(annotation)
                functions += [(f"{k.__name__}.{m}", f) for k, m, f in _own_members(value)]
            for where, function in functions:
                function = function.fget if isinstance(function, property) else function
                for annotation in getattr(function, "__annotations__", {}).values():
                    yield where, str(annotation)


def _known_types() -> set[str]:
    """What a plugin can import or needs not: the API, the test kit, bkt_core, builtins,
    typing and collections.abc names, and :data:`NOT_EXPORTED`."""
    import builtins
    import collections.abc
    import typing

    import bkt_core
    import bkt_vm_plugin.testing as testing

    return {
        *api.__all__,
        *testing.__all__,
        *bkt_core.__all__,
        *dir(builtins),
        *dir(typing),
        *dir(collections.abc),
        *NOT_EXPORTED,
    }


def _unknown_types(known: set[str]) -> dict[str, set[str]]:
    """Each name an annotation of the API uses that is not in ``known``, with where."""
    unknown: dict[str, set[str]] = {}
    for where, annotation in _annotated():
        for dotted in re.findall(r"[A-Za-z_][\w.]*", annotation):
            name = dotted.rsplit(".", 1)[-1]
            # Lower-case words are literal values (Literal["uefi"]) or modules.
            if name not in known and not re.fullmatch(r"[a-z_]+", dotted):
                unknown.setdefault(name, set()).add(where)
    return unknown


def test_every_type_the_api_names_is_exported() -> None:
    """A plugin can annotate with every type an API signature names: the API, the test kit
    or bkt_core export it (or it is a builtin, a typing or collections.abc name)."""
    assert _unknown_types(_known_types()) == {}


def test_the_exported_check_sees_a_type_left_out() -> None:
    known = _known_types()
    assert _unknown_types(known - {"Pool", "PathEntry"}) == {
        "Pool": {"ProvisionContext.pools", "ProvisionContext.pool_of"},
        "PathEntry": {"ProvisionContext.__init__"},
    }
