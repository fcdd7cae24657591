"""virsh: the only place that builds virsh command lines (``virsh -q [-c URI] ...``).

Processes are started by the :class:`~bkt_core.process.CommandRunner` handed to
:class:`Virsh`; this module knows argv, virsh's quoting and what virsh prints, not manifests.

One command, one process
    :meth:`Virsh.run` runs ``virsh -q [-c URI] ARGS...`` and returns stdout when virsh exits 0.
    Anything else is a :class:`~bkt_core.errors.CommandError` whose message repeats the command
    line and what virsh said, and whose hint says what to do for the failures we recognise.

Many commands, one process
    A virsh process costs a spawn and a connection to libvirtd (about 15 ms); a command inside
    it costs well under a millisecond. :meth:`Virsh.batch` therefore sends N commands to one
    virsh as a single argv element, virsh's own command language, with ``;`` between commands
    and every argument single-quoted (a ``'`` is written ``'\\''``). Inside single quotes
    virsh takes ``;``, ``#``, ``\\``, newlines, ``$`` and backticks literally and runs no shell,
    so no value from a manifest can end its command or start another one.

    Before command ``i`` the line has ``echo -- MARK ; echo --err -- MARK ;`` where ``MARK`` is
    ``@@bkt-NONCE-i@@`` and ``NONCE`` is fresh random hex for each process. stdout and stderr
    are separate pipes, each in the order virsh wrote it, so each splits at its markers into
    one piece per command (nothing is assumed about how the two interleave). Facts this
    relies on, checked against virsh 9.0.0 (``tests/live``):

    * In a command line given as an argument, ``echo`` prints its text with **no trailing
      newline**, so a stdout piece is exactly what the command printed.
    * ``echo --err`` writes ``error: MARK`` and a newline on stderr.
    * virsh's exit status reflects only the **last** command: a failed command in the middle
      leaves the exit status 0, and the commands after it still run. So the exit status cannot
      say which commands failed. Every failing command prints ``error: ...`` on stderr and a
      successful one prints nothing there, so a command failed exactly when its stderr piece is
      not empty.
    * virsh parses the whole line before running any of it: an unknown command or an
      unterminated quote anywhere means nothing runs, and no connection means nothing runs.
      Then the first stdout marker is missing and the whole batch is one ``CommandError``.
    * When virsh stops partway (``quit``, a crash), the later markers never come: those
      commands get :data:`NOT_RUN`. A non-zero exit status although the last command that ran
      printed nothing on stderr means virsh died in that command, which then fails too.
    * The kernel refuses any single argv element of 128 KiB or more (``MAX_ARG_STRLEN``,
      ``E2BIG`` at exec), so a batch whose line would exceed :data:`MAX_BATCH_BYTES` (UTF-8
      bytes, not characters) is split over as few processes as needed.

Replies while virsh runs
    A command's reply is complete once virsh has printed the markers of the next command on
    both streams. :meth:`_Batch.wait` may hand such replies to the caller while virsh goes
    on (virsh's stdout goes to a file, so it arrives in blocks, each a few KiB), cut from the
    bytes exactly as the whole output is cut at the end; the caller reads a definition while
    virsh prints the next one.

Each process has a timeout, so a hung libvirtd ends in an error, not a hung bkt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from bkt_core.errors import CommandError, OperationError
from bkt_core.prestart import token
from bkt_core.process import CommandRunner, Completed, Running, decode_output
from bkt_core.process import start as start_command

__all__ = [
    "CONNECT_HINT",
    "DEFAULT_TIMEOUT",
    "INSTALL_HINT",
    "MAX_BATCH_BYTES",
    "NOT_RUN",
    "PER_COMMAND_TIMEOUT",
    "READ_ONLY",
    "TIMEOUT_HINT",
    "DomainState",
    "Reply",
    "Virsh",
    "configured_uri",
    "quote",
    "virsh_message",
]

#: Seconds one virsh process may take (for a batch, plus :data:`PER_COMMAND_TIMEOUT` a command).
DEFAULT_TIMEOUT = 60.0

#: Extra seconds a batch process gets for each command it carries. A read costs well under a
#: millisecond and a define or vol-create a few tens of milliseconds, so 0.1 s leaves room on a
#: slow host: a full process of ~600 commands may take DEFAULT_TIMEOUT + 60 s.
PER_COMMAND_TIMEOUT = 0.1

#: Longest batch command line, in UTF-8 bytes. The kernel refuses one argv element of 128 KiB.
MAX_BATCH_BYTES = 100 * 1024

CONNECT_HINT = "start libvirtd (or virtqemud), or pass --connect qemu:///session"
INSTALL_HINT = "install virsh (Debian: apt-get install libvirt-clients)"
TIMEOUT_HINT = "is libvirtd hung? `virsh version` should answer at once"

#: The virsh commands that only read what libvirt holds: a batch of these alone may be started
#: before bkt has loaded, as the same command line started it last time (bkt_core.prestart).
READ_ONLY = frozenset({"list", "dumpxml", "domstate", "dominfo", "echo"})

#: What a command of a batch "printed" on stderr when virsh stopped before running it.
NOT_RUN = "virsh ended before this command ran"

_CONNECT_SIGNS = ("failed to connect to the hypervisor", "Failed to connect socket")
_ERROR_PREFIX = "error: "


@contextmanager
def memory_files(texts: Sequence[str]) -> Iterator[list[str]]:
    """Paths that virsh can read ``texts`` from (``define --file``, ``create --file``): each an
    anonymous in-memory file (memfd) opened through ``/proc/PID/fd/N``, which only processes
    of the same user can. Nothing reaches a disk or a temporary directory, whatever ends bkt
    (graphics passwords included); the files go when the block ends. virsh reads the file
    where it runs, so a remote URI works as with a path."""
    fds: list[int] = []
    try:
        for text in texts:
            fd = os.memfd_create("bkt-virsh", os.MFD_CLOEXEC)
            fds.append(fd)
            data = text.encode("utf-8")
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        pid = os.getpid()
        yield [f"/proc/{pid}/fd/{fd}" for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


def configured_uri(environ: Mapping[str, str] | None = None) -> str | None:
    """``uri_default`` of libvirt's client configuration (``/etc/libvirt/libvirt.conf`` for
    root, ``$XDG_CONFIG_HOME/libvirt/libvirt.conf`` or ``~/.config/libvirt/libvirt.conf`` for
    anyone else): ``""`` when the file or the setting is absent, None when the file cannot
    be read or the setting not understood (then nobody can say which host it names)."""
    env = os.environ if environ is None else environ
    if os.geteuid() == 0:
        path = "/etc/libvirt/libvirt.conf"
    else:
        config = env.get("XDG_CONFIG_HOME", "")
        if not config.startswith("/"):
            home = env.get("HOME", "")
            if not home.startswith("/"):
                return None
            config = os.path.join(home, ".config")
        path = os.path.join(config, "libvirt", "libvirt.conf")
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(1 << 20)
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if name.strip() != "uri_default" or not sep:
            continue
        value = value.split("#", 1)[0].strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1]
        return None
    return ""


def quote(arg: str) -> str:
    """``arg`` as one literal argument of virsh's command language."""
    return "'" + arg.replace("'", "'\\''") + "'"


