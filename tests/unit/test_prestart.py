"""The early start of a command's first read-only child (bkt_core.prestart): the same command
line starts it first thing next time; it is used only when it is exactly the child the
command asks for, and killed and reaped otherwise; a record that is not the user's own, not
this command's or not well-formed starts nothing."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bkt_core import prestart
from bkt_core.process import SubprocessRunner, child_environment, start

ARGS = ["-C", "manifests", "vm", "status"]


@pytest.fixture(autouse=True)
def _one_command(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The children here are this Python, which bkt itself never starts early.
    monkeypatch.setattr(prestart, "PROGRAMS", frozenset({sys.executable}))
    yield
    prestart.end()


def cache_dir() -> Path:
    return Path(os.environ["XDG_CACHE_HOME"]) / "bkt"


def records() -> list[Path]:
    return sorted(cache_dir().glob("prestart-*.json")) if cache_dir().exists() else []


def command(value: str, text: str = "hello") -> tuple[str, ...]:
    """A child whose argv carries the token ``value`` and prints it."""
    return (sys.executable, "-c", f"print({text!r} + ' ' + {value!r})")


def first_run(timeout: float = 30.0) -> tuple[str, ...]:
    """One command that starts a prestartable child: the record is written."""
    prestart.begin(ARGS)
    argv = command(prestart.token())
    done = start(SubprocessRunner(), argv, timeout=timeout, prestart=True).wait()
    assert done.returncode == 0
    prestart.end()
    return argv


def early_child() -> object:
    return prestart._state.child


def test_the_same_command_line_gets_the_child_started_early() -> None:
    first = first_run()
    [record] = records()
    assert json.loads(record.read_text())["argv"][2] != [first[2]]  # the token is left out

    prestart.begin(ARGS)
    early = early_child()
    assert early is not None
    value = prestart.token()
    assert value not in first[2]  # a fresh token
    argv = command(value)
    running = start(SubprocessRunner(), argv, timeout=30.0, prestart=True)
    assert running is early
    done = running.wait()
    assert (done.argv, done.returncode, done.stdout) == (argv, 0, f"hello {value}\n")
    assert prestart.drain_notes() == []


def test_a_child_that_is_not_the_one_asked_for_is_stopped_and_the_record_replaced() -> None:
    first_run()
    prestart.begin(ARGS)
    early = early_child()
    assert early is not None
    proc = early._proc  # type: ignore[attr-defined]
    argv = command(prestart.token(), text="another")
    running = start(SubprocessRunner(), argv, timeout=30.0, prestart=True)
    assert running is not early
    assert proc.returncode is not None  # killed and reaped
    assert running.wait().stdout.startswith("another ")
    [note] = prestart.drain_notes()
    assert "is not the one this command starts: stopped it" in note
    prestart.end()

    # The record now holds the new child.
    prestart.begin(ARGS)
    early = early_child()
    assert early is not None
    argv = command(prestart.token(), text="another")
    running = start(SubprocessRunner(), argv, timeout=30.0, prestart=True)
    assert running is early
    assert running.wait().stdout.startswith("another ")


def test_another_environment_or_timeout_is_another_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first_run()
    prestart.begin(ARGS)
    early = early_child()
    runner = SubprocessRunner()
    running = start(runner, command(prestart.token()), timeout=31.0, prestart=True)
    assert running is not early
    running.wait()

    first_run()
    prestart.begin(ARGS)
    early = early_child()
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu:///session")
    runner = SubprocessRunner()
    assert runner.environment != prestart._state.env
    running = start(runner, command(prestart.token()), timeout=30.0, prestart=True)
    assert running is not early
    running.wait()


def test_another_command_line_or_directory_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_run()
    prestart.begin([*ARGS, "--all"])
    assert early_child() is None
    prestart.end()
    monkeypatch.chdir(tmp_path)
    prestart.begin(ARGS)
    assert early_child() is None


def test_a_child_never_asked_for_is_killed_and_reaped_at_the_end() -> None:
    first_run()
    prestart.begin(ARGS)
    early = early_child()
    assert early is not None
    proc = early._proc  # type: ignore[attr-defined]
    prestart.end()
    assert proc.returncode is not None
    with pytest.raises(OSError):
        os.fstat(early._out)  # type: ignore[attr-defined]


def test_only_the_first_prestartable_child_is_recorded_and_taken() -> None:
    prestart.begin(ARGS)
    runner = SubprocessRunner()
    start(runner, command(prestart.token()), timeout=30.0, prestart=True).wait()
    start(runner, command(prestart.token(), text="second"), timeout=30.0, prestart=True).wait()
    prestart.end()
    [record] = records()
    assert "hello" in json.dumps(json.loads(record.read_text())["argv"])


def test_a_child_not_marked_prestartable_is_never_recorded() -> None:
    prestart.begin(ARGS)
    start(SubprocessRunner(), command(prestart.token()), timeout=30.0).wait()
    prestart.end()
    assert records() == []


def test_the_early_token_is_handed_out_once() -> None:
    first_run()
    prestart.begin(ARGS)
    first, second = prestart.token(), prestart.token()
    assert first != second
    assert first in prestart._state.argv[2]  # type: ignore[index]


def test_an_argv_with_two_of_the_commands_tokens_is_not_recorded() -> None:
    prestart.begin(ARGS)
    argv = (*command(prestart.token()), prestart.token())
    start(SubprocessRunner(), argv, timeout=30.0, prestart=True).wait()
    prestart.end()
    assert records() == []


def test_without_the_caches_nothing_is_read_or_written() -> None:
    first_run()
    prestart.begin(ARGS, enabled=False)
    assert early_child() is None
    [record] = records()
    record.unlink()
    start(SubprocessRunner(), command(prestart.token()), timeout=30.0, prestart=True).wait()
    prestart.end()
    assert records() == []


def test_the_same_record_is_not_written_again() -> None:
    first_run()
    [record] = records()
    os.utime(record, ns=(1, 1))
    prestart.begin(ARGS)
    start(SubprocessRunner(), command(prestart.token()), timeout=30.0, prestart=True).wait()
    assert record.stat().st_mtime_ns == 1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: {**r, "format": 0}, id="format"),
        pytest.param(lambda r: {**r, "command": [1, ["vm", "sync"], "/", 0]}, id="command"),
        pytest.param(lambda r: {**r, "argv": []}, id="no-argv"),
        pytest.param(lambda r: {**r, "argv": [[""]]}, id="empty-program"),
        pytest.param(lambda r: {**r, "argv": [["sh"], ["-c"], ["exit 0"]]}, id="another-program"),
        pytest.param(lambda r: {**r, "argv": [["sh"], [1]]}, id="not-strings"),
        pytest.param(lambda r: {**r, "argv": [["sh"], ["a\0b"]]}, id="nul"),
        pytest.param(lambda r: {**r, "timeout": -1}, id="timeout"),
        pytest.param(lambda r: {**r, "timeout": True}, id="timeout-bool"),
        pytest.param(lambda r: [r], id="not-an-object"),
    ],
)
def test_a_record_bkt_could_not_have_written_starts_nothing(change: object) -> None:
    first_run()
    [record] = records()
    record.write_text(json.dumps(change(json.loads(record.read_text()))))  # type: ignore[operator]
    prestart.begin(ARGS)
    assert early_child() is None
    [note] = prestart.drain_notes()
    assert note.startswith(f"the early start {record} cannot be used (")


def test_a_corrupt_record_starts_nothing() -> None:
    first_run()
    [record] = records()
    record.write_bytes(b'{"format": 1, "argv": [["sh"')
    prestart.begin(ARGS)
    assert early_child() is None
    assert "cannot be used" in prestart.drain_notes()[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's takes root")
def test_a_record_of_another_user_starts_nothing() -> None:
    first_run()
    [record] = records()
    os.chown(record, 65534, 65534)
    prestart.begin(ARGS)
    assert early_child() is None
    assert prestart.drain_notes() == [
        f"the early start {record} belongs to another user (uid 65534): not used"
    ]


def test_a_symlinked_record_starts_nothing(tmp_path: Path) -> None:
    first_run()
    [record] = records()
    target = tmp_path / "elsewhere.json"
    target.write_bytes(record.read_bytes())
    record.unlink()
    record.symlink_to(target)
    prestart.begin(ARGS)
    assert early_child() is None
    assert "cannot be read" in prestart.drain_notes()[0]


def test_a_cache_directory_that_cannot_be_written_only_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    prestart.begin(ARGS)
    start(SubprocessRunner(), command(prestart.token()), timeout=30.0, prestart=True).wait()
    read, write = prestart.drain_notes()
    assert read.startswith(f"the early start {blocker}/bkt/prestart-")
    assert read.endswith(": Not a directory: not used")
    assert write.startswith(f"the early start {blocker}/bkt/prestart-")
    assert write.endswith(" was not written: Not a directory")


def test_a_child_that_cannot_start_fails_as_it_would_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bkt_core.errors import CommandError

    missing = str(tmp_path / "no-such-program")
    monkeypatch.setattr(prestart, "PROGRAMS", frozenset({missing}))
    prestart.begin(ARGS)
    with pytest.raises(CommandError):
        start(SubprocessRunner(), (missing, prestart.token()), timeout=30.0, prestart=True).wait()
    prestart.end()
    prestart.begin(ARGS)
    assert early_child() is not None
    with pytest.raises(CommandError) as caught:
        start(SubprocessRunner(), (missing, prestart.token()), timeout=30.0, prestart=True).wait()
    assert caught.value.kind == "spawn"


def test_the_child_gets_the_environment_every_child_gets() -> None:
    first_run()
    prestart.begin(ARGS)
    assert prestart._state.env == child_environment() == SubprocessRunner().environment


def test_an_embedded_host_keeps_no_tokens() -> None:
    prestart.end()  # no command began: a library's host, not the CLI
    for _ in range(3):
        prestart.token()
    assert prestart._state.tokens == []


def test_a_record_made_in_another_environment_starts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first_run()
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "qemu+ssh://elsewhere/system")
    prestart.begin(ARGS)
    assert early_child() is None
    [note] = prestart.drain_notes()
    assert note.endswith(" was made in another environment: not used")
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI")
    prestart.end()
    prestart.begin(ARGS)
    assert early_child() is not None


def test_a_removed_working_directory_starts_and_records_nothing(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    here = os.getcwd()
    os.chdir(gone)
    try:
        gone.rmdir()
        prestart.begin(ARGS)
        start(SubprocessRunner(), command(prestart.token()), timeout=30.0, prestart=True).wait()
    finally:
        os.chdir(here)
    assert early_child() is None
    assert records() == []


def test_only_a_program_bkt_starts_early_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prestart, "PROGRAMS", frozenset({"virsh"}))
    prestart.begin(ARGS)
    start(SubprocessRunner(), command(prestart.token()), timeout=30.0, prestart=True).wait()
    prestart.end()
    assert records() == []


def test_a_record_naming_another_program_runs_nothing(tmp_path: Path) -> None:
    first_run()
    [record] = records()
    mark = tmp_path / "ran"
    data = json.loads(record.read_text())
    data["argv"] = [["sh"], ["-c"], [f"touch {mark}"]]
    record.write_text(json.dumps(data))
    prestart.begin(ARGS)
    assert early_child() is None
    assert "of a program bkt starts early" in prestart.drain_notes()[0]
    assert not mark.exists()


def test_a_child_run_first_stops_the_early_one_and_nothing_is_taken_or_recorded() -> None:
    first_run()
    [record] = records()
    before = record.read_bytes()
    prestart.begin(ARGS)
    early = early_child()
    assert early is not None
    proc = early._proc  # type: ignore[attr-defined]
    runner = SubprocessRunner()
    runner.run((sys.executable, "-c", "pass"), timeout=30.0)  # it might change libvirt
    assert proc.returncode is not None  # killed and reaped
    running = start(runner, command(prestart.token(), text="after"), timeout=30.0, prestart=True)
    assert running is not early
    running.wait()
    [note] = prestart.drain_notes()
    assert note.endswith("was not used: this command ran another one first")
    prestart.end()
    assert record.read_bytes() == before


def test_another_working_directory_at_the_time_of_asking_is_another_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_run()
    prestart.begin(ARGS)
    early = early_child()
    assert early is not None
    monkeypatch.chdir(tmp_path)
    running = start(SubprocessRunner(), command(prestart.token()), timeout=30.0, prestart=True)
    assert running is not early
    running.wait()


def test_a_command_within_a_command_begins_nothing() -> None:
    first_run()
    assert prestart.begin(ARGS) is True
    early = early_child()
    assert prestart.begin(ARGS) is False  # main() called from within the command
    assert early_child() is early


def test_another_thread_neither_takes_nor_records(tmp_path: Path) -> None:
    import threading

    first_run()
    prestart.begin(ARGS)
    early = early_child()
    assert early is not None
    seen: list[object] = []

    def library() -> None:  # a host used as a library in another thread
        seen.append(prestart.begin(ARGS))
        argv = command(prestart.token())
        seen.append(prestart.take(argv, child_environment(), 30.0))
        seen.append(prestart.drain_notes())

    thread = threading.Thread(target=library)
    thread.start()
    thread.join()
    assert seen == [False, None, []]
    assert early_child() is early


def cli_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[object]]:
    """A command line whose record starts a `virsh` (a script that sleeps) on PATH, for a
    manifest bkt refuses; the children started early are collected."""
    from bkt_core import process

    monkeypatch.setattr(prestart, "PROGRAMS", frozenset({"virsh"}))
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "virsh").write_text("#!/bin/sh\nexec sleep 30\n")
    (shim / "virsh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "vms.json").write_text('{"vms": {"web": ')
    args = ["-C", str(manifests), "vm", "status"]
    prestart.begin(args)
    prestart.take(("virsh", "-q", f"echo {prestart.token()}"), child_environment(), 30.0)
    prestart.end()
    started: list[object] = []
    real = process.start_child

    def recorded(*a: object) -> object:
        started.append(real(*a))  # type: ignore[arg-type]
        return started[-1]

    monkeypatch.setattr(process, "start_child", recorded)
    return args, started


def test_the_cli_stops_the_early_child_of_a_command_that_fails_before_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bkt_core import cli

    args, started = cli_case(tmp_path, monkeypatch)
    assert cli.main(args) != 0
    assert "vms.json" in capsys.readouterr().err
    [child] = started
    assert child._proc.returncode is not None  # type: ignore[attr-defined]  # killed, reaped
    assert prestart._state.thread is None  # the command is over


def test_the_cli_starts_nothing_early_without_the_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bkt_core import cli

    # The record is made in the environment of the run (BKT_NO_CACHE included), so only the
    # switch itself can keep the child from starting.
    monkeypatch.setenv("BKT_NO_CACHE", "1")
    args, started = cli_case(tmp_path, monkeypatch)
    assert cli.main(args) != 0
    assert started == []
