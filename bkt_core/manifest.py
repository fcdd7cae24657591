"""Manifest files: reading, validating whole, saving atomically, and the lock of writers.

A manifest is read whole and checked whole before anything acts on it. :func:`load_manifest`
parses the file strictly (:mod:`bkt_core.jsonpos`), validates the document with a pydantic
model and with the rules that need the raw document, and reports every problem as a
:class:`~bkt_core.errors.Diagnostic` at its line and column (:mod:`bkt_core.diagnostics`
words them). This module knows nothing about what a manifest describes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bkt_core.diagnostics import MAX_DIAGNOSTICS, Validator, format_path, validation_diagnostics
from bkt_core.errors import Diagnostic, ManifestError, OperationError
from bkt_core.jsonpos import JsonSyntaxError, parse_json

__all__ = [
    "MAX_MANIFEST_BYTES",
    "dump_manifest",
    "load_manifest",
    "locked",
    "read_manifest",
    "validate_text",
    "write_atomic",
]

# -- loading -----------------------------------------------------------------------------


def _reason(exc: OSError) -> str:
    """The system's reason for a failure, as the end of a lowercase message."""
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]


def _check(
    text: str,
    file_name: str,
    model: type[BaseModel],
    validators: Sequence[Validator],
    context: dict[str, Any] | None,
) -> tuple[BaseModel | None, list[Diagnostic], bool]:
    """The model of ``text``, or None and its problems (the first :data:`MAX_DIAGNOSTICS`
    in the order of the text, each once), and whether there are more."""
    try:
        document, index = parse_json(text)
    except JsonSyntaxError as exc:
        line, column = exc.position
        return None, [Diagnostic(file_name, line, column, "", exc.message)], False
    found: dict[Diagnostic, None] = {}  # in order, each once: a rule and the model may agree
    more = False
    result: BaseModel | None = None
    try:
        result = model.model_validate(document, strict=True, context=context, by_name=False)
    except ValidationError as exc:
        more = exc.error_count() > MAX_DIAGNOSTICS
        found.update(dict.fromkeys(validation_diagnostics(exc, document, index, model, file_name)))
    for validator in validators:
        for count, problem in enumerate(validator(document)):
            if count == MAX_DIAGNOSTICS:
                more = True
                break
            position = index.key(problem.path) if problem.at_key else index.value(problem.path)
            line, column = position or (0, 0)
            path = format_path(problem.path)
            found[Diagnostic(file_name, line, column, path, problem.message)] = None
    diagnostics = sorted(found, key=lambda d: (d.line, d.column))
    if len(diagnostics) > MAX_DIAGNOSTICS:
        diagnostics, more = diagnostics[:MAX_DIAGNOSTICS], True
    return (None if diagnostics else result), diagnostics, more


def _invalid(file_name: str, diagnostics: Sequence[Diagnostic], more: bool) -> ManifestError:
    count = len(diagnostics)
    noun = "error" if count == 1 else "errors"
    counted = f"more than {count} errors, the first {count} shown" if more else f"{count} {noun}"
    return ManifestError(
        f"{file_name} is not valid ({counted}); nothing was changed",
        diagnostics=diagnostics,
    )


def validate_text(
    text: str,
    file_name: str,
    model: type[BaseModel],
    validators: Sequence[Validator] = (),
    context: dict[str, Any] | None = None,
) -> BaseModel:
    """Validates a manifest's text whole (see :func:`load_manifest`); ``file_name`` is what
    the diagnostics name."""
    result, diagnostics, more = _check(text, file_name, model, validators, context)
    if diagnostics or result is None:
        raise _invalid(file_name, diagnostics, more)
    return result


#: The largest manifest read, in bytes. A manifest of a thousand VMs is a few hundred KiB;
#: the limit keeps a file that is huge, or grows while it is read, from exhausting memory.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def read_manifest(path: Path) -> str | None:
    """The text of the manifest at ``path``, or None when there is no such file.

    A symbolic link is followed (a manifest may live in a dotfiles repository), but what it
    leads to must be a regular file: a FIFO would block forever and a device never ends.
    A file that is not regular, is larger than :data:`MAX_MANIFEST_BYTES`, cannot be read
    or is not UTF-8 is an :class:`OperationError`.
    """
    try:
        # O_NONBLOCK: opening a FIFO that has no writer returns at once instead of waiting;
        # for a regular file it changes nothing.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OperationError(f"cannot read {path}: {_reason(exc)}") from exc
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind != stat.S_IFREG:
            what = _FILE_KINDS.get(kind, "not a regular file")
            raise OperationError(f"cannot read {path}: it is {what}, not a regular file")
        # Read from the descriptor, one byte past the limit, rather than trusting the size
        # fstat gave: the file may grow meanwhile.
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_MANIFEST_BYTES:
            chunk = os.read(fd, MAX_MANIFEST_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise OperationError(f"cannot read {path}: {_reason(exc)}") from exc
    finally:
        os.close(fd)
    if size > MAX_MANIFEST_BYTES:
        raise OperationError(
            f"cannot read {path}: it is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB, "
            "far more than any manifest needs"
        )
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OperationError(
            f"cannot read {path}: it is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None


def load_manifest(
    path: Path,
    model: type[BaseModel],
    *,
    validators: Sequence[Validator] = (),
    context: dict[str, Any] | None = None,
) -> BaseModel:
    """Reads and validates the manifest at ``path``.

    The document is parsed strictly, validated with ``model`` (strict, by field alias, with
    ``context`` for its validators), and every validator is run over the raw document even
    when the model refuses it. Every problem is collected and raised in one
    :class:`ManifestError`, in the order of the text. A missing file is a ManifestError too;
    a file that cannot be read, or is not UTF-8, an :class:`OperationError`.
    """
    text = read_manifest(path)
    if text is None:
        raise ManifestError(
            f"no manifest at {path}",
            hint="pass --manifest-dir DIR or set BKT_MANIFEST_DIR to the directory that holds "
            "vms.json",
        )
    return validate_text(text, str(path), model, validators, context)


# -- saving ------------------------------------------------------------------------------


def dump_manifest(data: Mapping[str, Any]) -> str:
    """The text of a manifest: 2-space indent, raw UTF-8, keys in the given order, final
    newline."""
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Replaces ``path`` with ``text`` so that a reader sees the old file or the new one.

    The text goes to a temporary file in the same directory (``.NAME.XXXX.tmp``), which
    gets the old file's mode (0644 for a new file), is flushed to disk and renamed over
    ``path``; then the directory is flushed. On failure no temporary file is left.
    Raises :class:`OperationError`.
    """
    import tempfile

    path = Path(path)
    directory = path.parent
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    except OSError as exc:
        raise OperationError(f"cannot write {path}: {_reason(exc)}") from exc
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OperationError(f"cannot write {path}: {_reason(exc)}") from exc
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(text.encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise OperationError(f"cannot write {path}: {_reason(exc)}") from exc
        raise
    # The rename is durable once the directory is; a directory that cannot be opened or
    # flushed only loses that.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``directory`` (``flock`` on the directory itself), so that
    two writers of the manifests there take turns. Raises :class:`OperationError`."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise OperationError(f"cannot lock {directory}: {_reason(exc)}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise OperationError(f"cannot lock {directory}: {_reason(exc)}") from exc
        yield
    finally:
        os.close(fd)
