"""The plugin API of bkt's VM subsystem: everything a plugin needs, from one module.

Write plugins against this module and :mod:`bkt_core` only::

    from bkt_core import hookimpl
    from bkt_vm_plugin.api import DomainField, Reading, make, ensure_child

**Compatibility.** :data:`API_VERSION` is ``"1.1"``. Every name in ``__all__`` keeps working,
with the same meaning, for every 1.x version of this API: later 1.x versions only add names
(and optional arguments, and hook arguments an implementation may ignore). Removing or
changing a name takes 2.0. The promise covers each name's documented attributes and methods,
except the members of ``VmSubsystem`` its docstring calls bkt's own. Anything imported from
another module of ``bkt_vm_plugin`` is internal and may change in any release; the test kit
is :mod:`bkt_vm_plugin.testing` (and its pytest fixtures), a public module of its own.

The names, by kind:

- the VM definition a plugin is handed: ``VmDefinition``, ``VmManifest``, and an ISO's source,
  ``IsoSource``, which is either an ``IsoPath`` or an ``IsoUrl``;
- the VM subsystem of a host, for embedders and tests: ``VmSubsystem`` (what
  ``host.subsystem("vm")`` is), its ``DomainMapping`` (every field of the host, with
  ``render``, ``parse``, ``patch``, ``diff`` and ``capture_values``) and what its ``parse``
  returns, ``Parsed``; and ``default_plugins``, bkt's own plugins for a host built without
  entry points;
- the domain XML mapping: ``DomainField`` (a piece of the mapping, returned from
  ``bkt_domain_fields``), ``Reading``, ``DomainContext`` (its ``attached`` ISOs are
  ``AttachedIso``), ``PatchRefused``, and ``Element``
  (an lxml element) with the tree helpers that keep libvirt's element order and the hardened
  parser (``parse_xml``, ``serialize``, ``child``, ``children``, ``at``, ``devices``,
  ``text_of``, ``set_text``, ``make``, ``append``, ``insert_after``, ``insert_before``,
  ``insert_child``, ``ensure_child``, ``remove``, ``replace``, ``elements``), and
  ``DomainXmlError``, what the parser raises for XML it refuses;
- disk provisioning: ``DiskRequest``, ``DiskCreation``, ``ProvisionContext``, and what its
  methods return: ``Pool`` (a storage pool, from ``pools`` and ``pool_of``) and ``PathEntry``
  (what is at a path, from ``look``);
- post-sync actions: ``PostSyncContext``, ``Virsh``, its ``Reply`` and ``DomainState`` (what
  ``Virsh.domain_state`` returns);
- paths: ``expand_home``, ``home_dir``, ``local_path_problem``;
- from :mod:`bkt_core`, for convenience: ``hookimpl``, ``OperationError``, ``CommandError``,
  ``Problem``.

Importing this module costs nothing: each name is imported from where it lives the first
time it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkt_core.diagnostics import Problem
    from bkt_core.errors import CommandError, OperationError
    from bkt_core.hookspecs import hookimpl
    from bkt_vm_plugin import default_plugins
    from bkt_vm_plugin.definition import IsoPath, IsoSource, IsoUrl, VmDefinition, VmManifest
    from bkt_vm_plugin.domain_xml import (
        AttachedIso,
        DomainContext,
        DomainField,
        DomainMapping,
        Parsed,
        PatchRefused,
        Reading,
    )
    from bkt_vm_plugin.paths import expand_home, home_dir, local_path_problem
    from bkt_vm_plugin.provision import (
        DiskCreation,
        DiskRequest,
        PathEntry,
        Pool,
        ProvisionContext,
    )
    from bkt_vm_plugin.subsystem import VmSubsystem
    from bkt_vm_plugin.sync import PostSyncContext
    from bkt_vm_plugin.virsh import DomainState, Reply, Virsh
    from bkt_vm_plugin.xmltree import (
        DomainXmlError,
        Element,
        append,
        at,
        child,
        children,
        devices,
        elements,
        ensure_child,
        insert_after,
        insert_before,
        insert_child,
        make,
        parse_xml,
        remove,
        replace,
        serialize,
        set_text,
        text_of,
    )

#: The version of this API: ``MAJOR.MINOR``; see the compatibility promise above.
API_VERSION = "1.1"

# Where each name lives: imported on first use, so that importing the API imports neither
# pydantic nor lxml.
_WHERE = {
    "VmDefinition": "bkt_vm_plugin.definition",
    "VmManifest": "bkt_vm_plugin.definition",
    "IsoPath": "bkt_vm_plugin.definition",
    "IsoUrl": "bkt_vm_plugin.definition",
    "IsoSource": "bkt_vm_plugin.definition",
    "DomainField": "bkt_vm_plugin.domain_xml",
    "Reading": "bkt_vm_plugin.domain_xml",
    "DomainContext": "bkt_vm_plugin.domain_xml",
    "AttachedIso": "bkt_vm_plugin.domain_xml",
    "PatchRefused": "bkt_vm_plugin.domain_xml",
    "DomainMapping": "bkt_vm_plugin.domain_xml",
    "Parsed": "bkt_vm_plugin.domain_xml",
    "VmSubsystem": "bkt_vm_plugin.subsystem",
    "default_plugins": "bkt_vm_plugin",
    "DomainXmlError": "bkt_vm_plugin.xmltree",
    "Element": "bkt_vm_plugin.xmltree",
    "parse_xml": "bkt_vm_plugin.xmltree",
    "serialize": "bkt_vm_plugin.xmltree",
    "child": "bkt_vm_plugin.xmltree",
    "children": "bkt_vm_plugin.xmltree",
    "elements": "bkt_vm_plugin.xmltree",
    "at": "bkt_vm_plugin.xmltree",
    "devices": "bkt_vm_plugin.xmltree",
    "text_of": "bkt_vm_plugin.xmltree",
    "set_text": "bkt_vm_plugin.xmltree",
    "make": "bkt_vm_plugin.xmltree",
    "append": "bkt_vm_plugin.xmltree",
    "insert_after": "bkt_vm_plugin.xmltree",
    "insert_before": "bkt_vm_plugin.xmltree",
    "insert_child": "bkt_vm_plugin.xmltree",
    "ensure_child": "bkt_vm_plugin.xmltree",
    "remove": "bkt_vm_plugin.xmltree",
    "replace": "bkt_vm_plugin.xmltree",
    "DiskRequest": "bkt_vm_plugin.provision",
    "DiskCreation": "bkt_vm_plugin.provision",
    "ProvisionContext": "bkt_vm_plugin.provision",
    "Pool": "bkt_vm_plugin.provision",
    "PathEntry": "bkt_vm_plugin.provision",
    "PostSyncContext": "bkt_vm_plugin.sync",
    "Virsh": "bkt_vm_plugin.virsh",
    "Reply": "bkt_vm_plugin.virsh",
    "DomainState": "bkt_vm_plugin.virsh",
    "expand_home": "bkt_vm_plugin.paths",
    "home_dir": "bkt_vm_plugin.paths",
    "local_path_problem": "bkt_vm_plugin.paths",
    "hookimpl": "bkt_core.hookspecs",
    "OperationError": "bkt_core.errors",
    "CommandError": "bkt_core.errors",
    "Problem": "bkt_core.diagnostics",
}

__all__ = [
    "API_VERSION",
    "AttachedIso",
    "CommandError",
    "DiskCreation",
    "DiskRequest",
    "DomainContext",
    "DomainField",
    "DomainMapping",
    "DomainState",
    "DomainXmlError",
    "Element",
    "IsoPath",
    "IsoSource",
    "IsoUrl",
    "OperationError",
    "Parsed",
    "PatchRefused",
    "PathEntry",
    "Pool",
    "PostSyncContext",
    "Problem",
    "ProvisionContext",
    "Reading",
    "Reply",
    "Virsh",
    "VmDefinition",
    "VmManifest",
    "VmSubsystem",
    "append",
    "at",
    "child",
    "children",
    "default_plugins",
    "devices",
    "elements",
    "ensure_child",
    "expand_home",
    "home_dir",
    "hookimpl",
    "insert_after",
    "insert_before",
    "insert_child",
    "local_path_problem",
    "make",
    "parse_xml",
    "remove",
    "replace",
    "serialize",
    "set_text",
    "text_of",
]


def __getattr__(name: str) -> Any:
    from bkt_core.lazy import attribute

    return attribute(__name__, _WHERE, name)


def __dir__() -> list[str]:
    return __all__
