"""The positioned strict JSON reader: values, and where each value and key starts.

:func:`parse_json` reads RFC 8259 JSON and nothing more (no comments, no trailing commas, no
duplicate keys, no byte order mark), within limits that keep a hostile file from exhausting
the stack, memory or time. A syntax error is a :class:`JsonSyntaxError` at the exact line and
column where reading stopped; the :class:`PositionIndex` of a valid document says where each
value and key starts, so that a problem found later can be reported at its place. The json
module's C reader does the work when the text is certainly strict JSON, and a reader written
here, which records positions, reads it otherwise.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "MAX_DEPTH",
    "MAX_NUMBER_LENGTH",
    "MAX_VALUES",
    "JsonPath",
    "JsonSyntaxError",
    "Position",
    "PositionIndex",
    "char_repr",
    "parse_json",
    "shorten_key",
]

#: A path into a JSON document: object keys and array indexes, from the root.
JsonPath = tuple[str | int, ...]

#: Deeper nesting than any manifest needs; keeps a hostile file from exhausting the stack.
MAX_DEPTH = 128

#: The most values (of any type, keys not counted) in a document: room for two thousand
#: entries of two dozen values each. Each value costs validation time and memory, and a wrong
#: one more: an empty entry object is as many errors as there are required fields (about 400
#: bytes each in pydantic, as much again as Python dicts), so this bounds memory to a few
#: hundred MB.
MAX_VALUES = 50_000

#: The longest number literal read, in characters. Far more than a float's 17 significant
#: digits, and short enough that converting it costs nothing (Python's ``int()`` of a digit
#: string takes time quadratic in its length).
MAX_NUMBER_LENGTH = 100


class Position(NamedTuple):
    """A 1-based line and column; columns count code points, and only ``\\n`` ends a line."""

    line: int
    column: int


# -- how messages of the reader show keys and characters ---------------------------------

#: How much of a key a message shows: a path is repeated in every problem under it, so a
#: key of megabytes would be printed as often.
_SHOWN_KEY_LENGTH = 80


def shorten_key(key: str) -> str:
    """``key``, or its start and ``…`` when it is longer than a message should show."""
    if len(key) <= _SHOWN_KEY_LENGTH:
        return key
    return key[: _SHOWN_KEY_LENGTH - 1] + "\u2026"


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
        match = re.compile(_NUMBER).match(self._text, offset)
        return match.group() if match else None


# The positioned reader's patterns, compiled by each reader (re keeps them compiled): it
# reads only what the json module's reader cannot be trusted with, and compiling them at
# import cost every command 0.3 ms.
_WHITESPACE = r"[ \t\n\r]*"
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_PLAIN_STRING = r'"[^"\\\x00-\x1f]*"'
_PLAIN_RUN = r'[^"\\\x00-\x1f]+'
_SURROGATE = "[\ud800-\udfff]"
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
        self.whitespace = re.compile(_WHITESPACE)
        self.number_pattern = re.compile(_NUMBER)
        self.plain_string = re.compile(_PLAIN_STRING)
        self.plain_run = re.compile(_PLAIN_RUN)
        self.surrogate = re.compile(_SURROGATE)

    def document(self) -> Any:
        """The whole text as one value, surrounded only by white space."""
        value, end = self.value(self.skip(0), 0, ())
        end = self.skip(end)
        if end < self.end:
            raise _Stop(end, "unexpected characters after the JSON value")
        return value

    def skip(self, i: int) -> int:
        match = self.whitespace.match(self.text, i)
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
                raise _Stop(key_at, f'duplicate field "{shorten_key(key)}"')
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
        plain = self.plain_string.match(self.text, i)
        if plain is not None:
            return self.text[i + 1 : plain.end() - 1], plain.end()
        try:
            value, end = _scanstring(self.text, i + 1, True)
        except ValueError:
            return self.string_exactly(i)
        if self.surrogate.search(value):
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
                run = self.plain_run.match(text, i)
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
        match = self.number_pattern.match(self.text, i)
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
