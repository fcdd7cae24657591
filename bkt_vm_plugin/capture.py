"""``bkt vm capture``: what libvirt holds, merged back into ``vms.json`` without loss.

Capture reads each domain (one batched observation, one batched ``domblkinfo``), parses it
with the host's domain mapping, and merges it into the VM's manifest entry:

- every field whose reading is clean takes the domain's value; a field that cannot round-trip
  (memory that is not a whole GiB, a disk that is not a file, two interfaces, ...) keeps its
  manifest value with a warning ``VM N: FIELD keeps its manifest value: REASON``, and a VM the
  manifest does not have yet is skipped instead (nothing is rounded or invented);
- fields libvirt cannot know keep their manifest values: ``create_if_missing``, ISO sources
  that are URLs (cached or not) or files that do not exist, and every field no mapping reads;
- where the effective value is the same, the manifest's spelling is kept: an explicit default
  (``"tpm": "none"``) stays, ``~/...`` paths stay, an unchanged VM is written back verbatim;
- plugin fields are captured like built-in ones (``autostart`` from ``virsh list
  --autostart``, only when the autostart plugin is installed);
- ``disk_size_gb`` is the disk's virtual size (``domblkinfo``), when it is a whole GiB.

Every merged VM is checked three ways before it is accepted: the full manifest validator on
the VM alone, the sync diff of the domain against it (capture then sync must be a no-op for
every field not kept), and the whole manifest at the end (rules across VMs, such as two VMs
on one disk: a VM that breaks one is reverted or skipped, not the whole capture).

Decisions:

- A CD-ROM whose ISO file does not exist cannot round-trip: sync leaves out the CD-ROM of an
  ISO that does not exist (and removes such a drive), so writing it as a source would make the
  next sync change the domain. ``iso_sources`` keeps its manifest value with a warning saying
  so, and a new VM with such a drive is skipped, naming the file.
- A manifest directory that does not exist is created (like ``mkdir -p``), and a note says
  so; with ``--dry-run`` nothing is created and the note says it would be.
- A missing ``vms.json`` is created with ``"$schema": "vms.schema.json"``, and
  ``vms.schema.json`` beside it when absent, even when every domain was skipped (then the
  manifest has no VMs and a note says so). An existing manifest is rewritten only when its
  content changes; when every domain was skipped nothing is written and a note says so.
- ``$schema`` is kept as it was, ``null`` included. Both files are written atomically.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bkt_core.errors import BktError, ManifestError, OperationError
from bkt_core.plan import CaptureEntry, CaptureReport

if TYPE_CHECKING:
    from bkt_core.manifest import ManifestSource
    from bkt_core.output import Printer
    from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping, Parsed
    from bkt_vm_plugin.model import VmDefinition
    from bkt_vm_plugin.subsystem import VmSubsystem
    from bkt_vm_plugin.sync import Observation
    from bkt_vm_plugin.virsh import Virsh

__all__ = [
    "Capturer",
    "DiskSize",
    "Merged",
    "capture",
    "field_changes",
    "format_capture",
    "print_capture",
]

GIB = 1024**3
U32_MAX = 2**32 - 1
SCHEMA_REF = "vms.schema.json"
ALL_FIELDS = "(all fields)"
ABSENT = "(absent)"
_MISSING = object()

Json = Any
Stream = Literal["out", "warning", "note"]


def _compact(value: Json) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _plain(value: Any) -> Json:
    """``value`` as plain JSON data (models dumped without their ``None`` fields)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(exclude_none=True)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# -- one domain --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskSize:
    """What ``domblkinfo`` said about a domain's disk: its virtual size in bytes, or that its
    file does not exist, or why it could not be read. All None: nothing was asked (the domain
    has no file disk bkt can describe)."""

    bytes: int | None = None
    missing: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Merged:
    """What capture makes of one domain: ``written`` is the VM's manifest entry (plain JSON,
    schema order) and ``kept`` the fields that kept their manifest value, with why; or, for a
    VM the manifest does not have yet that cannot be described exactly, ``reasons``
    (``written`` is None)."""

    written: dict[str, Json] | None
    kept: tuple[tuple[str, str], ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def skipped(self) -> bool:
        return self.written is None


@dataclass
class Capturer:
    """The merge of domains into manifest entries, for one host's model and mapping.

    ``validate`` checks a manifest text with the host's full validator: the manifest model,
    or None and every problem as (JSON path, message). ``exists`` says whether a local file
    exists (ISO files)."""

    mapping: DomainMapping
    vm_model: type[VmDefinition]
    home: str | None
    iso_cache: str
    exists: Callable[[str], bool]
    validate: Callable[[str], tuple[Any, list[tuple[str, str]]]]
    #: The files of each domain's own CD-ROMs, which sync keeps even when one is missing.
    present: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, sub: VmSubsystem, *, exists: Callable[[str], bool] = os.path.exists) -> Capturer:
        from bkt_vm_plugin.iso import cache_dir
        from bkt_vm_plugin.model import home_dir

        home = home_dir()
        return cls(
            mapping=sub.mapping,
            vm_model=sub.vm_model,
            home=home,
            iso_cache=str(cache_dir()),
            exists=exists,
            validate=functools.partial(_problems, sub, home=home),
        )

    @property
    def fields(self) -> list[str]:
        """The VM fields in schema order."""
        return list(self.vm_model.model_fields)

    def context(
        self,
        name: str,
        vm: VmDefinition | None,
        facts: Mapping[str, Any],
        disk_format: str = "qcow2",
    ) -> DomainContext:
        from bkt_vm_plugin.domain_xml import resolve_context

        if vm is None:  # a VM the manifest does not have: no sources, no disk to compare
            vm = self.vm_model.model_construct(
                memory_gb=1,
                vcpus=1,
                disk_path="",
                disk_size_gb=1,
                boot="bios",
                network="none",
                graphics="none",
            )
        return resolve_context(
            name,
            vm,
            home=self.home,
            iso_cache=self.iso_cache,
            disk_format=disk_format,
            exists=self.exists,
            facts=facts,
            present=self.present.get(name, ()),
        )

    def read(
        self, name: str, base: VmDefinition | None, xml: str, facts: Mapping[str, Any]
    ) -> tuple[Parsed, DomainContext]:
        """Parses domain ``name`` in the context of its manifest entry. Raises BktError."""
        parsed = self.mapping.parse(xml, self.context(name, base, facts))
        # From here on resolved with the domain's own CD-ROMs, which sync keeps even when a
        # file is missing, so that what capture writes for them sync leaves as it is.
        self.present[name] = parsed.cdroms()
        return parsed, self.context(name, base, facts)

    @staticmethod
    def disk_path(parsed: Parsed) -> str | None:
        """The file of the domain's disk, when its reading is clean."""
        reading = parsed.readings.get("disk_path")
        if reading is None or not reading.is_clean or not isinstance(reading.value, str):
            return None
        return reading.value

    def merge(
        self,
        name: str,
        base: VmDefinition | None,
        base_raw: Mapping[str, Json] | None,
        parsed: Parsed,
        ctx: DomainContext,
        disk: DiskSize,
    ) -> Merged:
        """Merges a parsed domain into its manifest entry (``base``, as written:
        ``base_raw``; both None for a VM the manifest does not have)."""
        names = self.fields
        values, kept_by_field = self.mapping.capture_values(parsed, base, ctx)
        values = {k: v for k, v in values.items() if k in names}
        kept = {k: v for k, v in kept_by_field.items() if k in names}
        self._unreadable_format(parsed, values, kept)
        self._disk_size(base, disk, values, kept)
        if base is None or base_raw is None:
            return self._merge_new(name, parsed, values, kept)
        return self._merge_existing(name, base, dict(base_raw), parsed, values, kept)

    # -- the fields libvirt holds in a form capture must not write ---------------------------

    @staticmethod
    def _unreadable_format(parsed: Parsed, values: dict[str, Any], kept: dict[str, str]) -> None:
        # An image format bkt does not manage: sync could not use the disk as it is.
        fmt = parsed.readings.get("disk_format")
        if fmt is not None and fmt.reason is not None and "disk_path" not in kept:
            values.pop("disk_path", None)
            kept["disk_path"] = fmt.reason

    @staticmethod
    def _disk_size(
        base: VmDefinition | None, disk: DiskSize, values: dict[str, Any], kept: dict[str, str]
    ) -> None:
        why = None
        if disk.bytes is not None:
            size = disk.bytes
            if size <= 0 or size % GIB:
                why = f"the disk's virtual size, {size} bytes, is not a whole GiB"
            elif size // GIB > U32_MAX:
                why = f"the disk's size, {size} bytes, is too large"
            else:
                values["disk_size_gb"] = size // GIB
        elif disk.error is not None:
            why = f"cannot read the disk's size: {disk.error}"
        elif disk.missing and base is None:
            # libvirt cannot know the size of a disk that does not exist: the manifest's stays.
            why = "the disk file does not exist"
        if why is not None:
            kept["disk_size_gb"] = why

    # -- building the entry ----------------------------------------------------------------

    def _entry(self, values: Mapping[str, Any], base_raw: Mapping[str, Json]) -> dict[str, Json]:
        """The entry with every captured value, optional defaults left out, and every other
        field as ``base_raw`` has it; schema order."""
        out: dict[str, Json] = {}
        for name, info in self.vm_model.model_fields.items():
            if name in values:
                value = _plain(values[name])
                default = (
                    _MISSING
                    if info.is_required()
                    else _plain(info.get_default(call_default_factory=True))
                )
                if value != default:
                    out[name] = value
            elif name in base_raw:
                out[name] = base_raw[name]
        return out

    def _vm(self, name: str, entry: Mapping[str, Json]) -> tuple[VmDefinition | None, list[str]]:
        """The entry as a validated VM, or the problems validation finds with it."""
        from bkt_core.manifest import dump_manifest

        manifest, problems = self.validate(dump_manifest({"vms": {name: entry}}))
        if manifest is None:
            prefix = _vm_path(name) + "."
            return None, [f"{p.removeprefix(prefix)}: {m}" for p, m in problems]
        vm: VmDefinition = manifest.vms[name]
        return vm, []

    def _effective(self, vm: VmDefinition, ctx: DomainContext) -> dict[str, Any]:
        """What sync compares of each field: the mapping's desired values (the disk path
        expanded, the CPU model for the domain type), the value itself for the others."""
        out = {name: _plain(vm.field(name)) for name in self.fields}
        for mapping_field in self.mapping.fields:
            try:
                desired = mapping_field.desired(vm, ctx)
            except Exception:  # a plugin's own failure shows in the sync diff
                continue
            for name in mapping_field.fields:
                if name in out and name in desired:
                    out[name] = _plain(desired[name])
        return out

    def _owner(self, compared: str) -> str:
        """The manifest field a compared value belongs to (``disk_format`` -> ``disk_path``)."""
        try:
            owner = self.mapping.field_of(compared)
        except KeyError:
            return compared
        return compared if compared in owner.fields else owner.fields[0]

    def _sync_changes(
        self, name: str, vm: VmDefinition, parsed: Parsed, kept: Mapping[str, str]
    ) -> dict[str, str]:
        """The fields a sync right after this capture would change, and how, beyond the kept
        ones (which sync changes on purpose)."""
        fmt = parsed.readings.get("disk_format")
        disk_format = str(fmt.value) if fmt is not None and fmt.is_clean else "qcow2"
        ctx = self.context(name, vm, _facts(parsed), disk_format)
        out: dict[str, str] = {}
        for change in self.mapping.diff(parsed, vm, ctx):
            owner = self._owner(change.field)
            if owner not in kept:
                out.setdefault(owner, str(change))
        return out

    def _merge_new(
        self, name: str, parsed: Parsed, values: dict[str, Any], kept: dict[str, str]
    ) -> Merged:
        if kept:
            return Merged(None, reasons=tuple(f"{f}: {kept[f]}" for f in self._ordered(kept)))
        entry = self._entry(values, {})
        vm, problems = self._vm(name, entry)
        if vm is None:
            return Merged(None, reasons=tuple(problems))
        changes = self._sync_changes(name, vm, parsed, {})
        if changes:
            return Merged(
                None,
                reasons=tuple(f"{f}: sync would then change it ({c})" for f, c in changes.items()),
            )
        return Merged(entry)

    def _merge_existing(
        self,
        name: str,
        base: VmDefinition,
        base_raw: dict[str, Json],
        parsed: Parsed,
        values: dict[str, Any],
        kept: dict[str, str],
    ) -> Merged:
        entry = self._entry(values, base_raw)
        vm, problems = self._vm(name, entry)
        if vm is not None:
            entry, vm = self._keep_spelling(name, base, base_raw, entry, vm, _facts(parsed))
        if vm is not None:
            changes = self._sync_changes(name, vm, parsed, kept)
            if changes:
                # A field capture cannot write so that sync leaves the domain alone keeps its
                # manifest value too (the self-check that capture then sync is a no-op).
                for f, change in changes.items():
                    kept[f] = f"capture cannot write it so that sync leaves it as it is ({change})"
                    entry = self._with(entry, f, base_raw)
                vm, problems = self._vm(name, entry)
        if vm is None:
            return Merged(dict(base_raw), kept=((ALL_FIELDS, "; ".join(problems)),))
        return Merged(entry, kept=tuple((f, kept[f]) for f in self._ordered(kept)))

    def _with(
        self, entry: Mapping[str, Json], name: str, source: Mapping[str, Json]
    ) -> dict[str, Json]:
        """``entry`` with field ``name`` as ``source`` has it (absent when it is absent)."""
        out: dict[str, Json] = {}
        for f in self.fields:
            if f == name:
                if f in source:
                    out[f] = source[f]
            elif f in entry:
                out[f] = entry[f]
        return out

    def _keep_spelling(
        self,
        name: str,
        base: VmDefinition,
        base_raw: dict[str, Json],
        entry: dict[str, Json],
        vm: VmDefinition,
        facts: Mapping[str, Any],
    ) -> tuple[dict[str, Json], VmDefinition]:
        """``entry`` with each field spelt as in ``base_raw`` wherever the effective values
        agree, so that capture keeps an explicit default or a ``~/`` path the author wrote."""
        if all(entry.get(f, _MISSING) == base_raw.get(f, _MISSING) for f in self.fields):
            return entry, vm
        was = self._effective(base, self.context(name, base, facts))
        now = self._effective(vm, self.context(name, vm, facts))
        spelt = dict(entry)
        for f in self.fields:
            same = _plain(base.field(f)) == _plain(vm.field(f)) or was[f] == now[f]
            if same and entry.get(f, _MISSING) != base_raw.get(f, _MISSING):
                spelt = self._with(spelt, f, base_raw)
        if spelt == entry:
            return entry, vm
        respelt, _problems = self._vm(name, spelt)
        if respelt is None:
            return entry, vm
        # A spelling that means something else next to the other new values (a CPU model's
        # default depends on the domain type) is not kept.
        final = self._effective(respelt, self.context(name, respelt, facts))
        if final != now:
            for f in self.fields:
                if final[f] != now[f]:
                    spelt = self._with(spelt, f, entry)
            respelt, _problems = self._vm(name, spelt)
            if respelt is None:
                return entry, vm
        return spelt, respelt

    def _ordered(self, kept: Mapping[str, str]) -> list[str]:
        order = {f: i for i, f in enumerate(self.fields)}
        return sorted(kept, key=lambda f: order.get(f, len(order)))


