"""A third-party mapping for the plugin-field tests: ``hyperv: bool`` owns Hyper-V
enlightenments for Windows guests, ``<features><hyperv mode='custom'>`` with a few of them and
the ``hypervclock`` timer in ``<clock>``. It is a peer of the built-in fields: declared with
``bkt_manifest_fields``, mapped with ``bkt_domain_fields``, registered explicitly."""

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

ENLIGHTENMENTS = (("relaxed", ()), ("vapic", ()), ("spinlocks", (("retries", "8191"),)))


def _hyperv() -> Element:
    kids = [make(name, [("state", "on"), *attrs]) for name, attrs in ENLIGHTENMENTS]
    return make("hyperv", [("mode", "custom")], *kids)


def _timers(domain: Element) -> list[Element]:
    clock = child(domain, "clock")
    found = children(clock, "timer") if clock is not None else []
    return [t for t in found if t.get("name") == "hypervclock"]


class HypervField(DomainField):
    fields = ("hyperv",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.field("hyperv"):
            self._enable(domain)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        features = child(domain, "features")
        enlightened = features is not None and child(features, "hyperv") is not None
        clock = any(t.get("present", "yes") == "yes" for t in _timers(domain))
        if enlightened != clock:
            return {
                "hyperv": Reading.unsupported(
                    "Hyper-V enlightenments without the hypervclock timer"
                    if enlightened
                    else "a hypervclock timer without Hyper-V enlightenments"
                )
            }
        return {"hyperv": Reading.clean(enlightened)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.field("hyperv"):
            self._enable(domain)
            return
        features = child(domain, "features")
        hyperv = child(features, "hyperv") if features is not None else None
        if hyperv is not None:
            remove(hyperv)
        for timer in _timers(domain):
            remove(timer)

    @staticmethod
    def _enable(domain: Element) -> None:
        features = ensure_child(domain, "features")
        if child(features, "hyperv") is None:
            insert_child(features, _hyperv())
        timers = _timers(domain)
        if timers:
            for timer in timers:
                timer.set("present", "yes")
            return
        clock = child(domain, "clock")
        if clock is None:
            clock = insert_child(domain, make("clock", [("offset", "localtime")]))
        insert_child(clock, make("timer", [("name", "hypervclock"), ("present", "yes")]))


class HypervPlugin:
    """The plugin object (registered as ``hyperv``)."""

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
        if subsystem != "vm":
            return None
        from pydantic import Field

        return {"hyperv": (bool, Field(default=False, description="Hyper-V enlightenments."))}

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        return [HypervField()]


class ClashingPlugin:
    """Maps ``memory_gb``, which the ``vm`` plugin maps."""

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        field = HypervField()
        field.fields = ("memory_gb",)
        return [field]


class BrokenField(HypervField):
    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        raise RuntimeError("the enlightenment table is gone")


class BrokenPlugin(HypervPlugin):
    """Declares ``hyperv`` but its parse raises."""

    @hookimpl
    def bkt_domain_fields(self) -> Iterable[DomainField]:
        return [BrokenField()]
