"""``bkt vm status``: what runs, what is stopped or missing, and what drifted.

One virsh process (the observation batch) whatever the number of VMs. A VM's disk format is
taken from its own domain, so status never reads an image (and never reports
``disk_format``); an ISO left out because its file is missing or not cached is not drift.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bkt_core.errors import BktError, OperationError
from bkt_core.plan import StatusReport, StatusRow

if TYPE_CHECKING:
    from bkt_vm_plugin.subsystem import VmSubsystem

UNREADABLE = "(definition unreadable)"


def status(sub: VmSubsystem, names: Sequence[str] = (), *, all: bool = False) -> StatusReport:
    from bkt_vm_plugin.domain_xml import resolve_context
    from bkt_vm_plugin.iso import cache_dir
    from bkt_vm_plugin.model import home_dir
    from bkt_vm_plugin.sync import changed_fields, observe

    manifest = sub.load()
    managed = [n for n in sorted(manifest.vms) if not names or n in names]
    observation = observe(sub.virsh, managed)
    others = list(dict.fromkeys(n for n in names if n not in manifest.vms))
    for name in others:
        if name not in observation.domains:
            raise OperationError(
                f"{name} is neither in the manifest nor a libvirt domain",
                hint="`bkt vm status --all` lists the VMs",
            )
    if all:
        others += sorted(observation.domains - set(manifest.vms) - set(others))

    home, iso_cache = home_dir(), str(cache_dir())
    mapping = sub.mapping
    rows: list[StatusRow] = []
    for name in managed:
        state = observation.state(name)
        reply = observation.definitions.get(name)
        if reply is None:
            rows.append(StatusRow(name, state, True, None))
            continue
        vm = manifest.vms[name]
        try:
            if not reply.ok:
                raise OperationError(reply.message)
            ctx = resolve_context(
                name,
                vm,
                home=home,
                iso_cache=iso_cache,
                exists=os.path.exists,
                facts=observation.facts(name),
            )
            parsed = mapping.parse(reply.stdout, ctx)
            # The disk format comes from the domain itself, and a CD-ROM it has stays.
            fmt = parsed.readings.get("disk_format")
            ctx = resolve_context(
                name,
                vm,
                home=home,
                iso_cache=iso_cache,
                disk_format=str(fmt.value) if fmt is not None and fmt.is_clean else "qcow2",
                exists=os.path.exists,
                facts=observation.facts(name),
                present=parsed.cdroms(),
            )
            drift = [
                f for f in changed_fields(mapping.diff(parsed, vm, ctx)) if f != "disk_format"
            ]
        except BktError:
            drift = [UNREADABLE]
        rows.append(StatusRow(name, state, True, not drift, tuple(drift)))
    rows += [StatusRow(name, observation.state(name), False, None) for name in others]
    return StatusReport(tuple(rows))
