"""A fake libvirt for the tests of bkt and of its plugins: no daemon, no process, no root.

:class:`FakeLibvirt` is a :class:`~bkt_core.process.CommandRunner`: hand it to a
:class:`~bkt_core.host.Host` (``fake.host(manifest_dir)`` builds one in one line) and every
process bkt would start is answered from memory instead, the way the real programs answer:

- ``virsh`` (``virsh -q [-c URI] COMMAND ARGS...``, and the batches bkt sends as one command
  line of virsh's own language, ``;`` between commands, quoting included). The commands are
  answered from in-memory domains (persistent XML, live XML, state, autostart), storage pools
  and volumes, networks and a few host facts. As with virsh, a line is parsed whole before
  any of it runs: an unknown command or option fails the whole process and nothing runs.
  A command real virsh has but the fake does not model is such an unknown command, so a test
  never passes by accident on something the fake only pretends to do.
- ``qemu-img info`` and ``qemu-img create``, on real files: ``create`` writes a small file
  that records the image's format, virtual size and backing file, which ``info`` (and
  ``virsh domblkinfo``) read back; any other file is a raw image of its own size, as
  qemu-img says of a file it does not recognise.

Everything else is refused as a program that is not installed.

Failures the real daemon cannot produce on demand are injected with :meth:`FakeLibvirt.fail`
(one command, for one target or all) and :meth:`FakeLibvirt.disconnect` (no connection at
all). Every process is recorded: :attr:`FakeLibvirt.processes` lists the commands of each
virsh process, :attr:`FakeLibvirt.qemu_img` each ``qemu-img`` argv.

The fake keeps domain XML as it was given: libvirt would add its defaults (a ``<uuid>``,
controllers, addresses); the fake keeps the UUID apart, and what bkt reads back is exactly
what it wrote. ``define`` and ``create`` refuse, with libvirt's own messages, only XML that
is not well formed, whose root is not a ``<domain>`` with a ``type``, that has no
``<name>``, whose ``<uuid>`` is malformed or taken by another domain, and a ``<cpu>`` in
custom mode (the default) that has ``<feature>`` children but no ``<model>`` ("Non-empty
feature list specified without CPU model"); everything else libvirt checks is accepted.

A disk bkt creates outside any storage pool is written by ``qemu-img create`` into a private
directory named through bkt's descriptor of it, then linked to its name: its ``create``
argv in :attr:`FakeLibvirt.qemu_img` names ``/proc/PID/fd/N/NAME``, not the disk's path.
The file is real, so ``qemu-img info`` and ``virsh domblkinfo`` read it at the disk's path
afterwards; to check what was created, compare the argv's last path component, or look at
the file at the disk's path.

This module imports no pytest; the fixtures built on it are in
:mod:`bkt_vm_plugin.pytest_plugin`.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid as uuid_module
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bkt_core.errors import CommandError
from bkt_core.process import Completed, display_argv

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from bkt_core.host import Host
    from bkt_vm_plugin.subsystem import VmSubsystem

__all__ = [
    "DEFAULT_DOMCAPABILITIES",
    "DEFAULT_VERSION",
    "FAKE_IMAGE_MAGIC",
    "Failure",
    "FakeDomain",
    "FakeLibvirt",
    "FakeNetwork",
    "FakePool",
    "FakeVolume",
    "ManifestDir",
    "split_virsh_line",
    "vm_subsystem",
]

#: What ``virsh version`` answers by default.
DEFAULT_VERSION = (
    "Compiled against library: libvirt 9.0.0\n"
    "Using library: libvirt 9.0.0\n"
    "Using API: QEMU 9.0.0\n"
    "Running hypervisor: QEMU 7.2.0\n"
)

#: What ``virsh domcapabilities`` answers by default, for every domain type: a host where
#: all is well (UEFI with Secure Boot firmware, an emulated TPM).
DEFAULT_DOMCAPABILITIES = (
    "<domainCapabilities><os supported='yes'><enum name='firmware'><value>efi</value>"
    "</enum><loader supported='yes'><enum name='secure'><value>yes</value></enum></loader>"
    "</os><devices><tpm supported='yes'><enum name='backendModel'><value>emulator</value>"
    "</enum></tpm></devices></domainCapabilities>\n"
)

#: The first line of every image file the fake's ``qemu-img create`` (or
#: :meth:`FakeLibvirt.add_image`) writes; the second is the image's facts as JSON.
FAKE_IMAGE_MAGIC = b"bkt-fake-image\n"

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


# -- the state ------------------------------------------------------------------------------


@dataclass
class FakeDomain:
    """One libvirt domain, ``name`` with its ``uuid``.

    ``xml`` is the persistent definition (None for a transient domain, one made by
    ``create``); ``live_xml`` the running definition (None while the domain is not active).
    ``state`` is what ``virsh domstate`` prints (``shut off``, ``running``, ``paused``...),
    ``id`` the domain's ID while it is active. ``obeys_acpi``: whether a ``shutdown``
    request stops it (at once); False plays a guest that ignores the power button.
    ``autostart``: whether ``virsh list --autostart`` lists it.
    """

    name: str
    uuid: str
    xml: str | None
    live_xml: str | None = None
    state: str = "shut off"
    autostart: bool = False
    id: int | None = None
    obeys_acpi: bool = True

    @property
    def active(self) -> bool:
        """Whether the domain runs (has a QEMU process): any state but shut off / crashed."""
        return self.state not in ("shut off", "crashed", "no state")

    @property
    def persistent(self) -> bool:
        """Whether the domain has a persistent definition (``virsh define``)."""
        return self.xml is not None


@dataclass
class FakePool:
    """One storage pool: its XML says ``type`` and ``target`` (a directory); ``active``
    whether it is started, ``autostart`` whether libvirt starts it with the host. ``uuid``
    is its UUID (a new one by default). ``volumes`` by name."""

    name: str
    target: str
    type: str = "dir"
    active: bool = True
    autostart: bool = False
    uuid: str = field(default_factory=lambda: str(uuid_module.uuid4()))
    volumes: dict[str, FakeVolume] = field(default_factory=dict)

    def xml(self) -> str:
        """The pool's XML as ``virsh pool-dumpxml`` prints it (the parts bkt reads)."""
        return (
            f"<pool type='{_attr(self.type)}'>\n  <name>{_text(self.name)}</name>\n"
            f"  <uuid>{self.uuid}</uuid>\n  <target>\n"
            f"    <path>{_text(self.target)}</path>\n  </target>\n</pool>\n"
        )


