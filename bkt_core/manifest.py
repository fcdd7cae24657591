"""Manifest files: strict positioned JSON, validation with every problem located, and saving.

A manifest is read whole and checked whole before anything acts on it. :func:`parse_json`
reads RFC 8259 JSON (and nothing more: no comments, no trailing commas, no duplicate keys)
and records where every value and key starts. :func:`load_manifest` validates the document
with a pydantic model and with the rules that need the raw document (:class:`Problem`), and
reports every problem as a :class:`~bkt_core.errors.Diagnostic` at its line and column.
Pydantic's errors are reworded here, from one table keyed by error type, so that no message
depends on pydantic's wording. This module knows nothing about what a manifest describes.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import os
import re
import stat
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import BaseModel, Discriminator, Tag, ValidationError
from pydantic.fields import FieldInfo

from bkt_core.errors import Diagnostic, ManifestError, OperationError

__all__ = [
    "MAX_DEPTH",
    "MAX_DIAGNOSTICS",
    "MAX_MANIFEST_BYTES",
    "MAX_NUMBER_LENGTH",
    "MAX_SUGGESTED_LENGTH",
    "MAX_VALUES",
    "JsonPath",
    "JsonSyntaxError",
    "Position",
    "PositionIndex",
    "Problem",
    "Validator",
    "char_repr",
    "dump_manifest",
    "format_path",
    "json_type_name",
    "load_manifest",
    "locked",
    "parse_json",
    "read_manifest",
    "suggest",
    "unknown_field_message",
    "validate_text",
    "validation_diagnostics",
    "write_atomic",
]

#: A path into a JSON document: object keys and array indexes, from the root.
JsonPath = tuple[str | int, ...]

#: Deeper nesting than any manifest needs; keeps a hostile file from exhausting the stack.
MAX_DEPTH = 128

#: The most values (of any type, keys not counted) in a document: room for two thousand VMs
#: with every field. Each value costs validation time and memory, and a wrong one more: an
#: empty VM object is as many errors as there are required fields (about 400 bytes each in
#: pydantic, as much again as Python dicts), so this bounds memory to a few hundred MB.
MAX_VALUES = 50_000

#: The longest number literal read, in characters. Far more than a float's 17 significant
#: digits, and short enough that converting it costs nothing (Python's ``int()`` of a digit
#: string takes time quadratic in its length).
MAX_NUMBER_LENGTH = 100

#: The most problems reported of one manifest: beyond that, a list of problems is no help,
#: and wording each one would make a hostile file cost minutes.
MAX_DIAGNOSTICS = 1000

#: The longest value or key that "did you mean" looks at: a typo of a field name or of an
#: allowed value is short, and comparing costs the product of the two lengths.
MAX_SUGGESTED_LENGTH = 64


class Position(NamedTuple):
    """A 1-based line and column; columns count code points, and only ``\\n`` ends a line."""

    line: int
    column: int


@dataclass(frozen=True)
class Problem:
    """A problem that a rule found in the raw document.

    ``path`` is the JSON path it is about; it is reported at the value there, or at its key
    (the opening quote) when ``at_key`` is set, as for a misspelt key or a bad VM name.
    """

    path: JsonPath
    message: str
    at_key: bool = False


#: A rule over the raw parsed document (plain dicts, lists, strings, numbers, ...).
Validator = Callable[[Any], Iterable[Problem]]


# -- JSON paths and wording --------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_-]*")


#: How much of a key a message shows: a path is repeated in every problem under it, so a
#: key of megabytes would be printed as often.
_SHOWN_KEY_LENGTH = 80


def _shown(key: str) -> str:
    """``key``, or its start and ``…`` when it is longer than a message should show."""
    if len(key) <= _SHOWN_KEY_LENGTH:
        return key
    return key[: _SHOWN_KEY_LENGTH - 1] + "\u2026"


def format_path(path: JsonPath) -> str:
    """``vms.win11.iso_sources[0].url``; other keys JSON-quoted (``vms["my vm"]``); the root
    is the empty string. A very long key is cut short (``vms["aaa…"]``)."""
    parts: list[str] = []
    for segment in path:
        if isinstance(segment, str):
            segment = _shown(segment)
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _IDENTIFIER.fullmatch(segment):
            parts.append(f".{segment}" if parts else segment)
        else:
            parts.append(f"[{json.dumps(segment, ensure_ascii=False)}]")
    return "".join(parts)


_CHAR_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "'": "\\'", "\\": "\\\\"}


def char_repr(c: str) -> str:
    """A character quoted for a message: ``'x'``, ``' '``, ``'\\n'``, ``'\\u{feff}'``."""
    if c in _CHAR_ESCAPES:
        return f"'{_CHAR_ESCAPES[c]}'"
    if c == " " or c.isprintable():
        return f"'{c}'"
    return f"'\\u{{{ord(c):x}}}'"


def _describe(c: str) -> str:
    """A character found where something else was expected: `` `c` ``, or quoted as by
    :func:`char_repr` when it would not be visible."""
    if c.isspace() or not c.isprintable():
        return char_repr(c)
    return f"`{c}`"


def json_type_name(value: Any) -> str:
    """How a message names the JSON type of ``value``: ``a string``, ``null``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment Damerau-Levenshtein distance: a swap of two neighbouring
    characters (``memroy``) is one edit."""
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[len(b)]


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word`` (ignoring case) if it is close enough to be a typo:
    at most ``max(1, len(candidate) // 3)`` edits; the first of equally close ones. None for
    a word longer than :data:`MAX_SUGGESTED_LENGTH`, which is no typo."""
    if len(word) > MAX_SUGGESTED_LENGTH:
        return None
    lower = word.lower()
    best: tuple[int, str] | None = None
    for candidate in candidates:
        folded = candidate.lower()
        # The distance is at least the difference in length: no need to compute it.
        if abs(len(folded) - len(lower)) > max(1, len(candidate) // 3):
            continue
        distance = _edit_distance(lower, folded)
        if distance <= max(1, len(candidate) // 3) and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best else None


def unknown_field_message(key: str, candidates: Sequence[str]) -> str:
    """``unknown field "k"``, with the likely meant field or the list of known ones."""
    close = suggest(key, candidates)
    key = _shown(key)
    if close is not None:
        return f'unknown field "{key}" (did you mean "{close}"?)'
    if candidates:
        return f'unknown field "{key}" (expected one of: {", ".join(candidates)})'
    return f'unknown field "{key}"'


# -- the positioned JSON reader ----------------------------------------------------------


class JsonSyntaxError(ValueError):
    """The text is not (strict) JSON; ``position`` is where reading stopped."""

    def __init__(self, message: str, position: Position) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class PositionIndex:
    """Where each value and key of a parsed document starts in its text.

    The offsets are found when first asked for (a valid manifest never needs them), by
    reading the text again with the positioned reader.
    """

    def __init__(
        self,
        text: str,
        values: dict[JsonPath, int] | None = None,
        keys: dict[JsonPath, int] | None = None,
    ) -> None:
        self._text = text
        self._tables = None if values is None else (values, keys or {})
        self._line_starts: list[int] | None = None

    def _offsets(self) -> tuple[dict[JsonPath, int], dict[JsonPath, int]]:
        if self._tables is None:
            reader = _Reader(self._text)
            # The fast reader accepts nothing that this one refuses.
            with contextlib.suppress(_Stop):
                reader.document()
            self._tables = (reader.values, reader.keys)
        return self._tables

    def position(self, offset: int) -> Position:
        """The line and column of a character offset into the text."""
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self._text)]
        line = bisect.bisect_right(self._line_starts, offset)
        return Position(line, offset - self._line_starts[line - 1] + 1)

    def __contains__(self, path: object) -> bool:
        return path in self._offsets()[0]

    def value(self, path: JsonPath) -> Position | None:
        """Where the value at ``path`` starts (its ``{``, ``"`` or first character)."""
        offset = self._offsets()[0].get(path)
        return None if offset is None else self.position(offset)

    def key(self, path: JsonPath) -> Position | None:
        """Where the key of the object member at ``path`` starts (its opening quote)."""
        offset = self._offsets()[1].get(path)
        return None if offset is None else self.position(offset)

    def number_literal(self, path: JsonPath) -> str | None:
        """The number at ``path`` as it is written (``1e2``, ``4.50``)."""
        offset = self._offsets()[0].get(path)
        if offset is None:
            return None
        match = _NUMBER.match(self._text, offset)
        return match.group() if match else None


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_PLAIN_STRING = re.compile(r'"[^"\\\x00-\x1f]*"')
_PLAIN_RUN = re.compile(r'[^"\\\x00-\x1f]+')
_SURROGATE = re.compile("[\ud800-\udfff]")
_DIGITS = frozenset("0123456789")
_NUMBER_CONTINUES = frozenset("0123456789.eE")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS: dict[str, tuple[str, Any]] = {
    "t": ("true", True),
    "f": ("false", False),
    "n": ("null", None),
}
# The C scanner of the json module: (text, index after the opening quote, strict) -> (value,
# index after the closing quote); it raises ValueError on what strict JSON refuses.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class _Stop(Exception):
    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        self.message = message


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.values: dict[JsonPath, int] = {}
        self.keys: dict[JsonPath, int] = {}
        self.count = 0

    def document(self) -> Any:
        """The whole text as one value, surrounded only by white space."""
        value, end = self.value(self.skip(0), 0, ())
        end = self.skip(end)
        if end < self.end:
            raise _Stop(end, "unexpected characters after the JSON value")
        return value

    def skip(self, i: int) -> int:
        match = _WHITESPACE.match(self.text, i)
        assert match is not None  # the pattern matches the empty string
        return match.end()

    def found(self, i: int) -> str:
        return "the end of the file" if i >= self.end else _describe(self.text[i])

    def value(self, i: int, depth: int, path: JsonPath) -> tuple[Any, int]:
        if depth > MAX_DEPTH:
            raise _Stop(i, "nested too deeply")
        if i >= self.end:
            raise _Stop(i, "expected a value, found the end of the file")
        self.count += 1
        if self.count > MAX_VALUES:
            raise _Stop(i, f"too many values (at most {MAX_VALUES})")
        self.values[path] = i
        c = self.text[i]
        if c == '"':
            return self.string(i)
        if c == "{":
            return self.object(i, depth, path)
        if c == "[":
            return self.array(i, depth, path)
        if c == "-" or c in _DIGITS:
            return self.number(i)
        if c in _LITERALS:
            word, value = _LITERALS[c]
            if not self.text.startswith(word, i):
                raise _Stop(i, f"expected a value (did you mean `{word}`?)")
            return value, i + len(word)
        raise _Stop(i, f"expected a value, found {self.found(i)}")

    def object(self, i: int, depth: int, path: JsonPath) -> tuple[dict[str, Any], int]:
        text = self.text
        members: dict[str, Any] = {}
        i = self.skip(i + 1)
        if i < self.end and text[i] == "}":
            return members, i + 1
        while True:
            i = self.skip(i)
            if i >= self.end or text[i] != '"':
                if i < self.end and text[i] == "}":
                    raise _Stop(i, "trailing comma before `}`")
                raise _Stop(i, f"expected a quoted field name, found {self.found(i)}")
            key_at = i
            key, i = self.string(i)
            if key in members:
                raise _Stop(key_at, f'duplicate field "{_shown(key)}"')
            i = self.skip(i)
            if i >= self.end or text[i] != ":":
                raise _Stop(i, f"expected `:` after the field name, found {self.found(i)}")
            member = (*path, key)
            self.keys[member] = key_at
            members[key], i = self.value(self.skip(i + 1), depth + 1, member)
            i = self.skip(i)
            if i >= self.end:
                raise _Stop(i, "unclosed object: expected `}`, found the end of the file")
            c = text[i]
            if c == "}":
                return members, i + 1
            if c != ",":
                raise _Stop(i, f"expected `,` or `}}`, found {self.found(i)}")
            i += 1

    def array(self, i: int, depth: int, path: JsonPath) -> tuple[list[Any], int]:
        text = self.text
        items: list[Any] = []
        i = self.skip(i + 1)
        if i < self.end and text[i] == "]":
            return items, i + 1
        while True:
            i = self.skip(i)
            if i < self.end and text[i] == "]":
                raise _Stop(i, "trailing comma before `]`")
            item, i = self.value(i, depth + 1, (*path, len(items)))
            items.append(item)
            i = self.skip(i)
            if i >= self.end:
                raise _Stop(i, "unclosed array: expected `]`, found the end of the file")
            c = text[i]
            if c == "]":
                return items, i + 1
            if c != ",":
                raise _Stop(i, f"expected `,` or `]`, found {self.found(i)}")
            i += 1

    def string(self, i: int) -> tuple[str, int]:
        plain = _PLAIN_STRING.match(self.text, i)
        if plain is not None:
            return self.text[i + 1 : plain.end() - 1], plain.end()
        try:
            value, end = _scanstring(self.text, i + 1, True)
        except ValueError:
            return self.string_exactly(i)
        if _SURROGATE.search(value):
            return self.string_exactly(i)
        return value, end

    def string_exactly(self, i: int) -> tuple[str, int]:
        """Reads a string character by character; reached only for strings with escapes
        that the fast path refused or may have let through (lone surrogates), to report
        exactly what is wrong where."""
        text, end = self.text, self.end
        out: list[str] = []
        i += 1
        while True:
            if i >= end:
                raise _Stop(i, "unterminated string")
            c = text[i]
            if c == '"':
                return "".join(out), i + 1
            if c == "\\":
                at = i
                escape = text[i + 1] if i + 1 < end else ""
                i += 2
                if escape == "u":
                    char, i = self.unicode_escape(i, at)
                    out.append(char)
                elif escape in _ESCAPES:
                    out.append(_ESCAPES[escape])
                else:
                    raise _Stop(at, "invalid escape in string")
            elif c < " ":
                raise _Stop(i, "control character in string (write it as an escape)")
            else:
                # A run of plain characters at once: a long string costs no Python loop
                # per character.
                run = _PLAIN_RUN.match(text, i)
                assert run is not None  # c is plain
                out.append(run.group())
                i = run.end()

    def hex4(self, i: int, at: int) -> tuple[int, int]:
        digits = self.text[i : i + 4]
        if len(digits) < 4 or not all(d in _HEX for d in digits):
            raise _Stop(at, "invalid \\u escape in string")
        return int(digits, 16), i + 4

    def unicode_escape(self, i: int, at: int) -> tuple[str, int]:
        unpaired = "invalid \\u escape in string (unpaired surrogate)"
        code, i = self.hex4(i, at)
        if 0xD800 <= code < 0xDC00:
            if self.text[i : i + 2] != "\\u":
                raise _Stop(at, unpaired)
            low, i = self.hex4(i + 2, at)
            if not 0xDC00 <= low < 0xE000:
                raise _Stop(at, unpaired)
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        elif 0xDC00 <= code < 0xE000:
            raise _Stop(at, unpaired)
        return chr(code), i

    def number(self, i: int) -> tuple[int | float, int]:
        match = _NUMBER.match(self.text, i)
        if match is None or (
            match.end() < self.end and self.text[match.end()] in _NUMBER_CONTINUES
        ):
            end = self.number_exactly(i)
        else:
            end = match.end()
        if end - i > MAX_NUMBER_LENGTH:
            raise _Stop(i, f"number too long ({end - i} characters, at most {MAX_NUMBER_LENGTH})")
        literal = self.text[i:end]
        if "." in literal or "e" in literal or "E" in literal:
            return float(literal), end
        return int(literal), end

    def number_exactly(self, i: int) -> int:
        """The end of the number at ``i``, or where and why it is not one."""
        text, end = self.text, self.end

        def digit(at: int) -> bool:
            return at < end and text[at] in _DIGITS

        def digits(at: int) -> int:
            while digit(at):
                at += 1
            return at

        if text[i] == "-":
            i += 1
        if i < end and text[i] == "0":
            i += 1
        elif digit(i):
            i = digits(i)
        else:
            raise _Stop(i, "invalid number")
        if i < end and text[i] == ".":
            if not digit(i + 1):
                raise _Stop(i + 1, "invalid number")
            i = digits(i + 1)
        if i < end and text[i] in "eE":
            i += 1
            if i < end and text[i] in "+-":
                i += 1
            if not digit(i):
                raise _Stop(i, "invalid number")
            i = digits(i)
        if digit(i):
            raise _Stop(i, "invalid number (leading zero)")
        return i


