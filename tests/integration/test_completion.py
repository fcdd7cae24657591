"""Shell completion through click's protocol, as each shell's script drives it: the real
``bkt`` with ``_BKT_COMPLETE=SHELL_complete``, ``COMP_WORDS`` and ``COMP_CWORD``; and the bash
script itself, sourced in a real bash."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BIN, BKT, write_manifest

SHELLS = ["bash", "zsh", "fish"]

MANIFEST = """{
  "vms": {
    "beta": { "memory_gb": 1 },
    "alpha": { "iso_sources": [ { "url": "https://example.org/alpha.iso" } ] },
    "gamma": { "iso_sources": [ { "path": "/isos/gamma.iso" } ] },
    "two words": {}
  }
}
"""


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BKT_", "_BKT_", "COMP_"))}
    env.update(extra)
    return env


def protocol(shell: str, words: list[str]) -> dict[str, str]:
    """The variables ``bkt completions SHELL``'s script sets to complete the last of
    ``words`` (``""``: a new word)."""
    line = ["bkt", *words]
    if shell == "fish":
        # fish passes the line up to the cursor, and the word under the cursor on its own.
        before = shlex.join(line[:-1]) + " " + (shlex.quote(words[-1]) if words[-1] else "")
        return {"_BKT_COMPLETE": "fish_complete", "COMP_WORDS": before, "COMP_CWORD": words[-1]}
    return {
        "_BKT_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": shlex.join(line),
        "COMP_CWORD": str(len(line) - 1),
    }


def complete_raw(
    shell: str, words: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Asks ``bkt`` for the candidates of the last word of ``words`` (``""``: a new word),
    the way ``bkt completions SHELL``'s script asks."""
    return subprocess.run(
        [BKT],
        env=environ(**protocol(shell, words), **(env or {})),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def candidates(
    shell: str, words: list[str], cwd: Path, env: dict[str, str] | None = None
) -> list[tuple[str, str]]:
    """``(type, value)`` of each candidate; the run must be silent on stderr and succeed."""
    proc = complete_raw(shell, words, cwd, env)
    assert (proc.returncode, proc.stderr) == (0, "")
    if not proc.stdout.strip():
        return []
    lines = proc.stdout.splitlines()
    if shell == "zsh":
        # type, value, help: three lines per candidate.
        return [(lines[i], lines[i + 1]) for i in range(0, len(lines), 3)]
    items = [line.split("\t", 1)[0].split(",", 1) for line in lines if line]
    return [(kind, value) for kind, value in items]


def values(
    shell: str, words: list[str], cwd: Path, env: dict[str, str] | None = None
) -> list[str]:
    found = candidates(shell, words, cwd, env)
    assert all(kind == "plain" for kind, _ in found), found
    return [value for _, value in found]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory whose ./manifests/vms.json holds the VMs of :data:`MANIFEST`."""
    write_manifest(tmp_path / "manifests", MANIFEST)
    return tmp_path


GLOBALS = [
    "--manifest-dir",
    "--connect",
    "--verbose",
    "--quiet",
    "--color",
    "--disable-plugin",
    "--no-cache",
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (
            ["vm", "sync", "--"],
            ["--dry-run", "--check", "--json", "--allow-firmware-change", "--help", *GLOBALS],
        ),
        (["vm", "stop", "--f"], ["--force"]),
        (["vm", "status", "--c"], ["--connect", "--color"]),
        (["--"], ["--version", *GLOBALS[:2], *GLOBALS[2:], "--help"]),
        (["--color", ""], ["auto", "always", "never"]),
        (["vm", "sync", "--color", "n"], ["never"]),
        (["--color=al"], ["always"]),
        (["schema", ""], ["vms"]),
        (["completions", ""], ["bash", "zsh", "fish"]),
        (["completions", "f"], ["fish"]),
        (["-c", "qemu"], ["qemu:///system", "qemu:///session"]),
        (["--disable-plugin", "cpu"], ["cpu_model"]),
        (["vm", ""], ["capture", "fetch-iso", "start", "status", "stop", "sync", "validate"]),
    ],
)
def test_options_and_their_values(
    project: Path, shell: str, words: list[str], expected: list[str]
) -> None:
    found = values(shell, words, project)
    if words == ["--"]:
        assert sorted(found) == sorted(expected)
    else:
        assert found == expected


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["vm", "sync", ""], ["alpha", "beta", "gamma"]),
        (["vm", "sync", "alpha", ""], ["beta", "gamma"]),
        (["vm", "status", "b"], ["beta"]),
        (["vm", "start", ""], ["alpha", "beta", "gamma"]),
        (["vm", "stop", "--force", "g"], ["gamma"]),
        (["vm", "fetch-iso", ""], ["alpha"]),
        (["sync", ""], []),
    ],
)
def test_vm_names_come_from_the_manifest(
    project: Path, shell: str, words: list[str], expected: list[str]
) -> None:
    assert values(shell, words, project) == expected


@pytest.mark.parametrize("shell", SHELLS)
def test_vm_names_honour_the_manifest_dir_anywhere_and_the_environment(
    tmp_path: Path, shell: str
) -> None:
    write_manifest(tmp_path / "elsewhere", MANIFEST)
    where = str(tmp_path / "elsewhere")
    assert values(shell, ["-C", where, "vm", "sync", "a"], tmp_path) == ["alpha"]
    assert values(shell, ["vm", "sync", f"--manifest-dir={where}", "a"], tmp_path) == ["alpha"]
    assert values(shell, ["vm", "sync", "-C", where, "a"], tmp_path) == ["alpha"]
    env = {"BKT_MANIFEST_DIR": where}
    assert values(shell, ["vm", "sync", "a"], tmp_path, env) == ["alpha"]
    # -C wins over the environment, as when the command runs.
    write_manifest(tmp_path / "other", '{"vms": {"omega": {}}}')
    words = ["vm", "sync", "-C", str(tmp_path / "other"), ""]
    assert values(shell, words, tmp_path, env) == ["omega"]


@pytest.mark.parametrize("shell", SHELLS)
def test_the_manifest_dir_completes_as_a_directory(project: Path, shell: str) -> None:
    assert candidates(shell, ["-C", "man"], project) == [("dir", "man")]
    assert candidates(shell, ["vm", "sync", "--manifest-dir", ""], project) == [("dir", "")]


@pytest.mark.parametrize(
    "manifest",
    [
        None,
        "",
        '{"vms": ',
        '{"vms": []}',
        "[1, 2]",
        "\xff\xfe not utf-8",
        "[" * 100_000 + "]" * 100_000,
        '{"vms": {"a": {}}}' + " " * (16 * 1024 * 1024),
        "directory",
    ],
    ids=[
        "missing",
        "empty",
        "truncated",
        "vms-not-an-object",
        "not-an-object",
        "not-utf8",
        "deeply-nested",
        "too-large",
        "a-directory",
    ],
)
def test_a_broken_manifest_means_no_names_and_no_message(
    tmp_path: Path, manifest: str | None
) -> None:
    where = tmp_path / "manifests"
    where.mkdir()
    if manifest == "directory":
        (where / "vms.json").mkdir()
    elif manifest is not None:
        (where / "vms.json").write_bytes(manifest.encode("utf-8", "surrogateescape"))
    # `values` asserts exit status 0 and an empty stderr.
    assert values("bash", ["vm", "sync", ""], tmp_path) == []
    # Mended, the same place gives the names.
    if manifest == "directory":
        (where / "vms.json").rmdir()
    write_manifest(where, MANIFEST)
    assert values("bash", ["vm", "sync", ""], tmp_path) == ["alpha", "beta", "gamma"]


def test_a_fifo_in_the_manifests_place_does_not_hang(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    os.mkfifo(tmp_path / "manifests" / "vms.json")
    assert values("bash", ["vm", "sync", ""], tmp_path) == []
    (tmp_path / "manifests" / "vms.json").unlink()
    write_manifest(tmp_path / "manifests", MANIFEST)
    assert values("bash", ["vm", "sync", ""], tmp_path) == ["alpha", "beta", "gamma"]


def test_without_the_protocols_variables_nothing_is_printed(tmp_path: Path) -> None:
    proc = subprocess.run(
        [BKT],
        env=environ(_BKT_COMPLETE="bash_complete"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "words", [[""], ["vm", "sync", "--"], ["--color", ""], ["vm", "sync", ""], ["--help", ""]]
)
def test_completion_never_loads_the_help_renderer(
    project: Path, shell: str, words: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", BKT],
        env=environ(**protocol(shell, words)),
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "no candidates"
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "click" in imported
    assert not {m for m in imported if m.split(".")[0] in ("rich", "rich_click", "pydantic")}


def bash_complete(line: str, cwd: Path) -> list[str]:
    """COMPREPLY after the bash script of ``bkt completions bash`` completes ``line`` (the
    cursor at its end), run by a real bash with the variables bash's own completion sets:
    COMP_LINE, COMP_POINT, and COMP_WORDS split at blanks and at bash's word breaks (``:``,
    ``=``)."""
    script = subprocess.run(
        [BKT, "completions", "bash"], capture_output=True, text=True, check=True
    ).stdout
    words = re.findall(r"[:=]|[^\s:=]+", line) + ([""] if line.endswith(" ") else [])
    driver = (
        f"{script}\n"
        f"COMP_LINE={shlex.quote(line)}\n"
        f"COMP_POINT={len(line)}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_bkt_completion bkt 2>/dev/null\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", driver],
        env=environ(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    return [reply for reply in proc.stdout.splitlines() if reply]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bkt vm sync --d", ["--dry-run", "--disable-plugin"]),
        ("bkt --color ", ["auto", "always", "never"]),
        ("bkt schema ", ["vms"]),
        ("bkt completions ", ["bash", "zsh", "fish"]),
        ("bkt vm status ", ["alpha", "beta", "gamma"]),
        ("bkt vm fetch-iso ", ["alpha"]),
        # bash splits `qemu:///system` into three words and replaces only what follows the
        # last `:`.
        ("bkt -c qemu:///system vm status ", ["alpha", "beta", "gamma"]),
        ("bkt vm status --connect=qemu:///system b", ["beta"]),
        ("bkt -c qemu:///s", ["///system", "///session"]),
        ("bkt --color=n", ["never"]),
    ],
)
def test_the_bash_script_completes_options_values_and_names(
    project: Path, line: str, expected: list[str]
) -> None:
    assert bash_complete(line, project) == expected


def fish_complete(line: str, cwd: Path) -> list[str]:
    """What a real fish offers for ``line`` (the cursor at its end) with the script of
    ``bkt completions fish``: each candidate, and its help after a tab."""
    driver = f"bkt completions fish | source; complete --do-complete {shlex.quote(line)}"
    proc = subprocess.run(
        ["fish", "--no-config", "-c", driver],
        env=environ(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    return proc.stdout.splitlines()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # The whole help, though it holds a comma.
        ("bkt vm sync --ch", ["--check\tLike --dry-run, and exit 1 if anything would change."]),
        ("bkt --color ", ["always", "auto", "never"]),
        ("bkt -c qemu:///system vm status ", ["alpha", "beta", "gamma"]),
        ("bkt vm fetch-iso ", ["alpha"]),
        # fish's own directory completion (its help text is fish's).
        ("bkt -C manif", ["manifests/"]),
    ],
)
def test_the_fish_script_completes_options_values_and_names(
    project: Path, line: str, expected: list[str]
) -> None:
    found = fish_complete(line, project)
    if line.endswith("manif"):
        found = [candidate.split("\t")[0] for candidate in found]
    assert found == expected


def test_a_plugin_command_completes_unless_the_plugin_is_disabled_on_the_line(
    project: Path, plugin_site: Callable[[str], Path]
) -> None:
    env = {"PYTHONPATH": str(plugin_site("tests/plugins/bkt-toy"))}
    assert "toy" in values("bash", [""], project, env)
    assert values("bash", ["toy", ""], project, env) == ["hello"]
    assert "toy" not in values("bash", ["--disable-plugin", "toy", ""], project, env)
    assert "toy" not in values("bash", [""], project, {**env, "BKT_DISABLE_PLUGINS": "toy"})


def test_completion_reads_manifests_as_large_as_bkt_does() -> None:
    from bkt_core.manifest import MAX_MANIFEST_BYTES
    from bkt_vm_plugin import completion

    assert completion.MAX_MANIFEST_BYTES == MAX_MANIFEST_BYTES
