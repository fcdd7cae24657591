"""Manifest files: reading, merging, validating whole, saving atomically, and the writers' lock.

A manifest is read whole and checked whole before anything acts on it. It is made of one or
more documents (:class:`ManifestSource`: a subsystem's file, and whatever the
``bkt_manifest_sources`` plugins add, such as a per-host override), each parsed strictly
(:mod:`bkt_core.jsonpos`) and merged over the ones before it (:func:`merge_documents`). The
merged document is validated with a pydantic model and with the rules that need the raw
document, and every problem is reported as a :class:`~bkt_core.errors.Diagnostic` in the file
and at the line and column of the value that won the merge (:class:`SourceMap`;
:mod:`bkt_core.diagnostics` words them). :func:`split_document` takes a merged document back
apart, so that ``capture`` writes each value to the file it came from. This module knows
nothing about what a manifest describes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bkt_core.cache import read_past
from bkt_core.errors import Diagnostic, ManifestError, OperationError
from bkt_core.jsonpos import JsonPath, JsonSyntaxError, Position, PositionIndex, parse_json

# pydantic only to validate: reading, merging and writing manifests need none of it.
if TYPE_CHECKING:
    from pydantic import BaseModel

    from bkt_core.diagnostics import Locations, Validator

__all__ = [
    "MAX_MANIFEST_BYTES",
    "ManifestSource",
    "SourceMap",
    "dump_manifest",
    "load_manifest",
    "locked",
    "merge_documents",
    "merge_sources",
    "missing_manifest",
    "read_manifest",
    "split_document",
    "validate_sources",
    "validate_text",
    "write_atomic",
]

# -- loading -----------------------------------------------------------------------------


def _reason(exc: OSError) -> str:
    """The system's reason for a failure, as the end of a lowercase message."""
    reason = exc.strerror or str(exc)
    return reason[:1].lower() + reason[1:]


@dataclass(frozen=True)
class ManifestSource:
    """One document of a subsystem's manifest: the file it was read from (what diagnostics
    name, and where ``capture`` writes it back), its text, the parsed JSON ``document``
    (plain dicts, lists, strings, numbers, booleans and None) and its :class:`PositionIndex`.

    Build one with :meth:`read` or :meth:`parse`, which refuse what is not strict JSON with a
    :class:`ManifestError` placed in this file.
    """

    path: Path
    text: str
    document: Any
    index: PositionIndex

    @classmethod
    def parse(cls, path: Path, text: str) -> ManifestSource:
        """The source of ``text``, read from ``path``. Raises ManifestError at the first
        syntax error."""
        try:
            document, index = parse_json(text)
        except JsonSyntaxError as exc:
            line, column = exc.position
            diagnostic = Diagnostic(str(path), line, column, "", exc.message)
            raise _invalid(str(path), [diagnostic], False) from None
        return cls(Path(path), text, document, index)

    @classmethod
    def read(cls, path: Path) -> ManifestSource | None:
        """The source of the file at ``path``, or None when there is no such file (see
        :func:`read_manifest`). Raises ManifestError or OperationError."""
        text = read_manifest(Path(path))
        return None if text is None else cls.parse(Path(path), text)


# -- several documents as one ------------------------------------------------------------


