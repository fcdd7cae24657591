"""Plan and execute a sync.

Planning observes libvirt in one virsh process (:func:`bkt_vm_plugin.observe.observe`, as
status and capture do), reads and never changes anything; :func:`execute` creates disks,
defines every new or changed domain in one batch, reads each definition back to check that
every owned field landed, and then runs the post-sync hooks with the results.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bkt_core.errors import BktError, OperationError
from bkt_core.plan import EntryResult, FieldChange, PlanEntry, SyncPlan, SyncReport
from bkt_vm_plugin.observe import (
    Observation,
    Observing,
    Resolver,
    load_observing,
    observe,
    observing_of,
    start_observing,
    stopped_on_error,
)

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition, VmManifest
    from bkt_vm_plugin.disks import DiskCreation, ProvisionContext
    from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping, Parsed
    from bkt_vm_plugin.subsystem import VmSubsystem
    from bkt_vm_plugin.virsh import Virsh

__all__ = ["PostSyncContext", "execute", "plan", "sync"]

BIOS_TO_UEFI_NOTE = (
    "the firmware changes from BIOS to UEFI: an installed guest may not boot until its boot "
    "loader is set up for UEFI"
)
SECURE_BOOT_NOTE = (
    "Secure Boot keys are enrolled only into a fresh NVRAM: start it once with "
    "`virsh start --reset-nvram NAME` (this resets its UEFI variables)"
)
FIRMWARE_FLAG = "--allow-firmware-change"


def filled_change_refusal(
    name: str, vm: VmDefinition, parsed: Parsed, changes: Sequence[FieldChange]
) -> OperationError | None:
    """The refusal of a change of an existing domain that only a plugin's filled value asks
    for (:attr:`~bkt_vm_plugin.definition.VmDefinition.filled`): a default that changes
    under the author (a new osinfo database, a plugin upgraded or installed) must not
    switch an installed guest's devices (an installed Windows moved from e1000e to virtio
    has no network). None when every change is one the author's entry asks for."""
    from bkt_vm_plugin.defaults import is_filled, state_hint

    refused = [c for c in changes if is_filled(vm, c.field)]
    if not refused:
        return None
    parts, hints = [], []
    for change in refused:
        reading = parsed.readings.get(change.field)
        value = reading.value if reading is not None and reading.has_value else None
        plugin = vm.filled_by.get(change.field)
        by = f"plugin {plugin}" if plugin else "a plugin"
        parts.append(
            f"{change.field} would change from {change.old} (the domain's) to {change.new} "
            f"(filled by {by})"
        )
        hints.append(state_hint(vm, change.field, value))
    return OperationError(
        f"{'; '.join(parts)}. bkt does not change an existing domain for a value its manifest "
        f"entry does not state; nothing was changed for {name}",
        hint="; ".join(hints),
    )


def firmware_change(parsed: Parsed, vm: VmDefinition) -> str | None:
    """What a sync to ``vm`` would do to the firmware an existing UEFI domain boots with,
    when it needs the user's confirmation: turning Secure Boot off, or switching to a
    firmware of another kind while the domain keeps its NVRAM (UEFI variables made for the
    old one: keys enrolled for Secure Boot, or none where Secure Boot now expects them).
    None when nothing of the kind changes."""
    boot, secure = parsed.readings.get("boot"), parsed.readings.get("secure_boot")
    if boot is None or secure is None or boot.value != "uefi":
        return None
    wanted = vm.boot == "uefi" and vm.secure_boot
    if secure.is_clean and secure.value == wanted:
        return None
    if secure.is_clean and secure.value is True:
        becomes = "BIOS" if vm.boot == "bios" else "UEFI firmware without Secure Boot"
        return (
            f"SECURE BOOT WOULD BE TURNED OFF: the domain boots with Secure Boot today and "
            f"would boot {becomes}"
            + ("" if vm.boot == "bios" else ", keeping its NVRAM with the enrolled keys")
        )
    if secure.is_clean:
        if vm.boot == "bios":
            return None
        return (
            "THE FIRMWARE WOULD CHANGE to Secure Boot firmware, and the domain keeps its NVRAM, "
            "which has no Secure Boot keys enrolled"
        )
    return (
        f"THE FIRMWARE WOULD CHANGE, and bkt cannot tell what it boots with today "
        f"({secure.reason})"
    )


