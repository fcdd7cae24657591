"""A third-party mapping for the plugin-field tests: ``kvm_hidden: bool`` hides KVM from the
guest (what some drivers refuse to run under), ``<features><kvm><hidden state='on'/>`` and,
since a guest that must not see KVM must not use its paravirtual clock either, the
``kvmclock`` timer turned off in ``<clock>``. It is a peer of the built-in fields: declared
with ``bkt_manifest_fields``, mapped with ``bkt_domain_fields``, registered explicitly, and it
shares ``<features>`` and ``<clock>`` with them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core.hookspecs import hookimpl
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading
from bkt_vm_plugin.xmltree import (
    Element,
    child,
    children,
    ensure_child,
    insert_child,
    make,
    remove,
)

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition

FIELD = "kvm_hidden"
TIMER = "kvmclock"


def _kvm() -> Element:
    return make("kvm", [], make("hidden", [("state", "on")]))


def _timers(domain: Element) -> list[Element]:
    clock = child(domain, "clock")
    found = children(clock, "timer") if clock is not None else []
    return [t for t in found if t.get("name") == TIMER]


class KvmHiddenField(DomainField):
    fields = (FIELD,)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.field(FIELD):
            self._enable(domain)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        features = child(domain, "features")
        kvm = child(features, "kvm") if features is not None else None
        hidden = kvm is not None and child(kvm, "hidden") is not None
        clock_off = any(t.get("present") == "no" for t in _timers(domain))
        if hidden != clock_off:
            return {
                FIELD: Reading.unsupported(
                    "KVM hidden with the kvmclock timer on"
                    if hidden
                    else "the kvmclock timer off with KVM not hidden"
                )
            }
        return {FIELD: Reading.clean(hidden)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.field(FIELD):
            self._enable(domain)
            return
        features = child(domain, "features")
        kvm = child(features, "kvm") if features is not None else None
        if kvm is not None:
            remove(kvm)
        for timer in _timers(domain):
            remove(timer)

    @staticmethod
    def _enable(domain: Element) -> None:
        features = ensure_child(domain, "features")
        if child(features, "kvm") is None:
            insert_child(features, _kvm())
        timers = _timers(domain)
        if timers:
            for timer in timers:
                timer.set("present", "no")
            return
        clock = child(domain, "clock")
        if clock is None:
            clock = insert_child(domain, make("clock", [("offset", "utc")]))
        insert_child(clock, make("timer", [("name", TIMER), ("present", "no")]))


class KvmHiddenPlugin:
    """The plugin object (registered as ``kvm_hidden``)."""

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
        if subsystem != "vm":
            return None
        from pydantic import Field

        return {FIELD: (bool, Field(default=False, description="Hide KVM from the guest."))}

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        return [KvmHiddenField()]


class ClashingPlugin:
    """Maps ``memory_gb``, which the ``vm`` plugin maps."""

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        field = KvmHiddenField()
        field.fields = ("memory_gb",)
        return [field]


class BrokenField(KvmHiddenField):
    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        raise RuntimeError("the feature table is gone")


class BrokenPlugin(KvmHiddenPlugin):
    """Declares ``kvm_hidden`` but its parse raises."""

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        return [BrokenField()]
