"""The JSON Schema of ``vms.json``, generated from the host's pydantic models.

pydantic's output is tidied into what an editor and a reader want: the draft 2020-12
dialect, no generated ``title`` on every property, and an optional field that may be absent
written as its type (not ``anyOf`` with ``null``), with ``null`` only where the field declares
it (``json_schema_extra={"type": [TYPE, "null"]}``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def manifest_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = _named(model.model_json_schema(by_alias=True))
    raw["properties"]["$schema"] = {
        "description": "The JSON Schema this file follows (for editors).",
        "type": ["string", "null"],
    }
    schema: dict[str, Any] = {"$schema": SCHEMA_DIALECT}
    schema.update(_tidy(raw))
    return schema


def _named(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with bkt's models under their schema names (``$defs`` keys and ``$ref``s):
    the names of the types plugins see (``VmDefinition``), not of the pydantic classes
    (``VmModel``)."""
    from bkt_vm_plugin.model import SCHEMA_NAMES

    renames = {f"#/$defs/{old}": f"#/$defs/{new}" for old, new in SCHEMA_NAMES.items()}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        return {k: renames.get(v, v) if k == "$ref" else walk(v) for k, v in node.items()}

    out: dict[str, Any] = walk(raw)
    if "$defs" in out:
        defs = {SCHEMA_NAMES.get(k, k): v for k, v in out["$defs"].items()}
        out["$defs"] = dict(sorted(defs.items()))
    return out


def _tidy(node: Any) -> Any:
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            # pydantic titles every property ("Memory Gb"); the description says more.
            out[key] = {
                name: {k: v for k, v in _tidy(prop).items() if k != "title"}
                for name, prop in value.items()
            }
        else:
            out[key] = _tidy(value)
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
        # An optional field whose absence is its default: say only the type it may have.
        (kind,) = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        if "default" in out and out["default"] is None:
            del out["default"]
        declared = out.get("type")
        out = {**kind, **{k: v for k, v in out.items() if k != "type"}}
        if isinstance(declared, list) and "null" in declared and "type" in kind:
            # A field that declares null (``"type": [..., "null"]`` in its
            # json_schema_extra: absent or null means "not managed") says so.
            out["type"] = [kind["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
    return out
