"""Starting a command's first read-only child before bkt has loaded itself.

A warm ``bkt vm status`` spends most of its time importing modules and loading plugins; only
then does it know which virsh batch to start, and virsh then reads libvirt while bkt waits.
Which child a command starts depends on the manifest, the plugins, the options and the
environment, known only after that work; but the same command line, run again, almost
always starts the very same child. So:

- the first child a command starts that its caller marks *prestartable* (a batch that only
  reads, over a local connection, see :func:`bkt_core.process.start`) is recorded in the
  cache directory: its argv (with the random token in it, see :func:`token`, left out), a
  digest of its environment, its timeout, and the command it belongs to (bkt's arguments,
  the working directory and the effective uid, which are also the record's key);
- the next run of that command line, in the same environment, starts the recorded child
  first thing (:func:`begin`), with a fresh token, and lets it run while bkt loads;
- when that run asks for its first prestartable child, it is given the early one only when
  the argv, the environment, the timeout and the working directory are exactly those it
  asked for, and it started no other child before (which might have changed what the early
  one read, :func:`before_child`); otherwise the early one is killed and reaped, and the
  command starts its own (:func:`take`, which also records the new one). A command that
  ends without asking, after an error, a refused manifest or a signal, kills and reaps it
  too (:func:`end`).

So a command reads exactly what the child it asked for prints; only the moment that child
starts differs, by the time bkt takes to load.

The record also keeps what the command says it runs (:func:`remember`: the command's body
and its parsed options, :func:`bkt_core.cli.run_command`), replaced by each run that records
its child; the next run of the command line in the same environment gets it
(:func:`remembered`), and runs it again without parsing the command line when nothing it
depends on changed. A record is trusted only as the other cache
files are (:func:`bkt_core.cache.read_limited`: a regular file of the user's own), and it is
checked to belong to this very command; ``--no-cache`` and ``$BKT_NO_CACHE`` turn this off
with the other caches. Why an early child was not used or a record not kept, ``-v`` says
(:func:`drain_notes`).

Only :mod:`os` is imported up front: :func:`begin` runs on every command.
"""

from __future__ import annotations

import os
import threading

# Not `typing.TYPE_CHECKING`: importing typing costs every command.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from bkt_core.process import Running

__all__ = [
    "before_child",
    "begin",
    "drain_notes",
    "end",
    "remember",
    "remembered",
    "take",
    "token",
]

FORMAT = 1
PREFIX = "prestart-"
SUFFIX = ".json"
#: A batch's argv element stays below the kernel's 128 KiB; JSON may escape some of it.
MAX_BYTES = 512 * 1024
#: How many records are kept (each command line that starts a prestartable child has one).
KEEP = 32
STALE_TEMPORARY_SECONDS = 3600.0
#: A recorded timeout beyond this is not one bkt wrote.
MAX_TIMEOUT = 24 * 3600.0
#: The programs a record may start (looked up on PATH, as when the command starts them):
#: anything else in a record is not what bkt writes, and is not run.
PROGRAMS = frozenset({"virsh"})


class _State:
    """What one command (one :func:`begin` ... :func:`end`) knows."""

    def __init__(self, thread: int | None = None) -> None:
        #: The thread running the command (None: no command is running). Only that thread's
        #: calls see this state: a host another thread uses as a library is not the command.
        self.thread = thread
        self.path: str | None = None
        self.command: list[object] | None = None
        self.recorded: object = None
        self.child: Running | None = None
        self.argv: tuple[str, ...] | None = None
        self.env: dict[str, str] | None = None
        self.timeout: float | None = None
        #: The early child's token, until :func:`token` hands it out.
        self.token: str | None = None
        #: Every token handed out, to find the one in a recorded argv.
        self.tokens: list[str] = []
        #: Whether the command asked for its first prestartable child.
        self.asked = False
        #: The record's invocation, when the record is of this command line in this
        #: environment (:func:`remembered`).
        self.remembered: object = None
        #: What the command said it runs (:func:`remember`), kept with the record.
        self.invocation: object = None
        #: The record of the command's first prestartable child, once it asked for it
        #: (:func:`_record`), without the invocation.
        self.batch: dict[str, object] | None = None
        self.notes: list[str] = []


_state = _State()


