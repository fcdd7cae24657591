"""Domain XML: render, parse and patch are one mapping.

The manifest owns a small set of elements of a libvirt domain. Each piece of that set is a
:class:`DomainField`, contributed through the ``bkt_domain_fields`` hook (the built-in ones
live in :mod:`bkt_vm_plugin.mapping` and in the ``cpu_model`` and ``autostart`` plugins), with
its render, parse and patch side by side. :class:`DomainMapping` runs every field:

- :meth:`DomainMapping.render` builds a complete domain for a new VM;
- :meth:`DomainMapping.parse` reads each field back, saying why when it cannot round-trip;
- :meth:`DomainMapping.patch` edits ``virsh dumpxml --inactive --security-info`` output in
  place, calling a field only when it is out of sync, so that everything the manifest does not
  own (UUID, MACs, addresses, extra devices, passwords, metadata, comments) survives;
- :meth:`DomainMapping.diff` is the one definition of "in sync".

Shared elements. Several fields may write into one element (``<cpu>``, ``<os>``,
``<features>``, ``<devices>``, ``<clock>``). Each owns a part of it, and the rules are:

1. A field reads, changes and removes only its own part: the attributes and children it
   names (the ``cpu_model`` plugin owns ``<cpu>``'s attributes, ``<model>`` and ``<vendor>``;
   ``vcpus`` owns ``<topology>``; a plugin that adds CPU features owns each ``<feature>``
   whose ``name`` it names). What no field names belongs to the user and is kept.
2. A field that needs the element creates it when missing
   (:func:`bkt_vm_plugin.xmltree.ensure_child`), and removes it only when it leaves it empty,
   so that the order in which fields apply does not matter.
3. A field whose part must agree with what others put into the element brings it in line in
   :meth:`DomainField.settle`, which the mapping calls for every field after all of them
   rendered or patched (libvirt refuses ``<feature>`` elements in a ``<cpu>`` without a CPU model,
   so ``cpu_model`` names libvirt's default model when a feature is there: see
   :mod:`bkt_vm_plugin.cpu_model`). Settling changes only the settling field's own part, and
   nothing at all on a domain that already agrees, so the laws below hold with it.

The laws, checked for every installed field by bkt's property tests: parse of render gives
:meth:`DomainField.desired` back; patch changes only the parts a field owns, and parse of patch
gives :meth:`DomainField.desired` back; patching a domain to the definition it is in sync with
gives it back byte for byte; capture reads every field back, the fields that share an element
too.

The XML itself (the hardened parser, serialization, the tree helpers) is
:mod:`bkt_vm_plugin.xmltree`'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bkt_core.errors import BktError, PluginError
from bkt_vm_plugin.definition import plain
from bkt_vm_plugin.xmltree import (
    child,
    insert_child,
    make,
    parse_xml,
    serialize,
    serialize_pretty,
    text_of,
)

if TYPE_CHECKING:
    from bkt_core.plan import FieldChange
    from bkt_vm_plugin.definition import IsoSource, VmDefinition
    from bkt_vm_plugin.xmltree import Element

__all__ = [
    "MARKER_NAMESPACE",
    "AttachedIso",
    "DomainContext",
    "DomainField",
    "DomainMapping",
    "Parsed",
    "PatchRefused",
    "Reading",
]

#: The namespace of bkt's marker in ``<metadata>``: ``<bkt:vm xmlns:bkt="urn:bkt:vm:1"/>``.
MARKER_NAMESPACE = "urn:bkt:vm:1"
MARKER_PREFIX = "bkt"
MARKER_NAME = "vm"
MARKER_TAG = f"{{{MARKER_NAMESPACE}}}{MARKER_NAME}"

HOOK = "bkt_domain_fields"


class PatchRefused(BktError):
    """A change that bkt does not make to this domain (a NUMA guest's memory, ...): raised
    by :meth:`DomainField.patch` with the manifest ``field`` and the ``reason``; the message
    is ``cannot change FIELD: REASON``, with an optional ``hint`` saying what to do."""

    def __init__(self, field: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"cannot change {field}: {reason}", hint=hint)
        self.field = field
        self.reason = reason


def has_marker(domain: Element) -> bool:
    """Whether ``<metadata>`` holds bkt's marker (by namespace and name; any prefix)."""
    metadata = child(domain, "metadata")
    return metadata is not None and any(c.tag == MARKER_TAG for c in metadata)


# -- what the mapping passes around ----------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What a domain says about one field.

    Clean: ``reason`` is None and ``value`` is the field's value. Lossy: the owned element
    holds ``value`` but the domain has more than the manifest can describe; drift compares the
    value, capture does not write it. Unsupported: no manifest value describes it (``value``
    is None); it is drift against any manifest, and patch replaces it. ``lossy`` tells a
    lossy reading from an unsupported one. Build one with :meth:`clean`,
    :meth:`unsupported` or :meth:`lossy_`.
    """

    value: Any | None = None
    reason: str | None = None
    lossy: bool = False

    @classmethod
    def clean(cls, value: Any) -> Reading:
        """The domain holds ``value``, and nothing the manifest cannot describe."""
        if cls is Reading and type(value) in _PLAIN:
            # Most readings are: each domain's parse makes dozens, and a frozen dataclass
            # costs more to build than to look up.
            return _clean_plain(value)
        return cls(value)

    @classmethod
    def unsupported(cls, reason: str) -> Reading:
        """No manifest value describes the domain, because of ``reason``."""
        return cls(None, reason)

    @classmethod
    def lossy_(cls, value: Any, reason: str) -> Reading:
        """The domain holds ``value`` and more (``reason``) that the manifest cannot say."""
        return cls(value, reason, lossy=True)

    @property
    def is_clean(self) -> bool:
        """Whether the reading is clean: capture writes its value."""
        return self.reason is None

    @property
    def has_value(self) -> bool:
        """Whether drift can compare a value (clean or lossy)."""
        return self.reason is None or self.lossy


@functools.lru_cache(maxsize=4096, typed=True)
def _clean_plain(value: str | int | bool | None) -> Reading:
    # Typed: 1 and True are equal and hash alike, but are not the same reading (nor are 0.0
    # and -0.0, hence no floats here).
    return Reading(value)


@dataclass(frozen=True)
class AttachedIso:
    """An ISO source of the manifest and the file that holds it, as
    :attr:`DomainContext.attached` (and ``missing``) pair them: ``source``, the manifest's
    :data:`~bkt_vm_plugin.definition.IsoSource` (an ``IsoPath`` or an ``IsoUrl``), and
    ``path``, the local file for it (an ``IsoPath``'s path with ``~`` expanded, or the file
    in the ISO cache an ``IsoUrl`` is downloaded to; in ``missing``, a file that does not
    exist)."""

    #: The ISO source as the manifest gives it.
    source: IsoSource
    #: The local file that holds it, attached as a CD-ROM.
    path: str


@dataclass(frozen=True)
class DomainContext:
    """The facts about a VM that are not in its manifest entry, computed once and shared by
    render, patch, parse and diff so that they agree.

    ``disk_path`` is the expanded path, ``disk_format`` the image's format (``qcow2`` or
    ``raw``; qcow2 for a disk yet to be created; status passes the domain's own format, so
    that it never reports ``disk_format``). ``isos`` are the ISO files to attach, in manifest
    order; a source left out because its file is missing (``missing``) or not cached
    (``left_out``) is not drift, and ``warnings`` say so. ``facts`` are observed facts about
    the domain that its XML does not hold (``autostart``, ``active``).

    ``name`` is the VM's name (the domain's). ``attached`` pairs each ISO source that is
    attached with its file, an :class:`AttachedIso` (``isos`` are those files); ``missing``
    does the same for the sources whose file is missing, ``left_out`` names the URLs not
    cached. ``home`` is the home directory ``~``
    expands with, ``iso_cache`` the directory downloaded ISOs are cached in. Sync, status and
    capture build it; tests of a field may build one with ``name`` and ``disk_path`` alone.
    """

    name: str
    disk_path: str
    disk_format: str = "qcow2"
    isos: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)
    attached: tuple[AttachedIso, ...] = ()
    missing: tuple[AttachedIso, ...] = ()
    left_out: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    home: str | None = None
    iso_cache: str | None = None


#: Types whose equal values are the same value: a field's spelling of one is that of the
#: other (1 == 1.0 == True holds across types, hence the same type too).
_PLAIN = frozenset({str, int, bool, type(None)})


def spell(value: Any) -> str:
    """A value as the manifest spells it, for a field change: numbers in decimal,
    enums as written, booleans ``true``/``false``, lists joined with ``, `` or ``none``;
    a mapping (or a model) as the dict of its plain data, so that a definition's read-only
    mapping and the dict a field's parse reads spell alike."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_spell_item(v) for v in value) if value else "none"
    return _spell_item(value)