def _facts(parsed: Parsed) -> dict[str, Any]:
    """The facts a context needs to parse as ``parsed`` did (autostart is read from them)."""
    reading = parsed.readings.get("autostart")
    return {"autostart": bool(reading.value)} if reading is not None else {}


def _vm_path(name: str) -> str:
    from bkt_core.diagnostics import format_path

    return format_path(("vms", name))


def _problems(
    sub: VmSubsystem, text: str, *, home: str | None
) -> tuple[Any, list[tuple[str, str]]]:
    """The manifest model of a text, or None and every problem the full validator finds in
    it, as (path, message)."""
    try:
        return _validate(sub, text, home), []
    except ManifestError as exc:
        return None, [(d.path, d.message) for d in exc.diagnostics] or [("", exc.message)]


def _validate(sub: VmSubsystem, text: str, home: str | None) -> Any:
    from bkt_core.manifest import validate_text

    return validate_text(
        text,
        str(sub.manifest_path),
        sub.manifest_model,
        validators=[functools.partial(sub.validate_document, home=home)],
        context={"home": home},
    )


def field_changes(
    old: Mapping[str, Json], new: Mapping[str, Json], order: Sequence[str]
) -> tuple[tuple[str, str, str], ...]:
    """The fields that differ between two entries, in ``order``: (field, old, new), each value
    compact JSON or ``(absent)``."""

    def shown(entry: Mapping[str, Json], f: str) -> str:
        return _compact(entry[f]) if f in entry else ABSENT

    keys = [*order, *(k for k in (*old, *new) if k not in order)]
    return tuple(
        (f, shown(old, f), shown(new, f))
        for f in dict.fromkeys(keys)
        if old.get(f, _MISSING) != new.get(f, _MISSING)
    )