def virsh_message(stderr: str) -> str:
    """What virsh said, on one line: each line stripped of its ``error: `` prefixes, empty
    lines dropped, the rest joined with ``: ``."""
    said: list[str] = []
    for raw in stderr.split("\n"):
        line = raw.strip()
        while line.startswith(_ERROR_PREFIX):
            line = line[len(_ERROR_PREFIX) :].strip()
        if line:
            said.append(line)
    return ": ".join(said)


def _stderr_hint(stderr: str) -> str | None:
    if any(sign in stderr for sign in _CONNECT_SIGNS):
        return CONNECT_HINT
    return None


def _status(returncode: int | None) -> str:
    if returncode is None:
        return "killed by a signal"
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _failed(shown: Sequence[str], returncode: int | None, stderr: str) -> CommandError:
    message = f"`{' '.join(shown)}` failed ({_status(returncode)})"
    said = virsh_message(stderr)
    if said:
        message += f": {said}"
    return CommandError(
        shown,
        message,
        kind="failed",
        returncode=returncode,
        stderr=stderr,
        hint=_stderr_hint(stderr),
    )


def _commands_placeholder(n: int) -> str:
    return f"<{n} command{'' if n == 1 else 's'}>"


@dataclass(frozen=True)
class Reply:
    """What one command of :meth:`Virsh.batch` printed, and whether it succeeded:
    ``command`` is the command's arguments, ``stdout`` and ``stderr`` what virsh printed for
    it, ``ok`` whether it succeeded."""

    command: tuple[str, ...]
    stdout: str
    stderr: str
    ok: bool

    @property
    def message(self) -> str:
        """What virsh said about this command (empty when it succeeded)."""
        return virsh_message(self.stderr)

    def error(self, vm: str | None = None) -> CommandError:
        """This reply's failure as an error: ``VM NAME: MESSAGE`` when ``vm`` is given, else
        ``` `virsh COMMAND` failed: MESSAGE```."""
        if vm is not None:
            text = f"VM {vm}: {self.message}"
        else:
            text = f"`virsh {' '.join(self.command)}` failed: {self.message}"
        return CommandError(
            ("virsh", *self.command),
            text,
            kind="failed",
            stderr=self.stderr,
            hint=_stderr_hint(self.stderr),
        )

    def check(self, vm: str | None = None) -> str:
        """stdout if the command succeeded; otherwise raise :meth:`error` (an
        :class:`~bkt_core.errors.OperationError`), naming VM ``vm`` when it is given."""
        if not self.ok:
            raise self.error(vm)
        return self.stdout


