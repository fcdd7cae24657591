"""The ``cpu_model`` plugin: which CPU the guest sees.

``host-passthrough`` (the default under ``virt_type: "kvm"``), ``host-model``, or a named
libvirt CPU model; under ``virt_type: "qemu"`` the default is libvirt's own (no ``<cpu>`` mode
or model; libvirt records the custom model ``qemu64``). To replace this mapping, block this
plugin (``--disable-plugin cpu_model``) and install one that declares the field itself.

The plugin holds all of the field: its declaration (:func:`bkt_manifest_fields`), its rules
(:func:`cpu_model_rules`) and its part of the domain XML (:class:`CpuModelField`).

``<cpu>`` is shared with other fields, by these rules:

- ``cpu_model`` owns ``<cpu>``'s attributes (``mode``, ``match``, ``check``, ``migratable``)
  and its ``<model>`` and ``<vendor>``; a change of model replaces exactly those.
- ``vcpus`` owns ``<topology>``.
- A ``<feature>`` belongs to the field that names it (a plugin that adds ``<feature
  name='vmx'/>`` owns the features named ``vmx``); features no field names are the user's.
  ``cpu_model`` keeps every feature, whatever the model becomes.
- libvirt refuses features in a ``<cpu>`` of custom mode without a model ("Non-empty feature
  list specified without CPU model"), which is what libvirt's default CPU is under
  ``virt_type: "qemu"``. So when ``<cpu>`` holds a feature and neither a mode other than
  ``custom`` nor a model, ``cpu_model`` names libvirt's default explicitly
  (``<cpu mode='custom'><model>qemu64</model>``, in :meth:`CpuModelField.settle`), which reads
  back as the default, so it is neither drift nor captured. It is left in place when the
  features go: it is the same CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core.hookspecs import hookimpl
from bkt_vm_plugin import SUBSYSTEM_NAME
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading
from bkt_vm_plugin.xmltree import (
    append,
    child,
    children,
    elements,
    ensure_child,
    insert_before,
    make,
    remove,
    retain_attrs,
    text_of,
)

if TYPE_CHECKING:
    from bkt_core.diagnostics import Problem
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.xmltree import Element

__all__ = [
    "HOST_MODEL",
    "HOST_PASSTHROUGH",
    "QEMU_DEFAULT_CPU_MODEL",
    "CpuModelField",
    "bkt_domain_fields",
    "bkt_manifest_fields",
    "bkt_validate_manifest",
    "cpu_model_rules",
    "effective_cpu_model",
]

HOST_PASSTHROUGH = "host-passthrough"
HOST_MODEL = "host-model"
#: The CPU model libvirt gives an x86 guest that names none.
QEMU_DEFAULT_CPU_MODEL = "qemu64"

#: The ``<cpu>`` children that are this field's (its attributes are all its own too).
OWNED_CHILDREN = ("model", "vendor")

#: Unicode White_Space, what makes a value blank. (``str.strip()`` would also strip
#: U+001C..U+001F, which are control characters and reported as such.)
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
_WHITE_SPACE += "\u2028\u2029\u202f\u205f\u3000"


# -- the plugin's hooks ----------------------------------------------------------------------


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    """Declares ``cpu_model``: a string, None for the default of the VM's ``virt_type``."""
    if subsystem != SUBSYSTEM_NAME:
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
    """:func:`cpu_model_rules`."""
    if subsystem != SUBSYSTEM_NAME:
        return None
    return cpu_model_rules(document)


@hookimpl
def bkt_domain_fields() -> Iterable[DomainField]:
    """:class:`CpuModelField`."""
    return [CpuModelField()]


# -- rules -----------------------------------------------------------------------------------


def cpu_model_rules(document: Any) -> list[Problem]:
    """``cpu_model`` is not blank, holds no control characters, and is not
    ``host-passthrough`` under ``virt_type: "qemu"`` (that cannot start). Values of another
    JSON type are left to the model's own messages."""
    from bkt_core.diagnostics import Problem
    from bkt_vm_plugin.paths import CONTROL_MESSAGE, has_control

    problems: list[Problem] = []
    vms = document.get("vms") if isinstance(document, dict) else None
    for name, vm in (vms if isinstance(vms, dict) else {}).items():
        if not isinstance(vm, dict):
            continue
        model = vm.get("cpu_model")
        if not isinstance(model, str):
            continue
        at = ("vms", name, "cpu_model")
        if not model.strip(_WHITE_SPACE):
            problems.append(Problem(at, "must not be empty"))
        elif has_control(model):
            problems.append(Problem(at, CONTROL_MESSAGE))
        elif model == HOST_PASSTHROUGH and vm.get("virt_type") == "qemu":
            problems.append(
                Problem(
                    at,
                    '"host-passthrough" cannot start under virt_type "qemu" (software '
                    'emulation); use "host-model", a named model, or leave cpu_model out',
                )
            )
    return problems


