"""The positioned strict JSON reader of bkt_core.jsonpos: values, positions, syntax errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkt_core.jsonpos import (
    MAX_DEPTH,
    MAX_NUMBER_LENGTH,
    MAX_VALUES,
    JsonPath,
    JsonSyntaxError,
    Position,
    PositionIndex,
    parse_json,
)

MANIFESTS = Path(__file__).parent.parent / "manifests"


def error_of(text: str) -> tuple[int, int, str]:
    with pytest.raises(JsonSyntaxError) as caught:
        parse_json(text)
    line, column = caught.value.position
    return line, column, caught.value.message


def end_of(text: str) -> Position:
    """Where the end of ``text`` is, counted independently of the reader."""
    lines = text.split("\n")
    return Position(len(lines), len(lines[-1]) + 1)


def at(text: str, position: Position) -> str:
    """The text from ``position`` on."""
    lines = text.split("\n")
    return "\n".join(lines[position.line - 1 :])[position.column - 1 :]


# -- values ------------------------------------------------------------------------------


def test_values_agree_with_the_json_module() -> None:
    text = (
        r'{"s": "a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00", "n": [0, -1, 2.5e-3, 1E+2, -0],'
        r' "z": null, "t": false, "u": true, "e": {}, "l": [], "": "empty key"}'
    )
    value, _ = parse_json(text)
    assert value == json.loads(text)
    assert value["s"].endswith("é😀")


def test_integers_only_for_integer_literals() -> None:
    value, _ = parse_json("[1, 1.0, 1e2, 1E2, -0, 0.5, 12345678901234567890, 1e400, 2.5E-1]")
    assert [type(v) for v in value] == [int, float, float, float, int, float, int, float, float]
    assert value[2] == 100.0
    assert value[7] == float("inf")


def test_number_literals_are_at_most_100_characters() -> None:
    longest = "7" * MAX_NUMBER_LENGTH
    assert parse_json(f"[{longest}]")[0] == [int(longest)]
    assert parse_json(f"[0.{longest[2:]}]")[0] == [float(f"0.{longest[2:]}")]
    too_long = f"number too long ({MAX_NUMBER_LENGTH + 1} characters, at most 100)"
    assert error_of(f"[{longest}7]") == (1, 2, too_long)
    assert error_of(f"[-{longest}]") == (1, 2, too_long)
    assert error_of(f"[1.{longest[1:]}e7]")[2] == "number too long (103 characters, at most 100)"
    # Converting a million digits to an int took half a minute; refusing them takes nothing.
    assert error_of("[" + "7" * 1_000_000 + "]") == (
        1,
        2,
        "number too long (1000000 characters, at most 100)",
    )


def test_a_long_duplicate_key_is_cut_short() -> None:
    key = "k" * 1_000_000
    assert error_of(f'{{"{key}": 1, "{key}": 2}}') == (
        1,
        1_000_009,
        f'duplicate field "{"k" * 79}\u2026"',
    )


def test_a_document_holds_at_most_max_values_values() -> None:
    # The root array and its items; keys are not values.
    most = "[" + "0," * (MAX_VALUES - 2) + "0]"
    assert len(parse_json(most)[0]) == MAX_VALUES - 1
    one_more = "[" + "0," * (MAX_VALUES - 1) + "0]"
    column = 2 + 2 * (MAX_VALUES - 1)
    assert error_of(one_more) == (1, column, f"too many values (at most {MAX_VALUES})")
    members = "{" + ",".join(f'"{i}":{{}}' for i in range(MAX_VALUES)) + "}"
    assert error_of(members)[2] == f"too many values (at most {MAX_VALUES})"
    # Commas inside strings do not count.
    assert parse_json(json.dumps(["," * (2 * MAX_VALUES)]))[0] == ["," * (2 * MAX_VALUES)]


def test_object_keys_keep_their_order() -> None:
    value, _ = parse_json('{"b": 1, "a": 2, "B": 3}')
    assert list(value) == ["b", "a", "B"]


def test_a_top_level_scalar_is_a_document() -> None:
    assert parse_json(' "x" ')[0] == "x"
    assert parse_json("null")[0] is None


# -- positions ---------------------------------------------------------------------------


def test_positions_of_values_and_keys() -> None:
    _, index = parse_json('{\n  "a": [1, true],\n  "bé": "x"\n}')
    assert index.value(()) == (1, 1)
    assert index.key(("a",)) == (2, 3)
    assert index.value(("a",)) == (2, 8)
    assert index.value(("a", 0)) == (2, 9)
    assert index.value(("a", 1)) == (2, 12)
    assert index.key(("bé",)) == (3, 3)
    assert index.value(("bé",)) == (3, 9)
    assert index.value(("missing",)) is None
    assert index.key(("a", 0)) is None


def test_columns_count_code_points() -> None:
    # é is two UTF-8 bytes, 😀 four bytes and two UTF-16 units: each is one column.
    _, index = parse_json('{"é😀": "x", "k": "😀😀", "z": 1}')
    assert index.value(("é😀",)) == (1, 8)
    assert index.key(("k",)) == (1, 13)
    assert index.key(("z",)) == (1, 24)


def test_only_newline_starts_a_line() -> None:
    _, index = parse_json('{\r\n  "a": 1,\r"b": 2}')
    assert index.key(("a",)) == (2, 3)
    assert index.key(("b",)) == (2, 11)  # \r is a column like any other
    assert error_of('{\r\r"a" 1}') == (1, 8, "expected `:` after the field name, found `1`")


def test_positions_survive_escapes() -> None:
    _, index = parse_json(r'["\u00e9\n\"", "x"]')
    assert index.value((1,)) == (1, 16)


def test_number_literals_are_kept_as_written() -> None:
    _, index = parse_json('{"a": 1e2, "b": [4.50, -0]}')
    assert index.number_literal(("a",)) == "1e2"
    assert index.number_literal(("b", 0)) == "4.50"
    assert index.number_literal(("b", 1)) == "-0"
    assert index.number_literal(("b",)) is None


def test_index_lookup_by_path() -> None:
    _, index = parse_json('{"a": [{"b": null}]}')
    assert ("a", 0, "b") in index
    assert ("a", 1) not in index
    assert isinstance(index, PositionIndex)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


def paths_of(value: Any, path: JsonPath = ()) -> list[tuple[JsonPath, Any]]:
    found: list[tuple[JsonPath, Any]] = [(path, value)]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths_of(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths_of(v, (*path, i))
    return found


@settings(max_examples=150, deadline=None)
@given(json_values, st.sampled_from([None, 0, 2]), st.booleans())
def test_every_value_and_key_is_found_where_it_is(
    value: Any, indent: int | None, ensure_ascii: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
    parsed, index = parse_json(text)
    assert parsed == json.loads(text)
    for path, item in paths_of(parsed):
        position = index.value(path)
        assert position is not None, path
        rest = at(text, position)
        # The value that starts there is the value at that path.
        assert json.JSONDecoder().raw_decode(rest)[0] == item
        if path and isinstance(path[-1], str):
            key = index.key(path)
            assert key is not None
            assert json.JSONDecoder().raw_decode(at(text, key))[0] == path[-1]


# -- syntax errors -----------------------------------------------------------------------

SYNTAX_ERRORS = [
    ('{"a": 1,}', 1, 9, "trailing comma before `}`"),
    ('{"a": [1, 2, ]}', 1, 14, "trailing comma before `]`"),
    ("{1: 2}", 1, 2, "expected a quoted field name, found `1`"),
    ("{'a': 2}", 1, 2, "expected a quoted field name, found `'`"),
    ("{", 1, 2, "expected a quoted field name, found the end of the file"),
    ('{"a" 1}', 1, 6, "expected `:` after the field name, found `1`"),
    ('{"a"', 1, 5, "expected `:` after the field name, found the end of the file"),
    ('{"a": 1 "b": 2}', 1, 9, 'expected `,` or `}`, found `"`'),
    ("[1 2]", 1, 4, "expected `,` or `]`, found `2`"),
    ('{"a": 1', 1, 8, "unclosed object: expected `}`, found the end of the file"),
    ("[1,\n 2\n", 3, 1, "unclosed array: expected `]`, found the end of the file"),
    ('{"a": }', 1, 7, "expected a value, found `}`"),
    ("[,]", 1, 2, "expected a value, found `,`"),
    ("// comment\n{}", 1, 1, "expected a value, found `/`"),
    ("/* c */ {}", 1, 1, "expected a value, found `/`"),
    ("NaN", 1, 1, "expected a value, found `N`"),
    ("[Infinity]", 1, 2, "expected a value, found `I`"),
    ("[-Infinity]", 1, 3, "invalid number"),
    ('{"a": tru}', 1, 7, "expected a value (did you mean `true`?)"),
    ("[fals]", 1, 2, "expected a value (did you mean `false`?)"),
    ("nul", 1, 1, "expected a value (did you mean `null`?)"),
    ("True", 1, 1, "expected a value, found `T`"),
    ('"abc', 1, 5, "unterminated string"),
    ('["abc\\"]', 1, 9, "unterminated string"),
    (r'"a\x"', 1, 3, "invalid escape in string"),
    (r'"a\'"', 1, 3, "invalid escape in string"),
    ('"a\\', 1, 3, "invalid escape in string"),
    (r'"\u12g4"', 1, 2, "invalid \\u escape in string"),
    (r'"ab\u12"', 1, 4, "invalid \\u escape in string"),
    (r'"\ud800"', 1, 2, "invalid \\u escape in string (unpaired surrogate)"),
    (r'"\udc00"', 1, 2, "invalid \\u escape in string (unpaired surrogate)"),
    (r'"\ud800\u0041"', 1, 2, "invalid \\u escape in string (unpaired surrogate)"),
    (r'"\ud800\n"', 1, 2, "invalid \\u escape in string (unpaired surrogate)"),
    (r'"\ud800\u00zz"', 1, 2, "invalid \\u escape in string"),
    ('"a\nb"', 1, 3, "control character in string (write it as an escape)"),
    ('"a\tb"', 1, 3, "control character in string (write it as an escape)"),
    ('{"k\x00": 1}', 1, 4, "control character in string (write it as an escape)"),
    ("01", 1, 2, "invalid number (leading zero)"),
    ('{\n  "a": 01\n}', 2, 9, "invalid number (leading zero)"),
    ("[-012]", 1, 4, "invalid number (leading zero)"),
    ("-", 1, 2, "invalid number"),
    ("[-a]", 1, 3, "invalid number"),
    ("1.", 1, 3, "invalid number"),
    ("[1.e5]", 1, 4, "invalid number"),
    ("1e", 1, 3, "invalid number"),
    ("[1E+]", 1, 5, "invalid number"),
    ("[.5]", 1, 2, "expected a value, found `.`"),
    ("[+1]", 1, 2, "expected a value, found `+`"),
    ("[1.5.2]", 1, 5, "expected `,` or `]`, found `.`"),
    ("{} x", 1, 4, "unexpected characters after the JSON value"),
    ('"a" "b"', 1, 5, "unexpected characters after the JSON value"),
    ("{}}", 1, 3, "unexpected characters after the JSON value"),
    ("", 1, 1, "expected a value, found the end of the file"),
    ("  \n  ", 2, 3, "expected a value, found the end of the file"),
    ('{"a": 1, "a": 2}', 1, 10, 'duplicate field "a"'),
    ('{"vms": {"x": {}, "y": 1, "x": 2}}', 1, 27, 'duplicate field "x"'),
    ('{"\\u0061": 1, "a": 2}', 1, 15, 'duplicate field "a"'),
    # Characters that would not be visible are quoted with their code.
    ("[\x0c1]", 1, 2, "expected a value, found '\\u{c}'"),
    ("[\xa01]", 1, 2, "expected a value, found '\\u{a0}'"),
    ("{\x01}", 1, 2, "expected a quoted field name, found '\\u{1}'"),
    ("[1\x0b]", 1, 3, "expected `,` or `]`, found '\\u{b}'"),
    ("[é]", 1, 2, "expected a value, found `é`"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), SYNTAX_ERRORS)
def test_syntax_errors_say_what_and_where(text: str, line: int, column: int, message: str) -> None:
    assert error_of(text) == (line, column, message)


def test_every_syntax_message_is_tested() -> None:
    messages = {message for _, _, _, message in SYNTAX_ERRORS}
    shapes = {
        m.split(", found")[0].split(" (did")[0].split(' "')[0]
        for m in [*messages, "nested too deeply"]
    }
    assert shapes >= {
        "trailing comma before `}`",
        "trailing comma before `]`",
        "expected a quoted field name",
        "expected `:` after the field name",
        "expected `,` or `}`",
        "expected `,` or `]`",
        "unclosed object: expected `}`",
        "unclosed array: expected `]`",
        "expected a value",
        "unterminated string",
        "invalid escape in string",
        "invalid \\u escape in string",
        "control character in string (write it as an escape)",
        "invalid number",
        "invalid number (leading zero)",
        "unexpected characters after the JSON value",
        "duplicate field",
        "nested too deeply",
    }


def test_a_byte_order_mark_is_an_error() -> None:
    assert error_of("\ufeff{}") == (1, 1, "expected a value, found '\\u{feff}'")


def test_errors_after_multibyte_characters_count_code_points() -> None:
    assert error_of('{"é😀": 1,}') == (1, 10, "trailing comma before `}`")


# -- depth -------------------------------------------------------------------------------


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    assert error_of("[" * 10_000) == (1, MAX_DEPTH + 2, "nested too deeply")
    assert error_of('{"a":' * 5_000) == (1, 5 * (MAX_DEPTH + 1) + 1, "nested too deeply")


def test_the_depth_limit_is_exact() -> None:
    # The root is at depth 0; a value deeper than MAX_DEPTH is refused, whatever it is.
    deepest = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    assert parse_json(deepest)[0] is not None
    empty = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert parse_json(empty)[0] is not None
    too_deep = "[" * (MAX_DEPTH + 1) + "1" + "]" * (MAX_DEPTH + 1)
    assert error_of(too_deep) == (1, MAX_DEPTH + 2, "nested too deeply")
    objects = '{"a":' * (MAX_DEPTH + 1) + "{}" + "}" * (MAX_DEPTH + 1)
    assert error_of(objects)[2] == "nested too deeply"


def test_many_shallow_containers_are_fine() -> None:
    text = json.dumps([[{"a": [i]}] for i in range(500)])
    assert len(parse_json(text)[0]) == 500


# -- truncated documents -----------------------------------------------------------------


def test_a_truncated_document_is_located_at_the_cut() -> None:
    text = (MANIFESTS / "valid" / "every-field.json").read_text()
    sample = '{"k": ["é\\u00e9\\n", -1.5e+3, true, null, {"x": false}], "😀": "v"}'
    for document in (text.rstrip("\n"), sample):
        parse_json(document)
        for cut in range(len(document)):
            prefix = document[:cut]
            with pytest.raises(JsonSyntaxError) as caught:
                parse_json(prefix)
            error = caught.value
            end = end_of(prefix)
            assert error.position <= end, (prefix, error.message)
            if "end of the file" in error.message or error.message == "unterminated string":
                assert error.position == end, (prefix, error.message)
            else:
                # A cut inside an escape or a literal: at its start, close to the cut.
                assert error.message in (
                    "invalid escape in string",
                    "invalid \\u escape in string",
                    "expected a value (did you mean `true`?)",
                    "expected a value (did you mean `false`?)",
                    "expected a value (did you mean `null`?)",
                    "invalid number",
                ), (prefix, error.message)
                assert error.position.line == end.line
                assert end.column - error.position.column <= 6