class _NotStrict(Exception):
    """The fast reader met something that only the positioned reader can judge."""


def _refuse_constant(name: str) -> Any:
    raise _NotStrict(name)


def _short_number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def read(literal: str) -> Any:
        if len(literal) > MAX_NUMBER_LENGTH:
            raise _NotStrict("number too long")
        return convert(literal)

    return read


_read_int = _short_number(int)
_read_float = _short_number(float)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise _NotStrict("duplicate key")
    return members


_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _within_depth(value: Any) -> bool:
    """Whether no value in ``value`` is nested deeper than :data:`MAX_DEPTH` (the root is at
    depth 0), that is, no container at that depth has members."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(MAX_DEPTH):
        level = [
            child
            for container in level
            for child in (container.values() if type(container) is dict else container)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return True
    return not any(level)


def _read_fast(text: str) -> tuple[bool, Any]:
    """The document read by the json module's C reader, when it is certainly strict JSON
    (``(False, None)`` otherwise). It accepts a subset of what :class:`_Reader` accepts,
    with the same values, and is many times faster."""
    if _LONE_SURROGATE_ESCAPE.search(text):
        return False, None
    # A value is the root, the first member of a container or follows a comma: this bounds
    # their number from above (the positioned reader counts them exactly).
    if 1 + text.count(",") + text.count("[") + text.count("{") > MAX_VALUES:
        return False, None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique,
            parse_constant=_refuse_constant,
            parse_int=_read_int,
            parse_float=_read_float,
        )
    except (_NotStrict, ValueError, RecursionError):
        return False, None
    if (text.count("[") + text.count("{") > MAX_DEPTH) and not _within_depth(value):
        return False, None
    return True, value


def parse_json(text: str) -> tuple[Any, PositionIndex]:
    """Reads one strict JSON document: plain Python values (integers only for integer
    literals; a literal with ``.``, ``e`` or ``E`` is a float) and where each one starts.

    Raises :class:`JsonSyntaxError` with the exact place of the first syntax error. A byte
    order mark is an error, like any other character before the value.
    """
    strict, value = _read_fast(text)
    if strict:
        return value, PositionIndex(text)
    reader = _Reader(text)
    try:
        value = reader.document()
    except _Stop as stop:
        raise JsonSyntaxError(stop.message, PositionIndex(text).position(stop.offset)) from None
    return value, PositionIndex(text, reader.values, reader.keys)


# -- what the model expects at a place ---------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """The declared type at a place of the document, as far as the walk could follow it.

    ``field`` is the model field it was declared by (for its schema overrides); ``forms`` the
    members of the union it was chosen from, if any; ``raw`` the annotation with its
    ``Annotated`` metadata (a union's discriminator).
    """

    annotation: Any
    field: FieldInfo | None = None
    forms: tuple[Any, ...] = ()
    raw: Any = None


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return ()


def _discriminator(shape: _Shape) -> str | None:
    """The field name that a union at ``shape`` is discriminated by, if it is."""
    candidates: list[Any] = [shape.field.discriminator if shape.field else None]
    if typing.get_origin(shape.raw) is Annotated:
        candidates += typing.get_args(shape.raw)[1:]
    for candidate in candidates:
        if isinstance(candidate, FieldInfo):
            candidate = candidate.discriminator
        if isinstance(candidate, Discriminator):
            candidate = candidate.discriminator
        if isinstance(candidate, str):
            return candidate
    return None


def _forms(shape: _Shape) -> dict[str, Any]:
    """The members of a union by the labels that pydantic puts in error locations: their
    tag (``Tag``, or the value of the discriminator field) or, for a union of models that
    is not tagged, their class name. Empty for anything but a union."""
    members = [m for m in _union_members(shape.annotation) if m is not type(None)]
    if len(members) < 2:  # X | None is validated as X, with no label
        return {}
    discriminator = _discriminator(shape)
    forms: dict[str, Any] = {}
    for member in members:
        target = _strip(member)
        if typing.get_origin(member) is Annotated:
            for meta in typing.get_args(member)[1:]:
                if isinstance(meta, Tag):
                    forms[meta.tag] = target
        if not _is_model(target):
            continue
        info = _model_field(target, discriminator) if discriminator else None
        if info is not None and typing.get_origin(_strip(info.annotation)) is Literal:
            for value in typing.get_args(_strip(info.annotation)):
                forms[str(value.value if isinstance(value, Enum) else value)] = target
        forms.setdefault(target.__name__, target)
    return forms


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _child(shape: _Shape | None, segment: str | int) -> _Shape | None:
    if shape is None:
        return None
    annotation = shape.annotation
    members = [m for m in _union_members(annotation) if m is not type(None)]
    if len(members) == 1:  # X | None
        annotation = _strip(members[0])
    origin = typing.get_origin(annotation)
    if _is_model(annotation) and isinstance(segment, str):
        info = _model_field(annotation, segment)
        return None if info is None else _Shape(_strip(info.annotation), info, raw=info.annotation)
    if origin in (dict, Mapping) and isinstance(segment, str):
        value = typing.get_args(annotation)[1]
        return _Shape(_strip(value), raw=value)
    if origin in (list, Sequence, tuple) and isinstance(segment, int):
        args = typing.get_args(annotation)
        return _Shape(_strip(args[0]), raw=args[0]) if args else None
    return None


@dataclass
class _Place:
    """Where a pydantic error location leads in the document."""

    path: JsonPath
    value: Any
    shape: _Shape | None


def _follow(loc: Sequence[str | int], document: Any, model: type[BaseModel]) -> _Place:
    """Follows a pydantic location through the document and the model together. Location
    segments that are not keys or indexes of the data there (a union member's tag or label,
    ``[key]``) are skipped."""
    path: list[str | int] = []
    value = document
    shape: _Shape | None = _Shape(model)
    for segment in loc:
        if shape is not None and isinstance(segment, str):
            forms = _forms(shape)
            if segment in forms:
                chosen = forms[segment]
                shape = _Shape(chosen, shape.field, tuple(dict.fromkeys(forms.values())), chosen)
                continue
        in_object = isinstance(value, dict) and isinstance(segment, str) and segment in value
        in_array = (
            isinstance(value, list) and isinstance(segment, int) and 0 <= segment < len(value)
        )
        if not (in_object or in_array):
            continue
        value = value[segment]
        path.append(segment)
        shape = _child(shape, segment)
    return _Place(tuple(path), value, shape)


_JSON_TYPES: dict[Any, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    dict: "object",
    list: "array",
    tuple: "array",
}

_TYPE_PHRASES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _json_types(annotation: Any) -> list[str]:
    annotation = _strip(annotation)
    found: list[str] = []
    members = _union_members(annotation)
    if members:
        for member in members:
            found += [t for t in _json_types(member) if t not in found]
        return found
    if typing.get_origin(annotation) is Literal:
        for value in typing.get_args(annotation):
            name = _JSON_TYPES.get(type(value))
            if name and name not in found:
                found.append(name)
        return found
    if _is_model(annotation):
        return ["object"]
    origin = typing.get_origin(annotation) or annotation
    if origin in (Mapping,):
        return ["object"]
    if origin in (Sequence,):
        return ["array"]
    name = _JSON_TYPES.get(origin)
    return [name] if name else []


def _declared_types(shape: _Shape | None) -> list[str]:
    """The JSON types the schema gives for a place: a field's explicit ``type`` in its
    ``json_schema_extra`` (an optional field whose null is not advertised), else the types
    of its annotation."""
    if shape is None:
        return []
    if shape.field is not None and isinstance(shape.field.json_schema_extra, dict):
        declared = shape.field.json_schema_extra.get("type")
        if isinstance(declared, str):
            return [declared]
        if isinstance(declared, list) and all(isinstance(t, str) for t in declared):
            return [str(t) for t in declared]
    return _json_types(shape.annotation)


def _allowed_values(shape: _Shape | None) -> list[Any]:
    if shape is None:
        return []
    annotation = shape.annotation
    values: list[Any] = []
    for member in _union_members(annotation) or (annotation,):
        member = _strip(member)
        if typing.get_origin(member) is Literal:
            values += typing.get_args(member)
        elif isinstance(member, type) and issubclass(member, Enum):
            values += [item.value for item in member]
    return values


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- pydantic errors as diagnostics ------------------------------------------------------


@dataclass
class _Site:
    """One pydantic error, with what it is about in the document."""

    type: str
    message: str
    ctx: dict[str, Any]
    place: _Place
    literal: str | None
    key: str = ""
    candidates: list[str] = field(default_factory=list)
    forms: tuple[Any, ...] = ()


def _found(site: _Site, integer: bool) -> str:
    value = site.place.value
    if integer and site.literal is not None and not isinstance(value, bool):
        return f"the number {site.literal}"
    return json_type_name(value)


def _expected(default: str) -> Callable[[_Site], str]:
    def render(site: _Site) -> str:
        types_ = _declared_types(site.place.shape) or [default]
        wanted = " or ".join(_TYPE_PHRASES.get(t, t) for t in types_)
        return f"expected {wanted}, found {_found(site, 'integer' in types_)}"

    return render


def _one_of(site: _Site) -> str:
    allowed = _allowed_values(site.place.shape)
    value = site.place.value
    if not allowed:
        return "is not one of the allowed values"
    message = "must be one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in allowed)
    if all(isinstance(v, str) for v in allowed) and not isinstance(value, str):
        # The allowed values answer "what should it be" for a wrong type as well: `"tpm": 2.0`
        # is best fixed by reading `"2.0"` in the list.
        return f"{message} (found {json_type_name(value)})"
    if isinstance(value, str):
        close = suggest(value, [v for v in allowed if isinstance(v, str)])
        if close is not None:
            message += f' (did you mean "{close}"?)'
    return message


def _unknown(site: _Site) -> str:
    """An unknown key; in one form of a tagged union, a key of another form is named as not
    combinable with the chosen form's leading (first required) field."""
    chosen = site.place.shape.annotation if site.place.shape else None
    if site.forms and chosen is not None and _is_model(chosen):
        others = [f for f in site.forms if f is not chosen and site.key in _field_names(f)]
        lead = next(
            (
                info.alias or name
                for name, info in chosen.model_fields.items()
                if info.is_required()
            ),
            None,
        )
        if others and lead is not None:
            return f'"{site.key}" cannot be combined with "{lead}"'
    return unknown_field_message(site.key, site.candidates)


def _ctx_text(name: str) -> Callable[[_Site], str]:
    return lambda site: str(site.ctx.get(name, "")) or "is not valid"


def _unquote(text: Any) -> str:
    return str(text).strip("'\"")


#: The one table of wording: pydantic error type -> message. Types missing here get a
#: neutral message; ``bkt_*`` error types carry their final message.
_MESSAGES: dict[str, Callable[[_Site], str]] = {
    "missing": lambda site: f'missing required field "{site.key}"',
    "extra_forbidden": _unknown,
    "literal_error": _one_of,
    "enum": _one_of,
    "int_type": _expected("integer"),
    "int_parsing": _expected("integer"),
    "int_from_float": _expected("integer"),
    "float_type": _expected("number"),
    "float_parsing": _expected("number"),
    "string_type": _expected("string"),
    "bool_type": _expected("boolean"),
    "bool_parsing": _expected("boolean"),
    "dict_type": _expected("object"),
    "model_type": _expected("object"),
    "model_attributes_type": _expected("object"),
    "list_type": _expected("array"),
    "tuple_type": _expected("array"),
    "none_required": _expected("null"),
    "greater_than_equal": lambda site: f"must be >= {_number(site.ctx.get('ge'))}",
    "greater_than": lambda site: f"must be > {_number(site.ctx.get('gt'))}",
    "less_than_equal": lambda site: f"must be <= {_number(site.ctx.get('le'))}",
    "less_than": lambda site: f"must be < {_number(site.ctx.get('lt'))}",
    "multiple_of": lambda site: f"must be a multiple of {_number(site.ctx.get('multiple_of'))}",
    "finite_number": lambda site: "must be a finite number",
    "string_too_short": lambda site: (
        f"must be at least {site.ctx.get('min_length')} characters long"
    ),
    "string_too_long": lambda site: (
        f"must be at most {site.ctx.get('max_length')} characters long"
    ),
    "too_short": lambda site: f"must have at least {site.ctx.get('min_length')} items",
    "too_long": lambda site: f"must have at most {site.ctx.get('max_length')} items",
    "string_pattern_mismatch": lambda site: (
        f"must match the pattern {json.dumps(str(site.ctx.get('pattern', '')))}"
    ),
    "value_error": _ctx_text("error"),
    "assertion_error": _ctx_text("error"),
    "union_tag_not_found": lambda site: (
        f'missing required field "{_unquote(site.ctx.get("discriminator", ""))}"'
    ),
    "union_tag_invalid": lambda site: (
        f'"{_unquote(site.ctx.get("discriminator", ""))}" must be one of '
        + ", ".join(
            json.dumps(_unquote(tag), ensure_ascii=False)
            for tag in str(site.ctx.get("expected_tags", "")).split(", ")
        )
    ),
}


def _render(site: _Site) -> str:
    if site.type.startswith("bkt_"):
        return site.message
    render = _MESSAGES.get(site.type)
    return render(site) if render else f"is not valid ({site.type})"


def validation_diagnostics(
    error: ValidationError,
    document: Any,
    index: PositionIndex,
    model: type[BaseModel],
    file_name: str,
) -> list[Diagnostic]:
    """Pydantic's errors for ``document`` as diagnostics, in pydantic's order.

    Type, value and rule errors are placed at the value; an unknown field at its key; a
    missing field at the object that lacks it, and not at all when an unknown key of that
    object is a likely misspelling of it (one mistake, reported once). Only the first
    :data:`MAX_DIAGNOSTICS` errors are worded.
    """
    sites: list[_Site] = []
    for entry in error.errors(include_url=False, include_input=False)[:MAX_DIAGNOSTICS]:
        loc: tuple[str | int, ...] = tuple(entry["loc"])
        kind = entry["type"]
        ctx = dict(entry.get("ctx") or {})
        if kind in ("missing", "extra_forbidden") and loc:
            place = _follow(loc[:-1], document, model)
            site = _Site(kind, entry["msg"], ctx, place, None, key=str(loc[-1]))
            shape = place.shape
            if shape is not None and shape.forms:
                site.forms = shape.forms
                names: list[str] = []
                for form in shape.forms:
                    names += [n for n in _field_names(form) if n not in names]
                site.candidates = names
            elif shape is not None and _is_model(shape.annotation):
                site.candidates = _field_names(shape.annotation)
        else:
            place = _follow(loc, document, model)
            number = isinstance(place.value, int | float)
            literal = index.number_literal(place.path) if number else None
            site = _Site(kind, entry["msg"], ctx, place, literal)
        sites.append(site)

    misspelt: dict[JsonPath, set[str]] = {}
    for site in sites:
        if site.type == "extra_forbidden":
            close = suggest(site.key, site.candidates)
            if close is not None:
                misspelt.setdefault(site.place.path, set()).add(close)

    diagnostics: dict[Diagnostic, None] = {}  # in order, each once
    for site in sites:
        path = site.place.path
        if site.type == "missing":
            if site.key in misspelt.get(path, ()):
                continue
            position = index.value(path)
        elif site.type == "extra_forbidden":
            path = (*path, site.key)
            position = index.key(path)
        else:
            position = index.value(path)
        line, column = position or (0, 0)
        diagnostics[Diagnostic(file_name, line, column, format_path(path), _render(site))] = None
    return list(diagnostics)


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
