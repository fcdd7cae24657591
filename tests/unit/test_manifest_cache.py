"""The cache of validated manifests: a manifest is validated once, and again whenever anything
its verdict depends on changes (every invalidation cause below); a broken cache or one that
cannot be written changes nothing but time; ``--no-cache`` and ``$BKT_NO_CACHE`` bypass it."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bkt_core
from bkt_core import hookimpl
from bkt_core.errors import ManifestError
from bkt_core.host import Host
from bkt_core.manifest_cache import FORMAT
from bkt_vm_plugin.definition import VmManifest
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, ManifestDir, vm_subsystem


def vm(**fields: Any) -> dict[str, Any]:
    return {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": "~/disks/web.qcow2",
        "disk_size_gb": 1,
        "boot": "bios",
        "network": "default",
        "graphics": "none",
        **fields,
    }


class Counter:
    """How many times the manifest was validated (not taken from the cache)."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Counter:
    counter = Counter()
    real = VmSubsystem._validate_sources

    def counted(self: VmSubsystem, sources: Any, home: str | None, *rest: Any) -> VmManifest:
        counter.count += 1
        return real(self, sources, home, *rest)

    monkeypatch.setattr(VmSubsystem, "_validate_sources", counted)
    return counter


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache-home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BKT_NO_CACHE", raising=False)
    monkeypatch.delenv("BKT_HOSTNAME", raising=False)
    return home


@pytest.fixture
def manifests(tmp_path: Path) -> ManifestDir:
    directory = ManifestDir(tmp_path / "manifests")
    directory.write({"web": vm()})
    return directory


def entries(cache_home: Path) -> list[Path]:
    return sorted((cache_home / "bkt").glob("manifest-*.json"))


def load(manifests: ManifestDir, *plugins: object, **kwargs: Any) -> VmManifest:
    """The manifest as a fresh host (a new command) loads it."""
    host = FakeLibvirt().host(manifests, plugins, **kwargs)
    return vm_subsystem(host).load()


# -- hits and misses ------------------------------------------------------------------------------


