"""A fuzz target of the manifest reader and validation.

Arbitrary bytes, valid manifests cut and spliced as text, and valid manifests with any value
replaced by any JSON value: loading gives the model or a clean error (a ManifestError, or an
OperationError for a file that is not UTF-8), never another exception; and a manifest that
loads renders to domain XML for each of its VMs (a value that validates but cannot be written
into XML made sync fail).

The normal run draws hypothesis's default number of examples. ``scripts/fuzz SECONDS`` runs
this module again and again with ``--hypothesis-profile=fuzz`` for that long (CI does). Each
example is small, so none takes long; there is no deadline (a timed check would be flaky).
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bkt_core.errors import ManifestError, OperationError
from bkt_core.host import Host
from bkt_core.manifest import load_manifest
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.definition import VmManifest
from bkt_vm_plugin.model import to_manifest
from bkt_vm_plugin.observe import resolve_context
from bkt_vm_plugin.subsystem import VmSubsystem
from tests.strategies import HOME, ISO_CACHE

SUB = cast(VmSubsystem, Host(entry_points=False, plugins=default_plugins()).subsystem("vm"))
VALID = [
    p.read_text(encoding="utf-8")
    for p in sorted((Path(__file__).parent.parent / "manifests" / "valid").glob("*.json"))
]
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def manifest_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "vms.json"


def load_and_render(path: Path, data: bytes) -> None:
    """Loads ``data`` as the host does; if it loads, renders every VM."""
    path.write_bytes(data)
    try:
        manifest = to_manifest(
            load_manifest(
                path,
                SUB.manifest_model,
                validators=[functools.partial(SUB.validate_document, home=HOME)],
                context={"home": HOME},
            )
        )
    except ManifestError as exc:
        assert exc.diagnostics or exc.message.startswith("no manifest"), exc.message
        return
    except OperationError as exc:
        assert "it is not UTF-8 text" in exc.message, exc.message
        return
    assert isinstance(manifest, VmManifest)
    for name, vm in manifest.vms.items():
        ctx = resolve_context(
            name, vm, home=HOME, iso_cache=ISO_CACHE, exists=lambda _: True, facts={}
        )
        SUB.mapping.render(vm, ctx)


#: Any character, and often one that XML cannot carry or that is special to bkt or to XML.
_AWKWARD = "\x00\x01\t\n\x1f\x7f\x85\ufffe\uffff\ufeff\u2028 ~/.:&<>'\""
# (Joined from a list: st.text would leave out the non-characters of _AWKWARD.)
_TEXT = st.lists(st.sampled_from(_AWKWARD) | st.characters(codec="utf-8"), max_size=12).map(
    "".join
)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*path, i))


@st.composite
def _replaced(draw: st.DrawFn) -> bytes:
    """A valid manifest with one value replaced by any JSON value, a key by any text, or
    text inserted into a string."""
    document = json.loads(draw(st.sampled_from(VALID)))
    path = draw(st.sampled_from(list(_paths(document))))
    if not path:
        return json.dumps(draw(_JSON)).encode()
    parent = document
    for segment in path[:-1]:
        parent = parent[segment]
    old = parent[path[-1]]
    how = draw(st.sampled_from(["key", "value", "insert"]))
    if how == "key" and isinstance(path[-1], str):
        parent[draw(_TEXT)] = parent.pop(path[-1])
    elif how == "insert" and isinstance(old, str):
        # Mostly still valid: a path stays absolute, a URL a URL.
        at = draw(st.integers(0, len(old)))
        parent[path[-1]] = old[:at] + draw(_TEXT) + old[at:]
    else:
        parent[path[-1]] = draw(_JSON)
    ascii = draw(st.booleans())
    return json.dumps(document, ensure_ascii=ascii, indent=draw(st.none() | st.just(2))).encode()


@st.composite
def _spliced(draw: st.DrawFn) -> bytes:
    """A valid manifest's text with a slice cut out and other text put in its place."""
    text = draw(st.sampled_from(VALID)).encode()
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 40)))
    insert = draw(st.binary(max_size=20) | _TEXT.map(str.encode) | st.sampled_from(_PIECES))
    return text[:start] + insert + text[end:]


_PIECES = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\u",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"\xef\xbb\xbf",
]


@FUZZ
@given(data=st.binary(max_size=400))
def test_any_bytes(manifest_file: Path, data: bytes) -> None:
    load_and_render(manifest_file, data)


@FUZZ
@given(data=_spliced())
def test_valid_manifests_spliced(manifest_file: Path, data: bytes) -> None:
    load_and_render(manifest_file, data)


@FUZZ
@given(data=_replaced())
def test_valid_manifests_with_a_value_replaced(manifest_file: Path, data: bytes) -> None:
    load_and_render(manifest_file, data)
