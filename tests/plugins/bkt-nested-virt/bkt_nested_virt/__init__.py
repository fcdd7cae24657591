"""bkt-nested-virt: a VM that runs VMs of its own.

``"nested_virt": "vmx"`` (Intel hosts) or ``"svm"`` (AMD hosts) gives the guest that
virtualization extension: ``<cpu><feature policy='require' name='vmx'/></cpu>``. Left out (or
null), the guest gets neither.

``<cpu>`` is shared with the ``cpu_model`` plugin (its mode and model) and with ``vcpus`` (its
topology), so this field keeps to its own part: the ``<feature>`` elements named ``vmx`` or
``svm``. It adds and removes only those, creates ``<cpu>`` when a domain has none, and removes
``<cpu>`` only when it leaves it empty. It works under every ``cpu_model`` and both
virt_types with nothing more: where the CPU has no model (libvirt's default under
``virt_type: "qemu"``), which libvirt refuses together with features, ``cpu_model`` names the
default model itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core import hookimpl
from bkt_vm_plugin.api import (
    DomainContext,
    DomainField,
    Reading,
    child,
    children,
    elements,
    ensure_child,
    insert_child,
    make,
    remove,
)

if TYPE_CHECKING:
    from bkt_vm_plugin.api import Element, VmDefinition

FIELD = "nested_virt"
#: The features this field owns, by name.
FEATURES = ("vmx", "svm")
#: The policies that give the guest a feature (libvirt's default is require).
ASKING = ("require", "force")


def _owned(cpu: Element | None) -> list[Element]:
    """The ``<feature>`` elements of ``cpu`` this field owns."""
    found = children(cpu, "feature") if cpu is not None else []
    return [f for f in found if f.get("name") in FEATURES]


def _asks(feature: Element) -> bool:
    return feature.get("policy", "require") in ASKING


def _feature(name: str) -> Element:
    return make("feature", [("policy", "require"), ("name", name)])


class NestedVirtField(DomainField):
    """``nested_virt`` -> ``<cpu><feature policy='require' name='vmx|svm'/>``."""

    fields = (FIELD,)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        wanted: str | None = vm.field(FIELD)
        if wanted is not None:
            insert_child(ensure_child(domain, "cpu"), _feature(wanted))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        asked = sorted({str(f.get("name")) for f in _owned(child(domain, "cpu")) if _asks(f)})
        if len(asked) > 1:
            return {FIELD: Reading.unsupported("the CPU requires both vmx and svm")}
        return {FIELD: Reading.clean(asked[0] if asked else None)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        wanted: str | None = vm.field(FIELD)
        cpu = child(domain, "cpu")
        kept = False
        for feature in _owned(cpu):
            if feature.get("name") == wanted and not kept:
                feature.set("policy", "require")
                kept = True
            elif _asks(feature):
                remove(feature)
        if wanted is not None and not kept:
            insert_child(ensure_child(domain, "cpu"), _feature(wanted))
        elif cpu is not None and not elements(cpu) and not cpu.attrib:
            remove(cpu)  # emptied by this field: <cpu/> would read as another CPU model


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    if subsystem != "vm":
        return None
    from typing import Literal

    from pydantic import Field

    return {
        FIELD: (
            Literal["vmx", "svm"] | None,
            Field(
                default=None,
                description=(
                    "Let the guest run VMs: `vmx` on Intel hosts, `svm` on AMD hosts "
                    "(default: neither)."
                ),
            ),
        )
    }


@hookimpl
def bkt_domain_fields() -> Iterable[DomainField]:
    return [NestedVirtField()]
