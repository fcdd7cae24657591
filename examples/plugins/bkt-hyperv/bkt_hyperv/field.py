"""The ``hyperv`` field's piece of the domain XML mapping: render, parse and patch together.

It owns two places of a domain and nothing else:

- ``<features><hyperv>``: with ``hyperv: true`` it is ``mode='custom'`` with every
  enlightenment of :data:`ENLIGHTENMENTS` on (enlightenments a person added beside them are
  kept); with ``hyperv: false`` there is none;
- ``<clock><timer name='hypervclock'>``: present with ``hyperv: true``, absent otherwise.
  The clock's ``offset`` and its other timers are not this field's: a ``<clock>`` created for
  the timer says ``offset='utc'``, what libvirt writes when there is no ``<clock>``.

A domain with only some of it (virt-manager's Windows guests turn on relaxed, vapic and
spinlocks only) reads as neither value, with the reason: sync then completes the set (or
removes it), and capture keeps the manifest's value rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkt_vm_plugin.api import (
    DomainContext,
    DomainField,
    Element,
    Reading,
    append,
    child,
    children,
    ensure_child,
    insert_after,
    insert_before,
    insert_child,
    make,
    remove,
)

if TYPE_CHECKING:
    from bkt_vm_plugin.api import VmDefinition

__all__ = ["ENLIGHTENMENTS", "FIELD", "HypervField"]

FIELD = "hyperv"
TIMER = "hypervclock"

#: The enlightenments bkt turns on, in the order libvirt writes them, with their extra
#: attributes. 8191 spinlock retries is what Microsoft's documentation and virt-manager use.
ENLIGHTENMENTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("relaxed", ()),
    ("vapic", ()),
    ("spinlocks", (("retries", "8191"),)),
    ("vpindex", ()),
    ("synic", ()),
    ("stimer", ()),
    ("reset", ()),
    ("frequencies", ()),
)
_ORDER = tuple(name for name, _ in ENLIGHTENMENTS)


def _hyperv(features: Element | None) -> Element | None:
    return child(features, "hyperv") if features is not None else None


def _timers(domain: Element) -> list[Element]:
    clock = child(domain, "clock")
    found = children(clock, "timer") if clock is not None else []
    return [t for t in found if t.get("name") == TIMER]


def _missing(hyperv: Element) -> list[str]:
    """The enlightenments of our set that ``hyperv`` does not turn on as bkt does."""
    if hyperv.get("mode", "custom") != "custom":
        return list(_ORDER)
    out = []
    for name, attrs in ENLIGHTENMENTS:
        node = child(hyperv, name)
        if node is None or node.get("state") != "on" or any(node.get(k) != v for k, v in attrs):
            out.append(name)
    return out


class HypervField(DomainField):
    """``hyperv`` -> ``<features><hyperv mode='custom'>`` and the ``hypervclock`` timer."""

    fields = (FIELD,)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.field(FIELD):
            self._enable(domain)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        hyperv = _hyperv(child(domain, "features"))
        clock = any(t.get("present") == "yes" for t in _timers(domain))
        if hyperv is None:
            if clock:
                return {FIELD: Reading.unsupported("a hypervclock timer without <hyperv>")}
            return {FIELD: Reading.clean(False)}
        mode = hyperv.get("mode", "custom")
        if mode != "custom":
            return {FIELD: Reading.unsupported(f"Hyper-V mode '{mode}' (bkt writes 'custom')")}
        missing = _missing(hyperv)
        if missing:
            return {
                FIELD: Reading.unsupported(
                    "Hyper-V enlightenments without " + ", ".join(missing) + " on"
                )
            }
        if not clock:
            return {FIELD: Reading.unsupported("Hyper-V enlightenments without hypervclock")}
        return {FIELD: Reading.clean(True)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.field(FIELD):
            self._enable(domain)
            return
        hyperv = _hyperv(child(domain, "features"))
        if hyperv is not None:
            remove(hyperv)
        for timer in _timers(domain):
            remove(timer)

    @staticmethod
    def _enable(domain: Element) -> None:
        features = ensure_child(domain, "features")
        hyperv = child(features, "hyperv")
        if hyperv is None:
            hyperv = insert_child(features, make("hyperv", [("mode", "custom")]))
        hyperv.set("mode", "custom")
        for index, (name, attrs) in enumerate(ENLIGHTENMENTS):
            node = child(hyperv, name)
            if node is None:
                node = make(name)
                _insert_in_order(hyperv, node, index)
            node.set("state", "on")
            for key, value in attrs:
                node.set(key, value)
        timers = _timers(domain)
        for timer in timers:
            timer.set("present", "yes")
        if not timers:
            clock = child(domain, "clock")
            if clock is None:
                clock = insert_child(domain, make("clock", [("offset", "utc")]))
            insert_child(clock, make("timer", [("name", TIMER), ("present", "yes")]))


def _insert_in_order(hyperv: Element, node: Element, index: int) -> None:
    """Puts ``node`` after the last enlightenment of our set that libvirt writes before it, so
    that a patched domain reads like one libvirt wrote (unknown ones stay where they are)."""
    earlier = [c for c in hyperv if c.tag in _ORDER[:index]]
    if earlier:
        insert_after(earlier[-1], node)
        return
    kids = [c for c in hyperv if isinstance(c.tag, str)]
    if kids:
        insert_before(kids[0], node)
    else:
        append(hyperv, node)
