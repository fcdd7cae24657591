"""Every hook of bkt, in one place.

A plugin is any object or module with functions named like these hooks and marked with
:data:`bkt_core.hookimpl`. It is found through the entry-point group ``bkt`` (see the README's
plugin guide) or passed to :class:`bkt_core.Host` by an embedder. Hooks are called with
keyword arguments; an implementation may accept any subset of them, so new arguments can be
added without breaking plugins. Wrappers (``wrapper=True``) may wrap ``bkt_cli_commands``,
``bkt_disk_plan`` and ``bkt_disk_provision``; the other hooks are called implementation by
implementation (:data:`CALLED_ONE_BY_ONE`), and a wrapper on them is a start-up error.

Every result is checked against the type its hook declares (:data:`RESULTS`), and a plugin
that returns something else, exits, raises (any ``BaseException``) or runs past the per-hook
time limit is an error naming the plugin and the hook (:class:`bkt_core.host.Host`).

pluggy calls implementations last-registered first, ``tryfirst`` ones before and ``trylast``
ones after the others; the defaults that ship with bkt are ``trylast`` wherever a first
result wins, so a third-party answer takes precedence.

The types named in the annotations of the VM hooks (``VmDefinition``, ``DomainField``,
``DiskRequest``, ...) live in :mod:`bkt_vm_plugin`; they are written as strings here because the
host itself knows nothing about VMs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from bkt_core.diagnostics import Problem
    from bkt_core.host import Host
    from bkt_core.manifest import ManifestSource
    from bkt_core.plan import SyncReport
    from bkt_core.subsystem import Subsystem

PROJECT = "bkt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["CALLED_ONE_BY_ONE", "PROJECT", "RESULTS", "hookimpl", "hookspec"]

#: The hooks bkt calls implementation by implementation, so that every result and every
#: failure is tied to its plugin; wrappers on them are refused at start-up.
CALLED_ONE_BY_ONE = frozenset(
    {
        "bkt_subsystems",
        "bkt_manifest_fields",
        "bkt_validate_manifest",
        "bkt_manifest_sources",
        "bkt_domain_fields",
        "bkt_post_sync_vm",
        "bkt_post_sync",
    }
)

#: What each hook's implementations may return, checked on every result (the annotations
#: below are strings, and evaluating them at run time would cost start-up): ``(shape, type)``
#: where the shape is ``"none"`` (only None), ``"value"`` (None or one ``type``),
#: ``"iterable"`` (None or an iterable of ``type``s) or ``"fields"`` (None or a mapping of
#: field names to ``(annotation, type)`` pairs), and the type is ``"module:name"``, imported
#: only when a result is checked.
RESULTS: dict[str, tuple[str, str]] = {
    "bkt_subsystems": ("iterable", "bkt_core.subsystem:Subsystem"),
    "bkt_cli_commands": ("none", ""),
    "bkt_manifest_fields": ("fields", "pydantic.fields:FieldInfo"),
    "bkt_validate_manifest": ("iterable", "bkt_core.diagnostics:Problem"),
    "bkt_manifest_sources": ("iterable", "bkt_core.manifest:ManifestSource"),
    "bkt_domain_fields": ("iterable", "bkt_vm_plugin.domain_xml:DomainField"),
    "bkt_disk_plan": ("value", "bkt_vm_plugin.provision:DiskCreation"),
    "bkt_disk_provision": ("value", "builtins:bool"),
    "bkt_post_sync": ("none", ""),
    "bkt_post_sync_vm": ("none", ""),
}


# -- subsystems and commands -------------------------------------------------------------


@hookspec
def bkt_subsystems(host: Host) -> Iterable[Subsystem] | None:
    """Contribute subsystems (the VM subsystem is one).

    Called once per host, the first time a subsystem is needed. ``host`` is the
    :class:`~bkt_core.Host` the subsystem will work for. Return the subsystems this plugin
    provides; every result is kept. Two subsystems with one name are a start-up error.
    """


@hookspec
def bkt_cli_commands(cli: click.Group) -> None:
    """Add commands or command groups to the ``bkt`` command line.

    Called once when the CLI is built, before arguments are parsed (never for
    ``bkt --version``). ``cli`` is the root click group; add to it with
    ``cli.add_command(...)`` (plain click: rich-click draws the help of every command when
    help is asked for). Keep imports inside the command functions so that start-up stays
    fast. Returns nothing.
    """


# -- manifest loading --------------------------------------------------------------------


@hookspec
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    """Declare optional fields of a subsystem's manifest entries (for ``vm``: each VM).

    Called once per host and subsystem, when its entry model is built. Return a mapping from
    field name to ``(annotation, pydantic.Field(default=..., description=...))``, as for
    :func:`pydantic.create_model`; the field must have a default (absent means the default).
    The fields join the entry model after the built-in ones: they are validated (strictly),
    appear in ``bkt schema``, and are captured and compared like built-in fields. Every result
    is kept; a field declared twice, or one that shadows a built-in field, is a start-up error
    naming both plugins.
    """


@hookspec
def bkt_validate_manifest(
    subsystem: str, document: Mapping[str, Any], home: str | None
) -> Iterable[Problem] | None:
    """Check a manifest beyond what its model says (rules over several fields, names, ...).

    Called each time a manifest of ``subsystem`` is loaded, with the parsed JSON ``document``
    (plain dicts and lists, before and whatever pydantic says, so that these rules are reported
    together with shape errors; look only at values of the type you expect) and the user's
    home directory. Return :class:`~bkt_core.Problem` objects: each carries the JSON path it is
    about and is reported with file:line:col. Every result is kept.
    """


@hookspec
def bkt_manifest_sources(
    subsystem: str,
    manifest_dir: Path,
    file_name: str,
    sources: Sequence[ManifestSource],
) -> Iterable[ManifestSource] | None:
    """Contribute or transform the documents that make up a subsystem's manifest.

    Called each time a manifest of ``subsystem`` is loaded (and by ``capture``), before it is
    validated. ``manifest_dir`` is the manifest directory, ``file_name`` the subsystem's file
    in it (``vms.json``), ``sources`` the :class:`~bkt_core.manifest.ManifestSource` documents
    so far: the subsystem's file when it exists, as earlier implementations left them. Return
    the new sequence (keep, drop, reorder, add or replace documents; build one with
    ``ManifestSource.read(path)`` or ``ManifestSource.parse(path, text)``), or None to leave it
    as it is. Implementations run one after the other in pluggy's order, each receiving the
    previous one's result; the per-host overrides that ship with bkt are ``trylast``.

    The documents are merged in order, each over the ones before it: two objects merge
    member by member, any other value replaces the earlier one whole. Problems are reported
    in the file and at the line of the value that won. ``capture`` writes a field back, as
    JSON, to the document it came from. No document at all is "no manifest".
    """


# -- domain XML ----------------------------------------------------------------------------


@hookspec
def bkt_domain_fields() -> Iterable[Any] | None:
    """Contribute pieces of the manifest <-> libvirt domain XML mapping.

    Called once per host. Return :class:`bkt_vm_plugin.domain_xml.DomainField` objects; each
    owns one or more manifest fields and has their ``render`` (a new domain), ``parse``
    (capture and drift) and ``patch`` (an update that changes only what it owns) side by side,
    so the round-trip laws hold for every field, built-in or not. Fields are applied in the
    order pluggy calls the plugins (use ``tryfirst``/``trylast`` to move), and within one
    result in list order. A manifest field owned by two mappings is a start-up error naming
    both plugins.
    """


# -- disk provisioning ---------------------------------------------------------------------


@hookspec(firstresult=True)
def bkt_disk_plan(name: str, vm: Any, disk: Any, context: Any) -> Any | None:
    """Plan the creation of VM ``name``'s missing disk (``create_if_missing: true``).

    Called during planning (``sync``, also ``--dry-run``) for each VM whose disk file does not
    exist. ``vm`` is its :class:`~bkt_vm_plugin.model.VmDefinition`, ``disk`` the
    :class:`~bkt_vm_plugin.provision.DiskRequest` (expanded path, size, format wanted) and
    ``context`` the :class:`~bkt_vm_plugin.provision.ProvisionContext` (virsh, pools). Return
    a :class:`~bkt_vm_plugin.provision.DiskCreation` describing what will be created, or raise
    :class:`~bkt_core.OperationError` to refuse (that VM fails). First non-None result wins;
    the default (storage pool volume, else ``qemu-img``) is ``trylast``. Must not change
    anything: ``bkt_disk_provision`` does.
    """


@hookspec(firstresult=True)
def bkt_disk_provision(creation: Any, context: Any) -> bool | None:
    """Create a disk planned by :func:`bkt_disk_plan`.

    Called during ``sync`` (never in a dry run) before the domains are defined. ``creation``
    is the :class:`~bkt_vm_plugin.provision.DiskCreation` a plugin returned, ``context`` as in
    ``bkt_disk_plan``. Return True when this plugin created it (None to leave it to another
    plugin, typically when ``creation.plugin`` is not yours), or raise
    :class:`~bkt_core.OperationError`; the VM then fails and the others go on. Any other
    value fails the VM too, and so does a disk that is not then a regular file of the planned
    format and size. First result wins; the default is ``trylast``. Never overwrite an
    existing file: ``context.create_image`` creates one as the default does.
    """


# -- post-sync actions ---------------------------------------------------------------------


@hookspec
def bkt_post_sync(report: SyncReport, context: Any) -> None:
    """Act after ``sync`` has executed its plan (never in a dry run or ``--check``).

    ``report`` is the :class:`~bkt_core.SyncReport` with every VM's plan entry and result;
    ``context`` (:class:`~bkt_vm_plugin.sync.PostSyncContext`) gives the manifest, the
    :class:`~bkt_vm_plugin.virsh.Virsh` to batch commands through, and ``fail(name,
    message)`` to mark a VM failed. Every implementation runs, even when another raised:
    an exception fails every VM the run touched, naming the plugin. Returns nothing.
    """


@hookspec
def bkt_post_sync_vm(name: str, entry: Any, result: Any, context: Any) -> None:
    """Act on one VM after ``sync`` has executed its plan (never in a dry run or ``--check``).

    Called once per VM of the plan, after every definition was written and read back, and
    before :func:`bkt_post_sync`. ``entry`` is the VM's :class:`~bkt_core.PlanEntry` (what was
    planned: create, update with its field changes, unchanged, error), ``result`` its
    :class:`~bkt_core.EntryResult` so far, ``context`` as in :func:`bkt_post_sync`. Every
    implementation runs; one that raises fails that VM only, naming the plugin. Prefer
    :func:`bkt_post_sync` to batch virsh commands over all VMs. Returns nothing.
    """


def hook_names() -> Sequence[str]:
    """The names of every hook, in declaration order."""
    return [name for name in globals() if name.startswith("bkt_")]
