"""bkt's VM subsystem, shipped as default plugins registered through the ``bkt`` entry point.

The plugins, each under its own entry-point name so that it can be blocked and replaced:

- ``vm`` (this module): the VM subsystem, its hooks (:mod:`bkt_vm_plugin.hookspecs`, which
  the other plugins below implement), the ``bkt vm`` commands, the manifest rules, and the
  core domain XML mapping (:mod:`bkt_vm_plugin.mapping`);
- ``cpu_model`` (:mod:`bkt_vm_plugin.cpu_model`): the ``cpu_model`` field and its ``<cpu>``;
- ``autostart`` (:mod:`bkt_vm_plugin.autostart`): the ``autostart`` field and its post-sync action;
- ``provision`` (:mod:`bkt_vm_plugin.provision`): disk provisioning (storage pool volumes,
  else ``qemu-img``), behind the ``bkt_disk_plan`` / ``bkt_disk_provision`` hooks;
- ``host_overrides`` (:mod:`bkt_vm_plugin.host_overrides`): ``vms.<host>.json`` merged over
  ``vms.json``, behind the ``bkt_manifest_sources`` hook;
- ``os`` (:mod:`bkt_vm_plugin.os_field`): the ``os`` field, backed by the osinfo database,
  and the device defaults it fills.

Importing this package imports nothing heavy: the work happens in the modules the hooks
load when they run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import click

    from bkt_core.diagnostics import Problem
    from bkt_core.host import Host
    from bkt_core.subsystem import Subsystem
    from bkt_vm_plugin.domain_xml import DomainField

__all__ = [
    "SUBSYSTEM_NAME",
    "bkt_add_hookspecs",
    "bkt_cli_commands",
    "bkt_domain_fields",
    "bkt_subsystems",
    "bkt_validate_manifest",
    "default_plugins",
]

#: The name of the VM subsystem: of its ``bkt vm`` commands, and the ``subsystem`` that the
#: plugins' manifest hooks are asked about.
SUBSYSTEM_NAME = "vm"


@hookimpl
def bkt_add_hookspecs(host: Host) -> None:
    from bkt_vm_plugin import hookspecs

    host.add_hookspecs(hookspecs)


@hookimpl
def bkt_subsystems(host: Host) -> Iterable[Subsystem]:
    from bkt_vm_plugin.subsystem import VmSubsystem

    return [VmSubsystem(host)]


@hookimpl
def bkt_cli_commands(cli: click.Group) -> None:
    from bkt_vm_plugin.commands import doctor, vm_group

    cli.add_command(vm_group)
    cli.add_command(doctor)


@hookimpl
def bkt_validate_manifest(
    subsystem: str, document: Mapping[str, Any], home: str | None
) -> Iterable[Problem] | None:
    if subsystem != SUBSYSTEM_NAME:
        return None
    from bkt_vm_plugin.rules import vm_rules

    return vm_rules(document, home)


@hookimpl(tryfirst=True)
def bkt_domain_fields() -> Iterable[DomainField]:
    # tryfirst: the core fields lay out the domain that other mappings add to.
    from bkt_vm_plugin.mapping import CORE_FIELDS

    return CORE_FIELDS


def default_plugins() -> list[tuple[str, object]]:
    """The default plugins under their entry-point names, for a host built without entry
    points (``Host(entry_points=False, plugins=default_plugins())``)."""
    import sys

    from bkt_vm_plugin import autostart, cpu_model, host_overrides, os_field, provision

    return [
        ("vm", sys.modules[__name__]),
        ("cpu_model", cpu_model),
        ("autostart", autostart),
        ("provision", provision),
        ("host_overrides", host_overrides),
        ("os", os_field),
    ]
