"""The VM subsystem: ``vms.json`` and the libvirt domains it describes.

It builds the VM model of its host (the built-in fields plus every field a plugin declares),
loads the manifest with it, and carries out sync, status and capture through the hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bkt_core.errors import PluginError
from bkt_vm_plugin import SUBSYSTEM_NAME

if TYPE_CHECKING:
    from bkt_core.diagnostics import Problem
    from bkt_core.errors import Diagnostic
    from bkt_core.host import Host
    from bkt_core.manifest import ManifestSource
    from bkt_core.plan import CaptureReport, StatusReport, SyncPlan, SyncReport
    from bkt_vm_plugin.definition import VmDefinition, VmFields, VmManifest
    from bkt_vm_plugin.domain_xml import DomainMapping
    from bkt_vm_plugin.hooks import VmHooks
    from bkt_vm_plugin.model import ManifestModel, VmModel
    from bkt_vm_plugin.virsh import Virsh

__all__ = ["MANIFEST_FILE", "VmSubsystem"]

MANIFEST_FILE = "vms.json"


class VmSubsystem:
    """The ``vm`` subsystem of ``host``, a :class:`~bkt_core.Host`: what
    ``host.subsystem("vm")`` returns (:func:`bkt_vm_plugin.testing.vm_subsystem` types it).
    bkt builds it through the ``bkt_subsystems`` hook; embedders and tests use its methods.
    Its properties are computed once, on first use.

    :attr:`hooks`, :attr:`vm_model`, :attr:`manifest_model`, :attr:`vm_fields` and
    :meth:`validate_document` are bkt's own: they are not part of the plugin API's
    compatibility promise (``bkt_vm_plugin.api``), and may change in any release.
    """

    name = SUBSYSTEM_NAME
    manifest_file = MANIFEST_FILE
    #: The manifest's key of the VMs, which names them in the JSON form of plans and reports.
    manifest_key = "vms"

    def __init__(self, host: Host) -> None:
        self.host = host

    @functools.cached_property
    def hooks(self) -> VmHooks:
        """The VM hooks of this host's plugins, as typed methods."""
        from bkt_vm_plugin.hooks import VmHooks

        return VmHooks(self.host)

    # -- the model -------------------------------------------------------------------------

    @functools.cached_property
    def field_owners(self) -> dict[str, str]:
        """Every plugin-declared VM field and the plugin that declares it."""
        return dict(self._plugin_fields[1])

    @functools.cached_property
    def _plugin_fields(self) -> tuple[dict[str, Any], dict[str, str]]:
        from bkt_vm_plugin.definition import BUILTIN_FIELDS

        fields: dict[str, Any] = {}
        owners: dict[str, str] = {}
        builtin = set(BUILTIN_FIELDS.names)
        for plugin, declared in self.host.manifest_fields(self.name):
            for field_name, spec in dict(declared).items():
                if field_name in builtin:
                    raise PluginError(
                        plugin,
                        "bkt_manifest_fields",
                        f"declares VM field {field_name!r}, which is a built-in field",
                    )
                if field_name in owners:
                    raise PluginError(
                        plugin,
                        "bkt_manifest_fields",
                        f"declares VM field {field_name!r}, which plugin "
                        f"{owners[field_name]} declares too",
                        hint=f"block one of them: --disable-plugin {plugin} or "
                        f"--disable-plugin {owners[field_name]}",
                    )
                annotation, info = spec
                fields[field_name] = (annotation, info)
                owners[field_name] = plugin
        return fields, owners

    @functools.cached_property
    def vm_model(self) -> type[VmModel]:
        """The pydantic model that validates one VM on this host: built-in fields, then the
        plugins' fields."""
        from pydantic import create_model

        from bkt_vm_plugin.model import VmModel

        fields = self._plugin_fields[0]
        if not fields:
            return VmModel
        model: type[VmModel] = create_model(
            "VmModel", __base__=VmModel, __doc__=VmModel.__doc__, **fields
        )
        return model

    @functools.cached_property
    def manifest_model(self) -> type[ManifestModel]:
        """The pydantic model that validates ``vms.json`` on this host (its VMs with
        :attr:`vm_model`)."""
        from pydantic import Field, create_model

        from bkt_vm_plugin.model import ManifestModel, VmModel

        if self.vm_model is VmModel:
            return ManifestModel
        model: type[ManifestModel] = create_model(
            "ManifestModel",
            __base__=ManifestModel,
            __doc__=ManifestModel.__doc__,
            vms=(
                dict[str, self.vm_model],  # type: ignore[name-defined]
                Field(description=ManifestModel.model_fields["vms"].description),
            ),
        )
        return model

    @functools.cached_property
    def vm_fields(self) -> VmFields:
        """The fields a VM has on this host (built-in, then plugin fields, in schema order)
        with their defaults."""
        from bkt_vm_plugin.model import fields_of

        return fields_of(self.vm_model)

    def vm_definition(self, data: Mapping[str, Any], *, home: str | None = None) -> VmDefinition:
        """One VM's manifest entry (JSON data) validated with this host's fields into a plain
        :class:`~bkt_vm_plugin.definition.VmDefinition`: how tests and embedders build one.
        ``~`` in paths means ``home``, by default ``$HOME``. The manifest rules that look at
        several VMs or at a VM's name are not checked (:meth:`load` checks them). Raises
        ``pydantic.ValidationError`` (a ``ValueError``) when ``data`` is not valid."""
        from bkt_vm_plugin.model import validate_vm

        return validate_vm(data, model=self.vm_model, home=home)

    @functools.cached_property
    def mapping(self) -> DomainMapping:
        """The domain XML mapping of this host: every plugin's :class:`DomainField`, each
        tagged with the plugin that contributed it."""
        from bkt_vm_plugin.domain_xml import DomainMapping

        owners: dict[str, str] = {}
        fields = []
        for plugin, mapping_field in self.hooks.domain_fields():
            for name in mapping_field.fields:
                if name in owners:
                    raise PluginError(
                        plugin,
                        "bkt_domain_fields",
                        f"maps VM field {name!r}, which plugin {owners[name]} maps too",
                        hint=f"block one of them: --disable-plugin {plugin} or "
                        f"--disable-plugin {owners[name]}",
                    )
                owners[name] = plugin
            mapping_field.plugin = plugin
            fields.append(mapping_field)
        return DomainMapping(fields, own_plugin=self.host.is_own_plugin)

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of ``vms.json`` for this host's plugins."""
        from bkt_vm_plugin.schema import manifest_schema

        return manifest_schema(self.manifest_model)

    @functools.cached_property
    def virsh(self) -> Virsh:
        """The one :class:`~bkt_vm_plugin.virsh.Virsh` of this subsystem (``-c URI`` when the
        host has one), tracing every process at ``-vv``."""
        from bkt_vm_plugin.virsh import Virsh

        return Virsh(self.host.runner(), self.host.uri, trace=self.host.trace)

    # -- loading -----------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Any:
        """The path of ``vms.json`` in the host's manifest directory."""
        return self.host.manifest_dir / MANIFEST_FILE

    def sources(self) -> list[ManifestSource]:
        """The documents that make up the manifest (``vms.json``, then what the
        :func:`~bkt_core.hookspecs.bkt_manifest_sources` plugins make of it, such as a per-host
        override). Raises ManifestError or OperationError for a file that cannot be read."""
        return self.host.manifest_sources(self.name, self.host.manifest_dir, MANIFEST_FILE)

    def load(
        self,
        *,
        fresh: bool = False,
        warnings: list[Diagnostic] | None = None,
        on_validated: Callable[[VmManifest], None] | None = None,
        on_names: Callable[[Sequence[str]], None] | None = None,
    ) -> VmManifest:
        """Read and validate the manifest whole (:meth:`sources`, merged), or take it from
        the cache of validated manifests (:meth:`validated`; ``fresh``: validate even then),
        then fill the defaults plugins give (:func:`~bkt_vm_plugin.hookspecs.bkt_vm_defaults`).
        Raises ManifestError listing every problem, each in the file that holds it. With
        ``warnings``, the manifest is validated (as with ``fresh``) and the plugins' warnings
        are appended to it. ``on_validated`` is called with the manifest before the defaults are
        filled (which changes no VM's name). ``on_names`` is called once with the names of
        the manifest's VMs as soon as they are known: before validation when the manifest is
        validated (it may then turn out invalid, and this raises), else once it is taken from
        the cache. A command starts reading libvirt there."""
        from bkt_vm_plugin.paths import home_dir

        sources = self.sources()
        if not sources:
            from bkt_core.manifest import missing_manifest

            raise missing_manifest(self.manifest_path)
        fresh = fresh or warnings is not None
        manifest = self.validated(
            sources, home=home_dir(), fresh=fresh, warnings=warnings, on_names=on_names
        )
        if on_validated is not None:
            on_validated(manifest)
        # What plugins fill depends on more than the document (a database of OSes): it is
        # applied on every load, never cached.
        from bkt_vm_plugin.defaults import fill_defaults

        return fill_defaults(manifest, self.hooks)

    def validated(
        self,
        sources: Sequence[ManifestSource],
        *,
        home: str | None,
        fresh: bool = False,
        warnings: list[Diagnostic] | None = None,
        on_names: Callable[[Sequence[str]], None] | None = None,
    ) -> VmManifest:
        """The manifest that ``sources`` make, validated with ``~`` meaning ``home``: from
        the cache of validated manifests (:mod:`bkt_core.manifest_cache`) when it holds this
        one, without pydantic and without the plugins' validation; else validated whole, and
        stored when valid. ``fresh`` validates even then (``bkt vm validate``); the plugins'
        warnings of a validation are appended to ``warnings`` when it is given. Raises
        ManifestError listing every problem, each in the file that holds it. ``on_names``:
        see :meth:`load`."""
        from bkt_core.manifest_cache import ManifestCache
        from bkt_vm_plugin import cached_manifest

        entry = ManifestCache(self.host, self.name, sources, home=home, code=cached_manifest.CODE)
        manifest = None if fresh else entry.get(cached_manifest.decode)
        if manifest is None:
            # The names are the keys of the merged document's "vms", which validation keeps
            # as they are: libvirt is read while the manifest is validated.
            names = None if on_names is None else _names_in(sources)
            if on_names is not None and names is not None:
                on_names(names)
            manifest = self._validate_sources(sources, home, warnings)
            if on_names is not None and names is None:
                on_names(list(manifest.vms))
            valid = manifest
            entry.put(lambda: cached_manifest.encode(valid, self.vm_fields))
        elif on_names is not None:
            on_names(list(manifest.vms))
        return manifest

    def _validate_sources(
        self,
        sources: Sequence[ManifestSource],
        home: str | None,
        warnings: list[Diagnostic] | None = None,
    ) -> VmManifest:
        from bkt_core.manifest import validate_sources
        from bkt_vm_plugin.model import to_manifest

        validated = validate_sources(
            sources,
            self.manifest_model,
            validators=[functools.partial(self.validate_document, home=home)],
            context={"home": home},
            warnings=warnings,
        )
        return to_manifest(validated)

    def validate_document(self, document: Any, *, home: str | None) -> list[Problem]:
        """Every plugin's :func:`~bkt_core.hookspecs.bkt_validate_manifest` problems with the
        raw ``document``, ``~`` meaning ``home``."""
        return self.host.validate_manifest(self.name, document, home)

    def validate(self, *, warnings: list[Diagnostic] | None = None) -> int:
        """Load and validate the manifest (:meth:`load`), even when the cache of validated
        manifests holds it, and refresh that cache; the number of VMs. Raises ManifestError.
        The plugins' warnings are appended to ``warnings`` when it is given."""
        return len(self.load(fresh=True, warnings=warnings).vms)

    # -- operations (bkt_vm_plugin.sync, .status, .capture) --------------------------------------

    def plan(self, names: Sequence[str] = (), *, allow_firmware_change: bool = False) -> SyncPlan:
        """What :meth:`sync` would do to the VMs ``names`` (none: every VM of the manifest),
        reading libvirt and changing nothing; ``allow_firmware_change`` as for :meth:`sync`."""
        from bkt_vm_plugin import sync

        return sync.plan(self, names, allow_firmware_change=allow_firmware_change)

    def sync(
        self,
        names: Sequence[str] = (),
        *,
        dry_run: bool = False,
        allow_firmware_change: bool = False,
    ) -> SyncReport:
        """Sync the VMs ``names`` (none: every VM) with the manifest; with ``dry_run``, only
        plan. ``allow_firmware_change``: let sync turn Secure Boot off, or switch an existing
        domain to another kind of UEFI firmware while it keeps its NVRAM; without it such a
        VM fails, and nothing of it is changed."""
        from bkt_vm_plugin import sync

        return sync.sync(self, names, dry_run=dry_run, allow_firmware_change=allow_firmware_change)

    def status(self, names: Sequence[str] = (), *, all: bool = False) -> StatusReport:
        """The status of the VMs ``names`` (none: every VM of the manifest; with ``all``,
        the domains the manifest does not have too)."""
        from bkt_vm_plugin import status

        return status.status(self, names, all=all)

    def capture(
        self, names: Sequence[str] = (), *, all: bool = False, dry_run: bool = False
    ) -> CaptureReport:
        """Write what libvirt has of the VMs ``names`` (none: every VM of the manifest; with
        ``all``, the domains it does not have too) back into the manifest; with ``dry_run``,
        only report what would be written."""
        from bkt_vm_plugin import capture

        return capture.capture(self, names, all=all, dry_run=dry_run)


def _names_in(sources: Sequence[ManifestSource]) -> list[str] | None:
    """The names of the VMs that ``sources`` make, before validation: the keys of the
    merged document's ``vms`` object. None when it has none or one of them cannot be a VM's
    name (validation will say so): virsh is never given a name validation refuses."""
    from bkt_core.manifest import merge_sources
    from bkt_vm_plugin.rules import name_problem

    document, _ = merge_sources(sources)
    vms = document.get("vms") if isinstance(document, dict) else None
    if not isinstance(vms, dict) or any(name_problem(name) for name in vms):
        return None
    return list(vms)
