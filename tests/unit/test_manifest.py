"""Manifest validation: the fixtures of tests/manifests with golden diagnostics, the wording and
placement of every kind of problem, the VM rules, and saving.

``BKT_REGENERATE_GOLDEN=1`` rewrites the golden ``.expected`` files from what the code says
(review the diff before keeping it).
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import stat
import subprocess
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bkt_core.diagnostics import (
    MAX_DIAGNOSTICS,
    MAX_SUGGESTED_LENGTH,
    Problem,
    format_path,
    suggest,
    unknown_field_message,
)
from bkt_core.errors import EXIT_USAGE, Diagnostic, ManifestError, OperationError
from bkt_core.hookspecs import hookimpl
from bkt_core.host import Host
from bkt_core.manifest import (
    MAX_MANIFEST_BYTES,
    dump_manifest,
    load_manifest,
    locked,
    validate_text,
    write_atomic,
)
from bkt_vm_plugin import default_plugins
from bkt_vm_plugin.cpu_model import cpu_model_rules
from bkt_vm_plugin.definition import VmManifest
from bkt_vm_plugin.model import to_manifest
from bkt_vm_plugin.rules import name_problem, vm_rules
from bkt_vm_plugin.subsystem import VmSubsystem

HOME = "/home/tester"
MANIFESTS = Path(__file__).parent.parent / "manifests"
# The manifest model as the host builds it: the built-in fields, then the default plugins'.
_VM = Host(entry_points=False, plugins=default_plugins()).subsystem("vm")
assert isinstance(_VM, VmSubsystem)
MODEL = _VM.manifest_model


def validators(home: str | None = HOME) -> list[Any]:
    return [lambda document: vm_rules(document, home), cpu_model_rules]


def check(text: str, home: str | None = HOME) -> BaseModel:
    return validate_text(text, "vms.json", MODEL, validators(home), {"home": home})


def problems(text: str, home: str | None = HOME) -> list[str]:
    """The diagnostics of ``text`` as ``bkt vm validate`` prints them."""
    with pytest.raises(ManifestError) as caught:
        check(text, home)
    return [str(d) for d in caught.value.diagnostics]


VM = {
    "memory_gb": 2,
    "vcpus": 2,
    "disk_path": "/a.qcow2",
    "disk_size_gb": 20,
    "boot": "bios",
    "network": "default",
    "graphics": "none",
}


def manifest(**vms: dict[str, Any]) -> str:
    return json.dumps({"vms": vms}, indent=2, ensure_ascii=False)


def vm(**fields: Any) -> dict[str, Any]:
    """A valid VM with ``fields`` changed; a field given as ``...`` is left out."""
    out = {**VM, **fields}
    return {k: v for k, v in out.items() if v is not ...}


def messages(text: str, home: str | None = HOME) -> list[str]:
    """Only the ``path: message`` part of each diagnostic."""
    return [d.split(": ", 1)[1] for d in problems(text, home)]


# -- the fixtures of tests/manifests ------------------------------------------------------

KINDS = {
    # kind: (the reference schema rfc-vms.schema.json accepts, bkt accepts)
    "valid": (True, True),
    "invalid": (False, False),
    "stricter": (True, False),
    "beyond-rfc": (False, True),
}
FIXTURES = sorted((kind, path) for kind in KINDS for path in (MANIFESTS / kind).glob("*.json"))


def test_every_kind_of_fixture_is_there() -> None:
    assert {kind for kind, _ in FIXTURES} == set(KINDS)


@pytest.mark.parametrize(("kind", "fixture"), FIXTURES, ids=[f"{k}/{p.stem}" for k, p in FIXTURES])
def test_fixture_diagnostics_are_golden(kind: str, fixture: Path) -> None:
    text = fixture.read_text(encoding="utf-8")
    expected_file = fixture.with_suffix(".expected")
    accepts = KINDS[kind][1]
    try:
        check(text)
    except ManifestError as exc:
        assert not accepts, f"{fixture} refused:\n" + "\n".join(map(str, exc.diagnostics))
        actual = "".join(f"{d}\n" for d in exc.diagnostics)
        if os.environ.get("BKT_REGENERATE_GOLDEN") == "1":
            expected_file.write_text(actual, encoding="utf-8")
        assert expected_file.exists(), f"{expected_file}: BKT_REGENERATE_GOLDEN=1 writes it"
        assert actual == expected_file.read_text(encoding="utf-8")
        count = len(exc.diagnostics)
        noun = "error" if count == 1 else "errors"
        assert exc.message == f"vms.json is not valid ({count} {noun}); nothing was changed"
    else:
        assert accepts, f"{fixture} accepted"
        assert not expected_file.exists()


def test_the_rfc_schema_gives_its_documented_verdicts() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((MANIFESTS / "rfc-vms.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    for kind, fixture in FIXTURES:
        try:
            document = json.loads(fixture.read_text(encoding="utf-8"))
        except ValueError:
            accepted = False
        else:
            accepted = validator.is_valid(document)
        assert accepted == KINDS[kind][0], fixture


# -- paths and suggestions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ((), ""),
        (("vms", "win11", "iso_sources", 0, "url"), "vms.win11.iso_sources[0].url"),
        (("vms", "win-11", "vcpus"), "vms.win-11.vcpus"),
        (("$schema",), "$schema"),
        (("vms", "my vm"), 'vms["my vm"]'),
        (("vms", "my.vm", "vcpus"), 'vms["my.vm"].vcpus'),
        (("vms", ""), 'vms[""]'),
        (("vms", "é"), 'vms["é"]'),
        (("vms", "1st"), 'vms["1st"]'),
        (("vms", 'q"t'), 'vms["q\\"t"]'),
        (("my vm",), '["my vm"]'),
        ((3,), "[3]"),
    ],
)
def test_paths_read_like_the_manifest(path: tuple[str | int, ...], shown: str) -> None:
    assert format_path(path) == shown


def test_suggestions_catch_typos_only() -> None:
    fields = ["memory_gb", "vcpus", "disk_path", "disk_size_gb"]
    assert suggest("memroy_gb", fields) == "memory_gb"  # a swap is one edit
    assert suggest("vcpu", fields) == "vcpus"
    assert suggest("Disk_Path", fields) == "disk_path"
    assert suggest("colour", fields) is None
    assert suggest("UEFI", ["uefi", "bios"]) == "uefi"
    assert suggest("ab", ["ax", "ab"]) == "ab"  # the closest wins
    assert suggest("ac", ["ax", "ay"]) == "ax"  # on a tie, the first
    assert suggest("disk_sze", ["disk_size_gb", "disk_size"]) == "disk_size"
    assert suggest("anything", []) is None


def test_suggestions_only_for_words_a_typo_makes() -> None:
    # Comparing costs the product of the lengths: a long word is no typo, and is not compared.
    word = "b" * MAX_SUGGESTED_LENGTH
    assert suggest(word, [word + "x"]) == word + "x"
    assert suggest(word + "b", [word + "bx"]) is None
    assert unknown_field_message(word + "b", ["vcpus"]) == (
        f'unknown field "{word}b" (expected one of: vcpus)'
    )


def test_long_keys_are_cut_short_in_messages() -> None:
    # Every problem under a key repeats it in its path: a 100 000-character VM name with a
    # thousand unknown fields printed 100 MB.
    name, key = "n" * 100_000, "k" * 100_000
    text = manifest(**{name: vm(**{key: 1}, **{f"k{i}": 1 for i in range(MAX_DIAGNOSTICS)})})
    lines = problems(text)
    shown = f'vms["{"n" * 79}\u2026"]'
    assert lines[0] == (
        f"vms.json:3:5: {shown}: VM name must be 1 to 64 characters long (it has 100000)"
    )
    unknown = next(line for line in lines if line.startswith("vms.json:11:7: "))
    assert unknown.startswith(f'vms.json:11:7: {shown}["{"k" * 79}\u2026"]: unknown field "k')
    assert f'unknown field "{"k" * 79}\u2026" (expected one of: ' in unknown
    assert sum(map(len, lines)) < 500 * MAX_DIAGNOSTICS
    assert format_path(("vms", "a" * 80, 0)) == "vms." + "a" * 80 + "[0]"


def test_unknown_field_messages() -> None:
    assert (
        unknown_field_message("vcpu", ["vcpus"]) == 'unknown field "vcpu" (did you mean "vcpus"?)'
    )
    expected = 'unknown field "k" (expected one of: abc, bcd)'
    assert unknown_field_message("k", ["abc", "bcd"]) == expected
    assert unknown_field_message("k", []) == 'unknown field "k"'


# -- wording and placement ---------------------------------------------------------------


def test_diagnostic_lines() -> None:
    text = '{\n  "vms": {\n    "win11": {"memory_gb": 0}\n  }\n}'
    lines = problems(text)
    assert lines[0] == 'vms.json:3:14: vms.win11: missing required field "vcpus"'
    assert "vms.json:3:28: vms.win11.memory_gb: must be >= 1" in lines
    assert problems("[]") == ["vms.json:1:1: expected an object, found an array"]


def test_floats_are_not_integers() -> None:
    text = manifest(a=vm(memory_gb=1.0, vcpus=1e2, disk_size_gb=-2.5))
    text = text.replace("100.0", "1e2")
    assert messages(text) == [
        "vms.a.memory_gb: expected an integer, found the number 1.0",
        "vms.a.vcpus: expected an integer, found the number 1e2",
        "vms.a.disk_size_gb: expected an integer, found the number -2.5",
    ]


def test_bounds() -> None:
    assert messages(manifest(a=vm(vcpus=0, disk_size_gb=4294967296))) == [
        "vms.a.vcpus: must be >= 1",
        "vms.a.disk_size_gb: must be <= 4294967295",
    ]
    assert check(manifest(a=vm(disk_size_gb=4294967295)))


def test_types_say_what_was_expected_and_found() -> None:
    text = manifest(
        a=vm(
            memory_gb=True,
            vcpus=[2],
            network={},
            create_if_missing=1,
            iso_sources={},
            autostart="yes",
            cpu_model=5,
            virt_type=None,
            tpm=2.0,
        )
    )
    assert messages(text) == [
        "vms.a.memory_gb: expected an integer, found a boolean",
        "vms.a.vcpus: expected an integer, found an array",
        "vms.a.network: expected a string, found an object",
        "vms.a.create_if_missing: expected a boolean (true or false), found a number",
        "vms.a.iso_sources: expected an array, found an object",
        "vms.a.autostart: expected a boolean (true or false), found a string",
        "vms.a.cpu_model: expected a string, found a number",
        'vms.a.virt_type: must be one of "kvm", "qemu" (found null)',
        'vms.a.tpm: must be one of "2.0", "none" (found a number)',
    ]


def test_schema_may_be_a_string_or_null() -> None:
    assert check('{"$schema": null, "vms": {}}')
    assert messages('{"$schema": 5, "vms": {}}') == [
        "$schema: expected a string or null, found a number"
    ]
    assert messages('{"vms": {"a": 1}}') == ["vms.a: expected an object, found a number"]


def test_field_names_are_the_ones_of_the_file() -> None:
    # The model's Python attribute name of "$schema" is not a key of the file.
    assert messages('{"schema_": "x", "vms": {}}') == [
        'schema_: unknown field "schema_" (did you mean "$schema"?)'
    ]


def test_enums_suggest_the_value_meant() -> None:
    assert messages(manifest(a=vm(boot="UEFI", graphics="VNC ", tpm="1.2"))) == [
        'vms.a.boot: must be one of "uefi", "bios" (did you mean "uefi"?)',
        'vms.a.graphics: must be one of "spice", "vnc", "none" (did you mean "vnc"?)',
        'vms.a.tpm: must be one of "2.0", "none"',
    ]


# Every VM field whose schema is a list of allowed values, found in the schema itself so that
# a new enum field is covered without touching this test.
ENUM_FIELDS = {
    name: spec["enum"]
    for name, spec in _VM.schema()["$defs"]["VmDefinition"]["properties"].items()
    if "enum" in spec
}


def test_the_enum_fields_are_found() -> None:
    assert {"boot", "tpm", "graphics", "virt_type"} <= set(ENUM_FIELDS)


@pytest.mark.parametrize("field", sorted(ENUM_FIELDS))
@pytest.mark.parametrize(
    ("value", "found"),
    [(2.0, "a number"), (1, "a number"), (True, "a boolean"), (None, "null"), ([], "an array")],
)
def test_a_wrong_type_on_an_enum_field_lists_the_allowed_values(
    field: str, value: object, found: str
) -> None:
    # null, which the schema lists for a device field (not managed), is not a value to name
    allowed = ", ".join(json.dumps(v) for v in ENUM_FIELDS[field] if v is not None)
    if value is None and field in NULLABLE:
        # A device field's null is its default, "not managed", as as_json() writes it.
        checked = check(manifest(a=vm(**{field: value})))
        assert getattr(checked.vms["a"], field) is None  # type: ignore[attr-defined]
        return
    assert messages(manifest(a=vm(**{field: value}))) == [
        f"vms.a.{field}: must be one of {allowed} (found {found})"
    ]


#: The enum fields whose default is None (not managed).
NULLABLE = {
    name
    for name, info in _VM.vm_model.model_fields.items()
    if not info.is_required() and info.default is None
}


def test_the_device_fields_take_null_as_not_managed() -> None:
    assert {"disk_bus", "nic_model", "clock", "sound", "video"} <= NULLABLE
    assert not {"boot", "tpm", "graphics", "virt_type"} & NULLABLE


def test_an_unknown_field_is_reported_at_its_key() -> None:
    lines = problems('{"vms": {}, "version": 1}')
    assert lines == [
        'vms.json:1:13: version: unknown field "version" (expected one of: $schema, vms)'
    ]


def test_a_misspelt_required_field_is_one_mistake() -> None:
    text = manifest(a=vm(disk_path=..., disk_pth="/a.qcow2"))
    assert messages(text) == [
        'vms.a.disk_pth: unknown field "disk_pth" (did you mean "disk_path"?)'
    ]
    # An unknown field that is no typo of it does not hide a missing one.
    text = manifest(a=vm(disk_path=..., colour="blue"))
    assert messages(text)[0] == 'vms.a: missing required field "disk_path"'
    assert messages(text)[1].startswith('vms.a.colour: unknown field "colour" (expected one of: ')


def test_the_fields_a_vm_may_have_are_the_models() -> None:
    (line,) = messages(manifest(a=vm(colour=1)))
    listed = line.split("(expected one of: ")[1].rstrip(")").split(", ")
    vm_model = typing.get_args(MODEL.model_fields["vms"].annotation)[1]
    assert listed == list(vm_model.model_fields)
    assert listed[-2:] == ["autostart", "cpu_model"]


def test_iso_sources() -> None:
    sources = [
        {"path": "/x.iso", "url": "https://example.org/x.iso", "checksum": 1},
        {"checksum": 1},
        "x.iso",
        {"url": "https://example.org/y.iso", "path": 5},
        {"path": "/z.iso", "sha265": "x"},
        {"url": "https://example.org/z.iso", "sha256": None},
    ]
    everything = "(expected one of: path, url, sha256)"
    assert messages(manifest(a=vm(iso_sources=sources))) == [
        'vms.a.iso_sources[0]: must have exactly one of "path" or "url", not both',
        f'vms.a.iso_sources[0].checksum: unknown field "checksum" {everything}',
        'vms.a.iso_sources[1]: must have "path" or "url"',
        f'vms.a.iso_sources[1].checksum: unknown field "checksum" {everything}',
        'vms.a.iso_sources[2]: expected an object with "path" or "url", found a string',
        'vms.a.iso_sources[3]: must have exactly one of "path" or "url", not both',
        'vms.a.iso_sources[4].sha265: unknown field "sha265" (did you mean "sha256"?)',
    ]


def test_a_key_of_the_other_iso_form_cannot_be_combined() -> None:
    text = manifest(a=vm(iso_sources=[{"path": "/x.iso", "sha256": "0" * 64}]))
    assert messages(text) == [
        'vms.a.iso_sources[0].sha256: "sha256" cannot be combined with "path"'
    ]


def test_no_pydantic_wording_leaks() -> None:
    texts = [
        manifest(a=vm(memory_gb="x", boot=1, graphics="x", iso_sources=[1, {}, {"url": 1}])),
        manifest(a=vm(disk_path="rel", network="", cpu_model=" ", secure_boot="yes")),
        '{"vms": {"a": []}, "x": 1}',
        '{"$schema": [], "vms": null}',
        "[]",
    ]
    for text in texts:
        for line in problems(text):
            assert not re.search(r"Input should|Value error|Field required|valid dictionary", line)
            assert line == line.rstrip(".")


def test_problems_are_sorted_by_position_and_all_reported() -> None:
    text = (
        '{"vms": {\n'
        '  "b": {"memory_gb": 0, "vcpus": 2, "disk_path": "/a.qcow2", "disk_size_gb": 20, '
        '"boot": "bios", "network": "x", "graphics": "none", "secure_boot": true},\n'
        '  "a b": {"memory_gb": 2, "vcpus": 2, "disk_path": "/a.qcow2/", "disk_size_gb": 20, '
        '"boot": "bios", "network": "x", "graphics": "none", "cpu_model": ""}\n'
        "}}"
    )
    lines = problems(text)
    positions = [tuple(map(int, line.split(":")[1:3])) for line in lines]
    assert positions == sorted(positions)
    assert [line.split(": ", 1)[1] for line in lines] == [
        "vms.b.memory_gb: must be >= 1",
        'vms.b.secure_boot: needs boot "uefi"',
        "vms[\"a b\"]: VM name may hold only letters, digits, '.', '_' and '-', not ' '",
        'vms["a b"].disk_path: the same disk as VM "b" (two VMs must not share a disk)',
        'vms["a b"].cpu_model: must not be empty',
    ]


def test_validators_see_the_raw_document_and_context_reaches_the_model() -> None:
    seen: list[Any] = []

    def rule(document: Any) -> list[Problem]:
        seen.append(copy.deepcopy(document))
        return [Problem(("vms",), "a rule said no"), Problem(("vms", "a"), "at the key", True)]

    text = '{"vms": {"a": {"memory_gb": 1.5}}}'
    with pytest.raises(ManifestError) as caught:
        validate_text(text, "f.json", MODEL, [rule], {"home": None})
    assert seen == [{"vms": {"a": {"memory_gb": 1.5}}}]
    lines = [str(d) for d in caught.value.diagnostics]
    assert "f.json:1:9: vms: a rule said no" in lines
    assert "f.json:1:10: vms.a: at the key" in lines
    assert "f.json:1:29: vms.a.memory_gb: expected an integer, found the number 1.5" in lines
    # The model's own rules get the context: here, no HOME to expand ~ with.
    text = manifest(a=vm(disk_path="~/a.qcow2"))
    assert messages(text, home=None) == ["vms.a.disk_path: starts with ~ but HOME is not set"]


def test_a_problem_at_a_place_that_is_not_there_has_no_position() -> None:
    def rule(document: Any) -> list[Problem]:
        return [Problem(("nowhere",), "somewhere else")]

    with pytest.raises(ManifestError) as caught:
        validate_text('{"vms": {}}', "f.json", MODEL, [rule])
    assert caught.value.diagnostics == (Diagnostic("f.json", 0, 0, "nowhere", "somewhere else"),)
    assert str(caught.value.diagnostics[0]) == "f.json: nowhere: somewhere else"


def test_a_syntax_error_is_the_only_problem() -> None:
    with pytest.raises(ManifestError) as caught:
        check('{"vms": {"a": 1,}}')
    assert caught.value.message == "vms.json is not valid (1 error); nothing was changed"
    assert [str(d) for d in caught.value.diagnostics] == [
        "vms.json:1:17: trailing comma before `}`"
    ]
    assert caught.value.exit_code == EXIT_USAGE


def test_a_valid_manifest_loads_into_the_model() -> None:
    loaded = to_manifest(check((MANIFESTS / "valid" / "every-field.json").read_text("utf-8")))
    assert isinstance(loaded, VmManifest)
    assert list(loaded.vms) == ["win11", "ci.box_1"]
    assert loaded.vms["ci.box_1"].field("cpu_model") == "Skylake-Client"
    assert loaded.vms["win11"].field("autostart") is True


# -- the VM rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("win11", None),
        ("ci.box_1", None),
        ("_x", None),
        ("A" * 64, None),
        ("a" * 65, "VM name must be 1 to 64 characters long (it has 65)"),
        ("", "VM name must be 1 to 64 characters long (it has 0)"),
        ("é" * 64, "VM name may hold only letters, digits, '.', '_' and '-', not 'é'"),
        ("é" * 65, "VM name must be 1 to 64 characters long (it has 65)"),
        ("a/b", "VM name may hold only letters, digits, '.', '_' and '-', not '/'"),
        ("a\nb", "VM name may hold only letters, digits, '.', '_' and '-', not '\\n'"),
        ("a'b", "VM name may hold only letters, digits, '.', '_' and '-', not '\\''"),
        ("a\x1bb", "VM name may hold only letters, digits, '.', '_' and '-', not '\\u{1b}'"),
        ("٣", "VM name may hold only letters, digits, '.', '_' and '-', not '٣'"),
        (".hidden", "VM name must not start with '.' or '-'"),
        ("-x", "VM name must not start with '.' or '-'"),
        ("-x y", "VM name may hold only letters, digits, '.', '_' and '-', not ' '"),
    ],
)
def test_vm_names(name: str, problem: str | None) -> None:
    assert name_problem(name) == problem


def test_rules_run_beside_shape_errors() -> None:
    text = manifest(a=vm(memory_gb="2", secure_boot=True), **{"b c": vm(disk_path="/a.qcow2")})
    assert messages(text) == [
        "vms.a.memory_gb: expected an integer, found a string",
        'vms.a.secure_boot: needs boot "uefi"',
        "vms[\"b c\"]: VM name may hold only letters, digits, '.', '_' and '-', not ' '",
        'vms["b c"].disk_path: the same disk as VM "a" (two VMs must not share a disk)',
    ]


def test_rules_look_only_at_values_of_their_type() -> None:
    text = manifest(
        a=vm(secure_boot=1, boot="bios", disk_path=5, cpu_model=["host-passthrough"]),
        b=vm(secure_boot="true", virt_type="qemu", disk_path=None),
    )
    assert all("needs boot" not in m and "same disk" not in m for m in messages(text))
    assert vm_rules([], HOME) == []
    assert vm_rules({"vms": []}, HOME) == []
    assert vm_rules({"vms": {"a": 1}}, HOME) == []
    assert cpu_model_rules({"vms": {"a": None}}) == []


def test_secure_boot_needs_uefi() -> None:
    assert check(manifest(a=vm(boot="uefi", secure_boot=True)))
    assert check(manifest(a=vm(boot="bios", secure_boot=False)))
    assert messages(manifest(a=vm(secure_boot=True))) == ['vms.a.secure_boot: needs boot "uefi"']


def test_two_vms_must_not_share_a_disk() -> None:
    text = manifest(
        a=vm(disk_path="~/vms/a.qcow2"),
        b=vm(disk_path="/home/tester//vms/./a.qcow2"),
        c=vm(disk_path="/home/tester/vms/a.qcow2/"),
        d=vm(disk_path="/home/tester/vms/d.qcow2"),
        e=vm(disk_path="~/vms/../vms/a.qcow2"),
    )
    shared = 'the same disk as VM "a" (two VMs must not share a disk)'
    assert messages(text) == [
        f"vms.b.disk_path: {shared}",
        f"vms.c.disk_path: {shared}",
        'vms.e.disk_path: must not contain ".."',
    ]


def test_strings_hold_only_what_xml_can_carry() -> None:
    # U+FFFE passed validation and failed sync while rendering the domain XML.
    bad = vm(
        network="de\ufffefault",
        disk_path="/a\uffff.qcow2",
        cpu_model="host\ufffe",
        iso_sources=[{"path": "/i\ufffe.iso"}],
    )
    cannot = "a character XML cannot hold"
    assert problems(manifest(a=bad)) == [
        f"vms.json:6:20: vms.a.disk_path: must not contain '\\u{{ffff}}', {cannot}",
        f"vms.json:9:18: vms.a.network: must not contain '\\u{{fffe}}', {cannot}",
        f"vms.json:11:20: vms.a.cpu_model: must not contain '\\u{{fffe}}', {cannot}",
        f"vms.json:14:19: vms.a.iso_sources[0].path: must not contain '\\u{{fffe}}', {cannot}",
    ]
    # A control character is one problem, though the rule of cpu_model finds it too.
    assert messages(manifest(a=vm(cpu_model="a\x01"))) == [
        "vms.a.cpu_model: must not contain control characters"
    ]
    # What XML can carry passes: non-characters other than U+FFFE/U+FFFF, astral planes.
    assert check(manifest(a=vm(network="n\ufdd0\U0001f600\U0010fffd")))


class Owner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str


class TagsPlugin:
    bkt_plugin_name = "tags"

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> dict[str, tuple[Any, Any]]:
        return {
            "label": (str, Field(default="")),
            "tags": (list[str], Field(default_factory=list)),
            "notes": (dict[str, str], Field(default_factory=dict)),
            "owner": (Owner | None, Field(default=None)),
        }


def test_plugin_fields_hold_only_what_xml_can_carry() -> None:
    sub = Host(entry_points=False, plugins=[*default_plugins(), TagsPlugin()]).subsystem("vm")
    assert isinstance(sub, VmSubsystem)
    text = manifest(
        a=vm(label="x\ufffe", tags=["ok", "\uffff"], notes={"k\ufffe": "v"}),
        b=vm(disk_path="/b", label="fine", tags=["ok"], notes={"k": "v\x02"}),
        c=vm(disk_path="/c", owner={"name": "\ufffe"}),
    )
    with pytest.raises(ManifestError) as caught:
        validate_text(text, "vms.json", sub.manifest_model, context={"home": HOME})
    cannot = "a character XML cannot hold"
    assert [str(d) for d in caught.value.diagnostics] == [
        f"vms.json:11:16: vms.a.label: must not contain '\\u{{fffe}}', {cannot}",
        f"vms.json:12:15: vms.a.tags: must not contain '\\u{{ffff}}', {cannot}",
        f"vms.json:16:16: vms.a.notes: must not contain '\\u{{fffe}}', {cannot}",
        "vms.json:32:16: vms.b.notes: must not contain control characters",
        f"vms.json:44:16: vms.c.owner: must not contain '\\u{{fffe}}', {cannot}",
    ]


def test_cpu_model_rules() -> None:
    assert messages(manifest(a=vm(cpu_model=""), b=vm(cpu_model=" \t", disk_path="/b"))) == [
        "vms.a.cpu_model: must not be empty",
        "vms.b.cpu_model: must not be empty",
    ]
    assert messages(manifest(a=vm(cpu_model="Sky\x1flake"))) == [
        "vms.a.cpu_model: must not contain control characters"
    ]
    assert messages(manifest(a=vm(cpu_model="\x1c"))) == [
        "vms.a.cpu_model: must not contain control characters"
    ]
    passthrough = vm(cpu_model="host-passthrough", virt_type="qemu")
    assert messages(manifest(a=passthrough)) == [
        'vms.a.cpu_model: "host-passthrough" cannot start under virt_type "qemu" (software '
        'emulation); use "host-model", a named model, or leave cpu_model out'
    ]
    assert check(manifest(a=vm(cpu_model="host-passthrough")))
    assert check(manifest(a=vm(cpu_model=" &", virt_type="qemu")))


# -- loading files -----------------------------------------------------------------------


def test_load_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "vms.json").write_text(manifest(a=vm(vcpus=0)), encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_manifest(Path("manifests/vms.json"), MODEL, validators=validators())
    assert caught.value.message == (
        "manifests/vms.json is not valid (1 error); nothing was changed"
    )
    assert [str(d) for d in caught.value.diagnostics] == [
        "manifests/vms.json:5:16: vms.a.vcpus: must be >= 1"
    ]


def test_load_returns_the_model(tmp_path: Path) -> None:
    path = tmp_path / "vms.json"
    path.write_bytes((MANIFESTS / "valid" / "rfc-example.json").read_bytes())
    loaded = load_manifest(path, MODEL, validators=validators(), context={"home": HOME})
    assert isinstance(loaded, MODEL)


def test_a_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "vms.json", MODEL)
    assert caught.value.message == f"no manifest at {tmp_path / 'vms.json'}"
    assert caught.value.hint == (
        "pass --manifest-dir DIR or set BKT_MANIFEST_DIR to the directory that holds vms.json"
    )
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.diagnostics == ()


def test_an_unreadable_manifest(tmp_path: Path) -> None:
    path = tmp_path / "vms.json"
    path.write_bytes(b'{"vms": {"\xff": {}}}')
    with pytest.raises(OperationError, match=r"^cannot read .*vms\.json: .*UTF-8"):
        load_manifest(path, MODEL)
    path.unlink()
    path.mkdir()
    with pytest.raises(OperationError, match=r"^cannot read .*vms\.json: "):
        load_manifest(path, MODEL)


def run_validate(directory: Path) -> subprocess.CompletedProcess[str]:
    """``bkt vm validate`` of ``directory``, its output and errors in ``stdout``; in a process
    limited to 1 GiB of memory and, as a safety net against a hang, a minute (neither comes
    near when reading is bounded)."""
    bkt = Path(sys.executable).parent / "bkt"
    limited = 'ulimit -v 1048576 && exec "$0" --manifest-dir "$1" vm validate'
    return subprocess.run(
        ["bash", "-c", limited, bkt, directory],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def test_only_a_regular_file_is_read(tmp_path: Path) -> None:
    # A symbolic link to a regular file is fine (a manifest kept in a dotfiles repository).
    (tmp_path / "real.json").write_text(manifest(a=vm()))
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "vms.json").symlink_to(tmp_path / "real.json")
    assert run_validate(tmp_path / "link").stdout == "ok: 1 VM\n"
    # A FIFO blocked forever; /dev/zero filled memory; a directory had the system's word.
    os.mkfifo(tmp_path / "fifo")
    for target, kind in [
        (tmp_path / "fifo", "a FIFO (named pipe)"),
        (Path("/dev/zero"), "a character device"),
        (tmp_path / "real.json", "a directory"),
    ]:
        directory = tmp_path / kind.replace(" ", "-")
        directory.mkdir()
        if kind == "a directory":
            (directory / "vms.json").mkdir()
        else:
            (directory / "vms.json").symlink_to(target)
        done = run_validate(directory)
        path = directory / "vms.json"
        assert (done.returncode, done.stdout) == (
            1,
            f"error: cannot read {path}: it is {kind}, not a regular file\n",
        )


def test_a_manifest_larger_than_16_mib_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "vms.json"
    text = manifest(a=vm())
    path.write_text(text + " " * (MAX_MANIFEST_BYTES - len(text)))
    assert isinstance(load_manifest(path, MODEL, context={"home": HOME}), MODEL)
    with path.open("a") as file:
        file.write(" ")
    with pytest.raises(OperationError) as caught:
        load_manifest(path, MODEL)
    assert caught.value.message == (
        f"cannot read {path}: it is larger than 16 MiB, far more than any manifest needs"
    )


def test_at_most_1000_problems_are_reported() -> None:
    text = manifest(a=vm(**{f"k{i}": 1 for i in range(3 * MAX_DIAGNOSTICS)}))
    with pytest.raises(ManifestError) as caught:
        check(text)
    assert caught.value.message == (
        "vms.json is not valid (more than 1000 errors, the first 1000 shown); nothing was changed"
    )
    diagnostics = caught.value.diagnostics
    assert len(diagnostics) == MAX_DIAGNOSTICS
    assert diagnostics[-1].path == f"vms.a.k{MAX_DIAGNOSTICS - 1}"
    with pytest.raises(ManifestError) as caught:
        check(manifest(a=vm(**{f"k{i}": 1 for i in range(MAX_DIAGNOSTICS)})))
    assert caught.value.message == "vms.json is not valid (1000 errors); nothing was changed"


def test_huge_values_cost_little(tmp_path: Path) -> None:
    # "Did you mean" over a 4 MB key took minutes, over a 4 MB value seconds, and the output
    # held the key twice; a million-digit number took half a minute. Now each is refused
    # for what it is, at once.
    huge = "x" * 4_000_000
    (tmp_path / "vms.json").write_text(manifest(a=vm(boot=huge, **{huge: 1})))
    done = run_validate(tmp_path)
    assert done.returncode == 2, done.stdout[:1000]
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and len(done.stdout) < 2000
    assert lines[0].endswith(': vms.a.boot: must be one of "uefi", "bios"')
    shown = f"{huge[:79]}\u2026"
    assert f': vms.a["{shown}"]: unknown field "{shown}" (expected one of: memory' in lines[1]
    number = "9" * 1_000_000
    (tmp_path / "vms.json").write_text(
        manifest(a=vm(vcpus=0)).replace('"vcpus": 0', f'"vcpus": {number}')
    )
    done = run_validate(tmp_path)
    assert done.stdout.splitlines()[0] == (
        f"{tmp_path / 'vms.json'}:5:16: number too long (1000000 characters, at most 100)"
    )


def test_crlf_files_keep_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "vms.json"
    path.write_bytes(b'{\r\n  "vms": {"a": 1}\r\n}\r\n')
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, MODEL)
    assert caught.value.diagnostics[0].line == 2
    assert caught.value.diagnostics[0].column == 16


def big_manifest(count: int) -> str:
    vms = {
        f"vm-{i:03}": vm(
            disk_path=f"/var/lib/libvirt/images/vm{i}.qcow2",
            create_if_missing=True,
            boot="uefi",
            tpm="2.0",
            graphics="spice",
            iso_sources=[
                {"path": "~/iso/a.iso"},
                {"url": "https://example.org/virtio-win.iso", "sha256": "ab" * 32},
            ],
            autostart=True,
            cpu_model="host-model",
            secure_boot=True,
        )
        for i in range(count)
    }
    return json.dumps({"$schema": "../schemas/vms.schema.json", "vms": vms}, indent=2)


def test_a_large_manifest_loads_fast() -> None:
    text = big_manifest(300)
    best = min(timed(lambda: check(text)) for _ in range(5))
    assert best < 0.05, f"300 VMs took {best * 1000:.1f} ms"
    # And its problems are still found and placed.
    broken = text.replace('"vcpus": 2', '"vcpus": 0', 1).replace('"boot": "uefi"', '"boot": "x"')
    assert len(problems(broken)) == 301


def timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- saving ------------------------------------------------------------------------------


def test_dump_is_stable_json() -> None:
    data = {"$schema": "../x.json", "vms": {"é": {"b": [], "a": {}, "list": [1, "x"]}}}
    text = dump_manifest(data)
    assert text == (
        '{\n  "$schema": "../x.json",\n  "vms": {\n    "é": {\n      "b": [],\n      "a": {},\n'
        '      "list": [\n        1,\n        "x"\n      ]\n    }\n  }\n}\n'
    )
    assert json.loads(text) == data


def test_dump_of_a_loaded_manifest_loads_the_same() -> None:
    text = (MANIFESTS / "valid" / "every-field.json").read_text(encoding="utf-8")
    loaded = to_manifest(check(text))
    assert isinstance(loaded, VmManifest)
    data = {
        "$schema": loaded.schema,
        "vms": {name: definition.as_written() for name, definition in loaded.vms.items()},
    }
    again = to_manifest(check(dump_manifest(data)))
    assert again == loaded
    assert dump_manifest(data) == dump_manifest(json.loads(dump_manifest(data)))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_atomic_creates_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "vms.json"
    old_umask = os.umask(0o077)
    try:
        write_atomic(path, "{}\n")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert leftovers(tmp_path) == ["vms.json"]


def test_write_atomic_keeps_the_mode_and_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "vms.json"
    path.write_text("old")
    path.chmod(0o640)
    write_atomic(path, "é\n")
    assert path.read_bytes() == "é\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == ["vms.json"]


def test_write_atomic_goes_through_a_temporary_file_beside_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renames: list[tuple[str, str]] = []
    replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        renames.append((os.fspath(src), os.fspath(dst)))
        assert Path(src).read_text() == "new"
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "vms.json"
    write_atomic(path, "new")
    ((src, dst),) = renames
    assert Path(src).parent == tmp_path
    assert re.fullmatch(r"\.vms\.json\..+\.tmp", Path(src).name)
    assert dst == str(path)


def test_write_atomic_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "vms.json"
    target.mkdir()  # a rename over a directory fails
    with pytest.raises(OperationError, match=r"^cannot write .*vms\.json: "):
        write_atomic(target, "{}\n")
    assert leftovers(tmp_path) == ["vms.json"]
    with pytest.raises(OperationError, match=r"^cannot write "):
        write_atomic(tmp_path / "no-such-dir" / "vms.json", "{}\n")


def test_locked_excludes_other_holders(tmp_path: Path) -> None:
    def try_lock() -> bool:
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    with locked(tmp_path):
        assert not try_lock()
    assert try_lock()
    with pytest.raises(OperationError, match=r"^cannot lock "), locked(tmp_path / "missing"):
        pass


def test_the_loader_accepts_any_validator_sequence() -> None:
    rules: Sequence[Any] = (cpu_model_rules,)
    assert validate_text('{"vms": {}}', "vms.json", MODEL, rules)


# -- any model ---------------------------------------------------------------------------


class Cat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["cat"]
    lives: int = 9


class Dog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["dog"]
    bark: str


Pet = Annotated[Cat | Dog, Field(discriminator="kind")]


class Household(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pet: Pet
    pets: list[Pet] = []
    either: int | str = 0
    name: Annotated[str, Field(pattern="^[a-z]+$", min_length=2)] = "ab"
    ratio: float = 0.5
    tags: dict[str, int] = {}
    grid: list[list[int]] = []

    @field_validator("ratio")
    @classmethod
    def _at_most_one(cls, value: float) -> float:
        if value > 1:
            raise ValueError("must be at most 1")
        return value


def test_any_model_is_reported_in_the_same_words() -> None:
    text = (
        '{"pet": {"kind": "cat", "lives": "x", "bark": "w"},\n'
        ' "pets": [{"kind": "bird"}, {"bark": 1}, {"kind": "dog"}, {"kind": "cat", "livs": 1}],\n'
        ' "either": [], "name": "A", "ratio": 2, "tags": {"a": "1"}, "grid": [[1, "x"], 3]}'
    )
    with pytest.raises(ManifestError) as caught:
        validate_text(text, "h.json", Household)
    assert [str(d) for d in caught.value.diagnostics] == [
        "h.json:1:34: pet.lives: expected an integer, found a string",
        'h.json:1:39: pet.bark: "bark" cannot be combined with "kind"',
        'h.json:2:11: pets[0]: "kind" must be one of "cat", "dog"',
        'h.json:2:29: pets[1]: missing required field "kind"',
        'h.json:2:42: pets[2]: missing required field "bark"',
        'h.json:2:75: pets[3].livs: unknown field "livs" (did you mean "lives"?)',
        "h.json:3:12: either: expected an integer or a string, found an array",
        "h.json:3:24: name: must be at least 2 characters long",
        "h.json:3:38: ratio: must be at most 1",
        "h.json:3:55: tags.a: expected an integer, found a string",
        "h.json:3:74: grid[0][1]: expected an integer, found a string",
        "h.json:3:80: grid[1]: expected an array, found a number",
    ]
    with pytest.raises(ManifestError) as caught:
        validate_text('{"pet": 5, "ratio": "x", "name": "abc1"}', "h.json", Household)
    assert [d.message for d in caught.value.diagnostics] == [
        "expected an object, found a number",
        "expected a number, found a string",
        'must match the pattern "^[a-z]+$"',
    ]


def test_a_manifest_that_never_reaches_validation_imports_no_pydantic(tmp_path: Path) -> None:
    # Reading a manifest, wording a rule's Problem, and failing before validation (no file,
    # a JSON syntax error) need no pydantic; only validating does.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vms.json").write_text('{"vms": {')
    code = (
        "import sys\n"
        "from bkt_core import Host, ManifestError, Problem\n"
        "from bkt_core.manifest import ManifestSource, dump_manifest\n"
        "assert Problem(('vms',), 'x').message == 'x'\n"
        "assert dump_manifest({'vms': {}})\n"
        f"for d in ({str(tmp_path / 'none')!r}, {str(bad)!r}):\n"
        "    try:\n"
        "        Host(d).validate('vm')\n"
        "    except ManifestError as exc:\n"
        "        print(exc.message)\n"
        "    else:\n"
        "        raise AssertionError('validated')\n"
        "bad = [m for m in sys.modules if m.startswith('pydantic')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"no manifest at {tmp_path / 'none' / 'vms.json'}",
        f"{bad / 'vms.json'} is not valid (1 error); nothing was changed",
    ]