# -- planning --------------------------------------------------------------------------------


def select(manifest: VmManifest, names: Sequence[str], sub: VmSubsystem) -> list[str]:
    """The manifest VMs named (all when none), in manifest order. A name the manifest does
    not have is an error, with a hint when libvirt has such a domain."""
    if not names:
        return sorted(manifest.vms)
    unknown = [n for n in names if n not in manifest.vms]
    if unknown:
        from bkt_vm_plugin.ops import not_in_manifest

        raise not_in_manifest(
            sub,
            unknown[0],
            hint="`bkt vm status --all` lists the VMs; `bkt vm capture NAME` adds a libvirt "
            "domain to the manifest",
        )
    return sorted(set(names))


@dataclass
class Planner:
    """The facts one plan needs, read once: the host's mapping, virsh, what libvirt holds
    and how contexts resolve on this host (home, ISO cache), and what disks are looked at
    and created with (:attr:`provision`)."""

    sub: VmSubsystem
    virsh: Virsh
    resolver: Resolver
    allow_firmware_change: bool = False
    #: Why each file (path, what) is refused as a system file, or None, once per plan: an
    #: existing domain's context is made twice, and each check resolves the path's links.
    _system_paths: dict[tuple[str, str], str | None] = field(default_factory=dict)
    #: The real path of each directory those files are in, resolved once per plan.
    _directories: dict[str, str] = field(default_factory=dict)

    @property
    def mapping(self) -> DomainMapping:
        return self.sub.mapping

    @functools.cached_property
    def provision(self) -> ProvisionContext:
        # Made on first need: a sync whose domains have their manifest's disks looks at
        # none, and never imports disk provisioning.
        from bkt_vm_plugin.disks import ProvisionContext

        return ProvisionContext(self.virsh)

    @functools.cached_property
    def remote(self) -> bool:
        """Whether libvirt may be on another host (then the local files say nothing)."""
        from bkt_vm_plugin.provision import is_remote_uri

        return is_remote_uri(self.virsh.uri)

    @property
    def observation(self) -> Observation:
        assert self.resolver.observation is not None
        return self.resolver.observation

    @property
    def home(self) -> str | None:
        return self.resolver.home

    def context(
        self,
        name: str,
        vm: VmDefinition,
        disk_format: str = "qcow2",
        parsed: Parsed | None = None,
    ) -> DomainContext:
        """VM ``name``'s context (:mod:`bkt_vm_plugin.observe`), with its domain's CD-ROMs
        when ``parsed``; refused when it names a system file the VM does not allow."""
        if parsed is None:
            ctx = self.resolver.context(name, vm, disk_format=disk_format)
        else:
            ctx = self.resolver.of_domain(name, vm, parsed, disk_format=disk_format)
        if not vm.allow_system_paths:
            # Also for a domain that already has this disk (plan_disk checked a new one
            # before anything read it): sync does not keep a VM on /etc/passwd either. URL
            # sources are files of bkt's own ISO cache.
            from bkt_vm_plugin.definition import IsoPath
            from bkt_vm_plugin.paths import realpath_in, system_path_problem

            files = [("disk", ctx.disk_path)] + [
                ("ISO", iso.path) for iso in ctx.attached if isinstance(iso.source, IsoPath)
            ]
            for what, path in files:
                if (path, what) not in self._system_paths:
                    self._system_paths[path, what] = system_path_problem(
                        path,
                        what,
                        resolve=not self.remote,
                        realpath=lambda p: realpath_in(p, self._directories),
                    )
                problem = self._system_paths[path, what]
                if problem is not None:
                    raise OperationError(problem)
        return ctx

    def entry(self, name: str, vm: VmDefinition) -> PlanEntry:
        reply = self.observation.definitions.get(name)
        try:
            if reply is None:
                return self.create(name, vm)
            if not reply.ok:
                raise OperationError(f"cannot read its definition: {reply.message}")
            return self.update(name, vm, reply.stdout)
        except BktError as exc:
            error = self.sub.host.named(exc)
            return PlanEntry(name, "error", message=error.message, hint=error.hint)

    def disk(self, name: str, vm: VmDefinition) -> tuple[str, DiskCreation | None]:
        """The disk's format and, when it must be created, the creation."""
        from bkt_vm_plugin.disks import disk_format, disk_request, plan_disk

        request = disk_request(name, vm, self.home)
        creation = plan_disk(self.sub.host, name, vm, request, self.provision)
        if creation is not None:
            return creation.format, creation
        return disk_format(request.path, self.provision), None

    def create(self, name: str, vm: VmDefinition) -> PlanEntry:
        fmt, creation = self.disk(name, vm)
        ctx = self.context(name, vm, fmt)
        xml = self.mapping.render(vm, ctx)
        parsed = self.mapping.parse(xml, ctx)
        # What a new domain does not get from its XML (autostart) shows as a change.
        changes = tuple(
            c for c in self.mapping.diff(parsed, vm, ctx) if not self.mapping.needs_define([c])
        )
        details = {"create_disk": creation.to_json()} if creation else {}
        return PlanEntry(
            name,
            "create",
            changes=changes,
            warnings=ctx.warnings,
            details=details,
            payload=Payload(xml, creation, ctx),
        )

    def update(self, name: str, vm: VmDefinition, xml: str) -> PlanEntry:
        from bkt_vm_plugin.paths import expand_home

        ctx = self.context(name, vm)
        parsed = self.mapping.parse(xml, ctx)
        # The image format is read only when the domain's disk is not the manifest's, or
        # its format is unknown; otherwise the domain's own record is trusted (reading it
        # costs a qemu-img process per VM).
        path, fmt = parsed.readings.get("disk_path"), parsed.readings.get("disk_format")
        creation = None
        if (
            path is not None
            and fmt is not None
            and path.is_clean
            and fmt.is_clean
            and path.value == expand_home(vm.disk_path, self.home)
        ):
            disk_format = str(fmt.value)
        else:
            disk_format, creation = self.disk(name, vm)
        ctx = self.context(name, vm, disk_format, parsed)
        changes = self.mapping.diff(parsed, vm, ctx)
        if not changes:
            return PlanEntry(name, "unchanged", warnings=ctx.warnings)
        refusal = filled_change_refusal(name, vm, parsed, changes)
        if refusal is not None:
            raise refusal
        firmware = firmware_change(parsed, vm)
        warnings = ctx.warnings
        if firmware is not None:
            if not self.allow_firmware_change:
                from bkt_vm_plugin.defaults import is_filled, state_hint

                secure = parsed.readings.get("secure_boot")
                if is_filled(vm, "secure_boot"):
                    keep = state_hint(
                        vm,
                        "secure_boot",
                        secure.value if secure is not None and secure.is_clean else None,
                    )
                else:
                    keep = f"write what it boots with into the manifest (`bkt vm capture {name}`)"
                raise OperationError(
                    f"{firmware}. Nothing was changed for {name}: to make this change, run "
                    f"`bkt vm sync {name} {FIRMWARE_FLAG}`; to keep the firmware, {keep}"
                )
            warnings = (*warnings, f"{firmware} ({FIRMWARE_FLAG})")
        patched = self.mapping.patch(xml, vm, ctx) if self.mapping.needs_define(changes) else None
        notes = []
        by_field = {c.field: c for c in changes}
        if "boot" in by_field and by_field["boot"].new == "uefi":
            notes.append(BIOS_TO_UEFI_NOTE)
        if "secure_boot" in by_field and by_field["secure_boot"].new == "true":
            notes.append(SECURE_BOOT_NOTE.replace("NAME", name))
        details = {"create_disk": creation.to_json()} if creation else {}
        return PlanEntry(
            name,
            "update",
            changes=tuple(changes),
            warnings=warnings,
            notes=tuple(notes),
            pending_reboot=patched is not None and name in self.observation.active,
            details=details,
            payload=Payload(patched, creation, ctx),
        )


