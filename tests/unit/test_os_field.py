"""The ``os`` plugin: its defaults against what virt-install 4.1 chose for the same OS, its
rules (errors and warnings) and its ``<metadata>`` entry, and blocking it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bkt_core import Host, ManifestError
from bkt_vm_plugin import default_plugins, os_field, osinfo
from bkt_vm_plugin.api import DomainContext, VmDefinition, parse_xml, serialize
from bkt_vm_plugin.os_field import LIBOSINFO_NAMESPACE, OsField, defaults_for, os_rules
from bkt_vm_plugin.osinfo import OsDatabase
from bkt_vm_plugin.testing import vm_subsystem

ROOT = Path(__file__).resolve().parents[2]
VIRT_INSTALL = ROOT / "tests" / "fixtures" / "virt-install"
FIXTURE_DB = ROOT / "tests" / "fixtures" / "osinfo"
SYSTEM = Path("/usr/share/osinfo")

needs_installed = pytest.mark.skipif(
    not (SYSTEM / "os").is_dir(), reason="osinfo-db is not installed here"
)


@pytest.fixture
def fixture_db(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OsDatabase]:
    """The fixture database as the one the plugin reads (libosinfo's variables), with bkt's
    cache in the test's directory."""
    root = tmp_path / "osinfo"
    shutil.copytree(FIXTURE_DB, root)
    monkeypatch.setenv("OSINFO_SYSTEM_DIR", str(root))
    monkeypatch.setenv("OSINFO_LOCAL_DIR", str(tmp_path / "no-local"))
    monkeypatch.setenv("OSINFO_USER_DIR", str(tmp_path / "no-user"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    osinfo.forget_databases()
    yield osinfo.default_database()
    osinfo.forget_databases()


@pytest.fixture(scope="module")
def installed() -> OsDatabase:
    return OsDatabase.open([SYSTEM], cache=False)


# -- the defaults, against virt-install ----------------------------------------------------


def virt_install_choices(xml: str) -> dict[str, Any]:
    """What a domain virt-install printed says, in the fields the ``os`` plugin fills."""
    domain = etree.fromstring(xml.encode())
    devices = domain.find("devices")
    assert devices is not None
    disk = next(d for d in devices.findall("disk") if d.get("device") == "disk")
    timers = {t.get("name"): dict(t.attrib) for t in domain.findall("clock/timer")}
    sound = devices.find("sound")
    video = devices.find("video/model")
    return {
        "disk_bus": disk.find("target").get("bus"),  # type: ignore[union-attr]
        "nic_model": devices.find("interface/model").get("type"),  # type: ignore[union-attr]
        "clock": domain.find("clock").get("offset"),  # type: ignore[union-attr]
        "clock_timers": timers.get("rtc") == {"name": "rtc", "tickpolicy": "catchup"}
        and timers.get("pit") == {"name": "pit", "tickpolicy": "delay"}
        and timers.get("hpet") == {"name": "hpet", "present": "no"},
        "hyperv": domain.find("features/hyperv") is not None and "hypervclock" in timers,
        "sound": "none" if sound is None else sound.get("model"),
        "usb_redirection": len(devices.findall("redirdev")),
        "video": None if video is None else video.get("type"),
        "tpm": "2.0" if devices.find("tpm") is not None else "none",
        "secure_boot": domain.find("os/loader[@secure='yes']") is not None,
    }


#: Where bkt's choice differs from virt-install's, on purpose: virt-install gives an OS that
#: predates Q35 an i440FX machine with IDE disks, and bkt's machine is always Q35 (no IDE);
#: Windows 11 requires Secure Boot, which virt-install leaves off.
DIFFERENCES: dict[str, dict[str, tuple[Any, Any]]] = {
    "msdos6.22-spice": {"disk_bus": ("ide", "sata")},
    "winxp-spice": {"disk_bus": ("ide", "sata")},
    "win11-spice": {"secure_boot": (False, True)},
}


def _cases() -> list[str]:
    return sorted(p.stem for p in VIRT_INSTALL.glob("*.xml"))


def test_windows_and_linux_guests_old_and_new_are_compared() -> None:
    names = {case.split("-")[0] for case in _cases()}
    assert {"win11", "win10", "win7", "fedora37", "ubuntu22.04", "rhel9.0", "winxp"} <= names


@needs_installed
@pytest.mark.parametrize("case", _cases())
def test_the_defaults_are_what_virt_install_chooses(case: str, installed: OsDatabase) -> None:
    xml = (VIRT_INSTALL / f"{case}.xml").read_text()
    short_id = case.split("-")[0]
    domain = etree.fromstring(xml.encode())
    graphics = str(domain.find("devices/graphics").get("type"))  # type: ignore[union-attr]
    boot = "uefi" if domain.find("os").get("firmware") == "efi" else "bios"  # type: ignore[union-attr]
    ours = {"tpm": "none", "secure_boot": False, "video": None}
    ours |= defaults_for(
        installed.profile(short_id), virt_type="kvm", graphics=graphics, boot=boot
    )
    theirs = virt_install_choices(xml)
    differences: dict[str, tuple[Any, Any]] = DIFFERENCES.get(case, {})
    for name, (virt_install, bkt) in differences.items():
        assert (theirs[name], ours[name]) == (virt_install, bkt)
        theirs[name] = bkt
    assert ours == theirs


@needs_installed
def test_windows_under_qemu_has_no_hyperv(installed: OsDatabase) -> None:
    win11 = installed.profile("win11")
    assert defaults_for(win11, virt_type="kvm", graphics="spice", boot="uefi")["hyperv"]
    values = defaults_for(win11, virt_type="qemu", graphics="spice", boot="uefi")
    assert values["hyperv"] is False and values["clock"] == "localtime"


def test_an_os_the_database_knows_little_of_gets_the_emulated_devices(
    fixture_db: OsDatabase,
) -> None:
    loop = defaults_for(fixture_db.profile("oldwin"), virt_type="kvm", graphics="vnc", boot="bios")
    assert loop == {
        "disk_bus": "sata",
        "nic_model": "rtl8139",  # the one NIC it knows
        "clock": "localtime",
        "clock_timers": True,
        "hyperv": True,
        "sound": "none",
        "usb_redirection": 0,
        "video": "vga",
    }
    no_screen = defaults_for(
        fixture_db.profile("base1"), virt_type="kvm", graphics="none", boot="bios"
    )
    assert "video" not in no_screen and no_screen["disk_bus"] == "virtio"


# -- rules ---------------------------------------------------------------------------------


def _doc(**vm: Any) -> dict[str, Any]:
    base = {"memory_gb": 8, "disk_size_gb": 80, "boot": "uefi"}
    return {"vms": {"a": {**base, **vm}}}


def test_an_unknown_os_is_an_error_naming_the_closest(fixture_db: OsDatabase) -> None:
    (problem,) = os_rules(_doc(os="derived3"), lambda: fixture_db)
    assert problem.path == ("vms", "a", "os") and not problem.warning
    assert 'unknown OS "derived3"' in problem.message and '"derived2"' in problem.message


def test_no_database_is_an_error_naming_the_package(tmp_path: Path) -> None:
    def missing() -> OsDatabase:
        raise osinfo.DatabaseMissing([tmp_path])

    problems = os_rules({"vms": {"a": {"os": "win11"}, "b": {"os": "x"}}}, missing)
    assert [p.path for p in problems] == [("vms", "a", "os"), ("vms", "b", "os")]
    assert all("osinfo-db" in p.message and not p.warning for p in problems)


def test_other_values_are_left_to_the_model(fixture_db: OsDatabase) -> None:
    assert os_rules({"vms": {"a": {"os": 3}, "b": None, "c": {}}}, lambda: fixture_db) == []
    assert os_rules([], lambda: fixture_db) == []
    (empty,) = os_rules(_doc(os=" "), lambda: fixture_db)
    assert empty.message == "must not be empty"


def test_resources_below_the_minimum_or_the_recommended_are_warnings(
    fixture_db: OsDatabase,
) -> None:
    assert os_rules(_doc(os="base1"), lambda: fixture_db) == []
    problems = os_rules(_doc(os="base1", memory_gb=1, disk_size_gb=5), lambda: fixture_db)
    assert [(p.path[-1], p.warning) for p in problems] == [
        ("memory_gb", True),
        ("disk_size_gb", True),
    ]
    assert problems[0].message == "1 GiB is below what base1 recommends (2 GiB)"
    assert problems[1].message == "5 GiB is below the minimum of base1 (10 GiB)"


def test_bios_for_an_os_that_boots_only_from_uefi_is_a_warning(fixture_db: OsDatabase) -> None:
    (problem,) = os_rules(_doc(os="clone3", boot="bios"), lambda: fixture_db)
    assert problem.path == ("vms", "a", "boot") and problem.warning
    assert os_rules(_doc(os="base1", boot="bios"), lambda: fixture_db) == []


# -- the host: validation, warnings, blocking ------------------------------------------------

MANIFEST = {
    "vms": {
        "w": {
            "memory_gb": 1,
            "vcpus": 2,
            "disk_path": "/var/lib/libvirt/images/w.qcow2",
            "disk_size_gb": 40,
            "boot": "uefi",
            "network": "default",
            "graphics": "spice",
            "os": "base1",
        }
    }
}


def _write(directory: Path, document: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vms.json").write_text(json.dumps(document, indent=2) + "\n")
    return directory


def test_the_host_validates_os_and_collects_warnings(
    fixture_db: OsDatabase, tmp_path: Path
) -> None:
    host = Host(_write(tmp_path / "m", MANIFEST), entry_points=False, plugins=default_plugins())
    sub: Any = host.subsystem("vm")
    warnings: list[Any] = []
    assert sub.validate(warnings=warnings) == 1
    assert [(w.path, w.line) for w in warnings] == [("vms.w.memory_gb", 4)]
    assert sub.load().vms["w"].field("os") == "base1"
    bad = json.loads(json.dumps(MANIFEST))
    bad["vms"]["w"]["os"] = "base2"
    host = Host(_write(tmp_path / "n", bad), entry_points=False, plugins=default_plugins())
    with pytest.raises(ManifestError) as caught:
        host.validate("vm")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.path, diagnostic.line, diagnostic.column) == ("vms.w.os", 11, 13)
    assert '"base1"' in diagnostic.message


def test_blocking_the_plugin_makes_os_an_unknown_field(tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", MANIFEST)
    host = Host(directory, entry_points=False, plugins=default_plugins(), disabled=("os",))
    with pytest.raises(ManifestError) as caught:
        host.validate("vm")
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.path == "vms.w.os" and diagnostic.message.startswith('unknown field "os"')
    assert "os" not in host.subsystem("vm").vm_model.model_fields  # type: ignore[attr-defined]


def test_the_cache_key_is_the_databases_identity(fixture_db: OsDatabase) -> None:
    key = os_field.bkt_manifest_cache_key("vm")
    assert key == f"osinfo:{fixture_db.identity}"
    assert os_field.bkt_manifest_cache_key("other") is None


def test_the_cache_key_without_a_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OSINFO_SYSTEM_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("OSINFO_LOCAL_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("OSINFO_USER_DIR", str(tmp_path / "none"))
    assert os_field.bkt_manifest_cache_key("vm") == "osinfo:none"


# -- the <metadata> entry ------------------------------------------------------------------


def _vm(os: str | None) -> VmDefinition:
    return VmDefinition(
        memory_gb=4,
        vcpus=2,
        disk_path="/a.qcow2",
        disk_size_gb=40,
        boot="uefi",
        network="default",
        graphics="spice",
        plugin_values={"os": os},
    )


CTX = DomainContext(name="t", disk_path="/a.qcow2")
BKT_MARKER = '<metadata><bkt:vm xmlns:bkt="urn:bkt:vm:1"/></metadata>'


def test_render_writes_the_entry_virt_install_writes_next_to_bkts_marker(
    fixture_db: OsDatabase,
) -> None:
    domain = parse_xml(f"<domain><name>t</name>{BKT_MARKER}</domain>")
    OsField().render(domain, _vm("derived-2"), CTX)
    text = serialize(domain)
    assert "".join(text.split()) == "".join(
        (
            "<domain><name>t</name><metadata>"
            '<bkt:vm xmlns:bkt="urn:bkt:vm:1"/>'
            f'<libosinfo:libosinfo xmlns:libosinfo="{LIBOSINFO_NAMESPACE}">'
            '<libosinfo:os id="http://example.org/derived/2"/></libosinfo:libosinfo>'
            "</metadata></domain>"
        ).split()
    )
    assert OsField().parse(domain, CTX)["os"].value == "derived2"  # the first short id


def test_none_renders_nothing_and_patch_leaves_the_entry(fixture_db: OsDatabase) -> None:
    domain = parse_xml("<domain><name>t</name></domain>")
    OsField().render(domain, _vm(None), CTX)
    assert serialize(domain) == "<domain><name>t</name></domain>\n"
    assert OsField().parse(domain, CTX)["os"].value is None
    OsField().render(domain, _vm("base1"), CTX)
    before = serialize(domain)
    OsField().patch(domain, _vm(None), CTX)
    assert serialize(domain) == before


def test_patch_changes_only_the_os_id(fixture_db: OsDatabase) -> None:
    text = (
        f"<domain><name>t</name><metadata><other xmlns='urn:x'/>"
        f"<libosinfo:libosinfo xmlns:libosinfo='{LIBOSINFO_NAMESPACE}'>"
        "<libosinfo:os id='http://example.org/base/1'/></libosinfo:libosinfo>"
        "</metadata></domain>"
    )
    domain = parse_xml(text)
    OsField().patch(domain, _vm("base1"), CTX)
    assert serialize(domain) == serialize(parse_xml(text))  # in sync: a no-op
    OsField().patch(domain, _vm("clone3"), CTX)
    assert OsField().parse(domain, CTX)["os"].value == "clone3"
    assert serialize(domain) == serialize(parse_xml(text.replace("base/1", "clone/3")))
    bare = parse_xml("<domain><name>t</name></domain>")
    OsField().patch(bare, _vm("winx"), CTX)
    assert OsField().parse(bare, CTX)["os"].value == "winx"


def test_an_id_the_database_does_not_know_is_not_captured(fixture_db: OsDatabase) -> None:
    domain = parse_xml(
        f"<domain><metadata><l:libosinfo xmlns:l='{LIBOSINFO_NAMESPACE}'>"
        "<l:os id='http://example.org/gone'/></l:libosinfo></metadata></domain>"
    )
    reading = OsField().parse(domain, CTX)["os"]
    assert not reading.is_clean and "http://example.org/gone" in (reading.reason or "")


@needs_installed
@pytest.mark.parametrize("case", ["win11-spice", "win10-spice", "fedora37-spice"])
def test_capture_reads_the_os_of_a_virt_install_guest(
    case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OSINFO_SYSTEM_DIR", str(SYSTEM))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    osinfo.forget_databases()
    domain = parse_xml((VIRT_INSTALL / f"{case}.xml").read_text())
    assert OsField().parse(domain, CTX)["os"].value == case.split("-")[0]
    osinfo.forget_databases()


# -- the commands: validate prints the warnings, the others do not -------------------------


def _cli(directory: Path, *args: str) -> Any:
    from click.testing import CliRunner

    from bkt_core.cli import build_cli
    from bkt_vm_plugin.testing import FakeLibvirt

    host = FakeLibvirt().host(directory)
    return CliRunner().invoke(build_cli(host), ["-C", str(directory), "--color", "never", *args])


def test_validate_prints_warnings_on_stderr_and_succeeds(
    fixture_db: OsDatabase, tmp_path: Path
) -> None:
    directory = _write(tmp_path / "m", MANIFEST)
    result = _cli(directory, "vm", "validate")
    assert (result.exit_code, result.stdout) == (0, "ok: 1 VM\n")
    assert result.stderr == (
        f"{directory / 'vms.json'}:4:20: warning: vms.w.memory_gb: "
        "1 GiB is below what base1 recommends (2 GiB)\n"
    )
    quiet = _cli(directory, "-q", "vm", "validate")
    assert (quiet.exit_code, quiet.stderr) == (0, "")


def test_validate_prints_warnings_with_the_errors(fixture_db: OsDatabase, tmp_path: Path) -> None:
    document = json.loads(json.dumps(MANIFEST))
    document["vms"]["w"]["vcpus"] = 0
    result = _cli(_write(tmp_path / "m", document), "vm", "validate")
    assert isinstance(result.exception, ManifestError)  # bkt_core.cli.main reports it
    assert [d.path for d in result.exception.diagnostics] == ["vms.w.vcpus"]
    assert "warning: vms.w.memory_gb" in result.stderr


def test_other_commands_do_not_print_the_warnings(fixture_db: OsDatabase, tmp_path: Path) -> None:
    result = _cli(_write(tmp_path / "m", MANIFEST), "vm", "status")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "memory_gb" not in result.stderr


def test_the_plugin_uses_only_the_public_api_and_its_own_reader() -> None:
    from tests.unit.test_example_imports import internal_imports

    plugin = (ROOT / "bkt_vm_plugin" / "os_field.py").read_text()
    reader = {"bkt_vm_plugin.osinfo", "bkt_vm_plugin.osinfo_location"}
    assert {m for _line, m in internal_imports(plugin)} == reader
    text = (ROOT / "bkt_vm_plugin" / "osinfo.py").read_text()
    # the reader keeps its index through bkt's cache files, and parses with the API's parser
    found = {m for _line, m in internal_imports(text)}
    assert found == {"bkt_core.cache", "bkt_vm_plugin.osinfo_location"}
    location = (ROOT / "bkt_vm_plugin" / "osinfo_location.py").read_text()
    # and the database's identity is a digest as bkt's cache files make them
    assert {m for _line, m in internal_imports(location)} == {"bkt_core.cache"}


def test_any_short_id_of_the_os_is_in_sync_and_capture_keeps_the_manifests(
    fixture_db: OsDatabase,
) -> None:
    field = OsField()
    domain = parse_xml("<domain><name>t</name></domain>")
    field.render(domain, _vm("derived-2"), CTX)
    readings = field.parse(domain, CTX)
    assert readings["os"].value == field.desired(_vm("derived-2"), CTX)["os"] == "derived2"
    assert field.capture(readings, _vm("derived-2"), CTX) == {"os": "derived-2"}
    assert field.capture(readings, _vm("base1"), CTX) == {"os": "derived2"}
    assert field.capture(readings, None, None) == {"os": "derived2"}


@pytest.mark.parametrize("start", [None, "base1", "derived-2", "clone3", "winx"])
@pytest.mark.parametrize("wanted", ["base1", "derived-2", "clone3", "oldwin"])
def test_the_round_trip_laws(fixture_db: OsDatabase, start: str | None, wanted: str) -> None:
    field = OsField()
    rendered = parse_xml(f"<domain><name>t</name>{BKT_MARKER}</domain>")
    field.render(rendered, _vm(wanted), CTX)
    desired = field.desired(_vm(wanted), CTX)
    assert field.parse(rendered, CTX)["os"].value == desired["os"]  # parse . render
    domain = parse_xml(f"<domain><name>t</name>{BKT_MARKER}</domain>")
    field.render(domain, _vm(start), CTX)
    field.patch(domain, _vm(wanted), CTX)
    assert field.parse(domain, CTX)["os"].value == desired["os"]  # parse . patch
    assert "urn:bkt:vm:1" in serialize(domain)  # bkt's marker is kept
    again = serialize(domain)
    field.patch(domain, _vm(wanted), CTX)
    assert serialize(domain) == again  # patch in sync is a no-op


def test_disable_plugin_os_on_the_command_line(run_bkt: Any, tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", MANIFEST)
    env = {"OSINFO_SYSTEM_DIR": str(FIXTURE_DB), "OSINFO_LOCAL_DIR": str(tmp_path / "none")}
    env["OSINFO_USER_DIR"] = str(tmp_path / "none")
    assert run_bkt("-C", str(directory), "vm", "validate", env=env).returncode == 0
    blocked = run_bkt("--disable-plugin", "os", "-C", str(directory), "vm", "validate", env=env)
    assert blocked.returncode == 2
    assert 'vms.w.os: unknown field "os"' in blocked.stderr


# -- bkt's caches off: the database's index is neither read nor written -------------------------


def test_no_cache_reaches_the_database_index(run_bkt: Any, tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", MANIFEST)
    env = {"OSINFO_SYSTEM_DIR": str(FIXTURE_DB), "OSINFO_LOCAL_DIR": str(tmp_path / "none")}
    env["OSINFO_USER_DIR"] = str(tmp_path / "none")
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    index = tmp_path / "cache" / "bkt" / osinfo.INDEX_FILE
    assert run_bkt("--no-cache", "-C", str(directory), "vm", "validate", env=env).returncode == 0
    assert not index.exists()
    assert run_bkt("-C", str(directory), "vm", "validate", env=env).returncode == 0
    assert index.is_file()
    # a corrupt index is never read with --no-cache: the database's files are
    index.write_text(json.dumps({"format": osinfo.INDEX_FORMAT, "identity": "x"}))
    before = index.read_text()
    assert run_bkt("--no-cache", "-C", str(directory), "vm", "validate", env=env).returncode == 0
    assert index.read_text() == before


@pytest.mark.parametrize("cache", [False, True])
def test_a_host_without_caches_tells_the_plugin(
    fixture_db: OsDatabase, tmp_path: Path, cache: bool
) -> None:
    from bkt_vm_plugin.testing import FakeLibvirt

    index = tmp_path / "cache" / "bkt" / osinfo.INDEX_FILE
    index.unlink()
    osinfo.forget_databases()
    libvirt = FakeLibvirt()
    sub: Any = vm_subsystem(libvirt.host(_write(tmp_path / "m", MANIFEST), cache=cache))
    (field,) = [f for f in sub.mapping.fields if isinstance(f, OsField)]
    assert field.cache is cache
    sub.load()  # fills the VM's devices from its OS: the hook opens the database
    sub.status()
    assert index.exists() is cache
    # outside a host's hook, only $BKT_NO_CACHE counts
    from bkt_core.cache import cache_enabled

    assert cache_enabled()


def test_a_cached_verdict_does_not_outlive_an_os_removed_from_the_database(
    fixture_db: OsDatabase, tmp_path: Path
) -> None:
    # The database is a directory of one's own ($OSINFO_SYSTEM_DIR), edited in place.
    directory = _write(tmp_path / "m", MANIFEST)

    def load() -> Any:
        osinfo.forget_databases()  # as the next command would
        host = Host(directory, entry_points=False, plugins=default_plugins())
        return host.subsystem("vm").load()  # type: ignore[attr-defined]

    assert load().vms["w"].field("os") == "base1"
    cached = list((tmp_path / "cache" / "bkt").glob("manifest-*.json"))
    assert cached  # the verdict is cached
    base = Path(os.environ["OSINFO_SYSTEM_DIR"]) / "os" / "example.org" / "base-1.xml"
    info = base.stat()
    base.write_text(
        base.read_text().replace("<short-id>base1</short-id>", "<short-id>b1</short-id>")
    )
    os.utime(base, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    with pytest.raises(ManifestError) as caught:
        load()
    assert 'unknown OS "base1"' in str(caught.value.diagnostics[0])


def test_the_schema_accepts_a_null_os(tmp_path: Path) -> None:
    import jsonschema

    host = Host(tmp_path, entry_points=False, plugins=default_plugins())
    schema = host.schema("vm")
    assert schema["$defs"]["VmDefinition"]["properties"]["os"]["type"] == ["string", "null"]
    entry = {**MANIFEST["vms"]["w"], "os": None}
    jsonschema.validate({"vms": {"w": entry}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"vms": {"w": {**entry, "os": 11}}}, schema)
