"""The error types of bkt and the one place that decides exit codes.

Every error a user can cause or meet carries a message (lowercase, no trailing period) and
an optional ``hint``. The CLI prints ``error: MESSAGE`` and ``hint: HINT`` on stderr and exits
with :attr:`BktError.exit_code`; nothing else maps errors to exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EXIT_FAILURE = 1
EXIT_USAGE = 2

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "BktError",
    "CommandError",
    "Diagnostic",
    "ManifestError",
    "OperationError",
    "PluginError",
    "Signalled",
    "UsageError",
]


class BktError(Exception):
    """An error bkt reports to the user: a ``message``, an optional ``hint`` (a line of
    advice printed after it, and in ``--json``) and an exit code."""

    exit_code: int = EXIT_FAILURE
    #: The plugin whose hook implementation raised it, and that hook: set by the host when
    #: the error leaves the implementation (None: raised by bkt outside any hook), so that
    #: whoever reports it can name the plugin.
    plugin: str | None = None
    hook: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(BktError):
    """The command line asks for something that cannot be done (exit 2)."""

    exit_code = EXIT_USAGE


class OperationError(BktError):
    """An operation failed: a tool refused, something did not happen in time, ... (exit 1)."""


@dataclass(frozen=True)
class Diagnostic:
    """One problem of a manifest, at a position of its source text.

    ``line`` and ``column`` are 1-based (columns count Unicode code points); either is 0 when
    the problem has no position. ``path`` is the JSON path as displayed (``vms.win11.vcpus``),
    empty for the document itself.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ManifestError(BktError):
    """A manifest is missing or invalid; nothing was changed (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        diagnostics: Sequence[Diagnostic] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.diagnostics = tuple(diagnostics)


class PluginError(BktError):
    """A plugin failed: it raised in a hook, or cannot be loaded (exit 1).

    ``plugin`` is the plugin's registered name and ``hook`` the hook it was running (empty
    when it failed while being loaded). ``__cause__`` holds the original exception, printed
    as a traceback only with ``-v``.
    """

    def __init__(self, plugin: str, hook: str, detail: str, *, hint: str | None = None) -> None:
        where = f"plugin {plugin}" + (f" in {hook}" if hook else "")
        super().__init__(f"{where}: {detail}", hint=hint)
        self.plugin = plugin
        self.hook = hook


class CommandError(OperationError):
    """A child process failed, timed out or could not be started.

    ``argv`` is the command line (kept as a tuple), ``message`` and ``hint`` as for any
    :class:`BktError`. ``returncode`` is None when the process was killed (timeout) or never
    ran. ``stderr`` is what it printed on stderr. ``kind`` is ``"failed"``, ``"timeout"`` or
    ``"spawn"``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        message: str,
        *,
        kind: str,
        returncode: int | None = None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = tuple(argv)
        self.kind = kind
        self.returncode = returncode
        self.stderr = stderr


class Signalled(BaseException):
    """SIGINT or SIGTERM asked bkt to stop: raised by the CLI's signal handlers, so that
    every ``finally`` runs (temporary files go, child processes are killed) on the way out.

    A :class:`BaseException`, like :class:`KeyboardInterrupt`, so that ``except Exception``
    does not swallow it. The exit status is 128 + the signal's number (130, 143).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