@dataclass
class FakeVolume:
    """One storage volume of a pool: ``format`` (``qcow2``, ``raw``), ``capacity`` in bytes;
    its file is ``path`` (the pool's target and the volume's name)."""

    name: str
    path: str
    format: str = "qcow2"
    capacity: int = 1 << 30

    def xml(self) -> str:
        """The volume's XML as ``virsh vol-dumpxml`` prints it (the parts bkt reads)."""
        return (
            f"<volume type='file'>\n  <name>{_text(self.name)}</name>\n"
            f"  <key>{_text(self.path)}</key>\n"
            f"  <capacity unit='bytes'>{self.capacity}</capacity>\n"
            f"  <target>\n    <path>{_text(self.path)}</path>\n"
            f"    <format type='{_attr(self.format)}'/>\n  </target>\n</volume>\n"
        )


@dataclass
class FakeNetwork:
    """One virtual network, ``name``, as ``virsh net-list`` lists it: ``active`` and
    ``autostart`` are its columns."""

    name: str
    active: bool = True
    autostart: bool = True


@dataclass
class Failure:
    """A failure injected with :meth:`FakeLibvirt.fail`: ``command`` (a virsh command such as
    ``define``, or ``qemu-img info`` / ``qemu-img create``) fails with ``message`` when
    ``target`` is None or one of its arguments; ``once``: only the next time."""

    command: str
    target: str | None
    message: str
    once: bool = False

    def matches(self, command: str, args: Sequence[str]) -> bool:
        """Whether this failure applies to ``command`` run with ``args``."""
        return command == self.command and (self.target is None or self.target in args)


class _Refused(Exception):
    """A command line virsh would refuse before running any of it."""


class _Failed(Exception):
    """One command failed: ``str(self)`` is what it printed on stderr, ``error:`` lines."""