# -- the command -------------------------------------------------------------------------------


@dataclass
class _Existing:
    """The manifest as it is on disk: its model, its document as written (the sources
    merged), and the sources it was merged from."""

    vms: Mapping[str, VmDefinition]
    document: dict[str, Json]
    sources: Sequence[ManifestSource] = ()


def capture(
    sub: VmSubsystem, names: Sequence[str] = (), *, all: bool = False, dry_run: bool = False
) -> CaptureReport:
    """Captures the domains ``names`` (every manifest VM when empty; with ``all``, also every
    libvirt domain the manifest does not have) into ``vms.json``. With ``dry_run`` nothing is
    written (nor created). Raises ManifestError for an invalid manifest (exit 2) and
    OperationError when libvirt cannot be reached or a NAME is not a domain (exit 1)."""
    from bkt_core.manifest import locked

    directory = Path(sub.host.manifest_dir)
    notes: list[str] = []
    if not directory.is_dir():
        if directory.exists():
            raise OperationError(f"cannot capture into {directory}: it is not a directory")
        if dry_run:
            notes.append(f"{directory} does not exist: capture would create it")
            return _capture(sub, names, all, dry_run, notes)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OperationError(f"cannot create {directory}: {exc.strerror or exc}") from exc
        notes.append(f"created directory {directory}")
    # Two captures of one manifest must not lose each other's writes: the lock is held from
    # reading the manifest to renaming the new one into place.
    with locked(directory):
        return _capture(sub, names, all, dry_run, notes)


