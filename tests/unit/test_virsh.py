"""bkt_vm_plugin.virsh without processes: a scripted runner plays virsh."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bkt_core.errors import CommandError, OperationError
from bkt_core.process import Completed, FakeRunner
from bkt_vm_plugin.testing import split_virsh_line
from bkt_vm_plugin.virsh import (
    CONNECT_HINT,
    DEFAULT_TIMEOUT,
    INSTALL_HINT,
    MAX_BATCH_BYTES,
    NOT_RUN,
    PER_COMMAND_TIMEOUT,
    TIMEOUT_HINT,
    DomainState,
    Reply,
    Virsh,
    quote,
    virsh_message,
)
from tests.streaming import stream_virsh

URI = "qemu:///system"
HOSTILE = [
    "plain",
    "it's",
    "''",
    '"double"',
    "semi;colon",
    "; 'destroy' 'vm' ;",
    "#hash",
    "back\\slash",
    "trailing\\",
    "new\nline",
    "tab\there",
    "$HOME",
    "`id`",
    "$(id)",
    "é ünïcødé",
    " lead and trail ",
    "--looks-like-an-option",
    "",
]


@dataclass
class FakeVirsh:
    """Plays ``virsh -q``: runs a batch line (or one argv command) the way virsh prints it.

    Known commands: ``echo [--err] [--] TEXT...`` (no trailing newline, ``--err`` prints
    ``error: TEXT`` and a newline on stderr), ``domstate [--domain] NAME`` (fails for names
    not in :attr:`domains`), ``die`` (virsh is killed by SIGKILL); anything else prints
    ``ran ARGS``. The exit status is that of the last command, as virsh's is.
    """

    domains: dict[str, str] = field(default_factory=lambda: {"a": "running", "b": "shut off"})
    calls: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    executed: list[list[str]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        argv = tuple(argv)
        self.calls.append((argv, timeout))
        rest = list(argv[1:])
        assert rest[0] == "-q"
        rest = rest[1:]
        if rest[:1] == ["-c"]:
            rest = rest[2:]
        commands = split_virsh_line(rest[0]) if len(rest) == 1 else [rest]
        stdout, stderr, status = "", "", 0
        for command in commands:
            self.executed.append(command)
            if command == ["die"]:
                return Completed(argv, -9, stdout, stderr)
            out, err = self._one(command)
            stdout += out
            stderr += err
            status = 1 if err else 0
        return Completed(argv, status, stdout, stderr)

    def _one(self, command: list[str]) -> tuple[str, str]:
        name, args = command[0], command[1:]
        if name == "echo":
            to_err = args[:1] == ["--err"]
            if to_err:
                args = args[1:]
            if args[:1] == ["--"]:
                args = args[1:]
            text = " ".join(args)
            return ("", f"error: {text}\n") if to_err else (text, "")
        if name == "domstate":
            domain = args[-1]
            if domain in self.domains:
                return f"{self.domains[domain]}\n", ""
            return "", f"error: failed to get domain '{domain}'\n"
        return f"ran {' '.join(command)}\n", ""

    def batch_lines(self) -> list[str]:
        return [argv[-1] for argv, _ in self.calls]


def answer(stdout: str = "", stderr: str = "", returncode: int = 0) -> FakeRunner:
    return FakeRunner().reply(lambda argv: True, stdout, stderr, returncode)


def raising(error: CommandError) -> FakeRunner:
    return FakeRunner().on(lambda argv: True, error)


# Quoting ---------------------------------------------------------------------------------


def test_quote_wraps_in_single_quotes_and_escapes_quotes() -> None:
    assert quote("plain") == "'plain'"
    assert quote("") == "''"
    assert quote("it's") == "'it'\\''s'"
    assert quote("a;b #c\nd") == "'a;b #c\nd'"
    assert quote("$HOME `id` \\") == "'$HOME `id` \\'"


@pytest.mark.parametrize("arg", HOSTILE)
def test_a_hostile_argument_stays_one_argument(arg: str) -> None:
    line = f"echo -- x ; 'domstate' {quote(arg)} ; 'list'"
    assert split_virsh_line(line) == [["echo", "--", "x"], ["domstate", arg], ["list"]]


@given(st.text(alphabet=st.characters(exclude_characters="\0")))
def test_quote_round_trips_any_text(arg: str) -> None:
    assert split_virsh_line(f"{quote(arg)} ; {quote(arg)}") == [[arg], [arg]]


def test_no_argument_becomes_a_second_command() -> None:
    fake = FakeVirsh()
    replies = Virsh(fake).batch([["echo", "--", arg] for arg in HOSTILE])
    assert [r.stdout for r in replies] == HOSTILE
    assert all(r.ok for r in replies)
    ran = [c for c in fake.executed if c[:2] != ["echo", "--"] and c[:2] != ["echo", "--err"]]
    assert ran == []


# Command lines ---------------------------------------------------------------------------


def test_run_builds_virsh_q_with_and_without_uri() -> None:
    runner = answer("test\n")
    assert Virsh(runner, URI).run(["list", "--all", "--name"]) == "test\n"
    assert Virsh(runner).run(("list",)) == "test\n"
    assert runner.calls == [
        ("virsh", "-q", "-c", URI, "list", "--all", "--name"),
        ("virsh", "-q", "list"),
    ]


def test_batch_puts_all_commands_in_one_argv_element() -> None:
    fake = FakeVirsh()
    Virsh(fake, URI).batch([["domstate", "a"], ["list", "--all"]])
    Virsh(fake).batch([["list"]])
    (with_uri, _), (without, _) = fake.calls
    assert with_uri[:4] == ("virsh", "-q", "-c", URI) and len(with_uri) == 5
    assert without[:2] == ("virsh", "-q") and len(without) == 3
    parts = split_virsh_line(with_uri[-1])
    assert [p for p in parts if p[0] != "echo"] == [["domstate", "a"], ["list", "--all"]]
    marks = [p for p in parts if p[0] == "echo"]
    assert [m[:2] for m in marks] == [["echo", "--"], ["echo", "--err"]] * 2
    assert marks[0][-1] == marks[1][-1] != marks[2][-1] == marks[3][-1]
    assert marks[0][-1].startswith("@@bkt-") and marks[0][-1].endswith("-0@@")


def test_each_process_gets_a_fresh_nonce() -> None:
    fake = FakeVirsh()
    virsh = Virsh(fake)
    virsh.batch([["list"]])
    virsh.batch([["list"]])
    first, second = (split_virsh_line(line)[0][-1] for line in fake.batch_lines())
    assert first != second


def test_commands_must_be_sequences_of_arguments() -> None:
    virsh = Virsh(FakeVirsh())
    with pytest.raises(TypeError):
        virsh.run("list --all")
    with pytest.raises(TypeError):
        virsh.batch(["list"])
    with pytest.raises(ValueError):
        virsh.batch([["list"], []])
    with pytest.raises(ValueError):
        virsh.run([])


# run: errors and hints -------------------------------------------------------------------


def test_virsh_message_strips_prefixes_and_joins_lines() -> None:
    stderr = (
        "error: failed to connect to the hypervisor\n"
        "error: Failed to connect socket to '/run/libvirt/libvirt-sock': No such file\n"
    )
    assert virsh_message(stderr) == (
        "failed to connect to the hypervisor: "
        "Failed to connect socket to '/run/libvirt/libvirt-sock': No such file"
    )
    assert virsh_message("  error: error: twice \n\n\n  plain line  \n") == "twice: plain line"
    assert virsh_message("") == ""


def test_a_connection_failure_names_the_command_and_hints() -> None:
    stderr = (
        "error: failed to connect to the hypervisor\n"
        "error: Failed to connect socket to '/var/run/libvirt/libvirt-sock': "
        "No such file or directory\n"
    )
    with pytest.raises(CommandError) as caught:
        Virsh(answer(stderr=stderr, returncode=1), URI).run(["version"])
    err = caught.value
    assert str(err) == (
        "`virsh -q -c qemu:///system version` failed (exit status 1): "
        "failed to connect to the hypervisor: Failed to connect socket to "
        "'/var/run/libvirt/libvirt-sock': No such file or directory"
    )
    assert err.hint == CONNECT_HINT
    assert (err.kind, err.returncode, err.stderr) == ("failed", 1, stderr)
    assert err.argv == ("virsh", "-q", "-c", URI, "version")


def test_other_failures_have_no_hint() -> None:
    with pytest.raises(CommandError) as caught:
        Virsh(FakeVirsh(), URI).run(["domstate", "--domain", "gone"])
    assert str(caught.value) == (
        "`virsh -q -c qemu:///system domstate --domain gone` failed (exit status 1): "
        "failed to get domain 'gone'"
    )
    assert caught.value.hint is None


def test_a_failure_without_a_message_and_a_signal() -> None:
    with pytest.raises(CommandError, match=r"^`virsh -q list` failed \(exit status 3\)$"):
        Virsh(answer(returncode=3)).run(["list"])
    with pytest.raises(CommandError, match=r"failed \(killed by signal 9\): boom$"):
        Virsh(answer(stderr="boom\n", returncode=-9)).run(["list"])


def test_a_timeout_names_the_command_and_hints() -> None:
    runner = raising(CommandError(["virsh"], "runner's own text", kind="timeout", stderr="x"))
    with pytest.raises(CommandError) as caught:
        Virsh(runner, URI, timeout=5).run(["list"])
    err = caught.value
    assert (
        str(err) == "`virsh -q -c qemu:///system list` did not finish within 5 s and was stopped"
    )
    assert (err.kind, err.hint, err.stderr) == ("timeout", TIMEOUT_HINT, "x")


def test_missing_virsh_hints_to_install_it() -> None:
    error = CommandError(["virsh"], "cannot run virsh: No such file or directory", kind="spawn")
    error.__cause__ = FileNotFoundError(2, "No such file or directory")
    with pytest.raises(CommandError) as caught:
        Virsh(raising(error)).run(["list"])
    assert str(caught.value) == "cannot run virsh: No such file or directory"
    assert (caught.value.kind, caught.value.hint) == ("spawn", INSTALL_HINT)


def test_a_spawn_failure_found_through_the_exception_context() -> None:
    def refuse(argv: tuple[str, ...], _input: str | None) -> Completed:
        try:
            raise PermissionError(13, "Permission denied")
        except OSError:
            raise CommandError(argv, "cannot run virsh: Permission denied", kind="spawn") from None

    with pytest.raises(CommandError) as caught:
        Virsh(FakeRunner().on(lambda argv: True, refuse)).run(["list"])
    assert caught.value.hint is None

    def missing(argv: tuple[str, ...], _input: str | None) -> Completed:
        try:
            raise FileNotFoundError(2, "No such file or directory")
        except OSError:
            raise CommandError(argv, "cannot run virsh: gone", kind="spawn") from None

    with pytest.raises(CommandError) as caught:
        Virsh(FakeRunner().on(lambda argv: True, missing)).run(["list"])
    assert caught.value.hint == INSTALL_HINT


# batch: splitting the output -------------------------------------------------------------


def test_batch_replies_per_command_even_after_a_failure() -> None:
    replies = Virsh(FakeVirsh()).batch(
        [["domstate", "a"], ["domstate", "--domain", "gone"], ["list", "--name"]]
    )
    assert replies == [
        Reply(("domstate", "a"), "running\n", "", True),
        Reply(("domstate", "--domain", "gone"), "", "error: failed to get domain 'gone'\n", False),
        Reply(("list", "--name"), "ran list --name\n", "", True),
    ]
    assert replies[1].message == "failed to get domain 'gone'"
    assert replies[0].message == ""


def test_the_last_command_failing_is_still_only_its_own_failure() -> None:
    replies = Virsh(FakeVirsh()).batch([["domstate", "a"], ["domstate", "gone"]])
    assert [r.ok for r in replies] == [True, False]


def test_check_returns_stdout_or_raises_naming_the_vm() -> None:
    ok, failed = Virsh(FakeVirsh()).batch([["domstate", "a"], ["domstate", "gone"]])
    assert ok.check("a") == "running\n"
    with pytest.raises(OperationError) as caught:
        failed.check("gone")
    assert str(caught.value) == "VM gone: failed to get domain 'gone'"
    assert isinstance(caught.value, CommandError)
    assert caught.value.argv == ("virsh", "domstate", "gone")
    with pytest.raises(OperationError, match=r"^`virsh domstate gone` failed: failed to get"):
        failed.check()


def test_a_reply_error_with_a_lost_connection_hints() -> None:
    reply = Reply(("list",), "", "error: Failed to connect socket to '/x'\n", False)
    assert reply.error("vm1").hint == CONNECT_HINT


def test_commands_after_virsh_died_did_not_run() -> None:
    fake = FakeVirsh()
    replies = Virsh(fake).batch(
        [["echo", "--", "one"], ["domstate", "gone"], ["echo", "two"], ["die"], ["echo", "x"]]
    )
    assert [(r.stdout, r.ok) for r in replies[:3]] == [("one", True), ("", False), ("two", True)]
    # virsh was killed while running "die": its stderr piece is empty, the exit status is not.
    assert (replies[3].ok, replies[3].stderr) == (False, "virsh killed by signal 9")
    assert (replies[4].ok, replies[4].stderr, replies[4].message) == (False, NOT_RUN, NOT_RUN)
    assert ["echo", "x"] not in fake.executed


def test_a_missing_stderr_marker_fails_only_the_commands_that_did_not_run() -> None:
    def truncated(argv: tuple[str, ...], _input: str | None) -> Completed:
        full = FakeVirsh().run(argv, timeout=1)
        cut = full.stderr.rindex("error: @@bkt-")
        return Completed(argv, 0, full.stdout, full.stderr[:cut])

    replies = Virsh(FakeRunner().on(lambda argv: True, truncated)).batch(
        [["echo", "a"], ["echo", "b"], ["echo", "c"]]
    )
    assert [(r.stdout, r.ok) for r in replies] == [("a", True), ("b", True), ("c", False)]
    assert replies[2].stderr == NOT_RUN


def test_a_batch_that_never_ran_is_one_error() -> None:
    runner = answer(stderr="error: failed to connect to the hypervisor\n", returncode=1)
    with pytest.raises(CommandError) as caught:
        Virsh(runner, URI).batch([["list"], ["list"]])
    err = caught.value
    assert str(err) == (
        "`virsh -q -c qemu:///system <2 commands>` failed (exit status 1): "
        "failed to connect to the hypervisor"
    )
    assert err.hint == CONNECT_HINT
    assert err.argv == ("virsh", "-q", "-c", URI, "<2 commands>")
    with pytest.raises(CommandError, match=r"^`virsh -q <1 command>` failed \(exit status 1\): "):
        Virsh(answer(stderr="error: unknown command: 'bogus'\n", returncode=1)).batch([["bogus"]])


def test_an_empty_batch_runs_no_process() -> None:
    runner = FakeRunner()
    assert Virsh(runner, URI).batch([]) == []
    assert runner.calls == []


# batch: size limit and timeouts ----------------------------------------------------------


def test_a_long_batch_is_split_into_as_few_processes_as_fit() -> None:
    fake = FakeVirsh()
    # 2-byte characters: the limit counts bytes, not characters.
    args = [f"{i:04d}" + "é" * 1000 for i in range(250)]
    replies = Virsh(fake).batch([["echo", "--", arg] for arg in args])
    assert [r.stdout for r in replies] == args
    assert all(r.ok for r in replies)
    lines = fake.batch_lines()
    sizes = [len(line.encode()) for line in lines]
    assert len(sizes) > 1
    assert all(size <= MAX_BATCH_BYTES for size in sizes)
    # As few as possible: no process had room for the next command (parts differ by a few
    # bytes of index digits only).
    counts = [len(split_virsh_line(line)) // 3 for line in lines]
    assert sum(counts) == 250
    assert all(
        size + size / n - 8 > MAX_BATCH_BYTES
        for size, n in zip(sizes[:-1], counts[:-1], strict=True)
    )


def test_a_command_longer_than_the_limit_gets_a_process_of_its_own() -> None:
    fake = FakeVirsh()
    big = "x" * (MAX_BATCH_BYTES + 1)
    replies = Virsh(fake).batch([["echo", "small"], ["echo", big], ["echo", "small"]])
    assert [r.stdout for r in replies] == ["small", big, "small"]
    assert len(fake.calls) == 3


def test_a_failure_in_a_later_process_is_the_batch_error() -> None:
    calls = 0

    def second_fails(argv: tuple[str, ...], _input: str | None) -> Completed:
        nonlocal calls
        calls += 1
        if calls == 2:
            return Completed(argv, 1, "", "error: failed to connect to the hypervisor\n")
        return FakeVirsh().run(argv, timeout=1)

    commands = [["echo", "y" * 1000] for _ in range(150)]
    with pytest.raises(CommandError, match=r"<\d+ commands>` failed \(exit status 1\)"):
        Virsh(FakeRunner().on(lambda argv: True, second_fails)).batch(commands)
    assert calls == 2


def test_timeouts_scale_with_the_commands_of_each_process() -> None:
    fake = FakeVirsh()
    virsh = Virsh(fake, timeout=10)
    virsh.run(["list"])
    virsh.batch([["list"]] * 3)
    virsh.batch([["echo", "z" * 1000]] * 150)
    timeouts = [timeout for _, timeout in fake.calls]
    sizes = [len(split_virsh_line(argv[-1])) // 3 for argv, _ in fake.calls[1:]]
    assert timeouts[0] == 10
    assert timeouts[1] == pytest.approx(10 + 3 * PER_COMMAND_TIMEOUT)
    assert sizes[1:] and sum(sizes[1:]) == 150
    assert timeouts[2:] == [pytest.approx(10 + n * PER_COMMAND_TIMEOUT) for n in sizes[1:]]
    assert Virsh(fake).batch_timeout(600) == pytest.approx(DEFAULT_TIMEOUT + 60)


def test_a_batch_timeout_names_the_batch_and_its_time() -> None:
    runner = raising(CommandError(["virsh"], "runner's own text", kind="timeout"))
    with pytest.raises(CommandError) as caught:
        Virsh(runner, URI, timeout=2).batch([["list"]] * 5)
    assert str(caught.value) == (
        "`virsh -q -c qemu:///system <5 commands>` did not finish within 2.5 s and was stopped"
    )
    assert caught.value.hint == TIMEOUT_HINT
    assert caught.value.argv == ("virsh", "-q", "-c", URI, "<5 commands>")


# Trace -----------------------------------------------------------------------------------


def traced() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


def test_trace_shows_each_process_before_it_runs() -> None:
    lines, trace = traced()
    fake = FakeVirsh()
    virsh = Virsh(fake, URI, trace=trace)
    virsh.run(["list", "--all", "--name"])
    virsh.batch([["domstate", "--domain", "a b"], ["dumpxml", "it's"]])
    virsh.batch([["list"]])
    assert lines == [
        "virsh -q -c qemu:///system list --all --name",
        "virsh -q -c qemu:///system <2 commands>",
        "  domstate --domain a b",
        "  dumpxml it's",
        "virsh -q -c qemu:///system <1 command>",
        "  list",
    ]


def test_trace_runs_before_the_process() -> None:
    events: list[str] = []

    def spawn(argv: tuple[str, ...], _input: str | None) -> Completed:
        events.append("spawn")
        return Completed(argv, 0, "", "")

    Virsh(FakeRunner().on(lambda argv: True, spawn), trace=events.append).run(["version"])
    assert events == ["virsh -q version", "spawn"]


def test_a_split_batch_traces_each_process() -> None:
    lines, trace = traced()
    Virsh(FakeVirsh(), trace=trace).batch([["echo", "w" * 1000]] * 150)
    headers = [line for line in lines if not line.startswith("  ")]
    assert len(headers) == 2
    assert all(h.startswith("virsh -q <") and h.endswith(" commands>") for h in headers)
    assert len(lines) == 152


# Domain state ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "state", "active"),
    [
        ("no state\n", DomainState.NO_STATE, False),
        ("running\n", DomainState.RUNNING, True),
        ("idle\n", DomainState.BLOCKED, True),
        ("blocked", DomainState.BLOCKED, True),
        ("paused\n\n", DomainState.PAUSED, True),
        ("in shutdown\n", DomainState.SHUTTING_DOWN, True),
        (" shut off \n", DomainState.SHUT_OFF, False),
        ("crashed\n", DomainState.CRASHED, False),
        ("pmsuspended\n", DomainState.SUSPENDED, True),
    ],
)
def test_domain_states(text: str, state: DomainState, active: bool) -> None:
    assert DomainState.parse(text) is state
    assert state.is_active is active


def test_unknown_domain_states() -> None:
    assert DomainState.parse("exploded") is None
    assert DomainState.parse("") is None
    assert str(DomainState.SHUT_OFF) == "shut off"


def test_domain_state_and_names_each_run_one_process() -> None:
    fake = FakeVirsh()
    virsh = Virsh(fake, URI)
    assert virsh.domain_state("b") is DomainState.SHUT_OFF
    assert fake.calls[-1][0] == ("virsh", "-q", "-c", URI, "domstate", "--domain", "b")
    names = Virsh(answer("a\nb c\n\n")).domain_names()
    assert names == ["a", "b c"]
    with pytest.raises(OperationError) as caught:
        Virsh(answer("exploded\n")).domain_state("a")
    assert str(caught.value) == (
        '`virsh domstate --domain a` printed "exploded", which bkt cannot read'
    )


@pytest.mark.parametrize(
    ("uri", "default", "early"),
    [
        ("qemu:///system", None, True),
        ("qemu:///session", None, True),
        ("qemu+unix:///system", None, True),
        ("test:///default", None, True),
        (None, None, True),
        (None, "qemu:///session", True),
        (None, "qemu+ssh://host/system", False),
        (None, "VIRSH_DEFAULT_CONNECT_URI=qemu+ssh://host/system", False),
        (None, "VIRSH_DEFAULT_CONNECT_URI=qemu:///system", True),
        (None, "uri_default=qemu+ssh://host/system", False),
        (None, "uri_default=qemu:///session", True),
        (None, "uri_default unreadable", False),
        ("qemu:///system", "uri_default=qemu+ssh://host/system", True),
        ("qemu+ssh://host/system", None, False),
        ("qemu+tcp://host/system", None, False),
        ("qemu://host/system", None, False),
        ("qemu+ssh:///system", None, False),
    ],
)
@pytest.mark.parametrize(
    ("commands", "reads"),
    [
        ([["list", "--all", "--name"], ["dumpxml", "--inactive", "--domain", "a"]], True),
        ([["list", "--name"], ["define", "--file", "/proc/1/fd/3"]], False),
        ([["start", "--domain", "a"]], False),
    ],
)
def test_only_a_batch_that_reads_over_a_local_connection_may_start_early(
    monkeypatch: pytest.MonkeyPatch,
    uri: str | None,
    default: str | None,
    early: bool,
    commands: list[list[str]],
    reads: bool,
) -> None:
    import bkt_vm_plugin.virsh
    from bkt_core import prestart
    from bkt_core.process import Running, SubprocessRunner

    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    monkeypatch.delenv("VIRSH_DEFAULT_CONNECT_URI", raising=False)
    configured: str | None = ""
    if default is None:
        pass
    elif default == "uri_default unreadable":
        configured = None
    elif default.startswith("uri_default="):
        configured = default.partition("=")[2]
    elif default.startswith("VIRSH_DEFAULT_CONNECT_URI="):
        monkeypatch.setenv("VIRSH_DEFAULT_CONNECT_URI", default.partition("=")[2])
    else:
        monkeypatch.setenv("LIBVIRT_DEFAULT_URI", default)
    monkeypatch.setattr(bkt_vm_plugin.virsh, "configured_uri", lambda: configured)
    asked: list[tuple[str, ...]] = []
    started = Running(lambda: Completed((), 0, "", ""))

    def take(argv: tuple[str, ...], env: object, timeout: float) -> Running | None:
        asked.append(argv)
        return started

    monkeypatch.setattr(prestart, "take", take)
    monkeypatch.setattr(SubprocessRunner, "start", lambda *a, **k: started)
    Virsh(SubprocessRunner(), uri)._start_batch(commands, prestart=True)
    assert len(asked) == (1 if early and reads else 0)
    Virsh(SubprocessRunner(), uri)._start_batch(commands)
    assert len(asked) == (1 if early and reads else 0)


@pytest.mark.parametrize(
    ("text", "uri"),
    [
        (None, ""),
        ("", ""),
        ('#uri_default = "qemu+ssh://host/system"\n', ""),
        ('uri_default = "qemu+ssh://host/system"\n', "qemu+ssh://host/system"),
        ('  uri_default="qemu:///system"  # the default\n', "qemu:///system"),
        ("uri_default = qemu:///system\n", None),
        (b"\xff\xfe", None),
    ],
)
def test_libvirts_configured_default_uri_is_read_as_virsh_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes | None, uri: str | None
) -> None:
    from bkt_vm_plugin.virsh import configured_uri

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    if text is not None:
        conf = tmp_path / "libvirt" / "libvirt.conf"
        conf.parent.mkdir()
        if isinstance(text, bytes):
            conf.write_bytes(text)
        else:
            conf.write_text(text)
    assert configured_uri({"XDG_CONFIG_HOME": str(tmp_path)}) == uri
    assert configured_uri({"HOME": str(tmp_path / "nowhere")}) == ""
    assert configured_uri({}) is None


# Replies given while virsh runs ----------------------------------------------------------------


def streamed(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeVirsh,
    commands: Sequence[Sequence[str]],
    cuts: Sequence[tuple[float, float]],
) -> tuple[list[Reply], list[tuple[int, Reply]]]:
    """The replies of ``commands`` and what was given early, the output watched at ``cuts``."""
    stream_virsh(monkeypatch, lambda argv: fake.run(argv, timeout=1), cuts)
    given: list[tuple[int, Reply]] = []
    replies = (
        Virsh(FakeVirsh())._start_batch(commands).wait(lambda i, reply: given.append((i, reply)))
    )
    return replies, given


COMMAND = st.one_of(
    st.tuples(st.just("echo"), st.text(max_size=20)).map(list),
    st.tuples(st.just("domstate"), st.sampled_from(["a", "b", "gone", "é\r\n"])).map(list),
)


@given(
    commands=st.lists(COMMAND, min_size=1, max_size=8),
    cuts=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), max_size=12),
)
def test_replies_given_early_are_those_of_the_batch_in_order(
    commands: list[list[str]], cuts: list[tuple[float, float]]
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        replies, given = streamed(monkeypatch, FakeVirsh(), commands, cuts)
    indices = [i for i, _ in given]
    assert indices == list(range(len(indices))), "in order, each once"
    assert all(reply == replies[i] for i, reply in given)
    # Only what virsh went on from: never the last command.
    assert len(given) < len(commands)


def test_every_reply_but_the_last_is_given_once_virsh_printed_it() -> None:
    commands = [["domstate", "a"], ["domstate", "gone"], ["echo", "é"], ["echo", "last"]]
    with pytest.MonkeyPatch.context() as monkeypatch:
        replies, given = streamed(monkeypatch, FakeVirsh(), commands, [(1.0, 1.0)])
    assert given == list(enumerate(replies[:3]))
    assert (replies[1].ok, replies[1].message) == (False, "failed to get domain 'gone'")


def test_a_reply_is_given_only_once_both_streams_went_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # All of stdout, none of stderr: virsh may have printed a command's output, and not yet
    # its error.
    commands = [["domstate", "gone"], ["echo", "x"], ["echo", "y"]]
    replies, given = streamed(monkeypatch, FakeVirsh(), commands, [(1.0, 0.0)])
    assert given == []
    replies, given = streamed(monkeypatch, FakeVirsh(), commands, [(1.0, 0.0), (1.0, 1.0)])
    assert given == list(enumerate(replies[:2]))


def test_replies_after_virsh_died_are_not_given_early(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = [["echo", "one"], ["die"], ["echo", "never"]]
    replies, given = streamed(monkeypatch, FakeVirsh(), commands, [(1.0, 1.0)])
    assert given == [(0, replies[0])]
    assert (replies[1].ok, replies[2].stderr) == (False, NOT_RUN)


def test_what_the_early_call_raises_is_raised_by_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeVirsh()
    stream_virsh(monkeypatch, lambda argv: fake.run(argv, timeout=1), [(1, 1)])

    def refuse(i: int, reply: Reply) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Virsh(fake)._start_batch([["echo", "a"], ["echo", "b"]]).wait(refuse)