@dataclass(frozen=True)
class Payload:
    """What execution needs of an entry: the XML to define (None: nothing to define), the disk
    to create first, and the context the plan was made in (for the read-back)."""

    xml: str | None
    creation: DiskCreation | None
    context: DomainContext


def make_planner(
    sub: VmSubsystem,
    manifest: VmManifest,
    *,
    allow_firmware_change: bool = False,
    observing: Observing,
) -> tuple[Planner, dict[str, PlanEntry]]:
    """The planner of the VMs of ``manifest`` that ``observing`` (an observation under way)
    reads, with what libvirt holds of them, and the entries of those whose definitions were
    planned while virsh still ran."""
    from bkt_vm_plugin.xmltree import prepare

    virsh = sub.virsh
    # What reading virsh's answer needs is made while virsh runs.
    prepare()
    on_host = Resolver.of_host()
    planner = Planner(
        sub=sub, virsh=virsh, resolver=on_host, allow_firmware_change=allow_firmware_change
    )

    def plan_early(observation: Observation, name: str) -> PlanEntry:
        # Each definition is planned as soon as it comes, while virsh reads the next one.
        if planner.resolver.observation is not observation:
            planner.resolver = dataclasses.replace(on_host, observation=observation)
        return planner.entry(name, manifest.vms[name])

    observation, early = observing.wait_early(plan_early)
    planner.resolver = dataclasses.replace(on_host, observation=observation)
    return planner, early