def merge_documents(base: Any, override: Any) -> Any:
    """``override`` merged over ``base``: two objects merge member by member (recursively);
    in every other case (a number, a string, an array, null, or an object over something
    that is not one) the override's value replaces the base's whole."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge_documents(base[key], value) if key in base else value
    return merged


def merge_sources(sources: Sequence[ManifestSource]) -> tuple[Any, SourceMap]:
    """The document that ``sources`` make, each merged over the ones before it
    (:func:`merge_documents`), and where each of its values was written."""
    if not sources:
        raise ValueError("a manifest needs at least one source")
    document = sources[0].document
    for source in sources[1:]:
        document = merge_documents(document, source.document)
    return document, SourceMap(sources)


_ABSENT = object()


def _child(value: Any, segment: str | int) -> Any:
    if isinstance(value, dict) and isinstance(segment, str):
        return value.get(segment, _ABSENT)
    if isinstance(value, list) and isinstance(segment, int) and 0 <= segment < len(value):
        return value[segment]
    return _ABSENT


class SourceMap:
    """The :class:`~bkt_core.diagnostics.Locations` of a merged document: a value is placed
    in the source it won from, an object that several sources merge in the first of them
    (where it was introduced), a key with its value."""

    def __init__(self, sources: Sequence[ManifestSource]) -> None:
        self.sources = tuple(sources)

    def owner(self, path: JsonPath) -> ManifestSource | None:
        """The source the merged value at ``path`` comes from (None: no source has it)."""
        holders = [(source, source.document) for source in self.sources]
        for segment in path:
            holders = [
                (source, child)
                for source, value in holders
                if (child := _child(value, segment)) is not _ABSENT
            ]
            if not holders:
                return None
            # A value that is not an object replaces everything before it; objects after the
            # last such value merge.
            plain = [i for i, (_, value) in enumerate(holders) if not isinstance(value, dict)]
            if plain:
                holders = (
                    holders[plain[-1] :]
                    if plain[-1] == len(holders) - 1
                    else holders[plain[-1] + 1 :]
                )
        return holders[0][0] if holders else None

    def _main(self) -> str:
        return str(self.sources[0].path)

    def value(self, path: JsonPath) -> tuple[str, Position]:
        owner = self.owner(path)
        if owner is None:
            return self._main(), Position(0, 0)
        return str(owner.path), owner.index.value(path) or Position(0, 0)

    def key(self, path: JsonPath) -> tuple[str, Position]:
        owner = self.owner(path)
        if owner is None:
            return self._main(), Position(0, 0)
        return str(owner.path), owner.index.key(path) or Position(0, 0)

    def number_literal(self, path: JsonPath) -> str | None:
        owner = self.owner(path)
        return None if owner is None else owner.index.number_literal(path)


def split_document(documents: Sequence[Any], merged: Any) -> list[Any]:
    """``documents`` changed so that merging them (:func:`merge_documents`, in order) gives
    ``merged``: each value goes to the document the merge takes it from (the last one that
    has it), a new member to the first document that has the object it joins, and a member
    that ``merged`` lacks is left out of the one document that has it. Members come in the
    order of ``merged``. Raises ValueError when that cannot be done: leaving out a member
    that two documents have would change what the first of them says on its own."""
    if len(documents) == 1:
        return [merged]
    if not (isinstance(merged, dict) and all(isinstance(d, dict) for d in documents)):
        raise ValueError("only objects can be split over several documents")
    result = _split_object(list(documents), merged, ())
    final = result[0]
    for document in result[1:]:
        final = merge_documents(final, document)
    if final != merged:
        raise ValueError("the documents do not merge into the manifest")
    return result


def _split_object(values: list[Any], merged: dict[str, Any], path: JsonPath) -> list[Any]:
    """:func:`split_document` for the objects ``values`` at ``path`` (``_ABSENT`` where a
    document has no object there that the merge uses)."""
    out: list[Any] = [_ABSENT if v is _ABSENT else {} for v in values]
    first = next(i for i, v in enumerate(values) if v is not _ABSENT)
    for key, want in merged.items():
        had = [_child(v, key) if v is not _ABSENT else _ABSENT for v in values]
        holders = [i for i, h in enumerate(had) if h is not _ABSENT]
        for i in holders:  # what a later value hides stays as it is
            out[i][key] = had[i]
        if not holders:
            out[first][key] = want
            continue
        plain = [i for i in holders if not isinstance(had[i], dict)]
        merging = [i for i in holders if not plain or i > plain[-1]]
        if isinstance(want, dict) and merging:
            parts = _split_object(
                [had[i] if i in merging else _ABSENT for i in range(len(values))],
                want,
                (*path, key),
            )
            for i in merging:
                out[i][key] = parts[i]
        else:
            out[holders[-1]][key] = want
    # A member that ``merged`` lacks is left out of ``out``: from the one document that has it.
    for value in values:
        if value is _ABSENT:
            continue
        for key in value:
            if key in merged:
                continue
            holders = [v for v in values if v is not _ABSENT and key in v]
            if len(holders) > 1:
                from bkt_core.diagnostics import format_path

                raise ValueError(
                    f"{format_path((*path, key))} cannot be left out of one document alone"
                )
    return out


# -- validating --------------------------------------------------------------------------


def _diagnose(
    document: Any,
    locations: Locations,
    model: type[BaseModel],
    validators: Sequence[Validator],
    context: dict[str, Any] | None,
    order: Sequence[str],
    warnings: list[Diagnostic] | None = None,
) -> tuple[BaseModel | None, list[Diagnostic], bool]:
    """The model of ``document``, or None and its problems (the first
    :data:`MAX_DIAGNOSTICS` in the order of the files, named in ``order``, and of their
    text, each once), and whether there are more. The validators' warnings go to
    ``warnings``, in the same order, when it is given."""
    # Only validation needs them: a manifest taken from the cache is read without them.
    from pydantic import ValidationError

    from bkt_core.diagnostics import MAX_DIAGNOSTICS, problem_diagnostic, validation_diagnostics

    found: dict[Diagnostic, None] = {}  # in order, each once: a rule and the model may agree
    more = False
    result: BaseModel | None = None
    try:
        result = model.model_validate(document, strict=True, context=context, by_name=False)
    except ValidationError as exc:
        more = exc.error_count() > MAX_DIAGNOSTICS
        found.update(dict.fromkeys(validation_diagnostics(exc, document, locations, model)))
    cautions: dict[Diagnostic, None] = {}
    for validator in validators:
        for count, problem in enumerate(validator(document)):
            if count == MAX_DIAGNOSTICS:
                more = True
                break
            diagnostic = problem_diagnostic(problem, locations)
            (cautions if problem.warning else found)[diagnostic] = None
    rank = {name: i for i, name in enumerate(order)}

    def ordered(d: Diagnostic) -> tuple[int, int, int]:
        return rank.get(d.file, 0), d.line, d.column

    if warnings is not None:
        warnings.extend(sorted(cautions, key=ordered)[:MAX_DIAGNOSTICS])
    diagnostics = sorted(found, key=ordered)
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


def validate_sources(
    sources: Sequence[ManifestSource],
    model: type[BaseModel],
    validators: Sequence[Validator] = (),
    context: dict[str, Any] | None = None,
    warnings: list[Diagnostic] | None = None,
) -> BaseModel:
    """Validates the manifest that ``sources`` make (:func:`merge_sources`) whole, as
    :func:`load_manifest` does; each problem names the file and the line of the value that
    won the merge. The error names the files that have problems. The validators' warnings
    (a :class:`~bkt_core.diagnostics.Problem` with ``warning`` set) are appended to
    ``warnings`` when it is given, valid manifest or not, and are otherwise dropped."""
    document, locations = merge_sources(sources)
    names = [str(source.path) for source in sources]
    result, diagnostics, more = _diagnose(
        document, locations, model, validators, context, names, warnings
    )
    if diagnostics or result is None:
        files = [name for name in names if any(d.file == name for d in diagnostics)]
        raise _invalid(" and ".join(files) or names[0], diagnostics, more)
    return result


def validate_text(
    text: str,
    file_name: str,
    model: type[BaseModel],
    validators: Sequence[Validator] = (),
    context: dict[str, Any] | None = None,
) -> BaseModel:
    """Validates a manifest's text whole (see :func:`load_manifest`); ``file_name`` is what
    the diagnostics name."""
    return validate_sources(
        [ManifestSource.parse(Path(file_name), text)], model, validators, context
    )


def missing_manifest(path: Path) -> ManifestError:
    """The error for a manifest that does not exist at ``path``."""
    return ManifestError(
        f"no manifest at {path}",
        hint="pass --manifest-dir DIR or set BKT_MANIFEST_DIR to the directory that holds "
        f"{Path(path).name}",
    )


#: The largest manifest read, in bytes. A manifest of a thousand entries is a few hundred KiB;
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
        data = read_past(fd, MAX_MANIFEST_BYTES)
    except OSError as exc:
        raise OperationError(f"cannot read {path}: {_reason(exc)}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_MANIFEST_BYTES:
        raise OperationError(
            f"cannot read {path}: it is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MiB, "
            "far more than any manifest needs"
        )
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
    source = ManifestSource.read(path)
    if source is None:
        raise missing_manifest(path)
    return validate_sources([source], model, validators, context)


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
