"""bkt_vm_plugin.virsh against the real virsh: the facts its batch protocol relies on.

Every test runs on the test driver (``test:///default``, in-process, needs only virsh) and on
the daemon (``$BKT_TEST_URI``, default ``qemu:///system``).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bkt_core.errors import CommandError
from bkt_core.process import Completed, SubprocessRunner
from bkt_vm_plugin.virsh import (
    CONNECT_HINT,
    INSTALL_HINT,
    MAX_BATCH_BYTES,
    NOT_RUN,
    TIMEOUT_HINT,
    DomainState,
    Virsh,
)

pytestmark = pytest.mark.libvirtd

NO_SUCH_DOMAIN = "bkt-no-such-domain-ever"
HOSTILE = [
    "plain",
    "it's",
    '"double"',
    "semi;colon",
    "#hash",
    "back\\slash",
    "new\nline",
    "tab\there",
    "<xml a='1'>&amp;</xml>",
    "$HOME",
    "`id`",
    "é ünïcødé",
    " lead and trail ",
    "--looks-like-an-option",
]


@dataclass
class Recording:
    """The real runner, remembering every process it ran and how it ended."""

    inner: SubprocessRunner = field(default_factory=SubprocessRunner)
    done: list[Completed] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        completed = self.inner.run(argv, timeout=timeout, input=input)
        self.done.append(completed)
        return completed


@pytest.fixture(
    params=["test:///default", os.environ.get("BKT_TEST_URI") or "qemu:///system"],
    ids=["test-driver", "daemon"],
)
def uri(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def runner() -> Recording:
    return Recording()


@pytest.fixture
def virsh(runner: Recording, uri: str) -> Virsh:
    return Virsh(runner, uri)


def not_found(args: Sequence[str]) -> list[str]:
    return [*args, "--domain", NO_SUCH_DOMAIN]


def test_many_commands_run_in_one_process(virsh: Virsh, runner: Recording) -> None:
    replies = virsh.batch([["echo", "--", f"reply {i}"] for i in range(200)])
    assert [r.stdout for r in replies] == [f"reply {i}" for i in range(200)]
    assert all(r.ok for r in replies)
    assert len(runner.done) == 1


def test_echo_prints_no_newline(virsh: Virsh) -> None:
    assert virsh.run(["echo", "--", "x"]) == "x"
    assert [r.stdout for r in virsh.batch([["echo", "x"], ["echo", "y"]])] == ["x", "y"]


def test_a_failing_command_does_not_stop_later_ones(virsh: Virsh, runner: Recording) -> None:
    replies = virsh.batch(
        [["echo", "before"], not_found(["domstate"]), ["echo", "after"], ["list", "--all"]]
    )
    assert [r.ok for r in replies] == [True, False, True, True]
    assert [r.stdout for r in replies[:3]] == ["before", "", "after"]
    assert replies[1].message == f"failed to get domain '{NO_SUCH_DOMAIN}'"
    assert replies[1].stderr == f"error: {replies[1].message}\n"
    # The fact behind "stderr decides": the exit status says nothing about the middle.
    assert runner.done[-1].returncode == 0
    virsh.batch([["echo", "first"], not_found(["domstate"])])
    assert runner.done[-1].returncode == 1


def test_hostile_arguments_come_back_verbatim(virsh: Virsh, runner: Recording) -> None:
    commands: list[list[str]] = []
    for arg in HOSTILE:
        commands.append(["echo", "--", arg])
        commands.append(not_found(["domstate"]))
    commands.append(["list", "--all", "--name"])
    replies = virsh.batch(commands)
    assert len(runner.done) == 1
    assert len(replies) == len(commands)
    for i, arg in enumerate(HOSTILE):
        echo, failed = replies[2 * i], replies[2 * i + 1]
        assert (echo.stdout, echo.stderr, echo.ok) == (arg, "", True), arg
        assert (failed.stdout, failed.ok) == ("", False)
        assert f"failed to get domain '{NO_SUCH_DOMAIN}'" in failed.message
    assert replies[-1].ok, "commands after failures still run"


def test_a_batch_over_the_size_limit_is_split(virsh: Virsh, runner: Recording) -> None:
    # ~2.1 KiB a command once quoted (ü is 2 bytes, ' becomes 4): 120 need 3 processes.
    args = [f"{i:03d} " + "ü;'x" * 250 for i in range(120)]
    replies = virsh.batch([["echo", "--", arg] for arg in args])
    assert [r.stdout for r in replies] == args
    assert all(r.ok for r in replies)
    assert len(runner.done) == 3
    assert all(len(done.argv[-1].encode()) <= MAX_BATCH_BYTES for done in runner.done)


def test_the_kernel_refuses_one_argument_of_128_kib(virsh: Virsh) -> None:
    # Why MAX_BATCH_BYTES: one argv element must stay below MAX_ARG_STRLEN.
    with pytest.raises(CommandError) as caught:
        virsh.run(["echo", "x" * (128 * 1024)])
    assert caught.value.kind == "spawn"
    assert "Argument list too long" in caught.value.message
    assert caught.value.hint is None
    long = "y" * (MAX_BATCH_BYTES + 1000)
    assert virsh.run(["echo", long]) == long


def test_a_line_virsh_refuses_runs_nothing(virsh: Virsh, uri: str) -> None:
    with pytest.raises(CommandError) as caught:
        virsh.batch([["echo", "never"], ["bkt-no-such-command"]])
    assert str(caught.value) == (
        f"`virsh -q -c {uri} <2 commands>` failed (exit status 1): "
        "unknown command: 'bkt-no-such-command'"
    )


def test_run_of_an_unknown_domain_names_virshs_message(virsh: Virsh, uri: str) -> None:
    with pytest.raises(CommandError) as caught:
        virsh.run(not_found(["domstate"]))
    assert str(caught.value) == (
        f"`virsh -q -c {uri} domstate --domain {NO_SUCH_DOMAIN}` failed (exit status 1): "
        f"failed to get domain '{NO_SUCH_DOMAIN}'"
    )
    assert (caught.value.kind, caught.value.returncode, caught.value.hint) == ("failed", 1, None)


def test_domain_names_and_states(virsh: Virsh, uri: str) -> None:
    names = virsh.domain_names()
    assert all(name and name == name.strip() for name in names)
    if uri == "test:///default":
        assert names == ["test"]
    for name in names:
        assert isinstance(virsh.domain_state(name), DomainState)
    if uri == "test:///default":
        assert virsh.domain_state("test") is DomainState.RUNNING


# Without a daemon --------------------------------------------------------------------------

UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"


def test_an_unreachable_daemon_is_a_clear_error_with_a_hint() -> None:
    virsh = Virsh(SubprocessRunner(), UNREACHABLE)
    with pytest.raises(CommandError) as caught:
        virsh.run(["version"])
    err = caught.value
    assert err.argv == ("virsh", "-q", "-c", UNREACHABLE, "version")
    assert (err.kind, err.returncode, err.hint) == ("failed", 1, CONNECT_HINT)
    assert str(err).startswith(
        f"`virsh -q -c {UNREACHABLE} version` failed (exit status 1): "
        "failed to connect to the hypervisor: Failed to connect socket to "
    )

    with pytest.raises(CommandError) as caught:
        virsh.batch([["list"], ["version"], ["echo", "x"]])
    assert str(caught.value).startswith(
        f"`virsh -q -c {UNREACHABLE} <3 commands>` failed (exit status 1): "
        "failed to connect to the hypervisor"
    )
    assert caught.value.hint == CONNECT_HINT


@pytest.fixture
def hung_uri() -> Iterator[str]:
    """A socket that accepts connections (into the kernel's backlog) and never answers."""
    with tempfile.TemporaryDirectory(prefix="bkt-") as tmp:
        path = Path(tmp) / "hung.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(path))
            listener.listen(16)
            yield f"qemu+unix:///system?socket={path}"


def test_a_hung_daemon_ends_in_a_timeout(hung_uri: str) -> None:
    virsh = Virsh(SubprocessRunner(), hung_uri, timeout=1)
    with pytest.raises(CommandError) as caught:
        virsh.run(["version"])
    assert str(caught.value) == (
        f"`virsh -q -c {hung_uri} version` did not finish within 1 s and was stopped"
    )
    assert (caught.value.kind, caught.value.hint) == ("timeout", TIMEOUT_HINT)

    with pytest.raises(CommandError) as caught:
        virsh.batch([["list"]] * 5)
    assert str(caught.value) == (
        f"`virsh -q -c {hung_uri} <5 commands>` did not finish within 1.5 s and was stopped"
    )
    assert caught.value.hint == TIMEOUT_HINT


def test_missing_virsh_hints_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CommandError) as caught:
        Virsh(SubprocessRunner()).run(["version"])
    assert str(caught.value) == "cannot run virsh: No such file or directory"
    assert (caught.value.kind, caught.value.hint) == ("spawn", INSTALL_HINT)


def test_a_command_that_never_ran_is_reported_per_command() -> None:
    # `quit` ends virsh in the middle of a line: what came after it never ran.
    virsh = Virsh(SubprocessRunner(), "test:///default")
    replies = virsh.batch([["echo", "a"], ["quit"], ["echo", "b"]])
    assert [(r.stdout, r.ok) for r in replies] == [("a", True), ("", True), ("", False)]
    assert replies[2].stderr == NOT_RUN
