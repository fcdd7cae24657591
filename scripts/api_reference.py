"""Writes docs/api.md, the reference of bkt's plugin API, from the code's own docstrings.

``python scripts/api_reference.py`` rewrites the file; ``--check`` exits 1 when the file is not
what the code says (a test runs that), so the reference cannot drift from the API.

The reference lists every hook (host-level and VM), every name of ``bkt_vm_plugin.api``
grouped by the kind of thing it is, and the test kit (``bkt_vm_plugin.testing`` and the pytest
fixtures). Signatures are written from the annotations as the code spells them, and
docstrings are shown with Sphinx cross-reference roles turned into plain code spans.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "api.md"
HOOK_MODULES = ("bkt_core.hookspecs", "bkt_vm_plugin.hookspecs")
API_MODULE = "bkt_vm_plugin.api"

#: The section each defining module's names go under, in this order; names of a module not
#: listed here go under "Other names", last.
GROUPS = {
    "bkt_vm_plugin.definition": "The VM definition",
    "bkt_vm_plugin.domain_xml": "The domain XML mapping",
    "bkt_vm_plugin.xmltree": "XML tree helpers",
    "bkt_vm_plugin.provision": "Disk provisioning",
    "bkt_vm_plugin.sync": "Post-sync actions",
    "bkt_vm_plugin.virsh": "virsh",
    "bkt_vm_plugin.paths": "Paths",
    "bkt_core.hookspecs": "From bkt_core",
    "bkt_core.errors": "From bkt_core",
    "bkt_core.diagnostics": "From bkt_core",
}
OTHER = "Other names"

#: The test kit: module, then the names it documents.
TEST_KIT = (
    ("bkt_vm_plugin.testing", ("FakeLibvirt", "ManifestDir", "vm_subsystem")),
    (
        "bkt_vm_plugin.pytest_plugin",
        ("bkt_fake_libvirt", "bkt_manifest_dir", "bkt_plugins", "bkt_host"),
    ),
)

HEADER = """\
# bkt plugin API reference

Generated from the code by `scripts/api_reference.py`; a test fails when this file and the
code disagree, so do not edit it by hand (run `python scripts/api_reference.py`). The guide,
with examples, is [plugins.md](plugins.md). This page lists every hook, every name of
`bkt_vm_plugin.api` and the test kit, with signatures and documentation.

Signatures are shown as the code writes them: a name in an annotation is the API's name of
that type (`VmDefinition`, `DomainContext`, `Element`, ...) or one of `bkt_core` (`Host`,
`Problem`, `SyncReport`, `PlanEntry`, `EntryResult`, `ManifestSource`, `Subsystem`).
"""


class _Shown:
    """Text shown as it is in a signature (an annotation, or a default value)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def _plain(text: str) -> str:
    """Sphinx markup as plain Markdown: roles become code spans (``~`` keeps the last part),
    double backquotes single ones."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        if match.group(0).startswith(":", 0) and "`~" in match.group(0):
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    text = _ROLE.sub(role, text)
    text = re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)
    # reST's literal block marker: "Example::" introduces an indented block.
    lines = text.split("\n")
    out: list[str] = []
    in_block = False
    for line in lines:
        if in_block and line and not line.startswith("    "):
            while out and not out[-1].strip():
                out.pop()
            out += ["```", ""]
            in_block = False
        if line.rstrip().endswith("::") and not in_block:
            out.append(line.rstrip()[:-1])
            out.append("")
            out.append("```python")
            in_block = True
            continue
        out.append(line[4:] if in_block else line)
    if in_block:
        while out and not out[-1].strip():
            out.pop()
        out.append("```")
    return "\n".join(out).replace("```python\n\n", "```python\n")


def _doc(obj: Any) -> str:
    return _plain(inspect.cleandoc(obj.__doc__ or "").strip())


def _own_doc(obj: Any) -> str:
    """A class's own docstring, not one it inherits."""
    return _doc(obj) if "__doc__" in vars(obj) and obj.__doc__ else ""