def _read_existing(sub: VmSubsystem, home: str | None) -> _Existing | None:
    from bkt_core.manifest import merge_sources, validate_sources

    sources = sub.sources()
    if not sources:
        return None
    manifest: Any = validate_sources(
        sources,
        sub.manifest_model,
        validators=[functools.partial(sub.validate_document, home=home)],
        context={"home": home},
    )
    document, _locations = merge_sources(sources)
    return _Existing(manifest.vms, document, sources)


def _observe(virsh: Virsh, known: Sequence[str], all: bool) -> Observation:
    from bkt_vm_plugin.sync import Observation, observe

    seen = observe(virsh, known)
    if not all:
        return seen
    extra = sorted(seen.domains - set(known))
    if not extra:
        return seen
    more = observe(virsh, extra)
    return Observation(
        domains=seen.domains | more.domains,
        active=more.active,
        autostart=more.autostart,
        definitions={**seen.definitions, **more.definitions},
        firmware=seen.firmware,
    )


def _disk_sizes(virsh: Virsh, disks: Mapping[str, str]) -> dict[str, DiskSize]:
    """The virtual size of each domain's disk (name -> file), in one virsh process."""
    if not disks:
        return {}
    names = list(disks)
    replies = virsh.batch([["domblkinfo", "--domain", n, "--device", disks[n]] for n in names])
    out: dict[str, DiskSize] = {}
    for name, reply in zip(names, replies, strict=True):
        if not reply.ok:
            message = reply.message
            if "No such file or directory" in message:
                out[name] = DiskSize(missing=True)
            else:
                out[name] = DiskSize(error=message)
            continue
        size = None
        for line in reply.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Capacity" and value.strip().isdigit():
                size = int(value.strip())
        if size is None:
            out[name] = DiskSize(error=f"domblkinfo printed {json.dumps(reply.stdout.strip())}")
        else:
            out[name] = DiskSize(bytes=size)
    return out


