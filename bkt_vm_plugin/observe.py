"""What libvirt holds, and what a VM's context is: the one place sync, status and capture
learn both.

Reading libvirt costs one virsh process however many VMs there are: the domain lists and
every ``dumpxml --inactive --security-info`` go into one batch (:func:`observe`).

A VM's :class:`~bkt_vm_plugin.domain_xml.DomainContext` holds the facts its manifest entry
does not: the expanded disk path, the image's format, the ISO files to attach, the observed
facts about the domain. :func:`resolve_context` decides them from the manifest entry alone;
a :class:`Resolver` holds this host's part (home, ISO cache, the observation) and, once a
domain is parsed, resolves the context in which the domain's own state counts
(:meth:`Resolver.of_domain`: its CD-ROMs, and its own disk format).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition, VmManifest
    from bkt_vm_plugin.domain_xml import DomainContext, Parsed
    from bkt_vm_plugin.host_firmware import HostFirmware
    from bkt_vm_plugin.subsystem import VmSubsystem
    from bkt_vm_plugin.virsh import Reply, Virsh

__all__ = [
    "Observation",
    "Observing",
    "Resolver",
    "load_observing",
    "observe",
    "observing_of",
    "resolve_context",
    "start_observing",
    "stopped_on_error",
]

_T = TypeVar("_T")

#: How many domain lists the observation batch starts with, before the definitions.
_LISTS = 3


@dataclass(frozen=True)
class Observation:
    """What libvirt holds, as far as sync, status and capture need it: every domain, the
    active ones (running or paused), those with autostart, and the inactive definition of
    each domain asked for that exists; with ``live``, also the running definition of each
    active one."""

    domains: frozenset[str]
    active: frozenset[str]
    autostart: frozenset[str]
    definitions: dict[str, Reply] = field(default_factory=dict)
    firmware: HostFirmware | None = None
    live: dict[str, Reply] = field(default_factory=dict)

    def state(self, name: str) -> str:
        """``running``, ``stopped`` or ``missing``."""
        if name in self.active:
            return "running"
        return "stopped" if name in self.domains else "missing"

    def facts(self, name: str) -> dict[str, Any]:
        """The facts about domain ``name`` that its XML does not hold, among them the host's
        firmware, which decides what a UEFI domain without firmware features boots with."""
        return {
            "autostart": name in self.autostart,
            "active": name in self.active,
            "firmware": self.firmware,
        }


def _names(reply: Reply) -> frozenset[str]:
    return frozenset(line for line in reply.check().splitlines() if line.strip())


def observe(virsh: Virsh, names: Iterable[str], *, live: bool = False) -> Observation:
    """The domain lists and the definitions of ``names``, in one virsh process. With
    ``live``, also the running definition (``dumpxml`` without ``--inactive``) of each of
    them that is active: a second process, only when one of them is."""
    return start_observing(virsh, names, live=live).wait()


class Observing:
    """An :func:`observe` under way (:func:`start_observing`): virsh reads libvirt while the
    caller prepares what it needs to use the answer; :meth:`wait` gives the
    :class:`Observation`, or raises what :func:`observe` raises."""

    def __init__(self, virsh: Virsh, names: Iterable[str], *, live: bool) -> None:
        self._virsh = virsh
        self._live = live
        self._wanted = list(dict.fromkeys(names))
        # The lists come first (_LISTS of them): what each domain's facts need.
        commands: list[list[str]] = [
            ["list", "--all", "--name"],
            ["list", "--name"],
            ["list", "--all", "--name", "--autostart"],
        ]
        commands += [
            ["dumpxml", "--inactive", "--security-info", "--domain", n] for n in self._wanted
        ]
        # Only reads: the same command line run again may start it before bkt has loaded.
        self._batch = virsh._start_batch(commands, prestart=True)

    @property
    def names(self) -> list[str]:
        """The domains whose definitions are read, in the order asked."""
        return list(self._wanted)

    def stop(self) -> None:
        """Never wait: virsh is stopped (instead of a wait; after one, nothing happens)."""
        self._batch.stop()

    def wait(self) -> Observation:
        """The observation (call it once, or :meth:`wait_early` instead)."""
        return self.wait_early(None)[0]

    def wait_early(
        self, each: Callable[[Observation, str], _T] | None
    ) -> tuple[Observation, dict[str, _T]]:
        """The observation, and what ``each`` made of the domains whose definitions came
        while virsh still ran: ``each(observation, name)`` is called then, for a domain
        asked for, with the observation as far as it goes (the lists, and the definitions
        come so far, ``name``'s among them; no running definitions), so that the caller
        reads each definition while virsh reads the next one. Given back are only the
        results whose inputs (the lists and the definition) are those of the observation;
        a runner that cannot run in the background gives none (call it once)."""
        # Imported here, not before virsh starts.
        from bkt_vm_plugin.host_firmware import HostFirmware

        firmware = HostFirmware(self._virsh.uri)
        wanted = self._wanted
        lists: dict[int, Reply] = {}
        so_far: list[Observation] = []
        made: dict[str, tuple[Reply, _T]] = {}

        def early(index: int, reply: Reply) -> None:
            if each is None:
                return
            if index < _LISTS:
                lists[index] = reply
                if len(lists) == _LISTS and all(r.ok for r in lists.values()):
                    domains, active, autostart = (_names(lists[i]) for i in range(_LISTS))
                    so_far.append(Observation(domains, active, autostart, {}, firmware))
                return
            name = wanted[index - _LISTS]
            if not so_far or name not in so_far[0].domains:
                return
            so_far[0].definitions[name] = reply
            made[name] = (reply, each(so_far[0], name))

        replies = self._batch.wait(early if each is not None else None)
        domains, active, autostart = (_names(r) for r in replies[:_LISTS])
        definitions = {name: r for name, r in zip(wanted, replies[_LISTS:], strict=True)}
        running: dict[str, Reply] = {}
        # Which domains run is known only now: the running definitions of those (and only
        # those) take a second process, none when none of them runs.
        if self._live and (on := [name for name in wanted if name in active]):
            commands = [["dumpxml", "--security-info", "--domain", name] for name in on]
            running = dict(zip(on, self._virsh.batch(commands), strict=True))
        observation = Observation(
            domains,
            active,
            autostart,
            {name: r for name, r in definitions.items() if name in domains},
            firmware,
            running,
        )
        kept: dict[str, _T] = {}
        if so_far and (so_far[0].domains, so_far[0].active, so_far[0].autostart) == (
            domains,
            active,
            autostart,
        ):
            kept = {
                name: result
                for name, (reply, result) in made.items()
                if observation.definitions.get(name) == reply
            }
        return observation, kept


def load_observing(
    sub: VmSubsystem, start: Callable[[Sequence[str]], None], started: Sequence[Observing]
) -> VmManifest:
    """``sub``'s manifest (:meth:`~bkt_vm_plugin.subsystem.VmSubsystem.load`), ``start``
    called with its VMs' names as soon as they are known, to start observing them (into
    ``started``). When the load fails, what was started is stopped."""
    with stopped_on_error(started):
        return sub.load(on_names=start)


def observing_of(
    virsh: Virsh, names: Sequence[str], started: list[Observing], *, live: bool = False
) -> Observing:
    """The observation of ``names``: the last of ``started`` when it reads them, else a new
    one, added to ``started`` (the one that read other names, the names before validation
    said, is stopped)."""
    if started and started[-1].names == list(names):
        return started[-1]
    if started:
        started[-1].stop()
    started.append(start_observing(virsh, names, live=live))
    return started[-1]


@contextmanager
def stopped_on_error(started: Sequence[Observing]) -> Iterator[None]:
    """Stops each observation of ``started`` (:meth:`Observing.stop`) when the block raises:
    a command that fails before it waits for virsh leaves no virsh behind."""
    try:
        yield
    except BaseException:
        for observing in started:
            observing.stop()
        raise


def start_observing(virsh: Virsh, names: Iterable[str], *, live: bool = False) -> Observing:
    """:func:`observe`, started: the virsh process runs (when the runner can run in the
    background) until :meth:`Observing.wait`."""
    return Observing(virsh, names, live=live)


def resolve_context(
    name: str,
    vm: VmDefinition,
    *,
    home: str | None,
    iso_cache: str | None,
    disk_format: str = "qcow2",
    exists: Callable[[str], bool],
    facts: Mapping[str, Any] | None = None,
    present: Iterable[str] = (),
) -> DomainContext:
    """The :class:`DomainContext` of VM ``name``: ``~`` expands with ``home``; a URL source's
    file is the one fetch-iso writes, ``iso_cache/`` and :func:`bkt_vm_plugin.iso.cache_name`
    (None: this host has no ISO cache, and URL sources are left out).
    This is the one place that decides which CD-ROMs a domain should have: a local ISO whose
    file exists, a URL source whose file is cached, and a source whose file is missing but
    whose CD-ROM the domain already has (``present``: the files of the domain's CD-ROMs,
    :meth:`Parsed.cdroms`), which is kept."""
    from bkt_vm_plugin.domain_xml import AttachedIso, DomainContext
    from bkt_vm_plugin.paths import expand_home

    kept = set(present)
    attached: list[AttachedIso] = []
    missing: list[AttachedIso] = []
    left_out: list[str] = []
    warnings: list[str] = []
    for source in vm.iso_sources:
        fate, path, warning = _iso_fate(name, source, home, iso_cache, exists, kept)
        if warning is not None:
            warnings.append(warning)
        if fate == "attached":
            attached.append(AttachedIso(source, path))
        elif fate == "missing":
            missing.append(AttachedIso(source, path))
        else:
            left_out.append(path)
    return DomainContext(
        name=name,
        disk_path=expand_home(vm.disk_path, home),
        disk_format=disk_format,
        isos=tuple(iso.path for iso in attached),
        facts=dict(facts or {}),
        attached=tuple(attached),
        missing=tuple(missing),
        left_out=tuple(left_out),
        warnings=tuple(warnings),
        home=home,
        iso_cache=iso_cache,
    )


def _iso_fate(
    name: str,
    source: Any,
    home: str | None,
    iso_cache: str | None,
    exists: Callable[[str], bool],
    kept: set[str],
) -> tuple[str, str, str | None]:
    """What becomes of one ISO source of VM ``name``: (``attached``, ``missing`` or
    ``left_out``; its file, or for a URL left out the URL; the warning to give, if any)."""
    import posixpath

    from bkt_vm_plugin.definition import IsoUrl
    from bkt_vm_plugin.iso_cache import NO_CACHE_DIR, cache_name
    from bkt_vm_plugin.paths import expand_home

    if isinstance(source, IsoUrl):
        if iso_cache is None:
            # No ISO cache on this host: nothing of it can be attached, and nothing else of
            # the VM depends on it.
            return (
                "left_out",
                source.url,
                f"ISO {source.url} cannot be cached ({NO_CACHE_DIR}); its CD-ROM is left out",
            )
        try:
            path: str | None = posixpath.join(iso_cache, cache_name(source.url))
        except ValueError:
            path = None
        if path is not None and exists(path):
            return "attached", path, None
        if path is not None and path in kept:
            # The domain already has this cached file as a CD-ROM and the cache was emptied:
            # kept, as a missing local ISO's is, so that status, capture and sync read the
            # source as it is and never turn it into a path into the cache.
            return (
                "attached",
                path,
                f"ISO {source.url} is no longer in the ISO cache ({path}); the domain keeps "
                f"its CD-ROM, but the VM cannot start until `bkt vm fetch-iso {name}` "
                "downloads it again",
            )
        shown = path or f"{iso_cache}/?"
        return (
            "left_out",
            source.url,
            f"ISO {source.url} is not in the ISO cache ({shown}); its CD-ROM is left "
            f"out until it is: `bkt vm fetch-iso {name}` downloads it",
        )
    path = expand_home(source.path, home)
    if exists(path):
        return "attached", path, None
    if path in kept:
        # The domain already has this CD-ROM: keep it rather than remove a drive because
        # its file is gone for now, so that capture then sync stays a no-op.
        return (
            "attached",
            path,
            f"ISO {path} does not exist; the domain keeps its CD-ROM, but the VM "
            "cannot start until the file is back",
        )
    return "missing", path, f"ISO {path} does not exist; its CD-ROM is left out until it does"


@dataclass(frozen=True)
class Resolver:
    """Resolves VM contexts on this host: ``home`` expands ``~``, ``iso_cache`` holds the
    downloaded ISOs, ``exists`` says whether a local file exists, and ``observation`` (when
    libvirt was read) gives each domain's observed facts."""

    home: str | None
    iso_cache: str | None
    exists: Callable[[str], bool] = os.path.exists
    observation: Observation | None = None

    @classmethod
    def of_host(
        cls,
        observation: Observation | None = None,
        *,
        exists: Callable[[str], bool] = os.path.exists,
    ) -> Resolver:
        """The resolver of the user running bkt: their home and ISO cache."""
        from bkt_vm_plugin.iso_cache import find_cache_dir
        from bkt_vm_plugin.paths import home_dir

        cache = find_cache_dir()
        return cls(home_dir(), None if cache is None else str(cache), exists, observation)

    def context(
        self,
        name: str,
        vm: VmDefinition,
        *,
        disk_format: str = "qcow2",
        present: Iterable[str] = (),
        facts: Mapping[str, Any] | None = None,
    ) -> DomainContext:
        """:func:`resolve_context` on this host; ``facts`` default to the observed ones."""
        if facts is None:
            facts = self.observation.facts(name) if self.observation is not None else {}
        return resolve_context(
            name,
            vm,
            home=self.home,
            iso_cache=self.iso_cache,
            disk_format=disk_format,
            exists=self.exists,
            facts=facts,
            present=present,
        )

    def of_domain(
        self,
        name: str,
        vm: VmDefinition,
        parsed: Parsed,
        *,
        disk_format: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> DomainContext:
        """The context of VM ``name`` once its domain is parsed: the domain's CD-ROMs are
        kept (a missing file does not remove its drive), and the disk format is
        ``disk_format`` or else the domain's own (qcow2 when it cannot be read cleanly)."""
        if disk_format is None:
            reading = parsed.readings.get("disk_format")
            disk_format = (
                str(reading.value) if reading is not None and reading.is_clean else "qcow2"
            )
        return self.context(
            name, vm, disk_format=disk_format, present=parsed.cdroms(), facts=facts
        )
