"""The direction of imports that docs/architecture.md states: ``bkt_core`` knows nothing of
the VM subsystem. Read from the source with ``ast``, so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

CORE = sorted((ROOT / "bkt_core").glob("*.py"))
VM_WORDS = {"vm", "vms"}


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the string constants that are docstrings (module, class, function)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def imported_modules(tree: ast.Module) -> list[str]:
    """Every module an ``import`` or ``from ... import`` names, and every module name given
    to ``importlib.import_module`` as a literal."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append(node.args[0].value)
    return names


def vm_literals(tree: ast.Module) -> list[tuple[int, str]]:
    """The string constants ``"vm"`` and ``"vms"`` outside docstrings, with their line."""
    docstrings = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in VM_WORDS
        and id(node) not in docstrings
    ]


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_bkt_core_has_modules_to_check() -> None:
    assert {p.name for p in CORE} >= {"__init__.py", "host.py", "cli.py", "hookspecs.py"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_bkt_core_never_imports_the_vm_plugin(path: Path) -> None:
    imports = imported_modules(parse(path))
    assert [name for name in imports if name.split(".")[0] == "bkt_vm_plugin"] == []


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_bkt_core_has_no_vm_default(path: Path) -> None:
    assert vm_literals(parse(path)) == []


def test_the_checks_see_what_they_look_for() -> None:
    # The checks above pass on bkt_core; here they must find what a regression would add.
    tree = ast.parse(
        '"""Docs may say "vm"."""\n'
        "import importlib\n"
        "def f(subsystem='vm'):\n"
        '    """As may a function: "vms"."""\n'
        "    from bkt_vm_plugin.api import DomainField\n"
        "    importlib.import_module('bkt_vm_plugin.sync')\n"
        "    return {'vms': 1}\n"
    )
    assert imported_modules(tree) == ["importlib", "bkt_vm_plugin.api", "bkt_vm_plugin.sync"]
    assert sorted(vm_literals(tree)) == [(3, "vm"), (7, "vms")]