def _capture(
    sub: VmSubsystem, names: Sequence[str], all: bool, dry_run: bool, notes: list[str]
) -> CaptureReport:
    from bkt_core.manifest import dump_manifest
    from bkt_vm_plugin.rules import name_problem

    path = Path(sub.manifest_path)
    capturer = Capturer.of(sub)
    existing = _read_existing(sub, capturer.home) if path.parent.is_dir() else None
    base_vms: Mapping[str, VmDefinition] = existing.vms if existing else {}
    raw_vms: dict[str, dict[str, Json]] = dict(existing.document["vms"]) if existing else {}

    requested = list(dict.fromkeys(names))
    known = sorted(set(requested or base_vms))
    observation = _observe(sub.virsh, [n for n in known if name_problem(n) is None], all)
    for name in requested:
        if name not in observation.domains:
            in_manifest = name in base_vms
            raise OperationError(
                f"VM {name} is not a libvirt domain",
                hint=(
                    f"it is in {path}: `bkt vm sync {name}` creates it"
                    if in_manifest
                    else "`bkt vm status --all` lists the domains"
                ),
            )
    wanted = sorted(set(known) | (set(observation.domains) if all else set()))

    entries: dict[str, CaptureEntry] = {}
    warnings: list[str] = []
    read: dict[str, tuple[Parsed, DomainContext]] = {}
    for name in wanted:
        problem = name_problem(name)
        if problem is not None:
            entries[name] = CaptureEntry(
                name, "skipped", reasons=(f"its name cannot be a manifest VM name: {problem}",)
            )
            continue
        if name not in observation.domains:
            warnings.append(
                f"VM {name} is not defined in libvirt; its manifest entry is kept as it is"
            )
            entries[name] = CaptureEntry(name, "unchanged")
            continue
        reply = observation.definitions.get(name)
        if reply is None:
            entries[name] = CaptureEntry(
                name, "skipped", reasons=("it disappeared while capture ran",)
            )
            continue
        if not reply.ok:
            entries[name] = CaptureEntry(
                name, "skipped", reasons=(f"cannot read its definition: {reply.message}",)
            )
            continue
        try:
            read[name] = capturer.read(
                name, base_vms.get(name), reply.stdout, observation.facts(name)
            )
        except BktError as exc:
            entries[name] = CaptureEntry(name, "skipped", reasons=(exc.message,))

    disks = {n: p for n, (parsed, _) in read.items() if (p := capturer.disk_path(parsed))}
    sizes = _disk_sizes(sub.virsh, disks)

    merged: dict[str, Merged] = {}
    for name, (parsed, ctx) in read.items():
        raw = raw_vms.get(name)
        merged[name] = capturer.merge(
            name, base_vms.get(name), raw, parsed, ctx, sizes.get(name, DiskSize())
        )

    merged = _check_together(capturer, raw_vms, merged)
    order = capturer.fields
    new_vms = dict(raw_vms)
    for name, result in merged.items():
        for f, reason in result.kept:
            warnings.append(f"VM {name}: {f} keeps its manifest value: {reason}")
        if result.written is None:
            entries[name] = CaptureEntry(name, "skipped", reasons=result.reasons)
            continue
        old = raw_vms.get(name)
        if old is None:
            changes = tuple((f, "", _compact(v)) for f, v in result.written.items())
            entries[name] = CaptureEntry(name, "added", changes=changes)
        elif old == result.written:
            entries[name] = CaptureEntry(name, "unchanged")
        else:
            entries[name] = CaptureEntry(
                name, "changed", changes=field_changes(old, result.written, order)
            )
        new_vms[name] = result.written

    document: dict[str, Json] = {}
    if existing is None:
        document["$schema"] = SCHEMA_REF
    elif "$schema" in existing.document:
        document["$schema"] = existing.document["$schema"]
    document["vms"] = {n: _in_order(new_vms[n], order) for n in sorted(new_vms)}
    created = existing is None
    changed = existing is None or document != existing.document

    ordered = tuple(entries[n] for n in sorted(entries))
    if not wanted:
        notes.append(
            f"nothing to capture: {path} has no VMs; name domains (`bkt vm capture NAME...`) "
            "or pass --all to capture every libvirt domain"
        )
    elif all_skipped(ordered):
        notes.append(
            "every domain was skipped: nothing was captured"
            + (f"; {path} is created with no VMs" if created else "")
        )

    written = False
    if dry_run:
        if created:
            notes.append(f"{path} does not exist: capture would create it")
        notes.append("dry run: nothing was written")
    elif changed:
        text = dump_manifest(document)
        # What capture writes must load again; anything else is a bug, and nothing is written.
        _validate(sub, text, capturer.home)
        if existing is not None and len(existing.sources) > 1:
            _write_sources(capturer, existing, document, notes)
        else:
            _write(sub, path, text, created, notes)
        written = True
    return CaptureReport(
        entries=ordered,
        warnings=tuple(warnings),
        path=str(path),
        written=written,
        dry_run=dry_run,
        created=created and written,
        notes=tuple(notes),
    )


