"""The one place that starts child processes.

Everything bkt runs (virsh, qemu-img) goes through a :class:`CommandRunner`. The real one is
:class:`SubprocessRunner`; :class:`FakeRunner` sits beside it for unit tests of error paths
that a real daemon cannot produce on demand.
"""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bkt_core.errors import CommandError

__all__ = [
    "CommandRunner",
    "Completed",
    "FakeRunner",
    "Running",
    "SubprocessRunner",
    "child_environment",
    "decode_output",
    "display_argv",
    "start",
    "start_child",
]

#: Variables removed from every child's environment: they change what virsh prints.
_SCRUBBED_ENV = ("VIRSH_DEBUG", "LIBVIRT_DEBUG", "LIBVIRT_LOG_OUTPUTS")

#: Seconds between two looks at the output of a child that is watched while it runs.
WATCH_INTERVAL = 0.001

#: What :meth:`Running.wait` may call with a child's output so far: stdout and stderr, each
#: all the bytes written until then (they only grow; not to be changed).
Watch = Callable[[bytearray, bytearray], None]


@dataclass(frozen=True)
class Completed:
    """A process that ran to its end, whatever its exit status."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def display_argv(argv: Sequence[str]) -> str:
    """An argv as a user could paste it into a shell."""
    return shlex.join(argv)


class CommandRunner(Protocol):
    """Runs one command. Raises :class:`CommandError` (kind ``spawn`` or ``timeout``) when it
    cannot be started or does not finish in ``timeout`` seconds; a non-zero exit status is
    returned in :class:`Completed`, not raised, so callers decide what failure means."""

    def run(
        self, argv: Sequence[str], *, timeout: float, input: str | None = None
    ) -> Completed: ...


class Running:
    """A command started by :func:`start`: :meth:`wait` gives what :meth:`CommandRunner.run`
    would have returned, or raises what it would have raised. This one runs the command when
    :meth:`wait` is called; :meth:`SubprocessRunner.start` gives one whose child already runs."""

    def __init__(self, work: Callable[[], Completed]) -> None:
        self._work = work

    def wait(self, watch: Watch | None = None) -> Completed:
        """The finished command (call it once). ``watch``, when given, may be called with the
        output so far while the child runs (this one never calls it: it runs the command
        here); an exception it raises stops the child and is raised here."""
        return self._work()

    def stop(self) -> None:
        """Never wait: a child that runs is killed and reaped (this one has not run)."""


def start(
    runner: CommandRunner,
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | None = None,
    prestart: bool = False,
) -> Running:
    """Start ``argv`` with ``runner``: a :class:`SubprocessRunner` (not one whose ``run`` is
    overridden) starts the child at once and returns, so that the caller works while the
    child does; any other runner runs it when :meth:`Running.wait` is called. Either way
    errors are raised by :meth:`Running.wait`, as :meth:`CommandRunner.run` raises them.

    ``prestart``: the child only reads, and may be started before the command has loaded
    when the same command line runs again (:mod:`bkt_core.prestart`); with a
    :class:`SubprocessRunner`, the child the command started early is returned when it is
    exactly this one."""
    argv = tuple(argv)
    # A subclass that wraps run (to count or log what runs) is given its run.
    if (
        isinstance(runner, SubprocessRunner)
        and type(runner).run is SubprocessRunner.run
        and input is None
    ):
        if prestart:
            from bkt_core import prestart as early

            child = early.take(argv, runner.environment, timeout)
            if child is not None:
                return child
        return runner.start(argv, timeout=timeout)
    return Running(lambda: runner.run(argv, timeout=timeout, input=input))


def child_environment() -> dict[str, str]:
    """The environment every child gets: bkt's own, without what changes what virsh prints,
    with ``LC_ALL=C``."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["LC_ALL"] = "C"
    return env


def start_child(argv: Sequence[str], timeout: float, env: dict[str, str]) -> Running:
    """Start ``argv`` with ``env`` at once (what :meth:`SubprocessRunner.start` does)."""
    return _Child(tuple(argv), timeout, env)


class _Child(Running):
    """A child started by :meth:`SubprocessRunner.start`. Its stdout and stderr go to
    anonymous in-memory files, not pipes: nothing has to read them while the caller works,
    and a child never waits on a full pipe. A caller that wants what the child wrote so far
    watches the files (:meth:`wait` with a watch)."""

    def __init__(self, argv: tuple[str, ...], timeout: float, env: dict[str, str]) -> None:
        self._argv = argv
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._error: OSError | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._out = os.memfd_create("bkt-stdout", os.MFD_CLOEXEC)
        try:
            self._err = os.memfd_create("bkt-stderr", os.MFD_CLOEXEC)
        except OSError:
            os.close(self._out)
            raise
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err, env=env
            )
        except OSError as exc:
            self._error = exc

    def wait(self, watch: Watch | None = None) -> Completed:
        try:
            if self._error is not None:
                try:
                    raise self._error
                except OSError as exc:
                    # Raised here, so that the error's context is the OSError, as run's is.
                    raise _spawn_error(self._argv, exc) from None
            proc = self._proc
            assert proc is not None
            try:
                left = max(self._deadline - time.monotonic(), 0.0)
                if watch is None:
                    _wait_exit(proc, left)
                else:
                    self._watch_until_exit(proc, left, watch)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                stderr = os.pread(self._err, os.lseek(self._err, 0, os.SEEK_END), 0)
                raise _timeout_error(
                    self._argv, self._timeout, stderr.decode(errors="replace")
                ) from None
            except BaseException:
                # A signal while waiting (SIGINT, SIGTERM), or the watch failed: the child
                # must not outlive bkt, as subprocess.run's would not.
                proc.kill()
                proc.wait()
                raise
            return Completed(
                self._argv, proc.returncode, self._read(self._out), self._read(self._err)
            )
        finally:
            self._close()

    def stop(self) -> None:
        """Kill and reap the child (when it was started and still runs), instead of
        :meth:`wait`; after it, nothing."""
        try:
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
        finally:
            self._close()

    def _close(self) -> None:
        # Once: the numbers may be another file's afterwards.
        for fd in (self._out, self._err):
            if fd >= 0:
                os.close(fd)
        self._out = self._err = -1

    def _watch_until_exit(
        self, proc: subprocess.Popen[bytes], timeout: float, watch: Watch
    ) -> None:
        """:func:`_wait_exit`, calling ``watch`` with the output so far each time it grew
        (looking every :data:`WATCH_INTERVAL` s), so that the caller reads what the child
        wrote while the child goes on. Nothing is called once the child has ended."""
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):  # not Linux 5.3+: no watching
            _wait_exit(proc, timeout)
            return
        deadline = time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        try:
            while True:
                left = deadline - time.monotonic()
                # Looked at even past the deadline: the watch's own time may have used it up
                # while the child ended in time.
                ready, _, _ = select.select([pidfd], [], [], max(min(left, WATCH_INTERVAL), 0))
                if ready:
                    break
                if left <= 0:
                    raise subprocess.TimeoutExpired(proc.args, timeout)
                # Both, always: `|` rather than `or`.
                if _grown(self._out, out) | _grown(self._err, err):
                    watch(out, err)
        finally:
            os.close(pidfd)
        proc.wait()

    @staticmethod
    def _read(fd: int) -> str:
        size = os.lseek(fd, 0, os.SEEK_END)
        return decode_output(os.pread(fd, size, 0))


