"""The index of bkt entry points (bkt_core.plugin_index) and the cache files it lives in
(bkt_core.cache): what changes its key, and that a bad index is never used."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bkt_core import cache, plugin_index
from bkt_core.host import Host
from bkt_core.plugin_index import IndexedEntryPoint

# Within this many seconds of a change, the index is not stored (the real margin is 2 s).
RACY = 0.05


def settle() -> None:
    """Wait until what was just written is older than the racy margin, and until the
    filesystem's clock has ticked, so that the next change has another timestamp."""
    time.sleep(RACY * 2)


class Site:
    """A directory on ``sys.path`` that distributions are installed into and removed
    from, the way pip does it: one ``<name>-<version>.dist-info`` directory each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def meta(self, dist: str, version: str) -> Path:
        return self.root / f"{dist.replace('-', '_')}-{version}.dist-info"

    def install(self, dist: str, version: str, points: dict[str, str]) -> Path:
        meta = self.meta(dist, version)
        meta.mkdir()
        (meta / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        lines = "".join(f"{name} = {value}\n" for name, value in points.items())
        (meta / "entry_points.txt").write_text(f"[bkt]\n{lines}")
        return meta

    def uninstall(self, dist: str, version: str) -> None:
        meta = self.meta(dist, version)
        for file in meta.iterdir():
            file.unlink()
        meta.rmdir()


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.site = Site(tmp_path / "site")
        self.cache_home = tmp_path / "cache-home"
        self.notes: list[str] = []

    @property
    def files(self) -> list[Path]:
        return sorted((self.cache_home / "bkt").glob("entry-points-*.json"))

    @property
    def index(self) -> Path:
        (file,) = self.files
        return file

    def entries(self, use_cache: bool = True) -> list[IndexedEntryPoint]:
        importlib.invalidate_caches()  # importlib.metadata's own cache, within this process
        return plugin_index.entry_points(use_cache=use_cache, notes=self.notes)

    def ours(self, use_cache: bool = True) -> list[tuple[str, str, str | None, str | None]]:
        """The entry points of the test's distributions (named ``fake-*``)."""
        return [
            (ep.name, ep.value, ep.distribution, ep.version)
            for ep in self.entries(use_cache)
            if (ep.distribution or "").startswith("fake-")
        ]

    def truth(self) -> list[IndexedEntryPoint]:
        """What importlib.metadata itself finds now."""
        importlib.invalidate_caches()
        found = []
        for ep in importlib.metadata.entry_points(group="bkt"):
            assert ep.dist is not None
            found.append(IndexedEntryPoint(ep.name, ep.value, ep.dist.name, ep.dist.version))
        return found


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    setup = Env(tmp_path)
    monkeypatch.setattr(sys, "path", [str(setup.site.root), *sys.path])
    monkeypatch.setenv("XDG_CACHE_HOME", str(setup.cache_home))
    monkeypatch.setattr(plugin_index, "RACY_SECONDS", RACY)
    yield setup
    importlib.invalidate_caches()


def forbid_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def scan() -> None:
        raise AssertionError("the distributions were read: the index was not used")

    monkeypatch.setattr(plugin_index, "scan", scan)


# -- the index is written, then used ---------------------------------------------------------


