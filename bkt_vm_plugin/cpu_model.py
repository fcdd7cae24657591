"""The ``cpu_model`` plugin: which CPU the guest sees.

``host-passthrough`` (the default under ``virt_type: "kvm"``), ``host-model``, or a named
libvirt CPU model; under ``virt_type: "qemu"`` the default is libvirt's own (no ``<cpu>``
element; libvirt records the custom model ``qemu64``). To replace this mapping, block this
plugin (``--disable-plugin cpu_model``) and install one that declares the field itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkt_core.diagnostics import Problem

HOST_PASSTHROUGH = "host-passthrough"
HOST_MODEL = "host-model"
QEMU_DEFAULT_CPU_MODEL = "qemu64"


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    if subsystem != "vm":
        return None
    from pydantic import Field

    return {
        "cpu_model": (
            str | None,
            Field(
                default=None,
                description=(
                    "`host-passthrough`, `host-model` or a libvirt CPU model name (default: "
                    "`host-passthrough` under kvm, libvirt's own under qemu)."
                ),
                json_schema_extra={"type": "string"},
            ),
        )
    }


@hookimpl
def bkt_validate_manifest(subsystem: str, document: Mapping[str, Any]) -> Iterable[Problem] | None:
    if subsystem != "vm":
        return None
    from bkt_vm_plugin.rules import cpu_model_rules

    return cpu_model_rules(document)


@hookimpl
def bkt_domain_fields() -> Iterable[Any]:
    from bkt_vm_plugin.mapping import CpuModelField

    return [CpuModelField()]