def _shown_default(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return value
    if isinstance(value, types.FunctionType | type):
        return _Shown(value.__name__)
    shown = repr(value)
    if " at 0x" in shown:  # an object's default repr: its address changes every run
        return _Shown(type(value).__name__ + "(...)")
    return _Shown(shown)


def _shown_annotation(value: Any) -> Any:
    if value is inspect.Parameter.empty:
        return value
    if isinstance(value, str):
        return _Shown(value)
    return _Shown(inspect.formatannotation(value))


def _signature(obj: Callable[..., Any], *, drop_self: bool = False) -> str:
    """``(a: T, b: U = 1) -> R`` as the code spells it (no memory addresses)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = [
        p.replace(annotation=_shown_annotation(p.annotation), default=_shown_default(p.default))
        for p in signature.parameters.values()
    ]
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    shown = signature.replace(
        parameters=params, return_annotation=_shown_annotation(signature.return_annotation)
    )
    return str(shown)


def _hooks() -> list[str]:
    out = ["## Hooks", ""]
    for module_name in HOOK_MODULES:
        module = importlib.import_module(module_name)
        out += [f"### `{module_name}`", ""]
        for name, function in vars(module).items():
            if not (name.startswith("bkt_") and inspect.isfunction(function)):
                continue
            options = getattr(function, "bkt_spec", None) or {}
            marks = [key for key, value in sorted(options.items()) if value is True]
            out += [f"#### `{name}`", "", "```python", f"def {name}{_signature(function)}", "```"]
            if marks:
                out += ["", "Options: " + ", ".join(f"`{m}`" for m in marks) + "."]
            out += ["", _doc(function), ""]
    return out


def _init_attributes(cls: type) -> list[tuple[str, str | None]]:
    """The public attributes ``__init__`` sets, with a type when the code says it: an
    annotated assignment, or a parameter assigned as it is."""
    init = vars(cls).get("__init__")
    if not inspect.isfunction(init):
        return []
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return []
    params = {p.name: p.annotation for p in inspect.signature(init).parameters.values()}
    found: dict[str, str | None] = {}
    for node in ast.walk(tree):
        target: ast.expr | None = None
        annotation: str | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.AnnAssign):
            target, annotation, value = node.target, ast.unparse(node.annotation), node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        if not (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == "self"
            and not target.attr.startswith("_")
        ):
            continue
        if annotation is None and isinstance(value, ast.Name) and value.id in params:
            declared = params[value.id]
            if declared is not inspect.Parameter.empty:
                annotation = str(declared)
        found.setdefault(target.attr, annotation)
    return list(found.items())


def _first_paragraph(text: str) -> str:
    return text.split("\n\n")[0].replace("\n", " ").strip()


def _members(cls: type) -> list[str]:
    """A class's attributes (with types), properties and methods (with signatures and
    docstrings), its own only."""
    attributes: list[str] = []
    if dataclasses.is_dataclass(cls):
        for field in dataclasses.fields(cls):
            if not field.name.startswith("_"):
                attributes.append(f"- `{field.name}: {field.type}`")
    else:
        # Its own and those of its bases in bkt (an error's message and hint), nearest first.
        seen: set[str] = set()
        for owner in cls.__mro__:
            if not owner.__module__.startswith(("bkt_core", "bkt_vm_plugin")):
                continue
            annotations = vars(owner).get("__annotations__", {})
            for name, annotation in annotations.items():
                if name.startswith("_") or name in seen:
                    continue
                seen.add(name)
                default = vars(owner).get(name, inspect.Parameter.empty)
                shown = "" if default is inspect.Parameter.empty else f" = {default!r}"
                attributes.append(f"- `{name}: {annotation}{shown}` (class attribute)")
            for name, annotation in _init_attributes(owner):
                if name in seen:
                    continue
                seen.add(name)
                attributes.append(f"- `{name}: {annotation}`" if annotation else f"- `{name}`")
    out: list[str] = []
    if attributes:
        out += ["Attributes:", "", *attributes, ""]
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property) and value.fget is not None:
            returns = inspect.signature(value.fget).return_annotation
            kind = f": {returns}" if returns is not inspect.Parameter.empty else ""
            out += [f"#### property `{cls.__name__}.{name}{kind}`", "", _doc(value.fget), ""]
        elif isinstance(value, classmethod | staticmethod):
            function = value.__func__
            kind = "classmethod" if isinstance(value, classmethod) else "staticmethod"
            signature = _signature(function, drop_self=kind == "classmethod")
            out += [f"#### {kind} `{cls.__name__}.{name}{signature}`", "", _doc(function), ""]
        elif inspect.isfunction(value):
            signature = _signature(value, drop_self=True)
            out += [f"#### `{cls.__name__}.{name}{signature}`", "", _doc(value), ""]
    return out


def _class(name: str, cls: type, *, level: str = "###") -> list[str]:
    bases = ", ".join(b.__name__ for b in cls.__bases__ if b is not object)
    out = [f"{level} class `{name}`" + (f"({bases})" if bases else ""), ""]
    if not cls.__module__.startswith(("bkt_core", "bkt_vm_plugin")):
        # A class from a library (lxml's element): its own documentation is the reference.
        out += [f"`{cls.__module__}.{cls.__qualname__}`. {_first_paragraph(_own_doc(cls))}", ""]
        return out
    if dataclasses.is_dataclass(cls):
        params = dataclasses.fields(cls)
        frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        kind = "frozen dataclass" if frozen else "dataclass"
        keyword = " (keyword arguments only)" if all(f.kw_only for f in params) else ""
        out += [f"A {kind}{keyword}.", ""]
        signature = _signature(cls)
    else:
        init = next((vars(c)["__init__"] for c in cls.__mro__ if "__init__" in vars(c)), None)
        signature = _signature(init, drop_self=True) if inspect.isfunction(init) else "(...)"
    out += ["```python", f"{name}{signature}", "```", ""]
    doc = _own_doc(cls)
    if doc:
        out += [doc, ""]
    return out + _members(cls)


def _value(name: str, value: Any, *, level: str = "###") -> list[str]:
    if inspect.isclass(value):
        return _class(name, value, level=level)
    if inspect.isfunction(value):
        return [f"{level} `{name}{_signature(value)}`", "", _doc(value), ""]
    if isinstance(value, types.UnionType):
        alias = " | ".join(a.__name__ for a in value.__args__)
        return [f"{level} `{name}`", "", f"A type alias: `{name} = {alias}`.", ""]
    if isinstance(value, str | int | float | bool):
        return [f"{level} `{name} = {value!r}`", ""]
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    return [f"{level} `{name}`", "", f"An instance of `{kind}`.", "", _own_doc(type(value)), ""]


def _groups() -> Iterator[tuple[str, list[str]]]:
    api = importlib.import_module(API_MODULE)
    where: dict[str, str] = getattr(api, "_WHERE", {})
    titles = list(dict.fromkeys([*GROUPS.values(), OTHER]))
    by_title: dict[str, list[str]] = {title: [] for title in titles}
    constants = [n for n in api.__all__ if n not in where]
    for name in api.__all__:
        if name in where:
            by_title[GROUPS.get(where[name], OTHER)].append(name)
    yield "Constants", constants
    for title in titles:
        if by_title[title]:
            yield title, by_title[title]


def _names() -> list[str]:
    api = importlib.import_module(API_MODULE)
    out = [f"## `{API_MODULE}`", "", _doc(api), ""]
    for title, names in _groups():
        out += [f"### {title}", ""]
        for name in names:
            out += _value(name, getattr(api, name), level="####")
    return out


def _test_kit() -> list[str]:
    out = ["## The test kit", ""]
    for module_name, names in TEST_KIT:
        module = importlib.import_module(module_name)
        out += [f"### `{module_name}`", "", _doc(module), ""]
        for name in names:
            value = getattr(module, name)
            # pytest wraps fixtures; the function is what the reader wants to see.
            function = getattr(value, "__wrapped__", value)
            if module_name.endswith("pytest_plugin"):
                doc = _doc(function)
                returns = inspect.signature(function).return_annotation
                out += [f"#### fixture `{name}` -> `{returns}`", "", doc, ""]
            else:
                out += _value(name, function, level="####")
    return out


def _tidy(lines: list[str]) -> str:
    """One blank line between blocks, none at the end of a line."""
    text = "\n".join(line.rstrip() for line in "\n".join(lines).split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def render() -> str:
    """The reference, as docs/api.md holds it."""
    return _tidy([HEADER, *_hooks(), *_names(), *_test_kit()])


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python scripts/api_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
