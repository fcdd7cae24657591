"""One stream rule, pinned for every command in every mode: data (plans, tables, JSON,
summary lines, result lines, schemas, scripts) on stdout; warnings, notes, hints and errors
on stderr. Each case runs the real ``bkt`` against the real libvirtd and pins both streams
and the exit status."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import NO_PROXY, ROOT, RunBkt
from tests.integration.test_fetch_iso import Serve, body_of, digest
from tests.integration.test_fetch_iso import serve as serve  # the fixture
from tests.livelib import Lab, virsh, vm, write_vms

pytestmark = pytest.mark.libvirtd

Expected = str | Callable[[str], bool]


@dataclass(frozen=True)
class Case:
    #: ``new``: VM {a} is in the manifest, not in libvirt; ``synced``: bkt defined it;
    #: ``running``: it runs; ``invalid``: the manifest is not valid; ``no-iso``: {a} is new
    #: and its ISO file is missing.
    state: str
    args: tuple[str, ...]
    stdout: Expected
    stderr: Expected = ""
    code: int = 0


CREATE = "+ create {a}\n    create disk {disk} (1 GiB, qcow2)\n"
DRY_RUN = "dry run: 1 to create, 0 to update, 0 unchanged, 0 failed; nothing was changed\n"
IN_SYNC = "nothing to do: 1 VM in sync\n"
NOT_MATCHING = (
    "error: libvirt does not match the manifest\nhint: `bkt vm sync` makes these changes\n"
)
PLAN_JSON = (
    '"plan":{{"vms":[{{"name":"{a}","action":"create",'
    '"create_disk":{{"path":"{disk}","size_gb":1,"format":"qcow2"}}}}]}}'
)
SUMMARY_JSON = '"summary":{{"created":1,"updated":0,"unchanged":0,"failed":0}}'
TABLE = "NAME{pad}  STATE    SYNC\n{a}  {state}  in sync\n"
CAPTURED = "captured 1 VM: 0 added, 0 changed, 1 unchanged; skipped 0\n"
INVALID = (
    '{manifest}/vms.json:1:{column}: vms.{a}.boot: must be one of "uefi", "bios" '
    '(did you mean "bios"?)\n'
    "error: {manifest}/vms.json is not valid (1 error); nothing was changed\n"
)


def json_line(text: str) -> bool:
    return text.endswith("\n") and text.count("\n") == 1 and isinstance(json.loads(text), dict)


CASES: dict[str, Case] = {
    # bkt vm sync, in each mode
    "vm sync": Case(
        "new", ("vm", "sync"), CREATE + "1 created, 0 updated, 0 unchanged, 0 failed\n"
    ),
    "vm sync in sync": Case("synced", ("vm", "sync"), IN_SYNC),
    "vm sync -q": Case(
        "new", ("-q", "vm", "sync"), CREATE + "1 created, 0 updated, 0 unchanged, 0 failed\n"
    ),
    "vm sync -v in sync": Case("synced", ("-v", "vm", "sync"), "= unchanged {a}\n"),
    "vm sync --dry-run": Case("new", ("vm", "sync", "--dry-run"), CREATE + DRY_RUN),
    "vm sync -q --dry-run": Case("new", ("-q", "vm", "sync", "--dry-run"), CREATE + DRY_RUN),
    "vm sync --check": Case("new", ("vm", "sync", "--check"), CREATE + DRY_RUN, NOT_MATCHING, 1),
    "vm sync --check in sync": Case("synced", ("vm", "sync", "--check"), IN_SYNC),
    "vm sync --json": Case(
        "new",
        ("vm", "sync", "--json"),
        '{{"dry_run":false,'
        + PLAN_JSON
        + ',"results":[{{"name":"{a}","result":"created"}}],'
        + SUMMARY_JSON
        + "}}\n",
    ),
    "vm sync --dry-run --json": Case(
        "new",
        ("vm", "sync", "--dry-run", "--json"),
        '{{"dry_run":true,' + PLAN_JSON + "," + SUMMARY_JSON + "}}\n",
    ),
    "vm sync --check --json": Case(
        "new",
        ("vm", "sync", "--check", "--json"),
        '{{"dry_run":true,' + PLAN_JSON + "," + SUMMARY_JSON + "}}\n",
        NOT_MATCHING,
        1,
    ),
    "vm sync invalid": Case("invalid", ("vm", "sync"), "", INVALID, 2),
    "vm sync warning": Case(
        "no-iso",
        ("vm", "sync", "--dry-run"),
        CREATE + DRY_RUN,
        lambda err: err.startswith("warning: VM bkt-test-") and "missing.iso" in err,
    ),
    # bkt vm status
    "vm status": Case(
        "synced", ("vm", "status"), TABLE.format(pad="{pad}", a="{a}", state="stopped")
    ),
    "vm status running": Case(
        "running", ("vm", "status"), TABLE.format(pad="{pad}", a="{a}", state="running")
    ),
    "vm status --json": Case(
        "synced",
        ("vm", "status", "--json"),
        '{{"vms":[{{"name":"{a}","state":"stopped","managed":true,"in_sync":true,"drift":[],"pending_restart":[]}}]}}\n',
    ),
    "vm status -vv": Case(
        "synced",
        ("-vv", "vm", "status"),
        TABLE.format(pad="{pad}", a="{a}", state="stopped"),
        lambda err: err.startswith("virsh ") and "list --all --name" in err,
    ),
    "vm status missing": Case(
        "new", ("vm", "status"), "NAME{pad}  STATE    SYNC\n{a}  missing  -\n"
    ),
    # bkt vm capture
    "vm capture": Case("synced", ("vm", "capture"), CAPTURED),
    "vm capture --dry-run": Case(
        "synced", ("vm", "capture", "--dry-run"), CAPTURED, "dry run: nothing was written\n"
    ),
    # bkt vm validate
    "vm validate": Case("new", ("vm", "validate"), "ok: 1 VM\n"),
    "vm validate invalid": Case("invalid", ("vm", "validate"), "", INVALID, 2),
    # bkt vm start / stop
    "vm start": Case("synced", ("vm", "start", "{a}"), "{a}: started\n"),
    "vm start running": Case("running", ("vm", "start", "{a}"), "{a}: already running\n"),
    "vm start missing": Case(
        "new",
        ("vm", "start", "{a}"),
        "",
        "error: libvirt has no domain named {a}\nhint: `bkt vm sync` defines it\n",
        1,
    ),
    "vm stop --force": Case(
        "running", ("vm", "stop", "--force", "{a}"), "{a}: powered off (destroyed)\n"
    ),
    "vm stop stopped": Case("synced", ("vm", "stop", "{a}"), "{a}: already stopped\n"),
    # bkt vm fetch-iso
    "vm fetch-iso": Case(
        "new",
        ("-C", "{fetch}", "vm", "fetch-iso", "iso"),
        lambda out: (
            out.startswith("fetched http://127.0.0.1:")
            and out.endswith(", sha256 verified)\n")
            and out.count("\n") == 1
        ),
    ),
    "vm fetch-iso nothing": Case(
        "new", ("vm", "fetch-iso", "{a}"), "", "VM {a} has no URL ISO sources: nothing to fetch\n"
    ),
    # bkt schema, plugins, completions
    "schema vms": Case(
        "new", ("schema", "vms"), (ROOT / "manifests" / "vms.schema.json").read_text().__eq__
    ),
    "plugins": Case(
        "new",
        ("plugins",),
        lambda out: out.startswith("NAME ") and "\nvm " in out and out.endswith("\n"),
    ),
    "plugins --json": Case("new", ("plugins", "--json"), json_line),
    "completions bash": Case(
        "new", ("completions", "bash"), lambda out: out.startswith("_bkt_completion() {")
    ),
    # the top-level commands: every subsystem
    "sync": Case("new", ("sync",), CREATE + "1 created, 0 updated, 0 unchanged, 0 failed\n"),
    "sync --dry-run": Case("new", ("sync", "--dry-run"), CREATE + DRY_RUN),
    "sync --check": Case("new", ("sync", "--check"), CREATE + DRY_RUN, NOT_MATCHING, 1),
    "status": Case("synced", ("status",), TABLE.format(pad="{pad}", a="{a}", state="stopped")),
    "capture": Case("synced", ("capture",), CAPTURED),
    "capture --dry-run": Case(
        "synced", ("capture", "--dry-run"), CAPTURED, "dry run: nothing was written\n"
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_data_on_stdout_and_everything_else_on_stderr(
    case: Case, lab: Lab, disks: Path, tmp_path: Path, test_uri: str, run_bkt: RunBkt, serve: Serve
) -> None:
    a = lab.name("a")
    manifest = tmp_path / "manifests"
    vms = {a: vm(disks, a)}
    if case.state == "no-iso":
        vms[a]["iso_sources"] = [{"path": str(tmp_path / "missing.iso")}]
    if case.state == "invalid":
        vms[a]["boot"] = "BIOS"
        text = json.dumps({"vms": vms})
        manifest.mkdir()
        (manifest / "vms.json").write_text(text)
        column = text.index('"BIOS"') + 1
    else:
        write_vms(manifest, vms)
        column = 0
    body = body_of(1000)
    server = serve("small.iso", body)
    fetch = tmp_path / "fetch"
    write_vms(
        fetch,
        {
            "iso": {
                **vm(disks, "iso"),
                "iso_sources": [{"url": server.url(), "sha256": digest(body)}],
            }
        },
    )
    env = {**NO_PROXY, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    if case.state in ("synced", "running"):
        setup = run_bkt("-C", str(manifest), "-c", test_uri, "vm", "sync", env=env)
        assert setup.returncode == 0, setup.stderr
    if case.state == "running":
        virsh("start", "--domain", a)

    fields = {
        "a": a,
        "disk": str(disks / f"{a}.qcow2"),
        "manifest": str(manifest),
        "fetch": str(fetch),
        "pad": " " * (len(a) - 4),
        "column": str(column),
    }
    args = [arg.format(**fields) for arg in case.args]
    result = run_bkt("-C", str(manifest), "-c", test_uri, *args, env=env)
    for stream, expected in (("stdout", case.stdout), ("stderr", case.stderr)):
        text = getattr(result, stream)
        if callable(expected):
            assert expected(text), f"{stream}: {text!r}"
        else:
            assert text == expected.format(**fields), stream
    assert result.returncode == case.code, result.stderr
