"""The one place that starts child processes.

Everything bkt runs (virsh, qemu-img) goes through a :class:`CommandRunner`. The real one is
:class:`SubprocessRunner`; :class:`FakeRunner` sits beside it for unit tests of error paths
that a real daemon cannot produce on demand.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bkt_core.errors import CommandError

__all__ = ["CommandRunner", "Completed", "FakeRunner", "SubprocessRunner", "display_argv"]

#: Variables removed from every child's environment: they change what virsh prints.
_SCRUBBED_ENV = ("VIRSH_DEBUG", "LIBVIRT_DEBUG", "LIBVIRT_LOG_OUTPUTS")


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


class SubprocessRunner:
    """Runs commands with :mod:`subprocess`, ``LC_ALL=C`` and a scrubbed environment. (What
    runs is traced for ``-vv`` by :class:`~bkt_vm_plugin.virsh.Virsh`, which knows what each
    batch carries.)"""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env["LC_ALL"] = "C"
        self._env = env

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        argv = tuple(argv)
        try:
            proc = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=self._env,
                text=True,
                errors="replace",
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            raise CommandError(
                argv,
                f"`{display_argv(argv)}` did not finish within {timeout:g} s and was stopped",
                kind="timeout",
                stderr=stderr,
            ) from None
        except OSError as exc:
            raise CommandError(
                argv, f"cannot run {argv[0]}: {exc.strerror or exc}", kind="spawn"
            ) from None
        return Completed(argv, proc.returncode, proc.stdout, proc.stderr)


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