def plan(
    sub: VmSubsystem, names: Sequence[str] = (), *, allow_firmware_change: bool = False
) -> SyncPlan:
    """What sync would do for ``names`` (every manifest VM when empty). Changes nothing."""
    return _plan(sub, names, allow_firmware_change)[1]


def _plan(
    sub: VmSubsystem, names: Sequence[str], allow_firmware_change: bool
) -> tuple[Planner, SyncPlan, VmManifest]:
    started: list[Observing] = []

    def start(in_manifest: Sequence[str]) -> None:
        # virsh reads libvirt while the manifest is validated (or the defaults are filled)
        # and the mapping is built. A name the manifest lacks is refused below.
        if set(names) <= set(in_manifest):
            started.append(start_observing(sub.virsh, sorted(set(names or in_manifest))))

    manifest = load_observing(sub, start, started)
    with stopped_on_error(started):
        # Built before any VM is planned: two plugins mapping one field is an error of the
        # command (naming both), not a failure of every VM.
        sub.mapping  # noqa: B018
        selected = select(manifest, names, sub)
        planner, early = make_planner(
            sub,
            manifest,
            allow_firmware_change=allow_firmware_change,
            observing=observing_of(sub.virsh, selected, started),
        )
    entries = tuple(
        early[name] if name in early else planner.entry(name, manifest.vms[name])
        for name in selected
    )
    defined = [
        e.name for e in entries if e.action in ("create", "update") and e.payload.xml is not None
    ]
    if defined:
        # Warn, before anything is defined, about what would stop these VMs on this host
        # (the checks of `bkt doctor`); a sync that defines nothing pays nothing for it.
        from bkt_vm_plugin.doctor import plan_warnings

        entries = plan_warnings(sub, entries, defined, manifest)
    return planner, SyncPlan(sub.name, entries, key=sub.manifest_key), manifest


# -- execution -------------------------------------------------------------------------------