def all_skipped(entries: Sequence[CaptureEntry]) -> bool:
    return bool(entries) and all(e.kind == "skipped" for e in entries)


def _in_order(entry: Mapping[str, Json], order: Sequence[str]) -> dict[str, Json]:
    keys = [*(f for f in order if f in entry), *(k for k in entry if k not in order)]
    return {k: entry[k] for k in keys}


def _write(sub: VmSubsystem, path: Path, text: str, created: bool, notes: list[str]) -> None:
    from bkt_core.manifest import dump_manifest, write_atomic

    write_atomic(path, text)
    if not created:
        notes.append(f"wrote {path}")
        return
    schema = path.parent / SCHEMA_REF
    if schema.exists():
        notes.append(f"created {path}")
        return
    write_atomic(schema, dump_manifest(sub.schema()))
    notes.append(f"created {path} and {schema}")


def _write_sources(
    capturer: Capturer, existing: _Existing, document: dict[str, Json], notes: list[str]
) -> None:
    """Writes ``document`` back into the sources it was merged from: each field to the file
    it came from (an override file for a field it overrides, ``vms.json`` otherwise), every
    changed file atomically. No file is created."""
    from bkt_core.manifest import dump_manifest, split_document, write_atomic

    sources = existing.sources
    _keep_overridden_defaults(capturer, sources, document)
    try:
        parts = split_document([s.document for s in sources], document)
    except ValueError as exc:
        files = ", ".join(str(s.path) for s in sources)
        raise OperationError(
            f"cannot write the capture back to {files} (nothing was written): {exc}"
        ) from None
    for source, part in zip(sources, parts, strict=True):
        if part != source.document:
            write_atomic(source.path, dump_manifest(part))
            notes.append(f"wrote {source.path}")


