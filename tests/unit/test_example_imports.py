"""The example plugins, the embedding example and the test plugins use bkt as an author must:
through ``bkt_core``'s top-level names, :mod:`bkt_vm_plugin.api` and the test kit only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The modules of bkt an example may import from.
ALLOWED = frozenset({"bkt_core", "bkt_vm_plugin.api", "bkt_vm_plugin.testing"})
#: The packages of bkt: any other module of theirs is internal.
BKT = ("bkt_core", "bkt_vm_plugin")


def _files() -> list[Path]:
    files = [*(ROOT / "examples").rglob("*.py"), *(ROOT / "tests" / "plugins").rglob("*.py")]
    return sorted(f for f in files if ".venv" not in f.parts and "build" not in f.parts)


def internal_imports(source: str) -> Iterator[tuple[int, str]]:
    """Each import of a module of bkt that is not in :data:`ALLOWED` (at any depth: under
    ``if TYPE_CHECKING:`` and inside functions too), with its line."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        for module in modules:
            if module.split(".")[0] in BKT and module not in ALLOWED:
                yield node.lineno, module


def test_there_are_examples_to_check() -> None:
    found = {str(f.relative_to(ROOT)) for f in _files()}
    assert {
        "examples/embed/sync_one.py",
        "examples/plugins/bkt-power-state/bkt_power_state/__init__.py",
        "examples/plugins/bkt-base-image/tests/test_base_image_plugin.py",
        "tests/plugins/bkt-nested-virt/bkt_nested_virt/__init__.py",
    } <= found


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_an_example_imports_only_the_public_api(path: Path) -> None:
    found = [f"{line}: {module}" for line, module in internal_imports(path.read_text())]
    assert found == [], f"{path.relative_to(ROOT)} imports internals of bkt"


def test_the_check_sees_every_kind_of_internal_import() -> None:
    source = """
from bkt_core import Host, hookimpl
from bkt_vm_plugin.api import DomainField
import bkt_vm_plugin.testing
import bkt_core
from bkt_core.process import CommandRunner
import bkt_vm_plugin.provision
from bkt_vm_plugin import default_plugins
if TYPE_CHECKING:
    from bkt_vm_plugin.sync import PostSyncContext
def hook():
    from bkt_vm_plugin.domain_xml import Reading
from pydantic import Field
from . import sibling
"""
    assert [m for _, m in sorted(internal_imports(source))] == [
        "bkt_core.process",
        "bkt_vm_plugin.provision",
        "bkt_vm_plugin",
        "bkt_vm_plugin.sync",
        "bkt_vm_plugin.domain_xml",
    ]
