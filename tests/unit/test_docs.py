"""The documentation cannot drift from the code: docs/api.md is what
``scripts/api_reference.py`` writes, and every Python block of the guides compiles (blocks
marked ``<!-- fragment -->`` on the line before are pieces of a larger file, and skipped).
Blocks marked ``<!-- runs -->`` are self-contained modules and are run. The guide's complete
plugin and its tests are installed and run by tests/integration/test_example_plugins.py."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

GUIDES = [ROOT / "docs" / "plugins.md", ROOT / "docs" / "architecture.md"]
FRAGMENT = "<!-- fragment -->"
RUNS = "<!-- runs -->"
_BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<body>.*?)```\n", re.S)


def api_reference() -> ModuleType:
    path = ROOT / "scripts" / "api_reference.py"
    spec = importlib.util.spec_from_file_location("api_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_blocks(path: Path) -> list[tuple[int, str, str]]:
    """Each ```python block of ``path``: its first line's number, its text, and the line
    before it (a marker, or anything else)."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start("body")) + 1, m["body"], m["before"].strip())
        for m in _BLOCK.finditer(text)
    ]


def test_the_api_reference_is_what_the_code_says() -> None:
    generator = api_reference()
    written = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert written == generator.render(), "docs/api.md is stale: python scripts/api_reference.py"


def test_the_api_reference_covers_every_hook_and_name() -> None:
    from bkt_core import hookspecs as core_specs
    from bkt_vm_plugin import api
    from bkt_vm_plugin import hookspecs as vm_specs

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for hook in [*core_specs.hook_names(), *vm_specs.hook_names()]:
        assert f"def {hook}(" in text, hook
    for name in api.__all__:
        assert re.search(rf"^#### (class )?`{re.escape(name)}\b", text, re.M), name


def test_the_check_mode_fails_on_a_stale_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = api_reference()
    stale = tmp_path / "api.md"
    stale.write_text("# an old reference\n", encoding="utf-8")
    monkeypatch.setattr(generator, "TARGET", stale)
    assert generator.main(["api_reference.py", "--check"]) == 1
    assert generator.main(["api_reference.py"]) == 0
    assert generator.main(["api_reference.py", "--check"]) == 0


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_python_block_of_a_guide_compiles(guide: Path) -> None:
    blocks = python_blocks(guide)
    checked = [(line, body) for line, body, before in blocks if before != FRAGMENT]
    assert checked or guide.name == "architecture.md"
    for line, body in checked:
        try:
            compile(body, f"{guide.name}:{line}", "exec", dont_inherit=True)
        except SyntaxError as exc:
            pytest.fail(f"{guide.name}, block at line {line}: {exc}")


def test_the_guides_self_contained_examples_run() -> None:
    # Their imports are the API's, their classes build: a renamed name fails here.
    blocks = [(line, body) for line, body, before in python_blocks(GUIDES[0]) if before == RUNS]
    assert len(blocks) >= 4
    for line, body in blocks:
        namespace: dict[str, object] = {"__name__": f"guide_block_{line}"}
        exec(compile(body, f"plugins.md:{line}", "exec", dont_inherit=True), namespace)
        hooks = [name for name in namespace if name.startswith("bkt_")]
        assert hooks or "NestedVirtField" in namespace, f"block at line {line} defines no hook"


def test_blocks_and_their_markers_are_found() -> None:
    text = "prose\n```python\ndef f(:\n```\n" + FRAGMENT + "\n```python\nx = (\n```\n"
    found = [(m["body"], m["before"].strip()) for m in _BLOCK.finditer(text)]
    assert found == [("def f(:\n", "prose"), ("x = (\n", FRAGMENT)]


def test_the_guides_code_imports_only_the_api() -> None:
    # Plugins and embedders import bkt_core and bkt_vm_plugin.api; tests add the test kit.
    allowed = {"bkt_vm_plugin.api", "bkt_vm_plugin.testing"}
    for line, body, _ in python_blocks(GUIDES[0]):
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] == "bkt_vm_plugin":
                    assert module in allowed, f"plugins.md:{line} imports {module}"
