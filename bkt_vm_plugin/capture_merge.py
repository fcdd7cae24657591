"""Capture's merge: one domain, as the host's mapping reads it, merged into its manifest
entry without loss (:class:`Capturer`); :mod:`bkt_vm_plugin.capture` runs it for a command.

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

Every merged VM is checked against the full manifest validator on the VM alone and against
the sync diff of the domain (capture then sync must be a no-op for every field not kept).

A CD-ROM whose ISO file does not exist cannot round-trip: sync leaves out the CD-ROM of an
ISO that does not exist (and removes such a drive), so writing it as a source would make the
next sync change the domain. ``iso_sources`` keeps its manifest value with a warning saying
so, and a new VM with such a drive is skipped, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bkt_vm_plugin.definition import GIB, U32_MAX

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition, VmFields
    from bkt_vm_plugin.domain_xml import DomainContext, DomainMapping, Parsed
    from bkt_vm_plugin.observe import Resolver

__all__ = [
    "ABSENT",
    "ALL_FIELDS",
    "Capturer",
    "DiskSize",
    "Merged",
    "compact_json",
    "field_changes",
    "plain_json",
    "vm_path",
]

#: What a warning names when a VM keeps its whole manifest entry.
ALL_FIELDS = "(all fields)"
#: How a field change shows a field an entry does not have.
ABSENT = "(absent)"
_MISSING = object()

Json = Any


def compact_json(value: Json) -> str:
    """``value`` as one line of JSON, as capture's field changes show it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def plain_json(value: Any) -> Json:
    """``value`` as plain JSON data (:func:`bkt_vm_plugin.definition.plain`)."""
    from bkt_vm_plugin.definition import plain

    return plain(value)


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
    vm_fields: VmFields
    home: str | None
    iso_cache: str | None
    exists: Callable[[str], bool]
    validate: Callable[[str], tuple[Any, list[tuple[str, str]]]]
    #: What the plugins propose as VM (name, definition)'s defaults, by field
    #: (:func:`bkt_vm_plugin.defaults.proposed`): none by default.
    defaults: Callable[[str, VmDefinition], Mapping[str, Any]] = field(
        default=lambda _name, _vm: {}
    )
    #: VM (name, definition) with the defaults plugins fill
    #: (:func:`bkt_vm_plugin.defaults.fill_vm`): as it is by default.
    fill: Callable[[str, VmDefinition], VmDefinition] = field(default=lambda _name, vm: vm)
    #: The files of each domain's own CD-ROMs, which sync keeps even when one is missing.
    present: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def resolver(self) -> Resolver:
        """How this capture resolves contexts (:mod:`bkt_vm_plugin.observe`)."""
        from bkt_vm_plugin.observe import Resolver

        return Resolver(self.home, self.iso_cache, self.exists)

    @property
    def fields(self) -> list[str]:
        """The VM fields in schema order."""
        return list(self.vm_fields.names)

    def context(
        self,
        name: str,
        vm: VmDefinition | None,
        facts: Mapping[str, Any],
        disk_format: str = "qcow2",
    ) -> DomainContext:
        if vm is None:  # a VM the manifest does not have: no sources, no disk to compare
            from bkt_vm_plugin.definition import VmDefinition

            layout = self.vm_fields
            vm = VmDefinition(
                memory_gb=1,
                vcpus=1,
                disk_path="",
                disk_size_gb=1,
                boot="bios",
                network="none",
                graphics="none",
                plugin_values={
                    n: layout.default(n) for n in layout.plugin_names if not layout.is_required(n)
                },
                layout=layout,
            )
        return self.resolver.context(
            name,
            vm,
            disk_format=disk_format,
            present=self.present.get(name, ()),
            facts=facts,
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

    def _entry(
        self,
        values: Mapping[str, Any],
        base_raw: Mapping[str, Json],
        default: Callable[[str], Any] | None = None,
    ) -> dict[str, Json]:
        """The entry with every captured value, optional defaults left out (the VM's own
        defaults, ``default``, when given: what plugins fill counts), and every other field as
        ``base_raw`` has it; schema order."""
        out: dict[str, Json] = {}
        layout = self.vm_fields
        default_of = default or layout.default
        for name in layout.names:
            if name in values:
                value = plain_json(values[name])
                was = _MISSING if layout.is_required(name) else plain_json(default_of(name))
                if value != was:
                    out[name] = value
            elif name in base_raw:
                out[name] = base_raw[name]
        return out

    def _vm(self, name: str, entry: Mapping[str, Json]) -> tuple[VmDefinition | None, list[str]]:
        """The entry as a validated VM, or the problems validation finds with it."""
        from bkt_core.manifest import dump_manifest

        manifest, problems = self.validate(dump_manifest({"vms": {name: entry}}))
        if manifest is None:
            prefix = vm_path(name) + "."
            return None, [f"{p.removeprefix(prefix)}: {m}" for p, m in problems]
        vm: VmDefinition = self.fill(name, manifest.vms[name])
        return vm, []

    def _effective(self, vm: VmDefinition, ctx: DomainContext) -> dict[str, Any]:
        """What sync compares of each field: the mapping's desired values (the disk path
        expanded, the CPU model for the domain type), the value itself for the others."""
        out = {name: plain_json(vm.field(name)) for name in self.fields}
        for mapping_field in self.mapping.fields:
            try:
                desired = mapping_field.desired(vm, ctx)
            except Exception:  # a plugin's own failure shows in the sync diff
                continue
            for name in mapping_field.fields:
                if name in out and name in desired:
                    out[name] = plain_json(desired[name])
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
        # As sync would see it: the domain's own disk format and CD-ROMs.
        ctx = self.resolver.of_domain(name, vm, parsed, facts=_facts(parsed))
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
        entry = self._new_defaults(name, vm, parsed, values)
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

    def _new_defaults(
        self, name: str, vm: VmDefinition, parsed: Parsed, values: Mapping[str, Any]
    ) -> dict[str, Json]:
        """The entry of a new VM (``vm``, every value as read) without the values it would
        have anyway: a value a plugin fills for it (:func:`bkt_vm_plugin.defaults.proposed`),
        and for a field that is not managed when left out (``unmanaged_when_none``) and that
        no plugin fills, the value bkt gives a new domain then, so that a domain bkt made
        captures as the entry it was made from."""
        offers = {f: plain_json(v) for f, v in self.defaults(name, vm).items()}
        implicit = self._implicit(
            name, vm, parsed, [f for f in self._unmanaged() if f not in offers]
        )
        layout = self.vm_fields

        def default(field: str) -> Any:
            if field in offers:
                return offers[field]
            if field in implicit:
                return implicit[field]
            return layout.default(field)

        # A value that differs from what a plugin fills is written even when it is the host's
        # default, so that the fill does not change the domain.
        return self._entry(values, {}, default)

    def _unmanaged(self) -> list[str]:
        """The fields that are not managed when left out."""
        return [n for f in self.mapping.fields for n in f.unmanaged_when_none]

    def _implicit(
        self, name: str, vm: VmDefinition, parsed: Parsed, fields: Sequence[str]
    ) -> dict[str, Any]:
        """What ``fields`` read as in the domain bkt would make for ``vm`` with them left
        out (not managed)."""
        fields = [f for f in fields if f in self.vm_fields.names]
        if not fields:
            return {}
        bare = vm.replace(**{f: None for f in fields})
        ctx = self.context(name, bare, _facts(parsed))
        try:
            readings = self.mapping.parse(self.mapping.render(bare, ctx), ctx).readings
        except Exception:  # a plugin's failure shows in the sync check that follows
            return {}
        return {
            f: plain_json(readings[f].value)
            for f in fields
            if f in readings and readings[f].is_clean
        }

    def _merge_existing(
        self,
        name: str,
        base: VmDefinition,
        base_raw: dict[str, Json],
        parsed: Parsed,
        values: dict[str, Any],
        kept: dict[str, str],
    ) -> Merged:
        entry = self._entry(values, base_raw, base.default)
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
            same = plain_json(base.field(f)) == plain_json(vm.field(f)) or was[f] == now[f]
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


def vm_path(name: str) -> str:
    """The JSON path of VM ``name`` as diagnostics show it (``vms.NAME``)."""
    from bkt_core.diagnostics import format_path

    return format_path(("vms", name))


def field_changes(
    old: Mapping[str, Json], new: Mapping[str, Json], order: Sequence[str]
) -> tuple[tuple[str, str, str], ...]:
    """The fields that differ between two entries, in ``order``: (field, old, new), each value
    compact JSON or ``(absent)``."""

    def shown(entry: Mapping[str, Json], f: str) -> str:
        return compact_json(entry[f]) if f in entry else ABSENT

    keys = [*order, *(k for k in (*old, *new) if k not in order)]
    return tuple(
        (f, shown(old, f), shown(new, f))
        for f in dict.fromkeys(keys)
        if old.get(f, _MISSING) != new.get(f, _MISSING)
    )
