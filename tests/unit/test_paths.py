"""The character rule of :func:`bkt_vm_plugin.paths.xml_problem`, checked against XML 1.0's
``Char`` production over every code point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bkt_vm_plugin.paths import realpath_in, system_path_problem, xml_problem


def xml_char(code: int) -> bool:
    """XML 1.0's ``Char``: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] |
    [#x10000-#x10FFFF]."""
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def test_xml_problem_refuses_exactly_what_xml_cannot_carry() -> None:
    allowed = "".join(chr(c) for c in range(0x110000) if xml_char(c))
    refused = [chr(c) for c in range(0x110000) if not xml_char(c)]
    assert xml_problem(allowed) is None
    assert len(refused) == 2079
    assert [c for c in refused if xml_problem(f"a{c}b") is None] == []


def _tree(tmp_path: Path) -> Path:
    """Files, links to files and to directories, a dangling link and a loop."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "disk.qcow2").write_text("")
    (tmp_path / "real" / "other.qcow2").write_text("")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "to-other").symlink_to("other.qcow2")
    (tmp_path / "real" / "to-etc").symlink_to("/etc/passwd")
    (tmp_path / "real" / "up").symlink_to("../real/disk.qcow2")
    (tmp_path / "real" / "dangling").symlink_to("nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    return tmp_path


NAMES = [
    "real/disk.qcow2",
    "real/other.qcow2",
    "linked/disk.qcow2",
    "linked/to-other",
    "linked/to-etc",
    "linked/up",
    "real/dangling",
    "real/missing.qcow2",
    "missing/dir/disk.qcow2",
    "loop/disk.qcow2",
    "linked",
    "",
]


@pytest.mark.parametrize("name", NAMES)
def test_realpath_in_is_realpath(tmp_path: Path, name: str) -> None:
    root = _tree(tmp_path)
    directories: dict[str, str] = {}
    # Every file twice, so that the second finds its directory resolved.
    for path in [os.path.normpath(root / n) for n in NAMES] * 2:
        assert realpath_in(path, directories) == os.path.realpath(path), path
    path = os.path.normpath(root / name)
    assert realpath_in(path, directories) == os.path.realpath(path)
    assert directories[str(root / "linked")] == str(root / "real")


def test_a_relative_path_resolves_as_realpath_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(_tree(tmp_path))
    for path in ("linked/to-other", "disk.qcow2", ".", ".."):
        assert realpath_in(path, {}) == os.path.realpath(path)


def test_a_link_to_a_system_file_is_refused_through_a_shared_directory(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    directories: dict[str, str] = {}

    def check(name: str) -> str | None:
        path = str(root / "linked" / name)
        return system_path_problem(path, "disk", realpath=lambda p: realpath_in(p, directories))

    assert check("disk.qcow2") is None
    problem = check("to-etc")
    assert problem == system_path_problem(str(root / "linked" / "to-etc"), "disk")
    assert problem is not None and "leads to /etc/passwd" in problem
