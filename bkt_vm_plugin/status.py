"""``bkt vm status``: what runs, what is stopped or missing, and what drifted.

One virsh process (the observation batch) whatever the number of VMs, and a second one for
the running definitions when any of them runs. A VM's disk format is
taken from its own domain, so status never reads an image (and never reports
``disk_format``); an ISO left out because its file is missing or not cached is not drift.

A running VM whose persistent definition differs from the one it runs (a sync changed it)
has a restart pending: the fields whose readings differ between ``dumpxml --inactive`` and
``dumpxml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from bkt_core.errors import BktError, OperationError

if TYPE_CHECKING:
    from bkt_core.plan import FieldChange
    from bkt_core.status_report import StatusReport
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping, Parsed
    from bkt_vm_plugin.observe import Observation, Resolver
    from bkt_vm_plugin.subsystem import VmSubsystem
    from bkt_vm_plugin.virsh import Reply

UNREADABLE = "(definition unreadable)"

#: What reading a domain's definition gives (:func:`_read`).
_Read: TypeAlias = "tuple[Parsed, DomainContext, list[str]] | BktError"

#: Readings libvirt rewrites when a domain starts, which a restart would not change: it
#: replaces ``host-model`` with the CPU model it computed for this host.
_EXPANDED_AT_START = {("cpu_model", "host-model")}


def status(sub: VmSubsystem, names: Sequence[str] = (), *, all: bool = False) -> StatusReport:
    from bkt_vm_plugin.observe import (
        Observing,
        load_observing,
        observing_of,
        start_observing,
        stopped_on_error,
    )

    started: list[Observing] = []

    def start(in_manifest: Sequence[str]) -> None:
        # virsh reads libvirt while the manifest is validated (or the defaults are filled)
        # and the mapping is built.
        managed = [n for n in sorted(in_manifest) if not names or n in names]
        started.append(start_observing(sub.virsh, managed, live=True))

    manifest = load_observing(sub, start, started)
    managed = [n for n in sorted(manifest.vms) if not names or n in names]
    with stopped_on_error(started):
        observing = observing_of(sub.virsh, managed, started, live=True)
        from bkt_core.status_report import StatusReport, StatusRow
        from bkt_vm_plugin.observe import Resolver
        from bkt_vm_plugin.xmltree import prepare

        # What reading the answer needs is made while virsh reads libvirt.
        mapping = sub.mapping
        prepare()
        on_host = Resolver.of_host()
    resolvers: list[Resolver] = []

    def read(observation: Observation, name: str) -> _Read:
        # Each definition is read as soon as it comes, while virsh reads the next one.
        if not resolvers or resolvers[-1].observation is not observation:
            resolvers.append(dataclasses.replace(on_host, observation=observation))
        return _read(
            mapping, resolvers[-1], name, manifest.vms[name], observation.definitions[name]
        )

    observation, early = observing.wait_early(read)
    others = list(dict.fromkeys(n for n in names if n not in manifest.vms))
    for name in others:
        if name not in observation.domains:
            from bkt_vm_plugin.ops import not_in_manifest

            raise not_in_manifest(
                sub,
                name,
                hint="it is not a libvirt domain either; `bkt vm status --all` lists the VMs",
            )
    if all:
        others += sorted(observation.domains - set(manifest.vms) - set(others))

    resolver = dataclasses.replace(on_host, observation=observation)
    rows: list[StatusRow] = []
    for name in managed:
        state = observation.state(name)
        reply = observation.definitions.get(name)
        if reply is None:
            rows.append(StatusRow(name, state, True, None))
            continue
        done = early.get(name)
        if done is None:
            done = _read(mapping, resolver, name, manifest.vms[name], reply)
        if isinstance(done, BktError):
            # The row stays (status lists every VM), with why it could not be read.
            rows.append(
                StatusRow(name, state, True, False, (UNREADABLE,), (), done.message, done.hint)
            )
            continue
        parsed, ctx, drift = done
        pending = _pending(mapping, observation.live.get(name), parsed, ctx)
        rows.append(StatusRow(name, state, True, not drift, tuple(drift), pending))
    rows += [StatusRow(name, observation.state(name), False, None) for name in others]
    return StatusReport(tuple(rows), key=sub.manifest_key)


def _read(
    mapping: DomainMapping, resolver: Resolver, name: str, vm: VmDefinition, reply: Reply
) -> _Read:
    """Domain ``name``'s definition ``reply`` read against ``vm``: parsed, in its context, and
    what drifted (never ``disk_format``: the format comes from the domain itself); or the
    error that says why it cannot be read."""
    try:
        if not reply.ok:
            raise OperationError(f"cannot read its definition: {reply.message}")
        parsed = mapping.parse(reply.stdout, resolver.context(name, vm))
        # The disk format comes from the domain itself, and a CD-ROM it has stays.
        ctx = resolver.of_domain(name, vm, parsed)
        drift = [f for f in changed_fields(mapping.diff(parsed, vm, ctx)) if f != "disk_format"]
    except BktError as exc:
        return exc
    return parsed, ctx, drift


def changed_fields(changes: Iterable[FieldChange]) -> list[str]:
    """The fields ``changes`` change, each once, in their order."""
    return list(dict.fromkeys(c.field for c in changes))


def _pending(
    mapping: DomainMapping, live: Reply | None, persistent: Parsed, ctx: DomainContext
) -> tuple[str, ...]:
    """The fields whose persistent reading differs from the running one: what the next boot
    changes. Nothing when the VM does not run or its running definition cannot be read."""
    if live is None or not live.ok:
        return ()
    try:
        running = mapping.parse(live.stdout, ctx).readings
    except BktError:
        return ()
    # A persistent reading without a value (bkt cannot tell what the next boot brings, e.g.
    # firmware libvirt chooses at start over a remote URI) is no evidence of a pending change.
    return tuple(
        name
        for name, reading in persistent.readings.items()
        if name != "disk_format"
        and reading.has_value
        and running.get(name) != reading
        and (name, reading.value) not in _EXPANDED_AT_START
    )
