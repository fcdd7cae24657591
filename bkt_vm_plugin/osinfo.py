"""The osinfo database (osinfo-db's XML files, read with bkt's hardened lxml parser): which
operating systems exist, what each one supports, and what it needs.

The database is found as libosinfo finds it: the system directory (``$OSINFO_SYSTEM_DIR``,
else ``/usr/share/osinfo``, else the older ``/usr/share/libosinfo/db``), then the local
(``$OSINFO_LOCAL_DIR``, else ``/etc/osinfo``) and the user's (``$OSINFO_USER_DIR``, else
``$XDG_CONFIG_HOME/osinfo`` or ``~/.config/osinfo``) directories, whose definitions replace
those of the same id before them. Each directory holds ``os/VENDOR/*.xml``.

Reading the ~1000 files takes a while, so what they say is kept in an index in bkt's cache
directory, keyed by :func:`database_identity`: the database's ``VERSION`` and the
modification times of the packaged database's directories (a package upgrade replaces
files, which changes them), and of every file of any other directory (a
``$OSINFO_SYSTEM_DIR`` of one's own, the local and user directories: edited in place by
hand). A warm command reads the index, one file, and never scans the packaged database.

:class:`OsDatabase` answers by short id (``win11``) or by id URI
(``http://microsoft.com/win/11``); an :class:`OsProfile` is one OS with what it inherits
(``derives-from`` and ``clones``) resolved. An unknown short id raises :class:`UnknownOs`
with the closest ids; no database at all raises :class:`DatabaseMissing`, which names the
package that installs it. A file that is not well-formed XML is skipped (and named in
:attr:`OsDatabase.skipped`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bkt_core.cache import CacheUnusable, cache_dir, cache_enabled, read_limited, write_atomic
from bkt_vm_plugin.osinfo_location import INDEX_FORMAT, database_identity, database_roots

if TYPE_CHECKING:
    from bkt_vm_plugin.api import Element as _Element

__all__ = [
    "INDEX_FORMAT",
    "INSTALL_HINT",
    "DatabaseMissing",
    "OsDatabase",
    "OsProfile",
    "OsinfoError",
    "Resources",
    "UnknownOs",
    "database_identity",
    "database_roots",
    "default_database",
    "forget_databases",
]

#: What installs the database, for the message when there is none.
INSTALL_HINT = "install the package osinfo-db (Debian, Ubuntu, Fedora, RHEL, Arch)"

#: The largest index read back (the real database's is about 1 MB).
MAX_INDEX_BYTES = 64 * 1024 * 1024
INDEX_FILE = "osinfo-index.json"


class OsinfoError(Exception):
    """A problem with the osinfo database or a lookup in it; the message says what."""


class DatabaseMissing(OsinfoError):
    """No osinfo database is installed: none of the directories libosinfo reads exists."""

    def __init__(self, looked_in: Sequence[Path]) -> None:
        where = ", ".join(str(p) for p in looked_in)
        super().__init__(
            f"the osinfo database is not installed (looked in {where}); {INSTALL_HINT}"
        )
        self.looked_in = tuple(looked_in)


#: How many skipped files an error names (the others are counted).
SKIPPED_SHOWN = 3


class UnknownOs(OsinfoError):
    """``short_id`` is no OS of the database; ``closest`` are the ids it may have meant.
    ``skipped`` are the database's files that could not be read (``(path, reason)``: the OS
    may be in one of them); ``empty_in``, the directories looked in when the database holds
    no OS at all (its directory is there, its files are not)."""

    def __init__(
        self,
        short_id: str,
        closest: Sequence[str],
        *,
        skipped: Sequence[tuple[str, str]] = (),
        empty_in: Sequence[Path] | None = None,
    ) -> None:
        message = f"unknown OS {json.dumps(short_id, ensure_ascii=False)}"
        if empty_in is not None:
            where = ", ".join(str(p) for p in empty_in)
            message += (
                f": the osinfo database holds no OS (looked in {where}); it is not installed, "
                f"or not completely: {INSTALL_HINT}"
            )
        else:
            if closest:
                message += "; closest: " + ", ".join(json.dumps(c) for c in closest)
            message += " (`osinfo-query os` lists them all)"
        if skipped:
            shown = "; ".join(f"{path} ({reason})" for path, reason in skipped[:SKIPPED_SHOWN])
            more = len(skipped) - SKIPPED_SHOWN
            message += (
                f"; {len(skipped)} file(s) of the database could not be read, and may hold it: "
                + shown
                + (f"; and {more} more" if more > 0 else "")
            )
        super().__init__(message)
        self.short_id = short_id
        self.closest = tuple(closest)
        self.skipped = tuple(skipped)


# -- what one OS is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """What an OS needs of one kind (minimum or recommended) for one architecture: ``ram``
    and ``storage`` in bytes, ``n_cpus``, ``cpu`` in Hz; None where the database says
    nothing."""

    ram: int | None = None
    storage: int | None = None
    n_cpus: int | None = None
    cpu: int | None = None


#: Device ids of the virtio devices, in both PCI id forms (transitional and modern).
VIRTIO_DISK = ("http://pcisig.com/pci/1af4/1001", "http://pcisig.com/pci/1af4/1042")
VIRTIO_NET = ("http://pcisig.com/pci/1af4/1000", "http://pcisig.com/pci/1af4/1041")
VIRTIO_GPU = ("http://pcisig.com/pci/1af4/1050",)
#: The Q35 chipset (PCI Express): an OS that knows it has drivers for its devices (AHCI,
#: e1000e, ICH9 sound).
Q35 = "http://qemu.org/chipset/x86/q35"
#: The older NICs, for an OS that predates Q35.
E1000 = "http://pcisig.com/pci/8086/100e"
RTL8139 = "http://pcisig.com/pci/10ec/8139"


@dataclass(frozen=True)
class OsProfile:
    """One operating system of the database, with what it inherits resolved.

    ``short_id`` is its first short id (``short_ids`` holds all of them), ``id`` its URI;
    ``name``, ``family`` (``winnt``, ``linux``, ...), ``distro``, ``vendor`` and
    ``version`` as the database gives them. ``devices`` are the ids of the devices it
    supports out of the box (its own and those of the OSes it derives from or clones, less
    those it marks unsupported). ``firmware`` maps ``(arch, type)`` (``("x86_64", "efi")``)
    to whether that firmware is supported. ``minimum`` and ``recommended`` map an
    architecture (or ``all``) to :class:`Resources`.
    """

    short_id: str
    id: str
    short_ids: tuple[str, ...] = ()
    name: str = ""
    family: str | None = None
    distro: str | None = None
    vendor: str | None = None
    version: str | None = None
    devices: frozenset[str] = frozenset()
    firmware: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    minimum: Mapping[str, Resources] = field(default_factory=dict)
    recommended: Mapping[str, Resources] = field(default_factory=dict)

    def supports(self, *device_ids: str) -> bool:
        """Whether the OS supports any of ``device_ids`` out of the box."""
        return any(d in self.devices for d in device_ids)

    @property
    def is_windows(self) -> bool:
        """Whether this is Microsoft Windows (the families libosinfo gives it)."""
        return self.family in ("winnt", "win9x", "win16")

    def supports_firmware(self, kind: str, arch: str = "x86_64") -> bool | None:
        """Whether firmware ``kind`` (``efi`` or ``bios``) boots this OS on ``arch``; None
        when the database does not say."""
        return self.firmware.get((arch, kind))

    def requires_efi(self, arch: str = "x86_64") -> bool:
        """Whether the OS boots only from UEFI on ``arch``: EFI is supported and BIOS is
        not (the database marks BIOS unsupported)."""
        return bool(self.supports_firmware("efi", arch)) and (
            self.supports_firmware("bios", arch) is False
        )

    def resource(self, kind: str, name: str, arch: str = "x86_64") -> int | None:
        """The ``minimum`` or ``recommended`` value ``name`` (``ram``, ``storage``,
        ``n_cpus``, ``cpu``) for ``arch``, else for all architectures; None when unknown."""
        table = self.minimum if kind == "minimum" else self.recommended
        for key in (arch, "all"):
            found = table.get(key)
            value = getattr(found, name, None) if found is not None else None
            if isinstance(value, int) and value > 0:
                return value
        return None


# -- reading the XML -------------------------------------------------------------------------

_RESOURCE_KEYS = {"ram": "ram", "storage": "storage", "n-cpus": "n_cpus", "cpu": "cpu"}


def _text(node: _Element | None) -> str | None:
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def _plain(parent: _Element, tag: str) -> _Element | None:
    """The first ``<tag>`` child without ``xml:lang`` (the untranslated one)."""
    lang = "{http://www.w3.org/XML/1998/namespace}lang"
    for node in parent.iterchildren(tag):
        if node.get(lang) is None:
            return node
    return None


def _record(os_node: _Element) -> dict[str, Any] | None:
    """What one ``<os>`` says itself (nothing inherited), as JSON data; None without an id."""
    uri = os_node.get("id")
    if not uri:
        return None
    devices: dict[str, bool] = {}
    for holder in os_node.iterchildren("devices"):
        for device in holder.iterchildren("device"):
            device_id = device.get("id")
            if device_id:
                devices[device_id] = device.get("supported", "true") != "false"
    firmware = [
        [fw.get("arch", "all"), fw.get("type", ""), fw.get("supported", "true") != "false"]
        for fw in os_node.iterchildren("firmware")
        if fw.get("type")
    ]
    resources: dict[str, dict[str, dict[str, int]]] = {}
    for block in os_node.iterchildren("resources"):
        arch = block.get("arch", "all")
        for kind in ("minimum", "recommended"):
            node = block.find(kind)
            if node is None:
                continue
            values: dict[str, int] = {}
            for key, attr in _RESOURCE_KEYS.items():
                text = _text(node.find(key))
                if text is not None and text.isdigit():
                    values[attr] = int(text)
            resources.setdefault(kind, {})[arch] = values
    return {
        "id": uri,
        "short_ids": [s for s in (_text(n) for n in os_node.iterchildren("short-id")) if s],
        "name": _text(_plain(os_node, "name")) or "",
        "family": _text(os_node.find("family")),
        "distro": _text(os_node.find("distro")),
        "vendor": _text(_plain(os_node, "vendor")),
        "version": _text(os_node.find("version")),
        "derives": [n.get("id") for n in os_node.iterchildren("derives-from") if n.get("id")],
        "clones": [n.get("id") for n in os_node.iterchildren("clones") if n.get("id")],
        "devices": devices,
        "firmware": firmware,
        "resources": resources,
    }


def _files(roots: Sequence[Path]) -> dict[str, str]:
    """Every ``os/**/*.xml`` of ``roots`` by its path below the root: a file of a later root
    replaces the file of the same name in an earlier one, as libosinfo does."""
    found: dict[str, str] = {}
    for root in roots:
        top = os.path.join(root, "os")
        if not os.path.isdir(top):
            continue
        for directory, dirs, files in os.walk(top):
            dirs.sort()
            for name in files:
                if name.endswith(".xml"):
                    path = os.path.join(directory, name)
                    found[os.path.relpath(path, top)] = path
    return found


def _merge(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    """Adds what another file says of the same OS (``win-10.d/*.xml`` add to
    ``win-10.xml``): lists are joined, mappings updated, a missing value filled."""
    for key, value in more.items():
        have = into.get(key)
        if isinstance(have, list):
            have.extend(v for v in value if v not in have)
        elif isinstance(have, dict):
            for sub, sub_value in value.items():
                if isinstance(have.get(sub), dict) and isinstance(sub_value, dict):
                    have[sub].update(sub_value)
                else:
                    have[sub] = sub_value
        elif not have:
            into[key] = value


def build_index(roots: Sequence[Path]) -> dict[str, Any]:
    """Read every ``os/**/*.xml`` of ``roots``: the index :class:`OsDatabase` is made from.
    Definitions of one id in several files are merged. A file that is not well-formed XML
    is skipped and listed under ``skipped``."""
    from bkt_vm_plugin.api import DomainXmlError, parse_xml

    oses: dict[str, dict[str, Any]] = {}
    skipped: list[list[str]] = []
    for _name, path in sorted(_files(roots).items()):
        # bkt's hardened parser: no DOCTYPE, so no entities; nothing is fetched.
        try:
            with open(path, encoding="utf-8") as file:
                document = parse_xml(file.read(), root_tag=None)
        except (OSError, UnicodeError, DomainXmlError) as exc:
            skipped.append([path, str(exc) or type(exc).__name__])
            continue
        nodes = [document] if document.tag == "os" else list(document.iterchildren("os"))
        for node in nodes:
            record = _record(node)
            if record is None:
                continue
            if record["id"] in oses:
                _merge(oses[record["id"]], record)
            else:
                oses[record["id"]] = record
    short: dict[str, str] = {}
    for uri, record in oses.items():
        for short_id in record["short_ids"]:
            short.setdefault(short_id, uri)
    return {"format": INDEX_FORMAT, "oses": oses, "short": short, "skipped": skipped}


# -- the database ----------------------------------------------------------------------------


class OsDatabase:
    """The osinfo database of ``roots``: :meth:`open` finds it (from the cache when it can);
    :meth:`profile` looks an OS up by short id, :meth:`short_id_of` by URI."""

    def __init__(
        self,
        index: Mapping[str, Any],
        identity: str = "",
        roots: Sequence[Path] = (),
        index_path: str | None = None,
    ) -> None:
        #: The directories the database was read from (:func:`database_roots`).
        self.roots = tuple(roots)
        self._index_path = index_path
        self._load(index)
        #: :func:`database_identity` of the database this was read from.
        self.identity = identity
        self._profiles: dict[str, OsProfile] = {}

    def _load(self, index: Mapping[str, Any]) -> None:
        # In the cached index each OS is a JSON text of its own, decoded when it is looked
        # at: a command reads a handful of the ~800, and decoding them all would cost more
        # than the rest of the lookup.
        self._raw: Mapping[str, Any] = index["oses"]
        self._decoded: dict[str, Mapping[str, Any]] = {}
        self._short: Mapping[str, str] = index["short"]
        #: Files that were skipped, each with the reason: ``(path, reason)``.
        self.skipped: tuple[tuple[str, str], ...] = tuple(
            (str(p), str(r)) for p, r in index.get("skipped", ())
        )
        #: Whether this index was read from the files (not from the cache).
        self._fresh = self._index_path is None

    @classmethod
    def open(
        cls,
        roots: Sequence[Path] | None = None,
        *,
        cache: bool | None = None,
        cache_directory: str | None = None,
    ) -> OsDatabase:
        """The database in ``roots`` (:func:`database_roots` when None). ``cache``: read and
        write the index in ``cache_directory`` (bkt's cache directory when None); by default
        when :func:`bkt_core.cache.cache_enabled` (not with ``--no-cache``,
        ``$BKT_NO_CACHE`` or ``Host(cache=False)``). Raises :class:`DatabaseMissing`."""
        roots = database_roots() if roots is None else list(roots)
        identity = database_identity(roots)
        if identity is None:
            raise DatabaseMissing(roots)
        use_cache = cache_enabled() if cache is None else cache
        directory = (cache_directory or cache_dir()) if use_cache else None
        path = os.path.join(directory, INDEX_FILE) if directory else None
        if path is not None:
            index = _read_index(path, identity)
            if index is not None:
                return cls(index, identity, roots, path)
        database = cls(_build_and_store(roots, identity, path), identity, roots)
        return database

    def _rebuild(self) -> bool:
        """Read the files again after the cached index held something bkt never writes
        (and store the new index); False when this was read from the files already."""
        if self._fresh or not self.roots:
            return False
        self._load(_build_and_store(self.roots, self.identity, self._index_path))
        self._fresh = True
        self._profiles.clear()
        return True

    def short_ids(self) -> list[str]:
        """Every short id, sorted."""
        return sorted(self._short)

    def closest(self, short_id: str, count: int = 3) -> list[str]:
        """The short ids most like ``short_id`` (difflib's ratio), best first."""
        import difflib

        return difflib.get_close_matches(short_id, list(self._short), n=count, cutoff=0.6)

    def __contains__(self, short_id: object) -> bool:
        return isinstance(short_id, str) and short_id in self._short

    def short_id_of(self, uri: str) -> str | None:
        """The first short id of the OS whose id is ``uri``; None for an unknown URI."""
        record = self._os(uri)
        ids = record["short_ids"] if record is not None else ()
        return ids[0] if ids else None

    def profile(self, short_id: str) -> OsProfile:
        """The OS ``short_id``, its inheritance resolved. Raises :class:`UnknownOs`."""
        found = self._profiles.get(short_id)
        if found is not None:
            return found
        uri = self._short.get(short_id)
        record = self._os(uri) if isinstance(uri, str) else None
        if uri is not None and record is None and self._rebuild():
            # The cached index names a missing or malformed OS: not an index bkt wrote.
            return self.profile(short_id)
        if record is None or uri is None:
            if not self._short:
                raise UnknownOs(short_id, (), skipped=self.skipped, empty_in=self.roots)
            raise UnknownOs(short_id, self.closest(short_id), skipped=self.skipped)
        if not self._complete(uri):
            if self._rebuild():
                return self.profile(short_id)
            raise UnknownOs(short_id, self.closest(short_id), skipped=self.skipped)
        devices = self._inherited(uri, "devices", set())
        firmware = self._inherited(uri, "firmware", set())
        minimum = self._resources(uri, "minimum", set())
        recommended = self._resources(uri, "recommended", set())
        profile = OsProfile(
            short_id=short_id,
            id=uri,
            short_ids=tuple(record["short_ids"]),
            name=record["name"] or self._attr(uri, "name") or short_id,
            family=record["family"] or self._attr(uri, "family"),
            distro=record["distro"] or self._attr(uri, "distro"),
            vendor=record["vendor"],
            version=record["version"],
            devices=frozenset(d for d, ok in devices.items() if ok),
            firmware=dict(firmware),
            minimum={arch: Resources(**values) for arch, values in minimum.items()},
            recommended={arch: Resources(**values) for arch, values in recommended.items()},
        )
        self._profiles[short_id] = profile
        return profile

    def _os(self, uri: str) -> Mapping[str, Any] | None:
        """What the database says of the OS ``uri`` itself; None for an unknown one (or a
        record of the cached index that is not one bkt wrote)."""
        found = self._decoded.get(uri)
        if found is None:
            raw = self._raw.get(uri)
            if raw is None:
                return None
            try:
                decoded = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                return None
            if not _well_formed(decoded):
                return None
            found = self._decoded[uri] = decoded
        return found

    def _complete(self, uri: str) -> bool:
        """Whether every OS ``uri`` inherits from is a well-formed record (or unknown)."""
        seen: set[str] = set()
        queue = [uri]
        while queue:
            current = queue.pop()
            if current in seen:
                continue
            seen.add(current)
            if current in self._raw and self._os(current) is None:
                return False
            queue.extend(self._parents(current))
        return True

    def _parents(self, uri: str) -> Iterable[str]:
        record = self._os(uri)
        if record is None:
            return ()
        return [*record["derives"], *record["clones"]]

    def _inherited(self, uri: str, what: str, seen: set[str]) -> dict[Any, bool]:
        """Devices (``id -> supported``) or firmware (``(arch, type) -> supported``) of
        ``uri``: its parents', in order, then its own, each overriding what came before."""
        record = self._os(uri)
        if uri in seen or record is None:
            return {}
        seen.add(uri)
        result: dict[Any, bool] = {}
        for parent in self._parents(uri):
            result.update(self._inherited(parent, what, seen))
        if what == "devices":
            result.update(record["devices"])
        else:
            result.update({(arch, kind): bool(ok) for arch, kind, ok in record["firmware"]})
        return result

    def _resources(self, uri: str, kind: str, seen: set[str]) -> dict[str, dict[str, int]]:
        """The ``kind`` resources of ``uri`` per architecture. An OS that states resources of
        its own inherits none (a minimum of its own with an ancestor's recommended values
        would mix two generations); one that states none has its nearest ancestor's."""
        record = self._os(uri)
        if uri in seen or record is None:
            return {}
        seen.add(uri)
        own: Mapping[str, Mapping[str, dict[str, int]]] = record["resources"]
        if own:
            return dict(own.get(kind, {}))
        for parent in self._parents(uri):
            found = self._resources(parent, kind, seen)
            if found:
                return found
        return {}

    def _attr(self, uri: str, name: str) -> str | None:
        """``name`` from the nearest ancestor that states it."""
        seen: set[str] = set()
        queue = list(self._parents(uri))
        while queue:
            parent = queue.pop(0)
            record = self._os(parent)
            if parent in seen or record is None:
                continue
            seen.add(parent)
            value = record.get(name)
            if value:
                return str(value)
            queue.extend(self._parents(parent))
        return None


#: What a record of the index holds: each key and the type of its value.
_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "short_ids": (list,),
    "name": (str,),
    "family": (str, type(None)),
    "distro": (str, type(None)),
    "vendor": (str, type(None)),
    "version": (str, type(None)),
    "derives": (list,),
    "clones": (list,),
    "devices": (dict,),
    "firmware": (list,),
    "resources": (dict,),
}


def _well_formed(record: Any) -> bool:
    """Whether ``record`` is an OS as :func:`build_index` writes it (a cached index may
    have been changed by anyone who can write the user's cache)."""
    if not isinstance(record, dict):
        return False
    if any(not isinstance(record.get(k), t) for k, t in _RECORD_TYPES.items()):
        return False
    names = set(_RESOURCE_KEYS.values())
    return (
        all(isinstance(s, str) for s in record["short_ids"])
        and all(isinstance(p, str) for p in (*record["derives"], *record["clones"]))
        and all(isinstance(v, bool) for v in record["devices"].values())
        and all(
            isinstance(f, list) and len(f) == 3 and all(isinstance(x, str) for x in f[:2])
            for f in record["firmware"]
        )
        and all(
            isinstance(by_arch, dict)
            and all(
                isinstance(values, dict)
                and set(values) <= names
                and all(isinstance(v, int) for v in values.values())
                for values in by_arch.values()
            )
            for by_arch in record["resources"].values()
        )
    )


def _build_and_store(roots: Sequence[Path], identity: str, path: str | None) -> dict[str, Any]:
    """:func:`build_index` of ``roots``, written to ``path`` (when not None) for the next
    command."""
    index = build_index(roots)
    if path is not None:
        # A cache that cannot be written only costs time.
        stored = {
            **index,
            "identity": identity,
            "oses": {uri: _compact(r) for uri, r in index["oses"].items()},
        }
        with contextlib.suppress(OSError):
            write_atomic(path, _compact(stored).encode())
    return index


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _read_index(path: str, identity: str) -> dict[str, Any] | None:
    """The cached index at ``path`` when it was made from the database ``identity``."""
    try:
        data = read_limited(path, MAX_INDEX_BYTES)
    except CacheUnusable:
        return None
    if data is None:
        return None
    try:
        index = json.loads(data)
    except ValueError:
        return None
    if (
        not isinstance(index, dict)
        or index.get("format") != INDEX_FORMAT
        or index.get("identity") != identity
        or not isinstance(index.get("oses"), dict)
        or not isinstance(index.get("short"), dict)
        or not all(
            isinstance(uri, str) and uri in index["oses"] for uri in index["short"].values()
        )
        or not isinstance(index.get("skipped", []), list)
        or not all(
            isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s)
            for s in index.get("skipped", [])
        )
    ):
        return None
    return index


_OPENED: dict[tuple[tuple[str, ...], bool], OsDatabase] = {}


def default_database(cache: bool | None = None) -> OsDatabase:
    """The database libosinfo would read, opened once per process (a command is short; the
    cached index follows the database's changes from one command to the next). ``cache``:
    whether its index may come from (and go to) bkt's cache directory; None asks
    :func:`bkt_core.cache.cache_enabled`. Raises :class:`DatabaseMissing`."""
    roots = database_roots()
    use_cache = cache_enabled() if cache is None else cache
    key = (tuple(str(r) for r in roots), use_cache)
    held = _OPENED.get(key)
    if held is None:
        held = _OPENED[key] = OsDatabase.open(roots, cache=use_cache)
    return held


def forget_databases() -> None:
    """Forget the databases :func:`default_database` opened (for tests that change them)."""
    _OPENED.clear()