def _grown(fd: int, seen: bytearray) -> bool:
    """Appends to ``seen`` what the file ``fd`` holds beyond it; whether there was any. (A
    write to an in-memory file makes its size cover its data only once the data is there.)"""
    size = os.fstat(fd).st_size
    if size <= len(seen):
        return False
    seen += os.pread(fd, size - len(seen), len(seen))
    return True


def decode_output(data: bytes | bytearray) -> str:
    """A child's output as text, as ``subprocess.run(text=True, errors="replace")`` decodes
    it: the locale's encoding, universal newlines."""
    text = data.decode(_text_encoding(), "replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``proc`` ends, at most ``timeout`` seconds (else TimeoutExpired). Popen's
    own wait with a timeout polls, sleeping up to 50 ms between looks; a pidfd wakes up the
    moment the child ends."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux 5.3+: Popen's polling
        proc.wait(timeout=timeout)
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    proc.wait()


def _text_encoding() -> str:
    if sys.flags.utf8_mode:
        return "utf-8"
    import locale

    return locale.getencoding()


def _timeout_error(argv: tuple[str, ...], timeout: float, stderr: str) -> CommandError:
    return CommandError(
        argv,
        f"`{display_argv(argv)}` did not finish within {timeout:g} s and was stopped",
        kind="timeout",
        stderr=stderr,
    )


def _spawn_error(argv: tuple[str, ...], exc: OSError) -> CommandError:
    return CommandError(argv, f"cannot run {argv[0]}: {exc.strerror or exc}", kind="spawn")


class SubprocessRunner:
    """Runs commands with :mod:`subprocess`, ``LC_ALL=C`` and a scrubbed environment. (What
    runs is traced for ``-vv`` by :class:`~bkt_vm_plugin.virsh.Virsh`, which knows what each
    batch carries.)"""

    def __init__(self) -> None:
        self.environment = child_environment()

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        argv = tuple(argv)
        _before_child()
        try:
            proc = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=self.environment,
                text=True,
                errors="replace",
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            raise _timeout_error(argv, timeout, stderr) from None
        except OSError as exc:
            raise _spawn_error(argv, exc) from None
        return Completed(argv, proc.returncode, proc.stdout, proc.stderr)

    def start(self, argv: Sequence[str], *, timeout: float) -> Running:
        """Start ``argv`` (no input) and return at once; :meth:`Running.wait` gives what
        :meth:`run` would have, or raises what it would have raised. A child not waited for
        runs to its end on its own."""
        _before_child()
        return _Child(tuple(argv), timeout, self.environment)


def _before_child() -> None:
    # What this child does may change what a child started early read (bkt_core.prestart).
    from bkt_core import prestart

    prestart.before_child()


Responder = Callable[[tuple[str, ...], str | None], Completed]


@dataclass
class FakeRunner:
    """A scripted runner for unit tests: each call is answered by the first rule whose
    predicate matches the argv, and recorded in :attr:`calls`.

    A rule's answer is a :class:`Completed`, a :class:`CommandError` to raise, or a callable
    ``(argv, input) -> Completed``.
    """

    rules: list[tuple[Callable[[tuple[str, ...]], bool], Completed | CommandError | Responder]] = (
        field(default_factory=list)
    )
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def on(
        self,
        predicate: Callable[[tuple[str, ...]], bool],
        answer: Completed | CommandError | Responder,
    ) -> FakeRunner:
        self.rules.append((predicate, answer))
        return self

    def reply(
        self,
        predicate: Callable[[tuple[str, ...]], bool],
        stdout: str = "",
        stderr: str = "",
        returncode: int = 0,
    ) -> FakeRunner:
        return self.on(predicate, lambda argv, _input: Completed(argv, returncode, stdout, stderr))

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        argv = tuple(argv)
        self.calls.append(argv)
        for predicate, answer in self.rules:
            if predicate(argv):
                if isinstance(answer, CommandError):
                    raise answer
                if isinstance(answer, Completed):
                    return answer
                return answer(argv, input)
        raise AssertionError(f"FakeRunner has no answer for {display_argv(argv)}")
