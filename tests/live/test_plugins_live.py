"""The two example plugins, pip-installed as a user installs them and driven through the CLI
against the real libvirtd: listed with their versions, their fields in the schema and in
validation (with file:line:col), honoured by sync, status and capture, and unknown fields
again once they are not installed."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bkt_core import hookimpl
from tests.conftest import Run, RunBkt
from tests.livelib import (
    domains,
    traced,
    unique_name,
    uri,
    virsh,
    vm,
    write_vms,
)

pytestmark = pytest.mark.libvirtd

PLUGINS = ("bkt-base-image", "bkt-power-state")
FIELDS = {"bkt-base-image": "base_image", "bkt-power-state": "running"}


@pytest.fixture
def sites(plugin_site: Callable[[str], Path]) -> list[Path]:
    return [plugin_site(f"examples/plugins/{name}") for name in PLUGINS]


Bkt = Callable[..., Run]


@pytest.fixture
def bkt(run_bkt: RunBkt, tmp_path: Path, sites: list[Path]) -> Bkt:
    """``bkt -c URI -C tmp/manifests ARGS`` with the two plugins installed (``plugins=False``:
    with none of them)."""

    def run(*args: str, plugins: bool = True, env: dict[str, str] | None = None) -> Run:
        return run_bkt(
            "-c", uri(), "-C", str(tmp_path / "manifests"), *args,
            env={"NO_COLOR": "1", **(env or {})},
            pythonpath=sites if plugins else (),
        )  # fmt: skip

    return run


def manifest(tmp_path: Path) -> Path:
    return tmp_path / "manifests" / "vms.json"


def status_rows(bkt: Bkt) -> dict[str, tuple[str, bool | None, list[str]]]:
    result = bkt("vm", "status", "--json")
    assert result.returncode == 0, result.stderr
    return {
        r["name"]: (r["state"], r["in_sync"], r["drift"]) for r in json.loads(result.stdout)["vms"]
    }


def ok(result: Run) -> Run:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# -- installed, listed, in the schema; uninstalled, unknown --------------------------------


def test_each_plugin_is_listed_with_its_version_and_its_field_is_in_the_schema(bkt: Bkt) -> None:
    listed = {p["name"]: p for p in json.loads(ok(bkt("plugins", "--json")).stdout)["plugins"]}
    for name in PLUGINS:
        assert (listed[name]["distribution"], listed[name]["version"]) == (name, "1.0.0")
        assert listed[name]["status"] == "active"
    assert listed["bkt-base-image"]["hooks"] == [
        "bkt_disk_plan",
        "bkt_disk_provision",
        "bkt_manifest_fields",
        "bkt_validate_manifest",
    ]
    assert "bkt_post_sync" in listed["bkt-power-state"]["hooks"]
    table = ok(bkt("plugins")).stdout
    assert re.search(r"^bkt-base-image +bkt-base-image +1\.0\.0 ", table, re.M), table

    props = json.loads(ok(bkt("schema", "vms")).stdout)["$defs"]["VmDefinition"]["properties"]
    assert props["base_image"]["type"] == "string"
    assert props["running"]["type"] == "boolean"
    plain = json.loads(ok(bkt("schema", "vms", plugins=False)).stdout)
    assert not set(FIELDS.values()) & set(plain["$defs"]["VmDefinition"]["properties"])


def test_validation_reports_each_field_with_its_position_and_unknown_without_it(
    bkt: Bkt, tmp_path: Path, disks: Path
) -> None:
    good = {"base_image": str(disks / "b"), "running": True}
    write_vms(tmp_path / "manifests", {"good": vm(disks, "good", **good)})
    assert ok(bkt("vm", "validate")).stdout == "ok: 1 VM\n"

    without = bkt("vm", "validate", plugins=False)
    assert without.returncode == 2
    file = str(manifest(tmp_path))
    for field in FIELDS.values():
        assert re.search(
            rf"^{re.escape(file)}:\d+:\d+: vms\.good\.{field}: unknown field \"{field}\"",
            without.stderr,
            re.M,
        ), without.stderr
    # Blocking one plugin is the same as not having it, for its field only.
    blocked = bkt("--disable-plugin", "bkt-power-state", "vm", "validate")
    assert blocked.returncode == 2
    assert 'unknown field "running"' in blocked.stderr
    assert "is not valid (1 error)" in blocked.stderr

    bad = {"base_image": "golden.qcow2", "running": 1}
    write_vms(tmp_path / "manifests", {"bad": vm(disks, "bad", **bad)})
    result = bkt("vm", "validate")
    assert result.returncode == 2
    lines = [line.removeprefix(file + ":") for line in result.stderr.splitlines()]
    # json.dumps with indent=2 writes the plugin fields on lines 13 and 14.
    assert lines[:2] == [
        "13:21: vms.bad.base_image: must be an absolute path (after ~ expansion), not "
        '"golden.qcow2"',
        "14:18: vms.bad.running: expected a boolean (true or false), found a number",
    ], result.stderr


# -- bkt-base-image: overrides provisioning ------------------------------------------------


def qemu_img_info(path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


def test_base_image_makes_an_overlay_and_leaves_other_disks_to_the_default(
    bkt: Bkt, tmp_path: Path, disks: Path
) -> None:
    a, b = sorted([unique_name("overlay"), unique_name("plain")])
    base = disks / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    dir = tmp_path / "manifests"
    with domains(a, b):
        write_vms(
            dir,
            {a: vm(disks, a, base_image=str(base), disk_size_gb=2), b: vm(disks, b)},
        )
        dry = ok(bkt("vm", "sync", "--dry-run"))
        assert (
            f"+ create {a}\n    create disk {disks}/{a}.qcow2 (2 GiB, qcow2 overlay on {base}, "
            "qcow2)\n"
        ) in dry.stdout
        assert f"+ create {b}\n    create disk {disks}/{b}.qcow2 (1 GiB, qcow2)\n" in dry.stdout
        planned = json.loads(ok(bkt("vm", "sync", "--dry-run", "--json")).stdout)
        disk_of = {e["name"]: e["create_disk"] for e in planned["plan"]["vms"]}
        assert disk_of[a]["base_image"] == str(base) and "base_image" not in disk_of[b]
        assert not (disks / f"{a}.qcow2").exists(), "a dry run creates nothing"

        ok(bkt("vm", "sync"))
        overlay, plain = qemu_img_info(disks / f"{a}.qcow2"), qemu_img_info(disks / f"{b}.qcow2")
        assert (overlay["backing-filename"], overlay["virtual-size"]) == (str(base), 2 * 1024**3)
        assert "backing-filename" not in plain
        # Status does not compare it and capture keeps it: it matters only at creation.
        assert status_rows(bkt) == {a: ("stopped", True, []), b: ("stopped", True, [])}
        ok(bkt("vm", "capture"))
        assert json.loads(manifest(tmp_path).read_text())["vms"][a]["base_image"] == str(base)
        assert ok(bkt("vm", "sync")).stdout == "nothing to do: 2 VMs in sync\n"

        # A missing base image fails that VM while planning; nothing is created.
        c = unique_name("nobase")
        with domains(c):
            vms = json.loads(manifest(tmp_path).read_text())["vms"]
            vms[c] = vm(disks, c, base_image=str(disks / "gone.qcow2"))
            write_vms(dir, vms)
            result = bkt("vm", "sync")
            assert result.returncode == 1
            assert (
                f"! error {c}: plugin bkt-base-image in bkt_disk_plan: cannot create disk "
                f"{disks}/{c}.qcow2 as an overlay: base image "
                f"{disks}/gone.qcow2 does not exist"
            ) in result.stdout
            assert not (disks / f"{c}.qcow2").exists()
            assert c not in virsh("list", "--all", "--name").split()


# -- bkt-power-state: a post-sync action ---------------------------------------------------


def state(name: str) -> str:
    return virsh("domstate", name).strip()


def test_running_starts_vms_after_sync_in_one_process_and_drifts_when_stopped(
    bkt: Bkt, tmp_path: Path, disks: Path
) -> None:
    a, b, c = sorted(unique_name("power") for _ in range(3))
    dir = tmp_path / "manifests"
    with domains(a, b, c):
        write_vms(
            dir, {a: vm(disks, a, running=True), b: vm(disks, b, running=True), c: vm(disks, c)}
        )
        result = ok(bkt("vm", "sync", "-vv"))
        assert (
            f"+ create {a}\n    create disk {disks}/{a}.qcow2 (1 GiB, qcow2)\n"
            "    running: false -> true\n"
        ) in result.stdout
        starts = [p for p in traced(result.stderr) if p[0].startswith("start ")]
        assert starts == [[f"start --domain {a}", f"start --domain {b}"]]
        assert (state(a), state(b), state(c)) == ("running", "running", "shut off")
        assert status_rows(bkt) == {
            a: ("running", True, []),
            b: ("running", True, []),
            c: ("stopped", True, []),
        }

        virsh("destroy", a)
        assert status_rows(bkt)[a] == ("stopped", False, ["running"])
        check = bkt("vm", "sync", "--check")
        assert check.returncode == 1 and f"~ update {a}\n    running: false -> true\n" in (
            check.stdout
        )
        ok(bkt("vm", "sync"))
        assert state(a) == "running"

        # Capture writes the power state libvirt has: c, started by hand, should now run.
        virsh("start", c)
        ok(bkt("vm", "capture"))
        vms = json.loads(manifest(tmp_path).read_text())["vms"]
        assert (vms[a]["running"], vms[c]["running"]) == (True, True)
        assert ok(bkt("vm", "sync")).stdout == "nothing to do: 3 VMs in sync\n"


# -- a plugin that raises, against the real daemon -------------------------------------------


class Misbehaving:
    """Raises in render for VMs named ``*-render`` and after sync for ``*-post``."""

    bkt_plugin_name = "misbehaving"

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> dict[str, Any]:
        from pydantic import Field

        return {"color": (str, Field(default="blue"))}

    @hookimpl
    def bkt_domain_fields(self) -> list[Any]:
        from bkt_vm_plugin.domain_xml import DomainField, Reading

        class Color(DomainField):
            fields = ("color",)

            def render(self, domain: Any, vm: Any, ctx: Any) -> None:
                if ctx.name.endswith("-render"):
                    raise RuntimeError("out of paint")

            def parse(self, domain: Any, ctx: Any) -> dict[str, Reading]:
                return {"color": Reading.clean("blue")}

        return [Color()]

    @hookimpl
    def bkt_post_sync_vm(self, name: str) -> None:
        if name.endswith("-post"):
            raise RuntimeError("webhook timed out")


def test_a_plugin_that_raises_fails_only_its_vm_on_the_real_daemon(
    tmp_path: Path, disks: Path
) -> None:
    from bkt_core import Host
    from bkt_vm_plugin import default_plugins

    good, render, post = unique_name("good"), unique_name("x-render"), unique_name("x-post")
    dir = tmp_path / "manifests"
    with domains(good, render, post):
        write_vms(dir, {n: vm(disks, n) for n in (good, render, post)})
        before = manifest(tmp_path).read_text()
        host = Host(
            dir, uri=uri(), entry_points=False, plugins=[*default_plugins(), Misbehaving()]
        )
        report = host.sync("vm")
        got = {r.name: (r.result, r.message) for r in report.results or ()}
        assert got == {
            good: ("created", None),
            render: (
                "failed",
                f"plugin misbehaving in bkt_domain_fields: render failed for VM {render} "
                "(field color): RuntimeError: out of paint",
            ),
            post: (
                "failed",
                "plugin misbehaving in bkt_post_sync_vm: RuntimeError: webhook timed out",
            ),
        }
        names = virsh("list", "--all", "--name").split()
        assert good in names and post in names and render not in names
        assert not (disks / f"{render}.qcow2").exists()
        assert manifest(tmp_path).read_text() == before