class DomainState(Enum):
    """A domain's state as ``virsh domstate`` prints it (with ``LC_ALL=C``)."""

    NO_STATE = "no state"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTTING_DOWN = "in shutdown"
    SHUT_OFF = "shut off"
    CRASHED = "crashed"
    SUSPENDED = "pmsuspended"

    @classmethod
    def parse(cls, text: str) -> DomainState | None:
        """The state ``text`` says, as ``domstate`` printed it (surrounding whitespace
        ignored); None for a state this version of bkt does not know."""
        word = text.strip()
        if word == "idle":
            return cls.BLOCKED
        try:
            return cls(word)
        except ValueError:
            return None

    @property
    def is_active(self) -> bool:
        """Whether the domain has a running QEMU process (what start and stop care about)."""
        return self not in (DomainState.SHUT_OFF, DomainState.CRASHED, DomainState.NO_STATE)

    def __str__(self) -> str:
        return self.value


def _check_command(args: Sequence[str]) -> tuple[str, ...]:
    # A str is a Sequence[str] too: ("list") would otherwise become "l" "i" "s" "t".
    if isinstance(args, str):
        raise TypeError(f"a virsh command is a sequence of arguments, not the string {args!r}")
    command = tuple(args)
    if not command:
        raise ValueError("a virsh command needs at least one argument")
    return command


def _marker(nonce: str, index: int) -> str:
    return f"@@bkt-{nonce}-{index}@@"


def _pieces(text: str, opens: Sequence[str]) -> list[str | None]:
    """Split ``text`` at ``opens`` (which occur in order): piece i runs from the end of
    ``opens[i]`` to the next marker found, or to the end; None when ``opens[i]`` is absent."""
    found: list[int] = []
    cursor = 0
    for mark in opens:
        at = text.find(mark, cursor)
        found.append(at)
        if at >= 0:
            cursor = at + len(mark)
    pieces: list[str | None] = [None] * len(opens)
    end = len(text)
    for i in reversed(range(len(opens))):
        if found[i] >= 0:
            pieces[i] = text[found[i] + len(opens[i]) : end]
            end = found[i]
    return pieces