def _mine() -> _State | None:
    """The running command's state, when this thread runs it."""
    state = _state
    return state if state.thread is not None and state.thread == threading.get_ident() else None


def token() -> str:
    """Fresh random hex (16 digits) for a child's command line, such as the marker virsh's
    output is split at: the first call of a command whose early child is running gives that
    child's token, so that the argv the command builds can be the child's; every other call
    gives a new one."""
    state = _mine()
    if state is not None and state.token is not None:
        value, state.token = state.token, None
    else:
        value = os.urandom(8).hex()
    # Kept only while a record may still be written (a host embedded in a long-lived
    # process never begins a command, and keeps nothing).
    if state is not None and state.path is not None and not state.asked:
        state.tokens.append(value)
    return value


def begin(args: Sequence[str], *, enabled: bool = True) -> bool:
    """Start what the last run of the command line ``args`` (bkt's arguments) started first,
    when there is a record of it and ``enabled`` (the caches may be used). True when this
    call began a command, which :func:`end` must then end; False (nothing done) while
    another command runs (``main`` called from within one, or from another thread). Never
    raises for the record's sake: a record that cannot be used is a note."""
    global _state
    if _state.thread is not None:
        return False
    _state = state = _State(threading.get_ident())
    if not enabled:
        return True
    from bkt_core import cache

    directory = cache.cache_dir()
    if directory is None:
        return True
    import json

    try:
        cwd = os.getcwd()
    except OSError:  # a working directory removed under the shell: nothing to key on
        return True
    state.command = [FORMAT, list(args), cwd, os.geteuid()]
    key = _sha256(json.dumps(state.command, separators=(",", ":")))
    state.path = path = os.path.join(directory, f"{PREFIX}{key}{SUFFIX}")
    try:
        data = cache.read_limited(path, MAX_BYTES)
    except cache.CacheUnusable as exc:
        state.notes.append(f"the early start {path} {exc}: not used")
        return True
    if data is None:
        return True
    from bkt_core import process

    env = process.child_environment()
    try:
        record = json.loads(data)
        argv, timeout = _parse(record, state.command)
    except (ValueError, RecursionError) as exc:
        state.notes.append(f"the early start {path} cannot be used ({exc}): not used")
        return True
    state.recorded = record
    # Another environment may mean another connection (LIBVIRT_DEFAULT_URI) or another virsh
    # (PATH): the child would not be the one asked for, so it is not started at all.
    if record.get("environment") != _digest(env):
        state.notes.append(f"the early start {path} was made in another environment: not used")
        return True
    state.remembered = record.get("invocation")
    value = os.urandom(8).hex()
    state.argv = tuple(value.join(segments) for segments in argv)
    state.env = env
    state.timeout = timeout
    state.token = value
    try:
        state.child = process.start_child(state.argv, timeout, env)
    except OSError as exc:  # no file descriptor left for its output: the command will say
        state.notes.append(f"the early start {path} could not start: {exc.strerror or exc}")
    return True


def remember(invocation: object) -> None:
    """Keep ``invocation`` (plain JSON; None: nothing) in the record of this command line,
    as what the command runs, in place of what the record held: the next run of it in the
    same environment gets it from :func:`remembered`. (Kept only when the command records
    its child, before or after this call.)"""
    state = _mine()
    if state is not None:
        state.invocation = invocation
        _write(state)


def remembered() -> object:
    """What the last run of this command line said it runs (:func:`remember`), when its
    record is of this command line and was made in this environment; else None. (Checking
    it is the caller's business: it is the user's own file, as trusted as the rest.)"""
    state = _mine()
    return None if state is None else state.remembered


def take(argv: tuple[str, ...], env: dict[str, str], timeout: float) -> Running | None:
    """The early child, when the command's first prestartable child is ``argv`` run with
    ``env`` and ``timeout`` and it is exactly that; else None, after the early one (if any)
    is stopped, and the record now says ``argv`` (when this is the command's first one)."""
    state = _mine()
    if state is None or state.asked:
        return None
    state.asked = True
    state.token = None
    child, state.child = state.child, None
    if child is not None:
        if (argv, env, timeout) == (state.argv, state.env, state.timeout) and _same_directory(
            state
        ):
            # The same batch; what the command remembers may differ from what it ran before.
            _record(state, argv, env, timeout)
            return child
        child.stop()
        state.notes.append(
            f"the child started early from {state.path} is not the one this command "
            "starts: stopped it"
        )
    _record(state, argv, env, timeout)
    return None