def test_the_index_is_written_and_then_used_instead_of_reading_the_distributions(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha:plugin"})
    settle()
    first = env.entries()
    assert first == env.truth()
    assert ("alpha", "fake_alpha:plugin", "fake-alpha", "1.0") in [
        (ep.name, ep.value, ep.distribution, ep.version) for ep in first
    ]
    document = json.loads(env.index.read_text())
    assert document["format"] == plugin_index.FORMAT
    assert document["sys_path"] == [os.path.abspath(p or ".") for p in sys.path]

    forbid_scan(monkeypatch)
    assert env.entries() == first
    assert env.notes == []


def test_without_the_cache_nothing_is_read_or_written(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    settle()
    assert env.entries(use_cache=False) == env.truth()
    assert not env.cache_home.exists()
    env.entries()
    env.index.write_text("not json")
    assert env.entries(use_cache=False) == env.truth()
    assert env.notes == [], "a corrupt index that is not read is not reported"


def test_an_index_of_something_changed_just_now_is_used_but_not_stored(env: Env) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    assert env.ours() == [("alpha", "fake_alpha", "fake-alpha", "1.0")]
    assert env.files == [], "the site changed less than RACY_SECONDS ago"
    settle()
    env.entries()
    assert len(env.files) == 1


# -- what changes the key ----------------------------------------------------------------------


def _install_another(env: Env) -> None:
    env.site.install("fake-beta", "2.0", {"beta": "fake_beta"})


def _uninstall(env: Env) -> None:
    env.site.uninstall("fake-alpha", "1.0")


def _upgrade(env: Env) -> None:
    env.site.uninstall("fake-alpha", "1.0")
    env.site.install("fake-alpha", "1.1", {"alpha": "fake_alpha", "alpha2": "fake_alpha.two"})


def _rewrite_entry_points_in_place(env: Env) -> None:
    # What setup.py develop does to the .egg-info of a project installed that way.
    points = env.site.meta("fake-alpha", "1.0") / "entry_points.txt"
    with points.open("r+") as file:
        file.write("[bkt]\nomega = fake_alpha:other\n")
        file.truncate()


def _rewrite_version_in_place(env: Env) -> None:
    metadata = env.site.meta("fake-alpha", "1.0") / "METADATA"
    with metadata.open("r+") as file:
        file.write("Metadata-Version: 2.1\nName: fake-alpha\nVersion: 1.0.post1\n")
        file.truncate()


def _add_entry_points_to_a_distribution_without(env: Env) -> None:
    meta = env.site.meta("fake-gamma", "3.0")
    (meta / "entry_points.txt").write_text("[bkt]\ngamma = fake_gamma\n")


def _add_an_egg_info(env: Env) -> None:
    egg = env.site.root / "fake_delta.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: fake-delta\nVersion: 0.1\n")
    (egg / "entry_points.txt").write_text("[bkt]\ndelta = fake_delta\n")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            _install_another,
            [
                ("alpha", "fake_alpha", "fake-alpha", "1.0"),
                ("beta", "fake_beta", "fake-beta", "2.0"),
            ],
        ),
        (_uninstall, []),
        (
            _upgrade,
            [
                ("alpha", "fake_alpha", "fake-alpha", "1.1"),
                ("alpha2", "fake_alpha.two", "fake-alpha", "1.1"),
            ],
        ),
        (_rewrite_entry_points_in_place, [("omega", "fake_alpha:other", "fake-alpha", "1.0")]),
        (_rewrite_version_in_place, [("alpha", "fake_alpha", "fake-alpha", "1.0.post1")]),
        (
            _add_entry_points_to_a_distribution_without,
            [
                ("alpha", "fake_alpha", "fake-alpha", "1.0"),
                ("gamma", "fake_gamma", "fake-gamma", "3.0"),
            ],
        ),
        (
            _add_an_egg_info,
            [
                ("alpha", "fake_alpha", "fake-alpha", "1.0"),
                ("delta", "fake_delta", "fake-delta", "0.1"),
            ],
        ),
    ],
    ids=lambda value: getattr(value, "__name__", "")[1:],
)
def test_a_change_to_the_distributions_is_seen_by_the_next_lookup(
    env: Env,
    change: Callable[[Env], None],
    expected: list[tuple[str, str, str, str]],
) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    gamma = env.site.meta("fake-gamma", "3.0")
    gamma.mkdir()
    (gamma / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-gamma\nVersion: 3.0\n")
    settle()
    assert env.ours() == [("alpha", "fake_alpha", "fake-alpha", "1.0")]
    assert len(env.files) == 1
    settle()

    change(env)

    assert sorted(env.ours()) == expected
    assert env.entries() == env.truth()
    settle()
    assert sorted(env.ours()) == expected, "and the index written again says so"
    assert env.notes == []


def test_another_import_path_has_an_index_of_its_own(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    other = Site(tmp_path / "other")
    other.install("fake-beta", "2.0", {"beta": "fake_beta"})
    settle()
    assert [name for name, *_ in env.ours()] == ["alpha"]
    # A .pth file or PYTHONPATH that adds a directory: another sys.path.
    monkeypatch.setattr(sys, "path", [str(other.root), *sys.path])
    assert [name for name, *_ in env.ours()] == ["beta", "alpha"]
    assert len(env.files) == 2


def test_the_first_distribution_of_a_name_on_the_path_wins_as_for_importlib(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    shadow = Site(tmp_path / "shadow")
    monkeypatch.setattr(sys, "path", [str(shadow.root), *sys.path])
    settle()
    assert env.ours() == [("alpha", "fake_alpha", "fake-alpha", "1.0")]
    settle()
    shadow.install("fake-alpha", "9.0", {"shadowed": "elsewhere"})
    assert env.ours() == [("shadowed", "elsewhere", "fake-alpha", "9.0")]
    assert env.entries() == env.truth()


def test_a_finder_that_provides_distributions_of_its_own_means_no_index(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Finder:
        @staticmethod
        def find_spec(*_args: object) -> None:
            return None

        @staticmethod
        def find_distributions(*_args: object) -> list[object]:
            return []

    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    settle()
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder()])
    assert env.entries() == env.truth()
    assert env.files == []


# -- a bad index is never used ---------------------------------------------------------------


def _valid(env: Env) -> dict[str, object]:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    settle()
    env.entries()
    document: dict[str, object] = json.loads(env.index.read_text())
    return document


def _lie(document: dict[str, object]) -> None:
    """The index says another entry point: a test that it was not used must see that."""
    points = document["entry_points"]
    assert isinstance(points, list)
    points.append({"name": "lie", "value": "lie", "distribution": "fake-lie", "version": "6"})


BAD_INDEXES: list[tuple[str, Callable[[bytes, dict[str, object]], bytes], str]] = [
    ("truncated", lambda data, _doc: data[: len(data) // 2], "is not valid JSON"),
    ("empty", lambda _data, _doc: b"", "is not valid JSON"),
    ("binary", lambda _data, _doc: bytes(range(256)), "is not valid JSON"),
    ("deeply nested", lambda _data, _doc: b"[" * 200_000, "is not valid JSON"),
    ("a list", lambda _data, _doc: b"[]", "is not an index"),
    ("foreign format", lambda _data, doc: _dump(doc, format=999), "has format 999, not 1"),
    ("no format", lambda _data, doc: _dump(doc, format=None), "has format None"),
    ("a watch signature of text", lambda _d, doc: _dump(doc, watch=[["/", ["1"] * 5]]), "shape"),
    ("a short signature", lambda _d, doc: _dump(doc, watch=[["/", [1, 2]]]), "shape"),
    ("a path not text", lambda _d, doc: _dump(doc, sys_path=[1]), "shape"),
    (
        "an entry point without a value",
        lambda _d, doc: _dump(doc, entry_points=[{"name": "x"}]),
        "shape",
    ),
    (
        "a version that is a number",
        lambda _d, doc: _dump(
            doc,
            entry_points=[{"name": "x", "value": "x", "distribution": "d", "version": 1}],
        ),
        "shape",
    ),
]


def _dump(document: dict[str, object], **changes: object) -> bytes:
    _lie(document)
    return json.dumps({**document, **changes}).encode()


@pytest.mark.parametrize(("spoil", "reason"), [(s, r) for _, s, r in BAD_INDEXES],
                         ids=[i for i, _, _ in BAD_INDEXES])  # fmt: skip
def test_a_corrupt_or_foreign_index_is_ignored_with_a_note_and_replaced(
    env: Env, spoil: Callable[[bytes, dict[str, object]], bytes], reason: str
) -> None:
    document = _valid(env)
    env.index.write_bytes(spoil(env.index.read_bytes(), document))

    assert env.entries() == env.truth()
    (note,) = env.notes
    assert note.startswith(f"the plugin index {env.index} ") and reason in note, note
    assert note.endswith(": not used")
    env.notes.clear()
    assert env.entries() == env.truth(), "it was replaced by a good one"
    assert env.notes == []


def test_a_well_formed_index_of_a_changed_path_is_stale_not_corrupt(env: Env) -> None:
    document = _valid(env)
    _lie(document)
    document["watch"] = [[str(env.site.root), [1, 2, 3, 4, 5]]]
    env.index.write_text(json.dumps(document))
    assert env.entries() == env.truth()
    assert env.notes == [], "a stale index is no problem to report"


def test_an_oversized_index_is_neither_read_nor_written(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    _valid(env)
    monkeypatch.setattr(plugin_index, "MAX_BYTES", 200)
    assert env.entries() == env.truth()
    assert env.notes == [
        f"the plugin index {env.index} is larger than 200 bytes: not used",
        f"the plugin index {env.index} was not written: larger than 200 bytes",
    ]


def test_an_unwritable_cache_directory_is_no_error(env: Env) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    env.cache_home.mkdir()
    (env.cache_home / "bkt").write_text("a file where the directory should be")
    settle()
    assert env.entries() == env.truth()
    assert len(env.notes) == 2
    assert "cannot be read: Not a directory: not used" in env.notes[0]
    assert "was not written: " in env.notes[1]
    assert env.entries() == env.truth()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_read_only_cache_directory_is_no_error(env: Env) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    (env.cache_home / "bkt").mkdir(parents=True)
    (env.cache_home / "bkt").chmod(0o500)
    settle()
    try:
        assert env.entries() == env.truth()
        (note,) = env.notes
        assert "was not written: Permission denied" in note
    finally:
        (env.cache_home / "bkt").chmod(0o700)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_an_index_of_another_user_is_not_used(env: Env) -> None:
    document = _valid(env)
    _lie(document)
    env.index.write_text(json.dumps(document))
    os.chown(env.index, 65534, -1)
    assert env.entries() == env.truth()
    (note,) = env.notes
    assert "belongs to another user (uid 65534)" in note


def test_no_cache_directory_without_xdg_cache_home_or_home() -> None:
    assert cache.cache_dir({}) is None
    assert cache.cache_dir({"XDG_CACHE_HOME": "relative", "HOME": "/h"}) == "/h/.cache/bkt"
    assert cache.cache_dir({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == "/x/bkt"


@pytest.mark.parametrize(
    ("value", "enabled"), [("", True), ("0", True), ("1", False), ("yes", False)]
)
def test_bkt_no_cache(value: str, enabled: bool) -> None:
    assert cache.cache_enabled({"BKT_NO_CACHE": value}) is enabled
    assert cache.cache_enabled({}) is True


# -- concurrency ------------------------------------------------------------------------------


WRITER = """
import sys
from bkt_core import cache
path, marker, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = (marker * 300_000).encode()
for _ in range(rounds):
    cache.write_atomic(path, data)
"""


def test_two_processes_writing_the_same_file_leave_whole_files_only(tmp_path: Path) -> None:
    path = str(tmp_path / "bkt" / "entry-points-00000000.json")
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, path, marker, "60"])
        for marker in ("a", "b")
    ]
    seen = set()
    while any(w.poll() is None for w in writers):
        data = cache.read_limited(path, 1_000_000)
        if data is not None:
            assert data in (b"a" * 300_000, b"b" * 300_000), "a torn or mixed file"
            seen.add(data[:1])
    assert [w.returncode for w in writers] == [0, 0]
    assert seen, "the reader saw the file"
    assert os.listdir(tmp_path / "bkt") == ["entry-points-00000000.json"]


INDEXER = """
import importlib, json, os, sys
from bkt_core import cache, plugin_index
plugin_index.RACY_SECONDS = float(sys.argv[1])
file = plugin_index.index_path(cache.cache_dir(), plugin_index._import_path())
for _ in range(int(sys.argv[2])):
    try:
        os.unlink(file)
    except FileNotFoundError:
        pass
    importlib.invalidate_caches()
    notes = []
    found = plugin_index.entry_points(notes=notes)
    assert notes == [], notes
    assert found == plugin_index.scan()[0], found
print(json.dumps([p.to_json() for p in found]))
"""


def test_two_commands_building_the_index_at_once_both_get_the_right_answer(env: Env) -> None:
    env.site.install("fake-alpha", "1.0", {"alpha": "fake_alpha"})
    env.site.install("fake-beta", "2.0", {"beta": "fake_beta"})
    settle()
    environ = {
        **os.environ,
        "PYTHONPATH": str(env.site.root),
        "XDG_CACHE_HOME": str(env.cache_home),
    }
    indexers = [
        subprocess.Popen(
            [sys.executable, "-c", INDEXER, str(RACY), "30"],
            env=environ,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in indexers]
    assert [p.returncode for p in indexers] == [0, 0]
    for out in outputs:
        names = [p["name"] for p in json.loads(out)]
        assert {"alpha", "beta"} <= set(names), names
    document = json.loads(env.index.read_text())
    assert {p["name"] for p in document["entry_points"]} >= {"alpha", "beta"}
    leftovers = [n for n in os.listdir(env.cache_home / "bkt") if n.endswith(".tmp")]
    assert leftovers == []


# -- pruning ------------------------------------------------------------------------------------


def test_the_cache_keeps_the_most_recent_indexes_and_removes_dead_temporary_files(
    tmp_path: Path,
) -> None:
    now = time.time()
    for i in range(20):
        file = tmp_path / f"entry-points-{i:08x}.json"
        file.write_text("{}")
        os.utime(file, (now - 100 + i, now - 100 + i))
    dead = tmp_path / ".entry-points-00000001.json.1.2.tmp"
    dead.write_text("")
    os.utime(dead, (now - 3600, now - 3600))
    live = tmp_path / ".entry-points-00000002.json.3.4.tmp"
    live.write_text("")
    other = tmp_path / "manifest-cache.json"
    other.write_text("")
    cache.prune(str(tmp_path), "entry-points-", ".json", 16, 600)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(
        [f"entry-points-{i:08x}.json" for i in range(4, 20)] + [live.name, other.name]
    )


# -- loading an entry point --------------------------------------------------------------------


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"bkt_index_target_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            class Outer:
                class Inner:
                    pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "form", ["{m}", "{m}:Outer", "{m}:Outer.Inner", "{m}:Outer [extra]", "{m} : Outer"]
)
def test_load_imports_what_importlib_would(module: str, form: str) -> None:
    value = form.format(m=module)
    expected = importlib.metadata.EntryPoint("x", value, "bkt").load()
    assert plugin_index.load(value) is expected


@pytest.mark.parametrize("value", ["", "a b", "mod:", "mod:x-y", ":attr", "mod:attr:more"])
def test_load_refuses_what_is_not_an_entry_point(value: str) -> None:
    with pytest.raises(ValueError, match="is not module or module:attribute"):
        plugin_index.load(value)


# -- the host ---------------------------------------------------------------------------------


def test_a_blocked_plugin_is_not_imported_whether_the_index_is_used_or_not(
    env: Env, tmp_path: Path
) -> None:
    module = f"fake_boom_{os.getpid()}"
    (env.site.root / f"{module}.py").write_text("raise RuntimeError('imported')\n")
    env.site.install("fake-boom", "0.3", {"boom": module})
    settle()
    for attempt in ("scan", "index"):
        importlib.invalidate_caches()
        host = Host(tmp_path, disabled=["boom"])
        (boom,) = [info for info in host.plugins() if info.name == "boom"]
        assert (boom.status, boom.distribution, boom.version) == ("disabled", "fake-boom", "0.3")
        assert module not in sys.modules, attempt
        assert host.load_failures == []
        assert len(env.files) == 1


def test_a_plugin_that_fails_to_import_is_reported_with_its_distribution(
    env: Env, tmp_path: Path
) -> None:
    module = f"fake_fails_{os.getpid()}"
    (env.site.root / f"{module}.py").write_text("raise RuntimeError('no luck')\n")
    env.site.install("fake-fails", "0.4", {"fails": module})
    settle()
    for use_cache in (True, True, False):
        importlib.invalidate_caches()
        host = Host(tmp_path, cache=use_cache)
        (fails,) = [info for info in host.plugins() if info.name == "fails"]
        assert (fails.status, fails.distribution, fails.version) == ("failed", "fake-fails", "0.4")
        (failure,) = host.load_failures
        assert failure.message == "plugin fails: cannot be loaded: RuntimeError: no luck"
    assert len(env.files) == 1


def test_names_and_versions_are_read_as_importlib_reads_them() -> None:
    checked = 0
    for dist in importlib.metadata.distributions():
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
        if text is None:
            continue
        assert plugin_index._name_and_version(text) == (dist.name, dist.version), text[:200]
        checked += 1
    assert checked >= 5
    body = "Metadata-Version: 2.1\nname: x\nVersion:  1.0 \nName: y\n\nName: z\nVersion: 9\n"
    assert plugin_index._name_and_version(body) == ("x", "1.0")
    assert plugin_index._name_and_version("Summary: none\n") == (None, None)


def test_the_cache_directory_stays_reachable_by_qemu_and_the_file_is_private(
    tmp_path: Path,
) -> None:
    # The VM subsystem's ISO cache lives below bkt's cache directory and QEMU (another user)
    # opens the ISOs there: the directory the index creates must not shut it out.
    directory = tmp_path / "cache" / "bkt"
    old = os.umask(0o022)
    try:
        cache.write_atomic(str(directory / "index.json"), b"{}")
    finally:
        os.umask(old)
    assert directory.stat().st_mode & 0o777 == 0o755
    assert (directory / "index.json").stat().st_mode & 0o777 == 0o600