@dataclass
class PostSyncContext:
    """What post-sync hooks get besides the report: the ``manifest``, the ``virsh`` to batch
    their commands through, and :meth:`fail` to mark a VM failed (with a message for the
    user). ``observation`` is what sync observed of libvirt before it changed anything (bkt's
    own; a plugin need not read it); ``failures`` and ``hints`` are what :meth:`fail`
    recorded, by VM name. bkt builds it: a plugin is handed one."""

    manifest: VmManifest
    virsh: Virsh
    observation: Observation
    failures: dict[str, str] = field(default_factory=dict)
    #: The hint of each failure that has one.
    hints: dict[str, str] = field(default_factory=dict)

    def vm(self, name: str) -> VmDefinition:
        """The definition of manifest VM ``name`` (KeyError when the manifest has none)."""
        return self.manifest.vms[name]

    def fail(self, name: str, message: str, *, hint: str | None = None) -> None:
        """Mark VM ``name`` failed with ``message`` (and ``hint``, what the user can do);
        the first failure of a VM is the one reported."""
        if name in self.failures:
            return
        self.failures[name] = message
        if hint is not None:
            self.hints[name] = hint


def sync(
    sub: VmSubsystem,
    names: Sequence[str] = (),
    *,
    dry_run: bool = False,
    allow_firmware_change: bool = False,
) -> SyncReport:
    """Plan, then unless ``dry_run`` execute the plan and run the post-sync hooks. A change
    of the firmware an existing domain boots with (:func:`firmware_change`) fails that VM
    unless ``allow_firmware_change``; so does a change of an existing domain that only a
    value a plugin filled asks for (:func:`filled_change_refusal`).

    A sync that changes libvirt holds the manifest directory's lock, the one capture holds,
    from reading the manifest to the last post-sync hook: a capture running meanwhile would
    otherwise read a domain before the sync changes it and write the old value back, and two
    syncs would both try to create the same disks. A dry run only reads, and does not wait."""
    if dry_run:
        return SyncReport(_plan(sub, names, allow_firmware_change)[1], dry_run=True)
    from pathlib import Path

    from bkt_core.manifest import locked

    directory = Path(sub.host.manifest_dir)
    if not directory.is_dir():
        sub.load()  # raises the ManifestError that says there is no manifest
    with locked(directory):
        planner, the_plan, manifest = _plan(sub, names, allow_firmware_change)
        return execute(planner, the_plan, manifest)


#: Why each failed VM failed: its error's message and hint.
Failures = dict[str, BktError]


def execute(planner: Planner, the_plan: SyncPlan, manifest: VmManifest) -> SyncReport:
    sub, virsh = planner.sub, planner.virsh
    failed: Failures = {
        e.name: OperationError(e.message or "", hint=e.hint)
        for e in the_plan.entries
        if e.action == "error"
    }
    creations = [
        e.payload.creation
        for e in the_plan.entries
        if e.name not in failed and e.payload is not None and e.payload.creation is not None
    ]
    if creations:
        from bkt_vm_plugin.disks import create_disks

        created = create_disks(sub.host, creations, planner.provision)
        for entry in the_plan.entries:
            creation = entry.payload.creation if entry.payload is not None else None
            error = created.get(creation.path) if creation is not None else None
            if error is not None:
                failed.setdefault(entry.name, error)

    to_define = [
        e
        for e in the_plan.entries
        if e.name not in failed and e.payload is not None and e.payload.xml is not None
    ]
    if to_define:
        _define(virsh, to_define, failed)
        _read_back(planner, to_define, manifest, failed)

    results = _results(the_plan, failed)
    report = SyncReport(the_plan, dry_run=False, results=results)
    context = PostSyncContext(manifest, virsh, planner.observation)
    _post_sync(sub, report, context)
    if context.failures:
        for name, message in context.failures.items():
            failed.setdefault(name, OperationError(message, hint=context.hints.get(name)))
        report = SyncReport(the_plan, dry_run=False, results=_results(the_plan, failed))
    return report


#: Most domains one define batch carries: each holds a file descriptor of bkt while it runs.
DEFINES_PER_BATCH = 256


def _define(virsh: Virsh, entries: Sequence[PlanEntry], failed: Failures) -> None:
    for start in range(0, len(entries), DEFINES_PER_BATCH):
        _define_batch(virsh, entries[start : start + DEFINES_PER_BATCH], failed)