def test_a_valid_manifest_is_validated_once(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    first = load(manifests)
    assert validations.count == 1
    assert len(entries(cache_home)) == 1
    second = load(manifests)
    assert validations.count == 1, "the second command used the cache"
    assert second == first
    assert second.vms["web"].written == first.vms["web"].written
    assert second.vms["web"].layout.names == first.vms["web"].layout.names


def test_an_invalid_manifest_is_never_cached(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    manifests.write({"web": vm(memory_gb=0)})
    for attempt in (1, 2):
        with pytest.raises(ManifestError):
            load(manifests)
        assert validations.count == attempt
    assert entries(cache_home) == []


def test_an_edit_in_the_same_second_with_the_same_size_is_seen(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    load(manifests)
    info = os.stat(manifests.file)
    text = manifests.file.read_text()
    edited = text.replace('"memory_gb": 1', '"memory_gb": 2')
    assert len(edited) == len(text) and edited != text
    manifests.file.write_text(edited)
    os.utime(manifests.file, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert os.stat(manifests.file).st_size == info.st_size
    assert load(manifests).vms["web"].memory_gb == 2
    assert validations.count == 2


def test_a_touch_without_an_edit_still_hits(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    first = load(manifests)
    later = time.time() + 5
    os.utime(manifests.file, (later, later))
    assert load(manifests) == first
    assert validations.count == 1


def test_an_override_file_added_or_edited_is_seen(
    cache_home: Path,
    manifests: ManifestDir,
    validations: Counter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BKT_HOSTNAME", "laptop")
    assert load(manifests).vms["web"].memory_gb == 1
    override = manifests.path / "vms.laptop.json"
    override.write_text('{"vms": {"web": {"memory_gb": 4}}}')
    assert load(manifests).vms["web"].memory_gb == 4
    assert validations.count == 2
    override.write_text('{"vms": {"web": {"memory_gb": 8}}}')
    assert load(manifests).vms["web"].memory_gb == 8
    assert load(manifests).vms["web"].memory_gb == 8
    assert validations.count == 3
    override.unlink()
    assert load(manifests).vms["web"].memory_gb == 1
    assert validations.count == 3, "the manifest without the override is still cached"


def test_another_home_is_another_key(
    cache_home: Path,
    manifests: ManifestDir,
    validations: Counter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    load(manifests)
    monkeypatch.setenv("HOME", str(tmp_path / "other-home"))
    load(manifests)
    assert validations.count == 2
    # With two VMs on one disk under one home and not under another, the verdict differs.
    manifests.write({"a": vm(), "b": vm(disk_path=str(tmp_path / "home" / "disks" / "web.qcow2"))})
    assert set(load(manifests).vms) == {"a", "b"}
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(ManifestError, match="not valid"):
        load(manifests)


def test_a_new_bkt_version_is_another_key(
    cache_home: Path,
    manifests: ManifestDir,
    validations: Counter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load(manifests)
    monkeypatch.setattr(bkt_core, "__version__", bkt_core.__version__ + ".post1")
    load(manifests)
    load(manifests)
    assert validations.count == 2


def test_validate_always_validates_and_refreshes_the_cache(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    host = FakeLibvirt().host(manifests)
    assert host.validate("vm") == 1
    assert FakeLibvirt().host(manifests).validate("vm") == 1
    assert validations.count == 2
    (entry,) = entries(cache_home)
    entry.write_text("{}")
    FakeLibvirt().host(manifests).validate("vm")
    assert json.loads(entry.read_text())["format"] == FORMAT, "rewritten"
    load(manifests)
    assert validations.count == 3


# -- plugins ------------------------------------------------------------------------------------


class Tags:
    """Declares ``tags: list[str]`` (default empty), and refuses the tag ``bad``."""

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> dict[str, Any] | None:
        from pydantic import Field

        return {"tags": (list[str], Field(default_factory=list))} if subsystem == "vm" else None

    @hookimpl
    def bkt_validate_manifest(self, subsystem: str, document: Any) -> list[Any]:
        from bkt_core import Problem

        vms = document.get("vms", {}) if isinstance(document, dict) else {}
        return [
            Problem(("vms", name, "tags"), "bad tag")
            for name, entry in vms.items()
            if isinstance(entry, dict) and "bad" in (entry.get("tags") or ())
        ]


def test_a_plugin_installed_or_removed_is_seen(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    without = load(manifests)
    assert "tags" not in without.vms["web"].layout.names
    with_tags = load(manifests, ("tags", Tags()))
    assert with_tags.vms["web"].field("tags") == ()
    assert validations.count == 2
    assert load(manifests, ("tags", Tags())) == with_tags
    assert "tags" not in load(manifests).vms["web"].layout.names
    assert validations.count == 2, "both plugin sets are cached"
    manifests.write({"web": vm(tags=["bad"])})
    with pytest.raises(ManifestError, match="not valid"):
        load(manifests, ("tags", Tags()))
    with pytest.raises(ManifestError, match="not valid"):
        load(manifests)


class Keyed:
    """A plugin whose verdict depends on outside data: its key."""

    def __init__(self, key: str | None) -> None:
        self.key = key

    @hookimpl
    def bkt_manifest_cache_key(self, subsystem: str) -> str | None:
        return self.key if subsystem == "vm" else None


def test_a_plugins_cache_key_is_part_of_the_key(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    load(manifests, ("keyed", Keyed("db-1")))
    load(manifests, ("keyed", Keyed("db-1")))
    assert validations.count == 1
    load(manifests, ("keyed", Keyed("db-2")))
    assert validations.count == 2
    load(manifests, ("keyed", Keyed(None)))
    assert validations.count == 3


def test_the_facade_gathers_the_keys_in_order() -> None:
    host = Host(
        entry_points=False,
        plugins=[("a", Keyed("one")), ("b", Keyed(None)), ("c", Keyed("three"))],
    )
    assert sorted(host.manifest_cache_keys("vm")) == ["one", "three"]
    assert host.manifest_cache_keys("other") == []


def test_a_cache_key_that_is_not_a_string_names_the_plugin() -> None:
    from bkt_core.errors import PluginError

    host = Host(entry_points=False, plugins=[("liar", Keyed(42))])  # type: ignore[arg-type]
    with pytest.raises(PluginError, match=r"liar.*bkt_manifest_cache_key.*int"):
        host.manifest_cache_keys("vm")


def _distribution(site: Path, version: str) -> None:
    """A distribution ``cacheplug`` in ``site`` whose plugin declares a ``tags`` field."""
    info = site / "cacheplug-1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cacheplug\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[bkt]\ncacheplug = cacheplug\n")
    module = site / "cacheplug.py"
    if not module.exists():
        module.write_text(
            "from bkt_core import hookimpl\n"
            "@hookimpl\n"
            "def bkt_manifest_fields(subsystem):\n"
            "    from pydantic import Field\n"
            "    return {'owner': (str, Field(default='nobody'))} if subsystem == 'vm' else None\n"
        )
        # Written long ago: a module changed just now keeps a verdict from being stored.
        past = time.time() - 60
        os.utime(module, (past, past))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    _distribution(site, "1.0")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("cacheplug", None)


def test_a_plugin_upgrade_is_seen(
    cache_home: Path, manifests: ManifestDir, validations: Counter, site: Path
) -> None:
    def command() -> VmManifest:
        host = Host(manifests, runner=FakeLibvirt())
        assert next(i for i in host.plugins() if i.name == "cacheplug").version is not None
        return vm_subsystem(host).load()

    assert command().vms["web"].field("owner") == "nobody"
    command()
    assert validations.count == 1
    _distribution(site, "2.0")
    command()
    command()
    assert validations.count == 2


def test_a_plugin_module_changed_just_now_keeps_the_verdict_from_being_stored(
    cache_home: Path,
    manifests: ManifestDir,
    validations: Counter,
    site: Path,
) -> None:
    os.utime(site / "cacheplug.py")  # now
    host = Host(manifests, runner=FakeLibvirt())
    vm_subsystem(host).load()
    assert entries(cache_home) == []
    assert any("just changed" in note for note in host.cache_notes)


# -- a cache that cannot be used --------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],
        lambda text: "",
        lambda text: "\0\xff garbage",
        lambda text: text.replace(f'"format":{FORMAT}', '"format":99'),
        lambda text: text.replace('"memory_gb":1', '"memory_gb":"one"').replace(
            '"names":[', '"names":[1,'
        ),
        lambda text: text.replace('"vms":{"web":{', '"vms":{"web":{"nonsense":1,'),
        lambda text: "[]",
    ],
    ids=[
        "truncated",
        "empty",
        "garbage",
        "foreign-format",
        "bad-layout",
        "unknown-field",
        "array",
    ],
)
def test_a_damaged_entry_is_ignored_and_replaced(
    cache_home: Path,
    manifests: ManifestDir,
    validations: Counter,
    damage: Any,
) -> None:
    expected = load(manifests)
    (entry,) = entries(cache_home)
    entry.write_text(damage(entry.read_text()))
    host = FakeLibvirt().host(manifests)
    assert vm_subsystem(host).load() == expected
    assert validations.count == 2
    assert [note for note in host.cache_notes if str(entry) in note], "-v says why"
    assert load(manifests) == expected
    assert validations.count == 2, "the entry was replaced by a good one"


def test_an_unreadable_entry_is_ignored(
    cache_home: Path, manifests: ManifestDir, validations: Counter
) -> None:
    expected = load(manifests)
    (entry,) = entries(cache_home)
    entry.unlink()
    entry.mkdir()  # not a regular file: whoever runs the test, it cannot be read as one
    host = FakeLibvirt().host(manifests)
    assert vm_subsystem(host).load() == expected
    assert any(
        "not a regular file" in note or "cannot be read" in note for note in host.cache_notes
    )


def test_a_cache_directory_that_cannot_be_written_changes_nothing(
    tmp_path: Path, manifests: ManifestDir, validations: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file where the directory should be: even root cannot write below it.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "bkt").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    host = FakeLibvirt().host(manifests)
    first = vm_subsystem(host).load()
    assert any("was not written" in note for note in host.cache_notes)
    assert load(manifests) == first
    assert validations.count == 2
    assert (blocked / "bkt").read_text() == "not a directory"


@pytest.mark.parametrize("how", ["host", "env"])
def test_the_cache_can_be_bypassed(
    cache_home: Path,
    manifests: ManifestDir,
    validations: Counter,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    load(manifests)
    if how == "env":
        monkeypatch.setenv("BKT_NO_CACHE", "1")
        options: dict[str, Any] = {}
    else:
        options = {"cache": False}
    manifests.write({"web": vm(vcpus=2)})
    load(manifests, **options)
    load(manifests, **options)
    assert validations.count == 3, "validated every time"
    assert len(entries(cache_home)) == 1, "nothing written"


def test_the_cli_bypasses_the_cache_with_no_cache_and_says_why_only_with_v(
    cache_home: Path, manifests: ManifestDir, capsys: pytest.CaptureFixture[str]
) -> None:
    from bkt_core.cli import main

    # fetch-iso reads the manifest as status and sync do, and needs no libvirt here.
    args = ["-C", str(manifests.path), "vm", "fetch-iso", "web"]
    said = "VM web has no URL ISO sources: nothing to fetch\n"
    assert main(["--no-cache", *args]) == 0
    assert main([*args, "--no-cache"]) == 0
    assert entries(cache_home) == []
    assert main(args) == 0
    (entry,) = entries(cache_home)
    entry.write_text("{")
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().err == said
    entry.write_text("{")
    assert main(["-v", *args]) == 0
    assert capsys.readouterr().err == (
        said + f"the validated manifest {entry} is not valid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1)): "
        "not used\n"
    )


def test_the_cli_works_when_the_cache_cannot_be_written(
    tmp_path: Path,
    manifests: ManifestDir,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bkt_core.cli import main

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "bkt").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    args = ["-C", str(manifests.path), "vm", "fetch-iso", "web"]
    for _ in range(2):
        assert main(args) == 0
        assert capsys.readouterr().err == "VM web has no URL ISO sources: nothing to fetch\n"
    assert main(["-v", *args]) == 0
    assert "was not written: File exists" in capsys.readouterr().err


def test_a_host_without_a_cache_directory_validates(
    manifests: ManifestDir, validations: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    manifests.write({"web": vm(disk_path="/var/tmp/web.qcow2")})
    load(manifests)
    load(manifests)
    assert validations.count == 2


# -- the store itself ------------------------------------------------------------------------


def _entry(tmp_path: Path, text: str = '{"items": [1]}') -> Any:
    from bkt_core.manifest import ManifestSource
    from bkt_core.manifest_cache import ManifestCache

    host = Host(tmp_path, entry_points=False)
    source = ManifestSource.parse(tmp_path / "items.json", text)
    return ManifestCache(host, "items", [source], home="/home/user")


def test_any_subsystem_stores_opaque_json(cache_home: Path, tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    assert entry.get(lambda value: value) is None
    entry.put(lambda: {"anything": [1, "two", None]})
    assert _entry(tmp_path).get(lambda value: value) == {"anything": [1, "two", None]}
    assert _entry(tmp_path, '{"items": [2]}').get(lambda value: value) is None
    assert _entry(tmp_path).key != _entry(tmp_path, '{"items": [2]}').key
    assert _entry(tmp_path).key == _entry(tmp_path).key


def test_a_value_that_cannot_be_stored_is_not_stored(cache_home: Path, tmp_path: Path) -> None:
    entry = _entry(tmp_path)

    def refuse() -> Any:
        raise ValueError("no exact JSON form")

    entry.put(refuse)
    entry.put(lambda: {"set": {1, 2}})
    entry.put(lambda: {"nan": float("nan")})
    assert entries(cache_home) == []
    assert entry.host.cache_notes[0].endswith("was not written: no exact JSON form")
    assert len(entry.host.cache_notes) == 3


def test_concurrent_writers_and_readers_never_see_half_an_entry(
    cache_home: Path, tmp_path: Path
) -> None:
    import threading

    values = [{"writer": n, "payload": "x" * 200_000} for n in range(3)]
    seen: list[Any] = []
    stop = threading.Event()

    def write(value: dict[str, Any]) -> None:
        entry = _entry(tmp_path)
        while not stop.is_set():
            entry.put(lambda: value)

    def read() -> None:
        entry = _entry(tmp_path)
        for _ in range(200):
            found = entry.get(lambda value: value)
            if found is not None:
                seen.append(found)
        assert entry.host.cache_notes == []

    writers = [threading.Thread(target=write, args=(v,)) for v in values]
    for thread in writers:
        thread.start()
    try:
        read()
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    assert seen, "the readers found entries"
    assert all(value in values for value in seen)
    assert [p.name for p in (cache_home / "bkt").iterdir() if p.name.endswith(".tmp")] == []


def test_the_caches_digest_is_hashlibs_sha256() -> None:
    # Taken from the builtin module to spare every command OpenSSL: the same digest, so the
    # keys and names of existing cache files (and the ISO cache's) stay what they were.
    import hashlib

    from bkt_core.cache import sha256_hex

    for data in (b"", b"bkt", "é\udcff".encode("utf-8", "surrogateescape") * 1000):
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest()