def before_child() -> None:
    """A child is about to start that is not the command's first prestartable one (any
    child the command runs first): what it does may change what the early child read, so
    the early child is stopped, and this command neither takes nor records one."""
    state = _mine()
    if state is None or state.asked:
        return
    state.asked = True
    state.token = None
    child, state.child = state.child, None
    if child is not None:
        child.stop()
        state.notes.append(
            f"the child started early from {state.path} was not used: this command ran "
            "another one first"
        )


def end() -> None:
    """Kill and reap an early child the command did not take; forget the command. (Called
    by the thread that began it, when :func:`begin` said it began one.)"""
    global _state
    state, _state = _state, _State()
    state.notes.clear()
    if state.child is not None:
        state.child.stop()


def drain_notes() -> list[str]:
    """Why an early child was not used or a record not written, since the last call."""
    state = _mine()
    if state is None:
        return []
    notes = list(state.notes)
    state.notes.clear()
    return notes


def _same_directory(state: _State) -> bool:
    # A relative PATH entry would find another program after a change of directory.
    try:
        return state.command is not None and state.command[2] == os.getcwd()
    except OSError:
        return False


def _sha256(text: str) -> str:
    from bkt_core.cache import sha256_hex

    return sha256_hex(text.encode("utf-8", "surrogateescape"))


def _digest(env: dict[str, str]) -> str:
    import json

    return _sha256(json.dumps(sorted(env.items()), separators=(",", ":")))


def _parse(record: object, command: list[object]) -> tuple[list[list[str]], float]:
    """The argv (each element as its pieces around the token) and timeout of ``record``;
    ValueError when it is not a record of ``command`` that bkt could have written."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError("not a record of this version of bkt")
    if record.get("command") != command:
        raise ValueError("a record of another command")
    argv = record.get("argv")
    timeout = record.get("timeout")
    if not (
        isinstance(argv, list)
        and argv
        and all(
            isinstance(element, list)
            and element
            and all(isinstance(piece, str) and "\0" not in piece for piece in element)
            for element in argv
        )
        and argv[0] in ([program] for program in PROGRAMS)
    ):
        raise ValueError("its argv is not a list of arguments of a program bkt starts early")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError("its timeout is not a number")
    if not 0 < timeout <= MAX_TIMEOUT:
        raise ValueError(f"its timeout {timeout} is out of range")
    return argv, float(timeout)


def _record(state: _State, argv: tuple[str, ...], env: dict[str, str], timeout: float) -> None:
    """Keep ``argv``, the digest of ``env`` and ``timeout`` as what this command line starts
    first (with what the command remembered), unless the program is not one of
    :data:`PROGRAMS`, the argv holds more than one of the command's tokens, or there is no
    record path (no cache)."""
    if state.path is None or state.command is None or argv[0] not in PROGRAMS:
        return
    held = [value for value in state.tokens if any(value in element for element in argv)]
    if len(held) > 1:
        return
    state.batch = {
        "format": FORMAT,
        "command": state.command,
        "argv": [element.split(held[0]) if held else [element] for element in argv],
        "environment": _digest(env),
        "timeout": timeout,
    }
    _write(state)


def _write(state: _State) -> None:
    """Write the record of the batch the command recorded and what it remembered, unless
    the file says that already."""
    if state.path is None or state.batch is None:
        return
    record = dict(state.batch)
    if state.invocation is not None:
        record["invocation"] = state.invocation
    if record == state.recorded:
        return
    import json

    from bkt_core import cache

    data = json.dumps(record, separators=(",", ":")).encode("utf-8", "surrogateescape")
    if len(data) > MAX_BYTES:
        return
    try:
        cache.write_atomic(state.path, data)
    except OSError as exc:
        state.notes.append(f"the early start {state.path} was not written: {exc.strerror or exc}")
        return
    state.recorded = record
    cache.prune(os.path.dirname(state.path), PREFIX, SUFFIX, KEEP, STALE_TEMPORARY_SECONDS)
