"""How problems with a manifest are worded and placed: the messages a user reads.

A rule over the raw document reports a :class:`Problem` at a JSON path; pydantic's errors are
reworded by :func:`validation_diagnostics`, from one table keyed by error type, so that no
message depends on pydantic's wording, and placed at the value, the key or the object they are
about. :func:`format_path` writes a JSON path as messages show it, :func:`suggest` finds the
name a typo meant. This module knows nothing about what a manifest describes.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, Union

from bkt_core.errors import Diagnostic
from bkt_core.jsonpos import JsonPath, Position, char_repr, shorten_key

# pydantic only where its errors are worded: a rule's Problem, and a manifest that does not
# reach validation, need none of it.
if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from pydantic.fields import FieldInfo

__all__ = [
    "MAX_DIAGNOSTICS",
    "MAX_SUGGESTED_LENGTH",
    "Locations",
    "Problem",
    "Validator",
    "char_repr",
    "format_path",
    "json_type_name",
    "problem_diagnostic",
    "suggest",
    "unknown_field_message",
    "validation_diagnostics",
]

#: The most problems reported of one manifest: beyond that, a list of problems is no help,
#: and wording each one would make a hostile file cost minutes.
MAX_DIAGNOSTICS = 1000

#: The longest value or key that "did you mean" looks at: a typo of a field name or of an
#: allowed value is short, and comparing costs the product of the two lengths.
MAX_SUGGESTED_LENGTH = 64


@dataclass(frozen=True)
class Problem:
    """A problem that a rule found in the raw document: ``message`` says what is wrong.

    ``path`` is the JSON path it is about; it is reported at the value there, or at its key
    (the opening quote) when ``at_key`` is set, as for a misspelt key or a bad entry name.
    A ``warning`` is worth saying but leaves the manifest valid: ``bkt vm validate`` prints
    it (``FILE:LINE:COL: warning: PATH: message``) and other commands do not.
    """

    path: JsonPath
    message: str
    at_key: bool = False
    warning: bool = False


#: A rule over the raw parsed document (plain dicts, lists, strings, numbers, ...).
Validator = Callable[[Any], Iterable[Problem]]


# -- JSON paths and wording --------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_-]*")


def format_path(path: JsonPath) -> str:
    """``vms.win11.iso_sources[0].url``; other keys JSON-quoted (``vms["my vm"]``); the root
    is the empty string. A very long key is cut short (``vms["aaa…"]``)."""
    parts: list[str] = []
    for segment in path:
        if isinstance(segment, str):
            segment = shorten_key(segment)
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _IDENTIFIER.fullmatch(segment):
            parts.append(f".{segment}" if parts else segment)
        else:
            parts.append(f"[{json.dumps(segment, ensure_ascii=False)}]")
    return "".join(parts)


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
    key = shorten_key(key)
    if close is not None:
        return f'unknown field "{key}" (did you mean "{close}"?)'
    if candidates:
        return f'unknown field "{key}" (expected one of: {", ".join(candidates)})'
    return f'unknown field "{key}"'


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
    from pydantic import Discriminator
    from pydantic.fields import FieldInfo

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
    from pydantic import Tag

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
    from pydantic import BaseModel

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


class Locations(Protocol):
    """Where the values and keys of a document were written: which file, which line and
    column (:class:`bkt_core.manifest.SourceMap` for a manifest of one or more files). A
    place that cannot be found is reported at line 0, column 0 of the main file."""

    def value(self, path: JsonPath) -> tuple[str, Position]:
        """The file and position where the value at ``path`` starts."""
        ...

    def key(self, path: JsonPath) -> tuple[str, Position]:
        """The file and position of the key of the object member at ``path``."""
        ...

    def number_literal(self, path: JsonPath) -> str | None:
        """The number at ``path`` as it is written."""
        ...


def problem_diagnostic(problem: Problem, locations: Locations) -> Diagnostic:
    """A rule's :class:`Problem` as a diagnostic at its value, or at its key."""
    at = locations.key if problem.at_key else locations.value
    file_name, (line, column) = at(problem.path)
    return Diagnostic(file_name, line, column, format_path(problem.path), problem.message)


def _sites(
    error: ValidationError, document: Any, model: type[BaseModel], locations: Locations
) -> list[_Site]:
    """The first :data:`MAX_DIAGNOSTICS` errors, each with what it is about."""
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
            literal = locations.number_literal(place.path) if number else None
            site = _Site(kind, entry["msg"], ctx, place, literal)
        sites.append(site)
    return sites


def validation_diagnostics(
    error: ValidationError,
    document: Any,
    locations: Locations,
    model: type[BaseModel],
) -> list[Diagnostic]:
    """Pydantic's errors for ``document`` as diagnostics, in pydantic's order.

    Type, value and rule errors are placed at the value; an unknown field at its key; a
    missing field at the object that lacks it, and not at all when an unknown key of that
    object is a likely misspelling of it (one mistake, reported once). Only the first
    :data:`MAX_DIAGNOSTICS` errors are worded.
    """
    sites = _sites(error, document, model, locations)
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
            file_name, (line, column) = locations.value(path)
        elif site.type == "extra_forbidden":
            path = (*path, site.key)
            file_name, (line, column) = locations.key(path)
        else:
            file_name, (line, column) = locations.value(path)
        diagnostics[Diagnostic(file_name, line, column, format_path(path), _render(site))] = None
    return list(diagnostics)