# -- the domain XML --------------------------------------------------------------------------


def effective_cpu_model(vm: VmDefinition) -> str | None:
    """The CPU model ``vm`` asks for: its ``cpu_model``, else host-passthrough under kvm; None
    is libvirt's default, which only ``virt_type: qemu`` names (``qemu64`` is that too)."""
    model: str | None = vm.field("cpu_model")
    if vm.virt_type == "qemu":
        return None if model in (None, QEMU_DEFAULT_CPU_MODEL) else model
    return HOST_PASSTHROUGH if model is None else model


def _set_model(cpu: Element, model: str | None) -> None:
    """Writes ``model`` into a ``<cpu>`` that has no mode and no model (None writes nothing)."""
    if model in (HOST_PASSTHROUGH, HOST_MODEL):
        cpu.set("mode", str(model))
    elif model is not None:
        cpu.set("mode", "custom")
        node = make("model", text=model)
        kids = elements(cpu)
        if kids:
            insert_before(kids[0], node)
        else:
            append(cpu, node)


class CpuModelField(DomainField):
    """``cpu_model`` -> ``<cpu mode=...>`` and its ``<model>``; the rest of ``<cpu>`` (the
    topology, features, NUMA cells) belongs to other fields or to the user."""

    fields = ("cpu_model",)

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"cpu_model": effective_cpu_model(vm)}

    def spell(self, name: str, value: Any) -> str:
        return "libvirt's default" if value is None else str(value)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        # Under qemu with libvirt's default there is no mode and no model: <cpu> holds only
        # the topology (libvirt then records the custom model qemu64).
        _set_model(ensure_child(domain, "cpu"), effective_cpu_model(vm))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        qemu = domain.get("type") == "qemu"

        def named(model: str) -> Reading:
            return Reading.clean(None if qemu and model == QEMU_DEFAULT_CPU_MODEL else model)

        cpu = child(domain, "cpu")
        if cpu is None:
            return {"cpu_model": named(QEMU_DEFAULT_CPU_MODEL)}
        mode = cpu.get("mode", "custom")
        if mode in (HOST_PASSTHROUGH, HOST_MODEL):
            return {"cpu_model": Reading.clean(mode)}
        if mode == "custom":
            model = child(cpu, "model")
            text = text_of(model) if model is not None else ""  # exact, not trimmed
            return {"cpu_model": named(text or QEMU_DEFAULT_CPU_MODEL)}
        return {"cpu_model": Reading.unsupported(f"CPU mode '{mode}'")}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        model = effective_cpu_model(vm)
        cpu = child(domain, "cpu")
        if cpu is None:
            if model is None:
                return
            cpu = ensure_child(domain, "cpu")
        # The old mode's attributes, model and vendor belong to the old model; the topology,
        # the features and everything else in <cpu> are not this field's.
        retain_attrs(cpu, ())
        for tag in OWNED_CHILDREN:
            for node in children(cpu, tag):
                remove(node)
        _set_model(cpu, model)
        if model is None and not elements(cpu):
            remove(cpu)

    def settle(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        """Names libvirt's default model in a ``<cpu>`` that holds features but neither a
        mode other than custom nor a model (see the module's rules)."""
        cpu = child(domain, "cpu")
        if cpu is None or not children(cpu, "feature"):
            return
        if cpu.get("mode", "custom") != "custom" or child(cpu, "model") is not None:
            return
        # libvirt refuses features without a model. The model it gives such a CPU anyway,
        # so that the guest sees the same CPU, plus the features.
        _set_model(cpu, QEMU_DEFAULT_CPU_MODEL)

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        reading = readings["cpu_model"]
        if not reading.is_clean:
            return {}
        # Written only when it is not the default for the domain's type: libvirt's
        # default (None) under qemu is already None; host-passthrough is kvm's default.
        virt_type = readings.get("virt_type")
        kvm = virt_type is None or virt_type.value != "qemu"
        value = reading.value
        return {"cpu_model": None if kvm and value == HOST_PASSTHROUGH else value}
