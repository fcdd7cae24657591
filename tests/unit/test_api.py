"""The plugin API module: its names, their documentation, and what importing it costs."""

from __future__ import annotations

import inspect
import subprocess
import sys

import bkt_vm_plugin.api as api

#: The API as of 1.0. Within 1.x, names may be added here; none may go.
API_1_0 = {
    "API_VERSION",
    "CommandError",
    "DiskCreation",
    "DiskRequest",
    "DomainContext",
    "DomainField",
    "Element",
    "IsoPath",
    "IsoSource",
    "IsoUrl",
    "OperationError",
    "PatchRefused",
    "PostSyncContext",
    "Problem",
    "ProvisionContext",
    "Reading",
    "Reply",
    "Virsh",
    "VmDefinition",
    "VmManifest",
    "append",
    "at",
    "child",
    "children",
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


def test_the_api_version_is_1_0() -> None:
    assert api.API_VERSION == "1.0"
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