def _spell_item(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple) or hasattr(value, "model_dump"):
        return str(plain(value))
    return str(value)


class DomainField:
    r"""One piece of the manifest <-> domain XML mapping: the manifest fields in ``fields``
    (in diff order), with their render, parse and patch side by side.

    Subclass it, set ``fields``, and implement :meth:`parse` plus (when ``in_xml``)
    :meth:`render` and :meth:`patch`. ``extra`` names values that are compared (and so can
    drift) but are not manifest fields (``disk_format``). A field with ``in_xml = False``
    (``autostart``) is not in the domain XML: it reads ``ctx.facts`` and a change of it alone
    needs no ``virsh define``. ``plugin`` is set to the contributing plugin's name when the
    mapping is built, so that its failures name it.

    ``unmanaged_when_none`` names the fields of :attr:`fields` for which None means "bkt
    does not manage this": when :meth:`desired` gives None for one, the mapping neither
    compares it (no drift, so :meth:`patch` is not called for it) nor captures it into an
    entry whose definition has None there, and an unclean reading of it is no reason to keep
    or skip anything. :meth:`render` decides what a new domain gets for None (usually what
    bkt wrote before the field existed).

    The laws, checked for every installed field by bkt's property tests: parse of render
    gives :meth:`desired` back; patch changes only the part of the domain this field owns,
    and parse of patch gives :meth:`desired` back. The mapping calls :meth:`patch` only when
    the field is out of sync, but patch must be a no-op when it is not.

    Sharing an element with other fields (``<cpu>``, ``<features>``, ``<os>``, ``<clock>``):
    own a part of it (attributes, or children by name and, where several share a name, by an
    attribute: ``<feature name='vmx'>``); read, change and remove only that part; create the
    element with :func:`~bkt_vm_plugin.xmltree.ensure_child` and remove it only when it is
    left empty. A field whose part must agree with what other fields put there does so in
    :meth:`settle`. A field that adds ``<feature>`` elements to ``<cpu>`` needs nothing more:
    under every ``cpu_model`` and both virt_types, the ``cpu_model`` plugin makes the
    ``<cpu>`` one libvirt accepts.
    """

    fields: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    unmanaged_when_none: tuple[str, ...] = ()
    in_xml: bool = True
    plugin: str = "(unregistered)"

    @property
    def compared(self) -> tuple[str, ...]:
        """Every value diff compares: the manifest fields, then ``extra``."""
        return self.fields + self.extra

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        """Add this field's elements to ``domain``, a new domain being built for the
        definition ``vm`` in the context ``ctx``. The default adds nothing."""

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        """A :class:`Reading` for each name in :attr:`compared`, read from the ``<domain>``
        element ``domain`` in the context ``ctx`` (``ctx.facts`` for a field not in the XML).
        Must not raise for any well-formed ``<domain>``."""
        raise NotImplementedError

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        """What :meth:`parse` must read once ``vm`` is applied, for each name in
        :attr:`compared`, in the context ``ctx``. The default: the definition's values of
        :attr:`fields`."""
        return {name: vm.field(name) for name in self.fields}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        """Bring the elements this field owns in ``domain`` to ``vm`` (in the context
        ``ctx``), changing nothing else. Raise :class:`PatchRefused` for a change bkt does not
        make. The default changes nothing."""

    def settle(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        """Bring this field's part of an element it shares in line with the parts other
        fields own, once every field rendered or patched ``domain`` for ``vm`` in the context
        ``ctx`` (the mapping calls it for
        every field, in order, each time). It must change only this field's own part, and
        nothing when the parts already agree, so that a patch of a domain in sync stays a
        no-op. The default does nothing."""

    def spell(self, name: str, value: Any) -> str:
        """``value`` of ``name`` as a field change shows it (and as diff compares it)."""
        return spell(value)

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        """The manifest values capture writes for the clean readings of :attr:`fields`.
        ``readings`` holds every field's reading (a field may depend on another's, as the CPU
        model's default depends on the domain type); ``base`` is the definition capture starts
        from and ``ctx`` its context, when there is one. The default writes each clean value
        as it is."""
        return {name: readings[name].value for name in self.fields if readings[name].is_clean}


@dataclass(frozen=True)
class Parsed:
    """What :meth:`DomainMapping.parse` observed: ``name``, the domain's ``<name>``;
    ``has_marker``, whether bkt's marker is in ``<metadata>`` (never part of the manifest);
    ``readings``, a :class:`Reading` for each compared value by name;
    ``manifest_fields``, the names of those values that are manifest fields; and
    ``unmanaged``, the manifest fields an entry may leave unmanaged
    (:attr:`DomainField.unmanaged_when_none`)."""

    name: str | None
    has_marker: bool
    readings: Mapping[str, Reading]
    manifest_fields: tuple[str, ...] = ()
    unmanaged: tuple[str, ...] = ()

    def cdroms(self) -> tuple[str, ...]:
        """The files of the domain's own CD-ROMs, as ``iso_sources`` read them."""
        reading = self.readings.get("iso_sources")
        if reading is None or not reading.has_value or not reading.value:
            return ()
        return tuple(str(path) for path in reading.value)

    def problems(self) -> list[tuple[str, str]]:
        """Every manifest field that cannot be captured cleanly, with the reason; a field
        that may be left unmanaged (:attr:`unmanaged`) is not one: capture leaves it out."""
        return [
            (name, reading.reason)
            for name in self.manifest_fields
            if (reading := self.readings[name]).reason is not None and name not in self.unmanaged
        ]


# The order in which the built-in fields' changes are listed. Other fields follow in
# the order they were registered, and fields that are not in the XML (autostart) come last.
DIFF_ORDER = (
    "memory_gb", "vcpus", "disk_path", "disk_format", "boot", "tpm", "network", "graphics",
    "iso_sources", "cpu_model", "virt_type", "secure_boot", "disk_bus", "nic_model", "clock",
    "clock_timers", "hyperv", "sound", "usb_redirection", "video",
)  # fmt: skip

_T = TypeVar("_T")


def _failed(mapping_field: DomainField, method: str, args: Iterable[Any]) -> str:
    """What failed, for a field's error: which method, for which VM and which of its fields
    (what the user can look at in the manifest)."""
    vm = next((f" for VM {a.name}" for a in args if isinstance(a, DomainContext)), "")
    names = mapping_field.fields
    return f"{method} failed{vm} (field{'s' if len(names) > 1 else ''} {', '.join(names)})"


class DomainMapping:
    """Every :class:`DomainField` of a host, ``fields``, in the order they apply. A host
    builds its own (:attr:`VmSubsystem.mapping <bkt_vm_plugin.api.VmSubsystem.mapping>`);
    raises :class:`~bkt_core.PluginError` when two fields compare the same value.
    ``own_plugin`` says whether a plugin, by name, is one of bkt's own
    (:meth:`bkt_core.Host.is_own_plugin`): an error one of its fields raises on purpose is
    reported as it is, another plugin's names that plugin (by default every plugin is named)."""

    def __init__(
        self, fields: Iterable[DomainField], own_plugin: Callable[[str], bool] | None = None
    ) -> None:
        self.fields: tuple[DomainField, ...] = tuple(fields)
        self._own_plugin = own_plugin or (lambda _name: False)
        owners: dict[str, str] = {}
        for mapping_field in self.fields:
            for name in mapping_field.compared:
                if name in owners:
                    raise PluginError(
                        mapping_field.plugin,
                        HOOK,
                        f"maps VM field {name!r}, which plugin {owners[name]} maps too",
                    )
                owners[name] = mapping_field.plugin
        self.owners = owners
        names = [n for f in self.fields for n in f.compared]
        in_xml = {n: f.in_xml for f in self.fields for n in f.compared}

        def rank(name: str) -> tuple[int, int]:
            if not in_xml[name]:
                return (2, names.index(name))
            if name in DIFF_ORDER:
                return (0, DIFF_ORDER.index(name))
            return (1, names.index(name))

        self._order = {n: i for i, n in enumerate(sorted(names, key=rank))}
        self.manifest_fields: tuple[str, ...] = tuple(n for f in self.fields for n in f.fields)
        self._unmanaged = tuple(n for f in self.fields for n in f.unmanaged_when_none)
        #: Each field with the names it compares, as the ownership above was checked with:
        #: read once, not for every domain.
        self._compared = tuple((f, f.compared) for f in self.fields)

    def _call(
        self, mapping_field: DomainField, method: str, call: Callable[..., _T], *args: Any
    ) -> _T:
        try:
            return call(*args)
        except BktError as exc:
            # A refusal on purpose: bkt's own fields speak as bkt; another plugin's names
            # the plugin and keeps its hint.
            if isinstance(exc, PluginError) or self._own_plugin(mapping_field.plugin):
                raise
            detail = f"{_failed(mapping_field, method, args)}: {exc.message}"
            raise PluginError(mapping_field.plugin, HOOK, detail, hint=exc.hint) from exc
        except (Exception, SystemExit) as exc:  # sys.exit() in a plugin is its failure too
            detail = f"{_failed(mapping_field, method, args)}: {type(exc).__name__}: {exc}"
            raise PluginError(mapping_field.plugin, HOOK, detail) from exc

    def field_of(self, name: str) -> DomainField:
        """The field that compares ``name``. Raises :class:`KeyError` for no such field."""
        for mapping_field in self.fields:
            if name in mapping_field.compared:
                return mapping_field
        raise KeyError(name)

    # -- the four directions ---------------------------------------------------------------

    def render(self, vm: VmDefinition, ctx: DomainContext) -> str:
        """The domain XML of a new VM ``ctx.name`` described by ``vm``."""
        domain = make("domain")
        insert_child(domain, make("name", text=ctx.name))
        marker = make(MARKER_TAG, nsmap={MARKER_PREFIX: MARKER_NAMESPACE})
        insert_child(domain, make("metadata", [], marker))
        for f in self.fields:
            if f.in_xml:
                self._call(f, "render", f.render, domain, vm, ctx)
        self._settle(domain, vm, ctx)
        return serialize_pretty(domain)

    def _settle(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        """Every field's :meth:`DomainField.settle`, once all of them wrote their parts."""
        for f in self.fields:
            if f.in_xml:
                self._call(f, "settle", f.settle, domain, vm, ctx)

    def parse(self, xml: str, ctx: DomainContext) -> Parsed:
        """What ``xml`` (best ``dumpxml --inactive``) says about every field, in the context
        ``ctx``. Raises only
        :class:`~bkt_vm_plugin.xmltree.DomainXmlError` (and :class:`PluginError` for a failing
        plugin)."""
        domain = parse_xml(xml)
        return self.parse_tree(domain, ctx)

    def parse_tree(self, domain: Element, ctx: DomainContext) -> Parsed:
        """:meth:`parse` of ``domain``, a ``<domain>`` element already parsed, in the
        context ``ctx``."""
        readings: dict[str, Reading] = {}
        for f, names in self._compared:
            self._read_into(readings, f, names, domain, ctx)
        name_node = child(domain, "name")
        return Parsed(
            name=text_of(name_node) if name_node is not None else None,
            has_marker=has_marker(domain),
            readings=readings,
            manifest_fields=self.manifest_fields,
            unmanaged=self._unmanaged,
        )

    def _read_into(
        self,
        out: dict[str, Reading],
        mapping_field: DomainField,
        names: tuple[str, ...],
        domain: Element,
        ctx: DomainContext,
    ) -> None:
        """Adds to ``out`` the readings of ``names``, which ``mapping_field`` compares (its
        parse, checked)."""
        got = self._call(mapping_field, "parse", mapping_field.parse, domain, ctx)
        mapping = type(got) is dict or isinstance(got, Mapping)
        for name in names:
            reading = got.get(name) if mapping else None
            if not isinstance(reading, Reading):
                raise PluginError(
                    mapping_field.plugin, HOOK, f"parse failed: it gave no reading for {name!r}"
                )
            out[name] = reading

    def patch(self, xml: str, vm: VmDefinition, ctx: DomainContext) -> str:
        """``xml`` (``dumpxml --inactive --security-info``) with every owned element brought
        to ``vm`` in the context ``ctx``. A field in sync is not touched and settling changes
        nothing on a domain whose parts agree, so an in-sync domain comes back as it was (as
        lxml writes it). The name is never changed. Raises :class:`PatchRefused`."""
        domain = parse_xml(xml)
        for f, names in self._compared:
            if not f.in_xml:
                continue
            # Read on the tree as the earlier fields left it (virt_type decides what the CPU
            # model reads as).
            readings: dict[str, Reading] = {}
            self._read_into(readings, f, names, domain, ctx)
            if not self._changes(f, names, readings, vm, ctx):
                continue
            self._call(f, "patch", f.patch, domain, vm, ctx)
        self._settle(domain, vm, ctx)
        return serialize(domain)

    def _changes(
        self,
        mapping_field: DomainField,
        names: tuple[str, ...],
        readings: Mapping[str, Reading],
        vm: VmDefinition,
        ctx: DomainContext,
    ) -> list[FieldChange]:
        f = mapping_field
        wanted = self._call(f, "desired", f.desired, vm, ctx)
        changes = []
        for name in names:
            if name not in wanted:
                raise PluginError(f.plugin, HOOK, f"desired failed: it gave no value for {name!r}")
            want = wanted[name]
            if want is None and name in f.unmanaged_when_none:
                continue  # not managed: whatever the domain has is in sync
            reading = readings[name]
            if reading.has_value:
                value = reading.value
                if type(value) in _PLAIN and type(value) is type(want) and value == want:
                    continue  # the same plain value spells the same: neither is spelled
                new = self._call(f, "spell", f.spell, name, want)
                old = self._call(f, "spell", f.spell, name, value)
                if old == new:
                    continue
            else:
                new = self._call(f, "spell", f.spell, name, want)
                old = f"({reading.reason})"
            from bkt_core.plan import FieldChange  # only drift needs the plan's classes

            changes.append(FieldChange(name, old, new))
        return changes

    def diff(self, parsed: Parsed, vm: VmDefinition, ctx: DomainContext) -> list[FieldChange]:
        """The changes that bring the domain observed in ``parsed`` to ``vm`` (in the context
        ``ctx``), old -> new in manifest spelling, in :data:`DIFF_ORDER`. Empty means in
        sync: the one definition of it."""
        changes = [
            change
            for f, names in self._compared
            for change in self._changes(f, names, parsed.readings, vm, ctx)
        ]
        return sorted(changes, key=lambda c: self._order[c.field])

    def needs_define(self, changes: Iterable[FieldChange]) -> bool:
        """Whether ``changes`` touch the domain XML (a change of autostart alone does not)."""
        return any(self.field_of(c.field).in_xml for c in changes)

    def capture_values(
        self,
        parsed: Parsed,
        base: VmDefinition | None = None,
        ctx: DomainContext | None = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """What capture writes of the domain observed in ``parsed``: ``values`` of every
        manifest field read cleanly (in manifest
        spelling; with ``base`` and its ``ctx``, the disk path and ISO sources keep
        ``base``'s spelling), and ``kept``: the fields that keep ``base``'s value, with why.

        A field that is not managed (``unmanaged_when_none``) is neither captured nor kept
        when ``base`` has None for it; without ``base`` (a new VM) its clean reading is
        captured and an unclean one leaves it out (not managed)."""
        values: dict[str, Any] = {}
        kept: dict[str, str] = {}
        for f in self.fields:
            readings = {name: parsed.readings[name] for name in f.compared}
            unmanaged = {
                name for name in f.unmanaged_when_none if base is None or base.field(name) is None
            }
            for name in f.fields:
                reason = readings[name].reason
                if reason is not None and name not in unmanaged:
                    kept[name] = reason
            got = self._call(f, "capture", f.capture, parsed.readings, base, ctx)
            values.update(
                (k, v)
                for k, v in got.items()
                if not (k in unmanaged and (base is not None or not readings[k].is_clean))
            )
        return values, kept
