"""The osinfo database reader: files, inheritance, the cached index, lookups and their errors,
with a small database of its own (tests/fixtures/osinfo) and with the one installed here."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bkt_vm_plugin import osinfo, osinfo_location
from bkt_vm_plugin.osinfo import (
    INSTALL_HINT,
    VIRTIO_DISK,
    VIRTIO_GPU,
    VIRTIO_NET,
    DatabaseMissing,
    OsDatabase,
    UnknownOs,
    build_index,
    database_identity,
    database_roots,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "osinfo"
SYSTEM = Path("/usr/share/osinfo")
GIB = 1024**3

needs_installed = pytest.mark.skipif(
    not (SYSTEM / "os").is_dir(), reason="osinfo-db is not installed here"
)


@pytest.fixture
def db_root(tmp_path: Path) -> Path:
    """A copy of the fixture database that a test may change."""
    root = tmp_path / "db"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.fixture
def database(db_root: Path) -> OsDatabase:
    return OsDatabase.open([db_root], cache=False)


# -- finding the database ------------------------------------------------------------------


def test_roots_are_libosinfos_system_local_and_user_directories() -> None:
    env = {"HOME": "/home/u"}
    roots = database_roots(env)
    assert roots[1:] == [Path("/etc/osinfo"), Path("/home/u/.config/osinfo")]
    assert roots[0] in (Path("/usr/share/osinfo"), Path("/usr/share/libosinfo/db"))
    env = {
        "OSINFO_SYSTEM_DIR": "/s",
        "OSINFO_LOCAL_DIR": "/l",
        "XDG_CONFIG_HOME": "/c",
        "HOME": "/home/u",
    }
    assert database_roots(env) == [Path("/s"), Path("/l"), Path("/c/osinfo")]
    assert database_roots({"OSINFO_SYSTEM_DIR": "/s", "OSINFO_USER_DIR": "/u"})[2] == Path("/u")


def test_no_database_is_an_error_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(DatabaseMissing) as caught:
        OsDatabase.open([tmp_path / "none", tmp_path / "neither"], cache=False)
    message = str(caught.value)
    assert "osinfo-db" in message and INSTALL_HINT in message
    assert str(tmp_path / "none") in message
    assert database_identity([tmp_path / "none"]) is None


# -- reading and inheritance ---------------------------------------------------------------


def test_an_os_has_its_own_values(database: OsDatabase) -> None:
    base = database.profile("base1")
    assert base.id == "http://example.org/base/1"
    assert base.name == "Example Base 1"  # not a translation
    assert (base.family, base.distro, base.vendor, base.version) == (
        "linux",
        "base",
        "Example",
        "1",
    )
    assert base.supports(*VIRTIO_DISK) and base.supports(*VIRTIO_NET)
    assert base.supports(*VIRTIO_GPU)
    assert base.supports_firmware("bios") is True and not base.requires_efi()
    assert base.resource("minimum", "ram") == 1 * GIB
    assert base.resource("recommended", "storage") == 20 * GIB
    assert base.resource("minimum", "cpu") is None


def test_derives_from_inherits_devices_and_drops_unsupported_ones(database: OsDatabase) -> None:
    derived = database.profile("derived2")
    assert derived.supports(*VIRTIO_DISK) and derived.supports(*VIRTIO_NET)
    assert not derived.supports(*VIRTIO_GPU)  # supported="false" removes the inherited one
    assert derived.family == "linux"  # stated only by the OS it derives from
    # what it says of no resources, it has from the OS it derives from
    assert derived.resource("recommended", "ram") == 2 * GIB


def test_a_drop_in_directory_adds_to_the_os_of_the_same_id(database: OsDatabase) -> None:
    assert database.profile("derived2").supports("http://pcisig.com/pci/1af4/1052")


def test_every_short_id_names_the_os(database: OsDatabase) -> None:
    both = database.profile("derived-2"), database.profile("derived2")
    assert both[0].id == both[1].id
    assert both[0].short_ids == ("derived2", "derived-2")
    assert database.short_id_of("http://example.org/derived/2") == "derived2"
    assert database.short_id_of("http://example.org/none") is None
    assert "derived-2" in database and "nothing" not in database


def test_clones_inherit_and_own_resources_are_not_mixed_with_inherited_ones(
    database: OsDatabase,
) -> None:
    clone = database.profile("clone3")
    assert clone.supports(*VIRTIO_DISK) and not clone.supports(*VIRTIO_GPU)
    assert clone.supports("http://pcisig.com/pci/1af4/1052")
    assert clone.supports_firmware("efi") is True  # from base1, through derived2
    assert clone.requires_efi()
    assert clone.resource("minimum", "ram") == 4 * GIB
    # it states resources of its own: none of base1's recommended ones are its
    assert clone.resource("recommended", "ram") is None


def test_several_oses_in_one_file_and_windows_families(database: OsDatabase) -> None:
    assert database.profile("winx").is_windows and database.profile("oldwin").is_windows
    assert not database.profile("base1").is_windows
    assert database.profile("oldwin").supports(osinfo.RTL8139)


def test_a_derives_from_loop_ends(database: OsDatabase) -> None:
    a = database.profile("loopa")
    assert a.supports(*VIRTIO_NET) and a.supports(*VIRTIO_DISK)


def test_a_broken_file_is_skipped_and_named(database: OsDatabase, db_root: Path) -> None:
    assert "broken" not in database
    assert [Path(path).name for path, _reason in database.skipped] == ["broken.xml"]
    assert database.profile("base1").short_id == "base1"  # the others are read


def test_unknown_id_names_the_closest(database: OsDatabase) -> None:
    with pytest.raises(UnknownOs) as caught:
        database.profile("derived3")
    assert caught.value.closest[0] in ("derived2", "derived-2")
    assert '"derived2"' in str(caught.value)
    with pytest.raises(UnknownOs) as caught:
        database.profile("zzzzzz")
    assert caught.value.closest == ()


def test_a_later_directory_replaces_a_file_of_the_same_name(db_root: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "os" / "example.org").mkdir(parents=True)
    text = (db_root / "os" / "example.org" / "base-1.xml").read_text()
    (local / "os" / "example.org" / "base-1.xml").write_text(
        text.replace("<short-id>base1</short-id>", "<short-id>base-one</short-id>")
    )
    database = OsDatabase.open([db_root, local], cache=False)
    assert "base-one" in database and "base1" not in database


# -- the cached index ----------------------------------------------------------------------


def test_a_warm_open_reads_the_index_and_no_database_file(
    db_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = str(tmp_path / "cache")
    first = OsDatabase.open([db_root], cache=True, cache_directory=cache)
    assert (Path(cache) / osinfo.INDEX_FILE).is_file()

    def no_scan(roots: Any) -> Any:
        raise AssertionError("the database was scanned")

    monkeypatch.setattr(osinfo, "build_index", no_scan)
    warm = OsDatabase.open([db_root], cache=True, cache_directory=cache)
    assert warm.profile("clone3") == first.profile("clone3")
    assert warm.identity == first.identity


def test_the_index_is_rebuilt_when_the_database_changes(db_root: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    OsDatabase.open([db_root], cache=True, cache_directory=cache)
    new = db_root / "os" / "example.org" / "new-4.xml"
    text = (db_root / "os" / "example.org" / "clone-3.xml").read_text()
    new.write_text(text.replace("clone/3", "new/4").replace(">clone3<", ">new4<"))
    # a file added changes its directory: the identity changes with it
    os.utime(new.parent, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert "new4" in OsDatabase.open([db_root], cache=True, cache_directory=cache)


def _edit_in_place(path: Path, old: str, new: str) -> None:
    """Change ``path``'s content as an editor does (its directory is not touched), and its
    modification time with it."""
    info = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))


def test_a_packaged_database_is_rebuilt_when_its_version_changes(
    db_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(osinfo_location, "PACKAGED_ROOTS", (db_root,))
    cache = str(tmp_path / "cache")
    OsDatabase.open([db_root], cache=True, cache_directory=cache)
    # a package's files are replaced, not edited: an edit alone is not looked for ...
    base = db_root / "os" / "example.org" / "base-1.xml"
    _edit_in_place(base, "<short-id>base1</short-id>", "<short-id>base-one</short-id>")
    assert "base1" in OsDatabase.open([db_root], cache=True, cache_directory=cache)
    # ... a new VERSION is
    (db_root / "VERSION").write_text("20991231\n")
    rebuilt = OsDatabase.open([db_root], cache=True, cache_directory=cache)
    assert "base-one" in rebuilt and "base1" not in rebuilt


def test_an_edit_in_place_under_a_system_directory_of_ones_own_is_seen(
    db_root: Path, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    before = OsDatabase.open([db_root], cache=True, cache_directory=cache)
    base = db_root / "os" / "example.org" / "base-1.xml"
    _edit_in_place(base, "<short-id>base1</short-id>", "<short-id>base-one</short-id>")
    after = OsDatabase.open([db_root], cache=True, cache_directory=cache)
    assert after.identity != before.identity
    assert "base-one" in after and "base1" not in after


def test_an_edit_in_a_local_directory_changes_the_identity(db_root: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "os" / "x").mkdir(parents=True)
    mine = local / "os" / "x" / "mine.xml"
    mine.write_text("<libosinfo/>")
    before = database_identity([db_root, local])
    mine.write_text("<libosinfo></libosinfo>")
    assert database_identity([db_root, local]) != before


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"format": 1}', b"\xff"])
def test_a_corrupt_index_is_rebuilt(db_root: Path, tmp_path: Path, content: bytes) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / osinfo.INDEX_FILE).write_bytes(content)
    database = OsDatabase.open([db_root], cache=True, cache_directory=str(cache))
    assert database.profile("base1").id == "http://example.org/base/1"
    assert json.loads((cache / osinfo.INDEX_FILE).read_text())["format"] == osinfo.INDEX_FORMAT


def test_an_unwritable_cache_only_costs_time(db_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    database = OsDatabase.open([db_root], cache=True, cache_directory=str(blocker / "sub"))
    assert "base1" in database


def test_no_cache_env_reads_the_files(
    db_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BKT_NO_CACHE", "1")
    OsDatabase.open([db_root], cache_directory=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


# -- the installed database ----------------------------------------------------------------


@needs_installed
def test_the_installed_database_resolves_every_os() -> None:
    index = build_index([SYSTEM])
    database = OsDatabase(index)
    assert len(database.short_ids()) > 500
    for short_id in database.short_ids():
        profile = database.profile(short_id)
        assert profile.id and profile.short_id in profile.short_ids
        assert database.short_id_of(profile.id) == profile.short_ids[0]


@needs_installed
def test_the_installed_database_knows_what_virt_install_knows() -> None:
    database = OsDatabase(build_index([SYSTEM]))
    win11 = database.profile("win11")
    assert win11.id == "http://microsoft.com/win/11" and win11.is_windows
    assert win11.requires_efi()
    assert win11.resource("minimum", "ram") == 4 * GIB
    assert win11.resource("minimum", "storage") == 64 * GIB
    assert not win11.supports(*VIRTIO_DISK)  # no virtio driver on the installer
    assert database.profile("win10").supports(osinfo.Q35)  # through win7 -> ... chain
    fedora = database.profile("fedora37")
    assert fedora.supports(*VIRTIO_DISK) and fedora.supports(*VIRTIO_GPU)
    assert not database.profile("ubuntu22.04").supports(*VIRTIO_GPU)
    with pytest.raises(UnknownOs) as caught:
        database.profile("win12")
    assert "win11" in caught.value.closest


# -- files and records that cannot be read -------------------------------------------------


def test_an_unknown_id_names_the_files_that_could_not_be_read(db_root: Path) -> None:
    base = db_root / "os" / "example.org" / "base-1.xml"
    base.write_text(base.read_text()[:-40])  # cut short: not well-formed
    database = OsDatabase.open([db_root], cache=False)
    with pytest.raises(UnknownOs) as caught:
        database.profile("base1")
    message = str(caught.value)
    assert "2 file(s) of the database could not be read, and may hold it" in message
    assert f"{base} (" in message and "broken.xml (" in message
    assert {Path(p).name for p, _r in caught.value.skipped} == {"base-1.xml", "broken.xml"}


def test_an_empty_database_says_it_is_not_installed(tmp_path: Path) -> None:
    (tmp_path / "db" / "os").mkdir(parents=True)
    database = OsDatabase.open([tmp_path / "db"], cache=False)
    with pytest.raises(UnknownOs) as caught:
        database.profile("win11")
    message = str(caught.value)
    assert message.startswith('unknown OS "win11": the osinfo database holds no OS')
    assert str(tmp_path / "db") in message and "not installed" in message
    assert INSTALL_HINT in message


@pytest.mark.parametrize(
    "forge",
    [
        lambda index: index["oses"].__setitem__(
            "http://example.org/base/1", json.dumps({"id": "http://example.org/base/1"})
        ),
        lambda index: index["oses"].__setitem__("http://example.org/base/1", "[1, 2]"),
        lambda index: index["oses"].pop("http://example.org/base/1"),
        # a record an OS inherits from
        lambda index: index["oses"].__setitem__(
            "http://example.org/base/1",
            json.dumps({**json.loads(index["oses"]["http://example.org/base/1"]), "devices": 1}),
        ),
    ],
    ids=["missing-keys", "not-a-record", "missing-os", "bad-parent"],
)
def test_a_forged_index_record_is_ignored_and_rebuilt(
    db_root: Path, tmp_path: Path, forge: Any
) -> None:
    cache = tmp_path / "cache"
    expected = OsDatabase.open([db_root], cache=True, cache_directory=str(cache))
    want = expected.profile("clone3"), expected.profile("base1")
    index_file = cache / osinfo.INDEX_FILE
    index = json.loads(index_file.read_text())
    forge(index)
    index_file.write_text(json.dumps(index))
    database = OsDatabase.open([db_root], cache=True, cache_directory=str(cache))
    assert (database.profile("clone3"), database.profile("base1")) == want
    # the index was written again, whole
    stored = json.loads(index_file.read_text())["oses"]["http://example.org/base/1"]
    assert json.loads(stored)["short_ids"] == ["base1"]


@pytest.mark.parametrize(
    "change",
    [{"short": {"base1": 3}}, {"skipped": [[1, 2, 3]]}, {"skipped": "x"}],
)
def test_a_forged_index_is_not_read(db_root: Path, tmp_path: Path, change: Any) -> None:
    cache = tmp_path / "cache"
    OsDatabase.open([db_root], cache=True, cache_directory=str(cache))
    index_file = cache / osinfo.INDEX_FILE
    index_file.write_text(json.dumps({**json.loads(index_file.read_text()), **change}))
    database = OsDatabase.open([db_root], cache=True, cache_directory=str(cache))
    assert database.profile("base1").id == "http://example.org/base/1"
    assert [Path(p).name for p, _r in database.skipped] == ["broken.xml"]