# -- the runner -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """The options of one virsh command: ``flags`` take no value, ``options`` take one,
    ``positional`` are the options an argument without ``--`` fills, in order."""

    flags: frozenset[str] = frozenset()
    options: frozenset[str] = frozenset()
    positional: tuple[str, ...] = ()
    required: tuple[str, ...] = ()


def _spec(flags: str = "", options: str = "", positional: str = "", required: str = "") -> _Spec:
    """A :class:`_Spec` from space-separated option names."""
    return _Spec(
        frozenset(flags.split()),
        frozenset(options.split()),
        tuple(positional.split()),
        tuple(required.split()),
    )


_LISTING = "all inactive name uuid autostart no-autostart persistent transient table"
_ON_DOMAIN = {"options": "domain", "positional": "domain", "required": "domain"}
_SPECS: dict[str, _Spec] = {
    "echo": _spec("err shell xml split"),
    "uri": _spec(),
    "version": _spec("daemon"),
    "list": _spec(_LISTING + " id state-running state-shutoff state-paused state-other title"),
    "dumpxml": _spec(
        "inactive security-info update-cpu migratable", "domain xpath", "domain", "domain"
    ),
    "define": _spec("validate", "file", "file", "file"),
    "create": _spec(
        "console paused autodestroy pass-fds validate reset-nvram", "file", "file", "file"
    ),
    "undefine": _spec(
        "managed-save snapshots-metadata checkpoints-metadata nvram keep-nvram tpm keep-tpm "
        "remove-all-storage delete-storage-volume-snapshots wipe-storage",
        "domain storage",
        "domain",
        "domain",
    ),
    "domstate": _spec("reason", **_ON_DOMAIN),
    "domuuid": _spec(**_ON_DOMAIN),
    "start": _spec("console paused autodestroy bypass-cache force-boot reset-nvram", **_ON_DOMAIN),
    "shutdown": _spec("", "domain mode", "domain", "domain"),
    "destroy": _spec("graceful", **_ON_DOMAIN),
    "autostart": _spec("disable", **_ON_DOMAIN),
    "domblkinfo": _spec("all human", "domain device", "domain device", "domain"),
    "domcapabilities": _spec("", "virttype emulatorbin arch machine"),
    "net-list": _spec(_LISTING),
    "pool-list": _spec(_LISTING + " details", "type"),
    "pool-dumpxml": _spec("inactive", "pool xpath", "pool", "pool"),
    "vol-list": _spec("details", "pool", "pool", "pool"),
    "vol-dumpxml": _spec("", "vol pool xpath", "vol pool", "vol"),
    "vol-create-as": _spec(
        "prealloc-metadata print-xml",
        "pool name capacity allocation format backing-vol backing-vol-format",
        "pool name capacity",
        "pool name capacity",
    ),
}


@dataclass
class _Command:
    """One parsed virsh command: its name, its options (flags map to True) and its argv."""

    name: str
    opts: dict[str, str | bool]
    argv: tuple[str, ...]

    def get(self, option: str) -> str:
        value = self.opts[option]
        assert isinstance(value, str)
        return value

    def has(self, option: str) -> bool:
        return option in self.opts


class _Listable(Protocol):
    @property
    def active(self) -> bool: ...

    @property
    def autostart(self) -> bool: ...


_L = TypeVar("_L", bound=_Listable)


def _listed(c: _Command, items: Iterable[_L]) -> list[_L]:
    """What virsh's list commands (``list``, ``net-list``, ``pool-list``) show of ``items``:
    the active ones, with ``--all`` the inactive ones too, with ``--inactive`` only those;
    ``--autostart`` / ``--no-autostart`` keep those that do (not) start with the host."""
    every = c.has("all") or c.has("inactive")
    chosen = [
        item
        for item in items
        if (item.active and not c.has("inactive")) or (every and not item.active)
    ]
    if c.has("autostart"):
        chosen = [item for item in chosen if item.autostart]
    if c.has("no-autostart"):
        chosen = [item for item in chosen if not item.autostart]
    return chosen


class FakeLibvirt:
    """An in-memory libvirt (and qemu-img) that answers the processes bkt starts.

    Build a host on it with :meth:`host`; arrange the world with :meth:`define`,
    :meth:`add_pool`, :meth:`add_volume`, :meth:`add_image` (or edit :attr:`domains`,
    :attr:`pools`, :attr:`networks` directly); inject failures with :meth:`fail` and
    :meth:`disconnect`; read what bkt did from :attr:`processes`, :meth:`commands` and
    :attr:`qemu_img`.

    ``uri`` is what ``virsh uri`` prints when bkt passes no ``-c`` (the URI virsh was given
    otherwise). ``version`` and ``domcapabilities`` are what ``virsh version`` and ``virsh
    domcapabilities`` print (``domcapabilities`` maps a domain type, ``kvm`` or ``qemu``,
    to its XML; a type it lacks fails as libvirt fails for a type the host cannot run).
    ``delay`` is the seconds each process takes (for tests of concurrency).

    What it checks of a domain's XML, as libvirt does (see the module's documentation):
    well-formedness, the ``<domain type=...>`` root, the ``<name>``, the ``<uuid>`` (well
    formed, not another domain's), and a custom-mode ``<cpu>`` with ``<feature>`` children
    but no ``<model>``, refused as libvirt refuses it ("Non-empty feature list specified
    without CPU model").
    """

    def __init__(
        self,
        *,
        uri: str = "qemu:///session",
        version: str = DEFAULT_VERSION,
        domcapabilities: dict[str, str] | None = None,
        networks: Iterable[str] = ("default",),
        delay: float = 0.0,
    ) -> None:
        self.uri = uri
        self.version = version
        self.domcapabilities: dict[str, str] = (
            dict(domcapabilities)
            if domcapabilities is not None
            else {"kvm": DEFAULT_DOMCAPABILITIES, "qemu": DEFAULT_DOMCAPABILITIES}
        )
        #: Every domain by name.
        self.domains: dict[str, FakeDomain] = {}
        #: Every storage pool by name.
        self.pools: dict[str, FakePool] = {}
        #: Every virtual network by name.
        self.networks: dict[str, FakeNetwork] = {n: FakeNetwork(n) for n in networks}
        self.delay = delay
        #: The commands of every virsh process that ran, in order (the batch's markers left
        #: out), each command as its argv; a process refused whole is recorded too.
        self.processes: list[list[tuple[str, ...]]] = []
        #: The argv of every ``qemu-img`` process, in order, as bkt gave it: a disk created
        #: outside any pool is named ``/proc/PID/fd/N/NAME`` (see the module's documentation).
        self.qemu_img: list[tuple[str, ...]] = []
        #: The argv of every process, virsh and qemu-img alike, in order.
        self.calls: list[tuple[str, ...]] = []
        #: Images known by path alone, with no file (see :meth:`add_image`).
        self.images: dict[str, dict[str, object]] = {}
        #: The failures :meth:`fail` injected that are still armed.
        self.failures: list[Failure] = []
        #: What every virsh process prints on stderr while :meth:`disconnect` holds.
        self.down: str | None = None
        self._next_id = 1

    # -- building a host --------------------------------------------------------------------

    def host(
        self,
        manifest_dir: str | os.PathLike[str],
        plugins: Sequence[object] = (),
        *,
        defaults: bool = True,
        **kwargs: Any,
    ) -> Host:
        """A :class:`~bkt_core.host.Host` on ``manifest_dir`` whose processes this fake
        answers: no entry points, the default plugins (unless ``defaults=False``), then
        ``plugins`` (objects, modules or ``(name, plugin)`` pairs). ``kwargs`` go to
        :class:`~bkt_core.host.Host` (``uri``, ``disabled``, ``hook_timeout``...)."""
        from bkt_core.host import Host
        from bkt_vm_plugin import default_plugins

        every = [*(default_plugins() if defaults else ()), *plugins]
        return Host(manifest_dir, entry_points=False, plugins=every, runner=self, **kwargs)

    # -- arranging the world ------------------------------------------------------------------

    def define(self, xml: str) -> FakeDomain:
        """Define a domain from ``xml`` as ``virsh define`` does (a new one shut off, an
        existing one's persistent XML replaced); raises ``ValueError`` with virsh's message
        for XML libvirt would refuse."""
        try:
            return self._define(xml)
        except _Failed as exc:
            raise ValueError(str(exc).strip()) from None

    def add_pool(
        self, name: str, target: str | os.PathLike[str], *, active: bool = True, type: str = "dir"
    ) -> FakePool:
        """A storage pool ``name`` of ``type`` (``dir``...) whose target is the directory
        ``target``; ``active``: whether it is started."""
        pool = FakePool(name, os.fspath(target), type=type, active=active)
        self.pools[name] = pool
        return pool

    def add_volume(
        self, pool: str, name: str, *, format: str = "qcow2", capacity: int = 1 << 30
    ) -> FakeVolume:
        """A volume ``name`` of storage pool ``pool``, a ``format`` image of ``capacity``
        bytes; its file is written too (see
        :meth:`add_image`) when the pool's target directory exists."""
        found = self.pools[pool]
        volume = FakeVolume(name, os.path.join(found.target, name), format, capacity)
        found.volumes[name] = volume
        if os.path.isdir(found.target):
            self.add_image(volume.path, format=format, size=capacity)
        return volume

    def add_image(
        self,
        path: str | os.PathLike[str],
        *,
        format: str = "qcow2",
        size: int = 1 << 30,
        backing: str | None = None,
        backing_format: str | None = None,
        virtual: bool = False,
    ) -> Path:
        """Write a disk image file at ``path`` (its directory must exist) that ``qemu-img
        info`` and ``virsh domblkinfo`` read as a ``format`` image of virtual ``size`` bytes
        (with ``backing``: an overlay on that file, a ``backing_format`` image, ``raw`` by
        default). ``virtual``: write no file; qemu-img
        knows the image by its path alone (for tests that describe a file system to bkt,
        ``ProvisionContext(look=...)``, instead of making one)."""
        facts: dict[str, object] = {"format": format, "virtual-size": size}
        if backing is not None:
            facts["backing-filename"] = backing
            facts["backing-filename-format"] = backing_format or "raw"
        target = Path(path)
        if virtual:
            self.images[os.fspath(path)] = facts
            return target
        target.write_bytes(FAKE_IMAGE_MAGIC + json.dumps(facts).encode() + b"\n")
        return target

    def set_state(self, name: str, state: str) -> FakeDomain:
        """Put domain ``name`` in ``state`` as if it happened outside bkt (the guest shut
        itself down, someone started it): ``running`` or ``paused`` boot an inactive domain
        with its persistent XML; ``shut off`` or ``crashed`` end an active one (a transient
        one goes away)."""
        domain = self.domains[name]
        if state in ("shut off", "crashed"):
            if domain.active:
                self._halt(domain)
            domain.state = state
        elif not domain.active:
            assert domain.xml is not None
            self._boot(domain, domain.xml, paused=state == "paused")
            domain.state = state
        else:
            domain.state = state
        return domain

    def fail(
        self, command: str, target: str | None = None, message: str = "", *, once: bool = False
    ) -> Failure:
        """Make ``command`` fail: a virsh command (``define``, ``start``, ``vol-create-as``,
        ...) or ``qemu-img info`` / ``qemu-img create``, for every run whose arguments
        include ``target`` (a domain name, a pool, a path; None: every run). ``message`` is
        what it prints on stderr (for virsh, ``error: `` is added to lines without it; for
        qemu-img, it is printed as given; empty: a generic error naming the command). The
        command does nothing else; the other commands of its batch still run, as with virsh.
        ``once``: only the next matching run fails."""
        if not message:
            message = f"internal error: injected failure of {command}"
        lines = [
            line if line.startswith("error: ") else f"error: {line}"
            for line in message.splitlines()
            if line.strip()
        ]
        failure = Failure(command, target, "\n".join(lines) + "\n", once)
        self.failures.append(failure)
        return failure

    def disconnect(
        self,
        message: str = "error: failed to connect to the hypervisor\n"
        "error: Failed to connect socket to '/var/run/libvirt/libvirt-sock': "
        "No such file or directory\n",
    ) -> None:
        """From now on every virsh process fails before running anything, printing
        ``message`` on stderr with exit status 1 (what virsh does without a daemon), until
        :meth:`reconnect`."""
        self.down = message

    def reconnect(self) -> None:
        """Undo :meth:`disconnect`."""
        self.down = None

    # -- reading what happened ----------------------------------------------------------------

    def commands(self, name: str | None = None) -> list[tuple[str, ...]]:
        """Every virsh command run so far, in order, across processes; only those called
        ``name`` (``define``, ``list``...) when it is given."""
        return [c for p in self.processes for c in p if name is None or c[0] == name]

    def xml(self, name: str) -> str:
        """Domain ``name``'s persistent XML (KeyError: no such domain or a transient one)."""
        found = self.domains[name].xml
        if found is None:
            raise KeyError(name)
        return found

    # -- the CommandRunner ------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        """Answer ``argv`` as virsh or qemu-img would (see the module's documentation), at
        once: ``timeout`` and ``input`` are accepted as any runner's and not used;
        any other program is reported as not installed (``CommandError``, kind ``spawn``)."""
        argv = tuple(argv)
        self.calls.append(argv)
        if self.delay:
            time.sleep(self.delay)
        program = os.path.basename(argv[0]) if argv else ""
        if program == "virsh":
            return self._virsh(argv)
        if program == "qemu-img":
            self.qemu_img.append(argv)
            return self._qemu_img(argv)
        raise CommandError(
            argv,
            f"cannot run {argv[0] if argv else '(nothing)'}: FakeLibvirt runs only virsh and "
            "qemu-img",
            kind="spawn",
        )

    # -- virsh ----------------------------------------------------------------------------------

    def _virsh(self, argv: tuple[str, ...]) -> Completed:
        rest = list(argv[1:])
        uri = self.uri
        while rest and rest[0].startswith("-") and rest[0] != "--":
            flag = rest.pop(0)
            if flag in ("-c", "--connect") and rest:
                uri = rest.pop(0)
            elif flag not in ("-q", "--quiet"):
                return Completed(argv, 1, "", f"error: unsupported option '{flag}'\n")
        if not rest:
            # virsh would start its interactive shell, which bkt never asks for.
            return Completed(argv, 1, "", "error: FakeLibvirt has no interactive shell\n")
        try:
            lines = split_virsh_line(rest[0]) if len(rest) == 1 else [rest]
        except ValueError as exc:
            return Completed(argv, 1, "", f"error: {exc}\n")
        visible = [tuple(c) for c in lines if c and c[0] != "echo"]
        self.processes.append(visible)
        if self.down is not None:
            return Completed(argv, 1, "", self.down)
        try:
            commands = [_parse(c) for c in lines if c]
        except _Refused as exc:
            return Completed(argv, 1, "", f"error: {exc}\n")
        stdout: list[str] = []
        stderr: list[str] = []
        status = 0
        for command in commands:
            out, err = self._one(command, uri)
            stdout.append(out)
            stderr.append(err)
            status = 1 if err and command.name != "echo" else 0
        return Completed(argv, status, "".join(stdout), "".join(stderr))

    def _one(self, c: _Command, uri: str) -> tuple[str, str]:
        """What command ``c`` prints on stdout and stderr."""
        if c.name == "echo":
            words = list(c.argv[1:])
            if words[:1] == ["--err"]:
                words = words[1:]
            if words[:1] == ["--"]:
                words = words[1:]
            text = " ".join(words)
            return ("", f"error: {text}\n") if c.has("err") else (text, "")
        for failure in self.failures:
            if failure.matches(c.name, c.argv[1:]):
                if failure.once:
                    self.failures.remove(failure)
                return "", failure.message
        try:
            return getattr(self, "_do_" + c.name.replace("-", "_"))(c, uri), ""
        except _Failed as exc:
            return "", str(exc)

    def _domain(self, c: _Command) -> FakeDomain:
        name = c.get("domain")
        found = self.domains.get(name)
        if found is None:
            # virsh also accepts an ID or a UUID where a name is asked for.
            found = next((d for d in self.domains.values() if name in (d.uuid, str(d.id))), None)
        if found is None:
            raise _Failed(f"error: failed to get domain '{name}'\n")
        return found

    def _do_uri(self, c: _Command, uri: str) -> str:
        return uri + "\n"

    def _do_version(self, c: _Command, uri: str) -> str:
        return self.version

    def _do_list(self, c: _Command, uri: str) -> str:
        chosen = _listed(c, self.domains.values())
        if c.has("persistent"):
            chosen = [d for d in chosen if d.persistent]
        if c.has("transient"):
            chosen = [d for d in chosen if not d.persistent]
        # virsh lists running domains by ID, then the others by name.
        chosen.sort(key=lambda d: (d.id is None, d.id or 0, d.name))
        if c.has("name") and c.has("uuid"):
            lines = [f"{d.uuid} {d.name}" for d in chosen]
        elif c.has("name"):
            lines = [d.name for d in chosen]
        elif c.has("uuid"):
            lines = [d.uuid for d in chosen]
        else:
            lines = [
                f" {d.id if d.id is not None else '-':<4} {d.name:<30} {d.state}" for d in chosen
            ]
        return "".join(f"{line}\n" for line in lines)

    def _do_dumpxml(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        if domain.live_xml is not None and not (c.has("inactive") and domain.xml is not None):
            return domain.live_xml
        assert domain.xml is not None
        return domain.xml

    def _read_file(self, c: _Command, what: str) -> str:
        path = c.get("file")
        try:
            with open(path, encoding="utf-8") as file:
                return file.read()
        except OSError as exc:
            raise _Failed(
                f"error: Failed to {what} domain from {path}\n"
                f"error: Failed to open file '{path}': {exc.strerror}\n"
            ) from None

    def _do_define(self, c: _Command, uri: str) -> str:
        xml = self._read_file(c, "define")
        try:
            self._define(xml)
        except _Failed as exc:
            raise _Failed(f"error: Failed to define domain from {c.get('file')}\n{exc}") from None
        return ""

    def _define(self, xml: str) -> FakeDomain:
        name, given_uuid = _domain_identity(xml)
        domain = self.domains.get(name)
        if domain is not None and given_uuid is not None and given_uuid != domain.uuid:
            raise _Failed(
                f"error: operation failed: domain '{name}' already exists with uuid "
                f"{domain.uuid}\n"
            )
        if given_uuid is not None:
            for other in self.domains.values():
                if other.uuid == given_uuid and other.name != name:
                    raise _Failed(
                        f"error: operation failed: domain '{other.name}' is already defined "
                        f"with uuid {given_uuid}\n"
                    )
        if domain is None:
            domain = FakeDomain(name, given_uuid or str(uuid_module.uuid4()), xml)
            self.domains[name] = domain
        else:
            domain.xml = xml
        return domain

    def _do_create(self, c: _Command, uri: str) -> str:
        xml = self._read_file(c, "create")
        try:
            name, given_uuid = _domain_identity(xml)
        except _Failed as exc:
            raise _Failed(f"error: Failed to create domain from {c.get('file')}\n{exc}") from None
        domain = self.domains.get(name)
        if domain is not None and domain.active:
            raise _Failed(
                f"error: Failed to create domain from {c.get('file')}\n"
                f"error: operation failed: domain '{name}' is already active\n"
            )
        if domain is None:
            domain = FakeDomain(name, given_uuid or str(uuid_module.uuid4()), None)
            self.domains[name] = domain
        self._boot(domain, xml, paused=c.has("paused"))
        return ""

    def _boot(self, domain: FakeDomain, xml: str, *, paused: bool) -> None:
        domain.live_xml = xml
        domain.state = "paused" if paused else "running"
        domain.id = self._next_id
        self._next_id += 1

    def _halt(self, domain: FakeDomain) -> None:
        if not domain.persistent:
            del self.domains[domain.name]
            return
        domain.live_xml = None
        domain.state = "shut off"
        domain.id = None

    def _do_undefine(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        if not domain.persistent:
            raise _Failed(
                f"error: Failed to undefine domain '{domain.name}'\n"
                "error: Requested operation is not valid: cannot undefine transient domain\n"
            )
        if domain.active:
            domain.xml = None
            domain.autostart = False
        else:
            del self.domains[domain.name]
        return ""

    def _do_domstate(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        return domain.state + (" (unknown)" if c.has("reason") else "") + "\n"

    def _do_domuuid(self, c: _Command, uri: str) -> str:
        return self._domain(c).uuid + "\n"

    def _do_start(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        if domain.active:
            # virsh checks this itself, before asking libvirt.
            raise _Failed("error: Domain is already active\n")
        assert domain.xml is not None
        self._boot(domain, domain.xml, paused=c.has("paused"))
        return ""

    def _not_running(self, verb: str, domain: FakeDomain) -> _Failed:
        return _Failed(
            f"error: Failed to {verb} domain '{domain.name}'\n"
            "error: Requested operation is not valid: domain is not running\n"
        )

    def _do_shutdown(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        if not domain.active:
            raise self._not_running("shutdown", domain)
        if domain.obeys_acpi:
            self._halt(domain)
        return ""

    def _do_destroy(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        if not domain.active:
            raise self._not_running("destroy", domain)
        self._halt(domain)
        return ""

    def _do_autostart(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        if not domain.persistent:
            raise _Failed(
                f"error: Failed to mark domain '{domain.name}' as autostarted\n"
                "error: Requested operation is not valid: cannot set autostart for transient "
                "domain\n"
            )
        domain.autostart = not c.has("disable")
        return ""

    def _do_domblkinfo(self, c: _Command, uri: str) -> str:
        domain = self._domain(c)
        device = c.opts.get("device")
        if not isinstance(device, str):
            raise _Failed("error: command 'domblkinfo' requires <device> option\n")
        xml = domain.live_xml or domain.xml or ""
        if device not in _disk_sources(xml):
            raise _Failed(
                f"error: invalid argument: invalid path {device} not assigned to domain\n"
            )
        try:
            facts = self._image_facts(device)
        except OSError as exc:
            raise _Failed(f"error: cannot stat file '{device}': {exc.strerror or exc}\n") from None
        physical = os.stat(device).st_size if device not in self.images else 0
        return (
            f"Capacity:       {facts['virtual-size']}\nAllocation:     {physical}\n"
            f"Physical:       {physical}\n"
        )

    def _do_domcapabilities(self, c: _Command, uri: str) -> str:
        virt_type = c.opts.get("virttype", "kvm")
        found = self.domcapabilities.get(str(virt_type))
        if found is None:
            raise _Failed(
                "error: invalid argument: KVM is not supported by "
                "'/usr/bin/qemu-system-x86_64' on this host\n"
                if virt_type == "kvm"
                else f"error: unsupported configuration: unknown virttype: {virt_type}\n"
            )
        return found

    def _do_net_list(self, c: _Command, uri: str) -> str:
        chosen = _listed(c, sorted(self.networks.values(), key=lambda n: n.name))
        if c.has("name"):
            return "".join(f"{n.name}\n" for n in chosen)
        return "".join(
            f" {n.name:<20} {'active' if n.active else 'inactive':<10} "
            f"{'yes' if n.autostart else 'no':<10} yes\n"
            for n in chosen
        )

    def _do_pool_list(self, c: _Command, uri: str) -> str:
        chosen = _listed(c, sorted(self.pools.values(), key=lambda p: p.name))
        if c.has("name"):
            # virsh pads each pool name to the width of its table column.
            return "".join(f"{p.name:<20}\n" for p in chosen)
        return "".join(
            f" {p.name:<20} {'active' if p.active else 'inactive':<10} "
            f"{'yes' if p.autostart else 'no'}\n"
            for p in chosen
        )

    def _pool(self, c: _Command) -> FakePool:
        name = c.get("pool")
        found = self.pools.get(name)
        if found is None:
            raise _Failed(
                f"error: failed to get pool '{name}'\n"
                f"error: Storage pool not found: no storage pool with matching name '{name}'\n"
            )
        return found

    def _do_pool_dumpxml(self, c: _Command, uri: str) -> str:
        return self._pool(c).xml()

    def _do_vol_list(self, c: _Command, uri: str) -> str:
        pool = self._pool(c)
        if not pool.active:
            raise _Failed(
                "error: Failed to list volumes\n"
                f"error: Requested operation is not valid: storage pool '{pool.name}' is not "
                "active\n"
            )
        return "".join(f" {v.name:<20} {v.path}\n" for _, v in sorted(pool.volumes.items()))

    def _do_vol_dumpxml(self, c: _Command, uri: str) -> str:
        name = c.get("vol")
        pool = self._pool(c) if c.has("pool") else None
        volumes = [pool] if pool is not None else list(self.pools.values())
        for candidate in volumes:
            if not candidate.active:
                continue
            volume = candidate.volumes.get(name)
            if volume is None:
                volume = next((v for v in candidate.volumes.values() if v.path == name), None)
            if volume is not None:
                return volume.xml()
        raise _Failed(
            f"error: failed to get vol '{name}'\n"
            f"error: Storage volume not found: no storage vol with matching path '{name}'\n"
        )

    def _do_vol_create_as(self, c: _Command, uri: str) -> str:
        pool = self._pool(c)
        name = c.get("name")
        failed = f"error: Failed to create vol {name}\n"
        if not pool.active:
            raise _Failed(
                failed + "error: Requested operation is not valid: storage pool "
                f"'{pool.name}' is not active\n"
            )
        if name in pool.volumes:
            raise _Failed(failed + f"error: storage volume name '{name}' already in use.\n")
        try:
            capacity = _size(c.get("capacity"))
        except ValueError:
            raise _Failed(f"error: Malformed size {c.get('capacity')}\n") from None
        fmt = str(c.opts.get("format", "raw"))
        path = os.path.join(pool.target, name)
        if os.path.lexists(path):
            raise _Failed(
                failed + f"error: operation failed: storage vol '{name}' already exists\n"
            )
        self.add_volume(pool.name, name, format=fmt, capacity=capacity)
        return ""

    # -- qemu-img ---------------------------------------------------------------------------------

    def _qemu_img(self, argv: tuple[str, ...]) -> Completed:
        sub = argv[1] if len(argv) > 1 else ""
        for failure in self.failures:
            if failure.matches(f"qemu-img {sub}", argv[2:]):
                if failure.once:
                    self.failures.remove(failure)
                said = "".join(
                    line.removeprefix("error: ") for line in failure.message.splitlines(True)
                )
                return Completed(argv, 1, "", said)
        try:
            if sub == "info":
                return Completed(argv, 0, self._qemu_img_info(argv[2:]), "")
            if sub == "create":
                self._qemu_img_create(argv[2:])
                return Completed(argv, 0, "", "")
        except _Failed as exc:
            return Completed(argv, 1, "", str(exc))
        return Completed(
            argv,
            1,
            "",
            f"qemu-img: Command not found: {sub} (FakeLibvirt models only info and create)\n",
        )

    def _image_facts(self, path: str) -> dict[str, object]:
        """What ``qemu-img info`` says of the image at ``path``: an image known by its path
        alone, else the facts a fake image file records, else a raw image of the file's
        size. Raises ``OSError``."""
        facts: dict[str, object]
        if path in self.images:
            facts = dict(self.images[path])
        else:
            with open(path, "rb") as file:
                if file.read(len(FAKE_IMAGE_MAGIC)) == FAKE_IMAGE_MAGIC:
                    facts = json.loads(file.readline())
                else:
                    facts = {"format": "raw", "virtual-size": os.stat(path).st_size}
        if "backing-filename" in facts:
            facts["full-backing-filename"] = facts["backing-filename"]
        return facts

    def _qemu_img_info(self, args: Sequence[str]) -> str:
        paths = [a for a in args if not a.startswith("-")]
        if "--output=json" not in args or len(paths) != 1:
            raise _Failed(
                f"qemu-img: FakeLibvirt models only `qemu-img info --output=json [-U] [--] "
                f"PATH`, not {display_argv(args)}\n"
            )
        path = paths[0]
        try:
            facts = self._image_facts(path)
            actual = os.stat(path).st_size if path not in self.images else 0
        except OSError as exc:
            raise _Failed(
                f"qemu-img: Could not open '{path}': Could not open '{path}': "
                f"{exc.strerror or exc}\n"
            ) from None
        return json.dumps({**facts, "filename": path, "actual-size": actual}, indent=4) + "\n"

    def _qemu_img_create(self, args: Sequence[str]) -> None:
        fmt, backing, backing_fmt = "raw", None, None
        rest: list[str] = []
        items = iter(args)
        for arg in items:
            if arg == "-f":
                fmt = next(items, "raw")
            elif arg == "-b":
                backing = next(items, None)
            elif arg == "-F":
                backing_fmt = next(items, None)
            elif arg in ("-q", "--"):
                continue
            elif arg == "-o":
                next(items, None)
            else:
                rest.append(arg)
        if len(rest) != 2:
            raise _Failed(
                f"qemu-img: FakeLibvirt models only `qemu-img create [-q] -f FMT [-b BASE "
                f"-F FMT] [--] PATH SIZE`, not {display_argv(args)}\n"
            )
        path, size_text = rest
        try:
            size = _size(size_text)
        except ValueError:
            raise _Failed(
                "qemu-img: Invalid image size specified. You may use k, M, G, T, P or E "
                "suffixes for\nqemu-img: kilobytes, megabytes, gigabytes, terabytes, petabytes "
                "and exabytes.\n"
            ) from None
        if backing is not None and not os.path.exists(backing):
            raise _Failed(
                f"qemu-img: {path}: Could not open '{backing}': No such file or directory\n"
            )
        try:
            self.add_image(
                path, format=fmt, size=size, backing=backing, backing_format=backing_fmt
            )
        except OSError as exc:
            raise _Failed(
                f"qemu-img: {path}: Could not create '{path}': {exc.strerror}\n"
            ) from None


# -- helpers -----------------------------------------------------------------------------------


class ManifestDir:
    """A manifest directory for tests: ``path`` (created when missing), :meth:`write` and
    :meth:`read` of its ``vms.json``. It is a path-like object: pass it wherever bkt takes
    the manifest directory (``fake.host(manifest_dir)``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"ManifestDir({str(self.path)!r})"

    @property
    def file(self) -> Path:
        """The ``vms.json`` of this directory."""
        from bkt_vm_plugin.subsystem import MANIFEST_FILE

        return self.path / MANIFEST_FILE

    def write(self, vms: Mapping[str, Any], **top: Any) -> Path:
        """Write ``vms.json`` with the VMs ``vms`` (name -> fields) and the top-level keys
        ``top`` (``**{"$schema": ...}``), indented as bkt writes it; its path."""
        document = {**top, "vms": dict(vms)}
        self.file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return self.file

    def read(self) -> dict[str, Any]:
        """``vms.json`` as parsed JSON."""
        found: dict[str, Any] = json.loads(self.file.read_text(encoding="utf-8"))
        return found


def vm_subsystem(host: Host) -> VmSubsystem:
    """The ``vm`` subsystem of ``host``, typed (``host.subsystem("vm")`` is any
    :class:`~bkt_core.subsystem.Subsystem`)."""
    from bkt_vm_plugin.subsystem import VmSubsystem

    sub = host.subsystem("vm")
    assert isinstance(sub, VmSubsystem)
    return sub


def split_virsh_line(line: str) -> list[list[str]]:
    """The commands of one virsh command line, each as its arguments: ``;`` and newlines
    end a command, ``#`` comments out the rest of the line, ``\\`` takes the next character
    literally; inside single quotes everything is literal; inside double quotes ``\\``
    escapes. Raises ``ValueError`` for a line virsh refuses (an unterminated quote, a
    dangling backslash)."""
    commands: list[list[str]] = []
    command: list[str] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in " \t":
            i += 1
        elif ch in ";\n":
            if command:
                commands.append(command)
            command = []
            i += 1
        elif ch == "#":
            while i < n and line[i] != "\n":
                i += 1
        else:
            arg, i = _word(line, i)
            command.append(arg)
    if command:
        commands.append(command)
    return commands


def _word(line: str, i: int) -> tuple[str, int]:
    """The argument that starts at ``line[i]``, and the index after it."""
    n = len(line)
    arg: list[str] = []
    while i < n and line[i] not in " \t;\n":
        ch = line[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError("dangling \\")
            arg.append(line[i + 1])
            i += 2
        elif ch == "'":
            close = line.find("'", i + 1)
            if close < 0:
                raise ValueError("unfinished '")
            arg.append(line[i + 1 : close])
            i = close + 1
        elif ch == '"':
            i += 1
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                arg.append(line[i])
                i += 1
            if i >= n:
                raise ValueError('unfinished "')
            i += 1
        else:
            arg.append(ch)
            i += 1
    return "".join(arg), i


def _parse(argv: Sequence[str]) -> _Command:
    """One command's argv as its options, or :class:`_Refused` as virsh refuses it."""
    name = argv[0]
    spec = _SPECS.get(name)
    if spec is None:
        raise _Refused(f"unknown command: '{name}' (FakeLibvirt does not model it)")
    opts: dict[str, str | bool] = {}
    free = list(spec.positional)
    args = list(argv[1:])
    if name == "echo":
        return _Command(name, {"err": True} if "--err" in args[:1] else {}, tuple(argv))
    while args:
        arg = args.pop(0)
        if arg == "--":
            continue
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if key in spec.flags and not eq:
                opts[key] = True
            elif key in spec.options:
                if not eq:
                    if not args:
                        raise _Refused(f"expected syntax: --{key} <string>")
                    value = args.pop(0)
                opts[key] = value
                if key in free:
                    free.remove(key)
            else:
                raise _Refused(f"command '{name}' doesn't support option --{key}")
        elif free:
            opts[free.pop(0)] = arg
        else:
            raise _Refused(f"unexpected data '{arg}'")
    for key in spec.required:
        if key not in opts:
            raise _Refused(f"command '{name}' requires <{key}> option")
    return _Command(name, opts, tuple(argv))


def _xml_root(xml: str) -> ET.Element:
    import xml.etree.ElementTree as ET

    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else 1
        raise _Failed(f"error: (domain_definition):{line}: {exc}\n") from None


def _domain_identity(xml: str) -> tuple[str, str | None]:
    """The name and UUID (None when absent) of a domain's XML, or :class:`_Failed` with what
    libvirt says of XML it refuses."""
    root = _xml_root(xml)
    if root.tag != "domain":
        raise _Failed(
            f"error: XML error: unexpected root element <{root.tag}>, expecting <domain>\n"
        )
    if not root.get("type"):
        raise _Failed("error: XML error: Missing required attribute 'type' in element 'domain'\n")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise _Failed("error: missing name information\n")
    found = root.findtext("uuid")
    given_uuid = None
    if found is not None:
        try:
            given_uuid = str(uuid_module.UUID(found.strip()))
        except ValueError:
            raise _Failed("error: XML error: malformed uuid element\n") from None
    _check_cpu(root)
    return name, given_uuid


def _check_cpu(root: ET.Element) -> None:
    """Refuse, as libvirt's domain parser does, a ``<cpu>`` in custom mode (the mode when
    none is given) with ``<feature>`` children but no CPU model: no ``<model>``, or one
    with no text (a model of blanks is accepted)."""
    cpu = root.find("cpu")
    if cpu is None or cpu.get("mode", "custom") != "custom" or cpu.find("feature") is None:
        return
    model = cpu.find("model")
    if model is None or not model.text:
        raise _Failed("error: XML error: Non-empty feature list specified without CPU model\n")


def _disk_sources(xml: str) -> list[str]:
    """The file or volume paths of a domain's disks (for ``domblkinfo --device``), also
    their target names."""
    try:
        root = _xml_root(xml)
    except _Failed:
        return []
    out: list[str] = []
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        if source is not None and source.get("file"):
            out.append(str(source.get("file")))
        target = disk.find("target")
        if target is not None and target.get("dev"):
            out.append(str(target.get("dev")))
    return out


def _size(text: str) -> int:
    """Bytes of a size as virsh and qemu-img take it (``2G``, ``2GiB``, ``1048576``)."""
    found = re.fullmatch(r"\s*(\d+)\s*([kmgtpKMGTP]?)(?:i?B)?\s*", text)
    if found is None:
        raise ValueError(text)
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return _text(value).replace("'", "&apos;")