class Virsh:
    """virsh on one connection URI ``uri`` (``None``: virsh's default, which honours
    ``LIBVIRT_DEFAULT_URI``), its processes started by ``runner`` (a
    :class:`~bkt_core.CommandRunner`; in tests, :class:`~bkt_vm_plugin.testing.FakeLibvirt`).

    ``timeout`` is the seconds one process may take (a batch gets more, see
    :data:`PER_COMMAND_TIMEOUT`). ``trace``, for ``-vv``, is called with each command line
    before its process starts.
    """

    def __init__(
        self,
        runner: CommandRunner,
        uri: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.runner = runner
        self.uri = uri
        self.timeout = timeout
        self.trace = trace
        self._prefix: tuple[str, ...] = ("virsh", "-q") + (("-c", uri) if uri else ())

    def batch_timeout(self, n_commands: int) -> float:
        """Seconds one process carrying ``n_commands`` commands of a batch may take:
        ``timeout + PER_COMMAND_TIMEOUT * n_commands``."""
        return self.timeout + PER_COMMAND_TIMEOUT * n_commands

    def run(self, args: Sequence[str]) -> str:
        """Run one virsh command, ``args`` (``["domstate", "--domain", "web"]``), in its own
        process; its stdout if virsh exits 0, else raise
        :class:`~bkt_core.errors.CommandError`."""
        argv = self._prefix + _check_command(args)
        self._trace(" ".join(argv))
        done = self._spawn(lambda: self.runner.run(argv, timeout=self.timeout), argv, self.timeout)
        if done.returncode != 0:
            raise _failed(argv, done.returncode, done.stderr)
        return done.stdout

    def batch(self, commands: Sequence[Sequence[str]]) -> list[Reply]:
        """Run ``commands`` in as few virsh processes as the command-line limit allows (one for
        a few hundred commands) and return one :class:`Reply` per command, in order.

        A failed command does not stop the ones after it; its reply says what went wrong. A
        process in which nothing ran (no connection, a line virsh refused) raises
        :class:`~bkt_core.errors.CommandError`, shown as ``virsh -q -c URI <N commands>``; when
        that happens in a later process, the replies of the earlier ones are lost (their
        commands did run). No commands, no process.
        """
        return self._start_batch(commands).wait()

    def _start_batch(self, commands: Sequence[Sequence[str]], *, prestart: bool = False) -> _Batch:
        """:meth:`batch` of ``commands``, started: its first process runs while the caller
        goes on (when the runner can run in the background, see
        :func:`bkt_core.process.start`), and :meth:`_Batch.wait` gives the replies, or raises
        what :meth:`batch` raises. ``prestart``: the first process may be started early, as
        the same command line started it last time (:mod:`bkt_core.prestart`), when every
        command only reads (:data:`READ_ONLY`)."""
        todo = [_check_command(command) for command in commands]
        prestart = prestart and self._local() and all(command[0] in READ_ONLY for command in todo)
        chunks: list[tuple[int, int, str, str]] = []
        start = 0
        while start < len(todo):
            nonce = token()
            parts: list[str] = []
            size = 0
            end = start
            while end < len(todo):
                mark = _marker(nonce, end)
                part = (
                    f"echo -- {mark} ; echo --err -- {mark} ; "
                    + " ".join(quote(arg) for arg in todo[end])
                    + " ; "
                )
                part_size = len(part.encode())
                if parts and size + part_size > MAX_BATCH_BYTES:
                    break
                parts.append(part)
                size += part_size
                end += 1
            chunks.append((start, end, nonce, "".join(parts)))
            start = end
        return _Batch(self, todo, chunks, prestart=prestart)

    def domain_names(self) -> list[str]:
        """The names of every domain libvirt has, active or not (one process)."""
        return [name for name in self.run(["list", "--all", "--name"]).splitlines() if name]

    def domain_state(self, name: str) -> DomainState:
        """The state of domain ``name`` (one process)."""
        args = ("domstate", "--domain", name)
        out = self.run(args)
        state = DomainState.parse(out)
        if state is None:
            shown = json.dumps(out.strip(), ensure_ascii=False)
            raise OperationError(
                f"`virsh {' '.join(args)}` printed {shown}, which bkt cannot read"
            )
        return state

    def _start_chunk(
        self,
        todo: Sequence[tuple[str, ...]],
        start: int,
        end: int,
        line: str,
        *,
        prestart: bool = False,
    ) -> Running:
        chunk = todo[start:end]
        shown = (*self._prefix, _commands_placeholder(len(chunk)))
        self._trace(" ".join(shown))
        for command in chunk:
            self._trace("  " + " ".join(command))
        return start_command(
            self.runner,
            (*self._prefix, line),
            timeout=self.batch_timeout(len(chunk)),
            prestart=prestart,
        )

    def _finish_chunk(
        self,
        todo: Sequence[tuple[str, ...]],
        start: int,
        end: int,
        nonce: str,
        running: Running,
        early: Callable[[int, Reply], None] | None = None,
    ) -> list[Reply]:
        chunk = todo[start:end]
        shown = (*self._prefix, _commands_placeholder(len(chunk)))
        watch = None if early is None else _Early(chunk, start, nonce, early)
        done = self._spawn(lambda: running.wait(watch), shown, self.batch_timeout(len(chunk)))

        marks = [_marker(nonce, i) for i in range(start, end)]
        if not marks or marks[0] not in done.stdout:
            raise _failed(shown, done.returncode, done.stderr)
        outs = _pieces(done.stdout, marks)
        errs = _pieces(done.stderr, [f"error: {mark}\n" for mark in marks])

        replies = [
            Reply(command, out or "", NOT_RUN if err is None else err, err == "")
            for command, out, err in zip(chunk, outs, errs, strict=True)
        ]
        # The exit status is that of the last command that ran. Non-zero with nothing on its
        # stderr means virsh itself died (a signal, a crash) while running it.
        ran = [i for i, err in enumerate(errs) if err is not None]
        if done.returncode != 0 and ran and replies[ran[-1]].ok:
            last = replies[ran[-1]]
            replies[ran[-1]] = Reply(
                last.command, last.stdout, f"virsh {_status(done.returncode)}", False
            )
        return replies

    def _local(self) -> bool:
        """Whether the connection is to this machine's libvirt (``qemu:///system``, no host
        in the URI): a remote one may ask for a password, which a virsh started early must
        not do for a command that then does not need it. The URI is found as virsh finds
        it: ``-c``, ``$VIRSH_DEFAULT_CONNECT_URI``, ``$LIBVIRT_DEFAULT_URI``, then
        ``uri_default`` in libvirt's client configuration (:func:`configured_uri`); none at
        all means libvirt picks a local driver."""
        env = os.environ
        uri = (
            self.uri
            or env.get("VIRSH_DEFAULT_CONNECT_URI")
            or env.get("LIBVIRT_DEFAULT_URI")
            or configured_uri()
        )
        if uri is None:
            return False
        if not uri:
            return True
        scheme, sep, rest = uri.partition("://")
        # No host, and no transport but the local socket's (`qemu+unix:///system`).
        return bool(sep) and rest.startswith("/") and scheme.partition("+")[2] in ("", "unix")

    def _trace(self, line: str) -> None:
        if self.trace is not None:
            self.trace(line)

    def _spawn(
        self, finish: Callable[[], Completed], shown: Sequence[str], timeout: float
    ) -> Completed:
        """The process ``finish`` runs or waits for; errors show ``shown`` as the command and
        carry their hints."""
        try:
            return finish()
        except CommandError as err:
            if err.kind == "timeout":
                raise CommandError(
                    shown,
                    f"`{' '.join(shown)}` did not finish within {timeout:g} s and was stopped",
                    kind="timeout",
                    stderr=err.stderr,
                    hint=TIMEOUT_HINT,
                ) from err
            if err.kind == "spawn":
                cause = err.__cause__ or err.__context__
                raise CommandError(
                    shown,
                    err.message,
                    kind="spawn",
                    hint=INSTALL_HINT if isinstance(cause, FileNotFoundError) else None,
                ) from err
            raise


class _Batch:
    """A :meth:`Virsh._start_batch` under way: its first process is started; :meth:`wait`
    waits for it, runs the others one after the other, and gives a :class:`Reply` per
    command, in order."""

    def __init__(
        self,
        virsh: Virsh,
        todo: list[tuple[str, ...]],
        chunks: list[tuple[int, int, str, str]],
        *,
        prestart: bool = False,
    ) -> None:
        self._virsh = virsh
        self._todo = todo
        self._chunks = chunks
        self._first: Running | None = None
        if chunks:
            start, end, _nonce, line = chunks[0]
            self._first = virsh._start_chunk(todo, start, end, line, prestart=prestart)

    def stop(self) -> None:
        """Never wait: the process started is killed (the batch only read)."""
        if self._first is not None:
            self._first.stop()

    def wait(self, early: Callable[[int, Reply], None] | None = None) -> list[Reply]:
        """The replies (see :meth:`Virsh.batch`, which raises what this raises). ``early``
        is called with a command's index and reply as soon as virsh has printed all of
        it and gone on to the next command, while virsh runs (when the runner can run in the
        background), in the commands' order: it may be called for some of them, none or all,
        each with the reply this returns for it. What it raises stops virsh and is raised
        here."""
        replies: list[Reply] = []
        for i, (start, end, nonce, line) in enumerate(self._chunks):
            if i == 0 and self._first is not None:
                running = self._first
            else:
                running = self._virsh._start_chunk(self._todo, start, end, line)
            replies.extend(
                self._virsh._finish_chunk(self._todo, start, end, nonce, running, early)
            )
        return replies


class _Early:
    """The watch (:meth:`bkt_core.process.Running.wait`) of one batch process: gives each
    command's reply to ``early`` once virsh printed the markers of the next command on both
    streams, cut from the bytes as :meth:`Virsh._finish_chunk` cuts the whole text (the
    markers are ASCII: a piece decodes alone as it does within the whole)."""

    def __init__(
        self,
        chunk: Sequence[tuple[str, ...]],
        start: int,
        nonce: str,
        early: Callable[[int, Reply], None],
    ) -> None:
        self._chunk = chunk
        self._start = start
        self._early = early
        self._outs = [_marker(nonce, start + i).encode() for i in range(len(chunk))]
        self._errs = [f"error: {_marker(nonce, start + i)}\n".encode() for i in range(len(chunk))]
        #: The next command to give, and where its pieces begin (None: its marker is not
        #: there yet).
        self._next = 0
        self._out_at: int | None = None
        self._err_at: int | None = None

    def __call__(self, out: bytearray, err: bytearray) -> None:
        if self._out_at is None or self._err_at is None:
            # The first command's markers, found once.
            first_out, first_err = out.find(self._outs[0]), err.find(self._errs[0])
            if first_out < 0 or first_err < 0:
                return
            self._out_at = first_out + len(self._outs[0])
            self._err_at = first_err + len(self._errs[0])
        while self._next + 1 < len(self._chunk):
            i = self._next
            out_end = out.find(self._outs[i + 1], self._out_at)
            err_end = err.find(self._errs[i + 1], self._err_at)
            if out_end < 0 or err_end < 0:
                return
            stderr = decode_output(err[self._err_at : err_end])
            reply = Reply(
                self._chunk[i], decode_output(out[self._out_at : out_end]), stderr, stderr == ""
            )
            self._out_at = out_end + len(self._outs[i + 1])
            self._err_at = err_end + len(self._errs[i + 1])
            self._next = i + 1
            self._early(self._start + i, reply)