def _keep_overridden_defaults(
    capturer: Capturer, sources: Sequence[ManifestSource], document: dict[str, Json]
) -> None:
    """A field capture leaves out (it has its default) that one file sets over another is
    written as its default value instead: leaving it out of the override would let the value
    of the file below win."""
    for name, entry in document.get("vms", {}).items():
        for field_name, info in capturer.vm_model.model_fields.items():
            if field_name in entry or info.is_required():
                continue
            holders = [s for s in sources if _has(s.document, ("vms", name, field_name))]
            if len(holders) > 1:
                entry[field_name] = _plain(info.get_default(call_default_factory=True))
        document["vms"][name] = _in_order(entry, capturer.fields)


def _has(document: Json, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    return True


def _check_together(
    capturer: Capturer, raw_vms: Mapping[str, dict[str, Json]], merged: dict[str, Merged]
) -> dict[str, Merged]:
    """Validates the manifest with every merged VM; a VM that breaks a rule across VMs (two
    VMs on one disk) is reverted to its manifest entry, or skipped when it is new."""
    from bkt_core.manifest import dump_manifest

    merged = dict(merged)
    while True:
        touched = [
            n for n, m in merged.items() if m.written is not None and m.written != raw_vms.get(n)
        ]
        if not touched:
            return merged
        # Untouched VMs first: a rule between two VMs reports the later one.
        vms: dict[str, Json] = {n: e for n, e in raw_vms.items() if n not in touched}
        vms.update({n: merged[n].written for n in touched})
        manifest, problems = capturer.validate(dump_manifest({"vms": vms}))
        if manifest is not None:
            return merged
        blamed: dict[str, list[str]] = {}
        for problem_path, message in problems:
            for n in touched:
                prefix = _vm_path(n)
                if problem_path == prefix or problem_path.startswith((prefix + ".", prefix + "[")):
                    rest = problem_path[len(prefix) + 1 :] or "(the VM)"
                    blamed.setdefault(n, []).append(f"{rest}: {message}")
        if not blamed:
            return merged  # the final validation reports it; nothing is written
        for n, reasons in blamed.items():
            if n in raw_vms:
                merged[n] = Merged(dict(raw_vms[n]), kept=((ALL_FIELDS, "; ".join(reasons)),))
            else:
                merged[n] = Merged(None, reasons=tuple(reasons))


# -- output ------------------------------------------------------------------------------------


def format_capture(report: CaptureReport, verbosity: int = 0) -> list[tuple[Stream, str]]:
    """What ``bkt vm capture`` prints, as (stream, line): ``warning`` and ``note`` lines go to
    stderr (through ``Printer.warning`` / ``Printer.note``), ``out`` lines to stdout.
    Warnings first, then each VM (``= unchanged N`` only at ``-v``), the summary, the notes."""
    lines: list[tuple[Stream, str]] = [("warning", w) for w in report.warnings]
    for entry in report.entries:
        if entry.kind == "added":
            lines.append(("out", f"+ add {entry.name}"))
            lines += [("out", f"    {f}: {new}") for f, _old, new in entry.changes]
        elif entry.kind == "changed":
            lines.append(("out", f"~ change {entry.name}"))
            lines += [("out", f"    {f}: {old} -> {new}") for f, old, new in entry.changes]
        elif entry.kind == "unchanged":
            if verbosity >= 1:
                lines.append(("out", f"= unchanged {entry.name}"))
        else:
            lines.append(("out", f"! skip {entry.name}: {'; '.join(entry.reasons)}"))
    added, changed = report.count("added"), report.count("changed")
    unchanged, skipped = report.count("unchanged"), report.count("skipped")
    total = added + changed + unchanged
    lines.append(
        (
            "out",
            f"captured {total} VM{'' if total == 1 else 's'}: {added} added, {changed} changed, "
            f"{unchanged} unchanged; skipped {skipped}",
        )
    )
    lines += [("note", n) for n in report.notes]
    return lines


_MARKS = {"+": "32", "~": "1;33", "!": "1;31"}


def print_capture(printer: Printer, report: CaptureReport) -> None:
    """Prints :func:`format_capture`'s lines, the markers coloured when the printer colours."""
    for stream, line in format_capture(report, printer.verbosity):
        if stream == "warning":
            printer.warning(line)
        elif stream == "note":
            printer.note(line)
        else:
            mark = line[:1]
            if mark in _MARKS and line[1:2] == " ":
                line = printer.paint(mark, _MARKS[mark]) + line[1:]
            printer.data(line)