def _define_batch(virsh: Virsh, entries: Sequence[PlanEntry], failed: Failures) -> None:
    """Defines ``entries`` in one virsh process, each XML from memory (:func:`memory_files`:
    a definition never reaches a disk, nothing is left in a temporary directory)."""
    from bkt_vm_plugin.virsh import memory_files

    with memory_files([e.payload.xml for e in entries]) as paths:
        try:
            replies = virsh.batch([["define", "--file", path] for path in paths])
        except BktError as exc:
            for entry in entries:
                failed.setdefault(entry.name, exc)
            return
    for entry, reply in zip(entries, replies, strict=True):
        if not reply.ok:
            failed.setdefault(entry.name, OperationError(reply.message))


def _read_back(
    planner: Planner,
    entries: Sequence[PlanEntry],
    manifest: VmManifest,
    failed: Failures,
) -> None:
    """Reads every defined domain back (one virsh process) and fails each VM whose owned
    fields libvirt did not keep: a silent rewrite by libvirt is a failure, not a success."""
    names = [e.name for e in entries if e.name not in failed]
    if not names:
        return
    try:
        seen = observe(planner.virsh, names)
    except BktError as exc:
        for name in names:
            failed.setdefault(name, _unreadable(exc))
        return
    mapping = planner.mapping
    for entry in entries:
        if entry.name in failed:
            continue
        reply = seen.definitions.get(entry.name)
        if reply is None:
            failed[entry.name] = OperationError("libvirt has no such domain after define")
            continue
        if not reply.ok:
            failed[entry.name] = OperationError(f"cannot read it back: {reply.message}")
            continue
        ctx = entry.payload.context
        try:
            changes = mapping.diff(mapping.parse(reply.stdout, ctx), manifest.vms[entry.name], ctx)
        except BktError as exc:
            failed[entry.name] = _unreadable(exc)
            continue
        # Facts outside the XML (autostart) are applied by the post-sync hooks, after this.
        lost = [c for c in changes if mapping.needs_define([c])]
        if lost:
            failed[entry.name] = OperationError(
                "libvirt did not keep every field: " + "; ".join(str(c) for c in lost)
            )


def _unreadable(exc: BktError) -> BktError:
    return OperationError(f"cannot read it back: {exc.message}", hint=exc.hint)


def _results(the_plan: SyncPlan, failed: Failures) -> tuple[EntryResult, ...]:
    outcome = {"create": "created", "update": "updated", "unchanged": "unchanged"}
    return tuple(
        EntryResult(e.name, "failed", failed[e.name].message, failed[e.name].hint)
        if e.name in failed
        else EntryResult(e.name, outcome[e.action])  # type: ignore[arg-type]
        for e in the_plan.entries
    )


def _post_sync(sub: VmSubsystem, report: SyncReport, context: PostSyncContext) -> None:
    """Every post-sync implementation runs, even after another raised: a per-VM hook that
    raises fails that VM, a whole-run hook that raises fails every VM the run changed. A
    :class:`BktError` is a refusal with its own message and hint (naming the plugin when it
    is not one of bkt's own); anything else names the plugin."""
    host = sub.host

    def failure(plugin: str, hook: str, exc: Exception) -> BktError:
        if isinstance(exc, BktError):
            return host.named(exc)
        return host.failure(plugin, hook, exc)

    results = {r.name: r for r in report.results or ()}
    for entry in report.plan.entries:
        for plugin, call in sub.hooks.post_sync_vm(
            entry.name, entry, results.get(entry.name), context
        ):
            try:
                call()
            except Exception as exc:
                error = failure(plugin, "bkt_post_sync_vm", exc)
                context.fail(entry.name, error.message, hint=error.hint)
    for plugin, call in sub.hooks.post_sync(report, context):
        try:
            call()
        except Exception as exc:
            error = failure(plugin, "bkt_post_sync", exc)
            for entry in report.plan.entries:
                if entry.changes_anything:
                    context.fail(entry.name, error.message, hint=error.hint)
