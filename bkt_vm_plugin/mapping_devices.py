"""The device fields of the core mapping: the choices an operating system cares about, which
virt-install makes from its OS profile and which a manifest (or a plugin filling defaults)
states as ``nic_model``, ``clock``, ``clock_timers``, ``hyperv``, ``sound``,
``usb_redirection`` and ``video`` (``disk_bus`` is with the disk, in
:mod:`bkt_vm_plugin.mapping_disks`).

Each of them is None by default, meaning that bkt does not manage it
(:attr:`DomainField.unmanaged_when_none <bkt_vm_plugin.domain_xml.DomainField>`): a new domain
gets what bkt wrote before these fields existed (a virtio NIC, no ``<clock>``, no sound, no USB
redirection, the video model of :class:`~bkt_vm_plugin.mapping.GraphicsField`), an existing
domain keeps what it has, and nothing is compared. An explicit value is written as virt-install
writes it, so that a guest virt-install made reads back as clean values.

``<clock>`` is shared: ``clock`` owns its ``offset`` (and the ``adjustment``, ``basis`` and
``timezone`` that go with another offset), ``clock_timers`` the ``rtc``, ``pit`` and ``hpet``
timers, ``hyperv`` the ``hypervclock`` timer; other timers are the user's. ``<features>`` is
shared too: ``hyperv`` owns ``<hyperv>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bkt_vm_plugin.definition import CHOICES, USB_REDIRECTION_MAX
from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading
from bkt_vm_plugin.xmltree import (
    add_device,
    append,
    child,
    children,
    devices,
    ensure_child,
    insert_before,
    insert_child,
    make,
    remove,
    retain_attrs,
    retain_children,
)

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.xmltree import Element

__all__ = [
    "HYPERV_ENLIGHTENMENTS",
    "TIMERS",
    "ClockField",
    "HypervField",
    "NicModelField",
    "SoundField",
    "UsbRedirectionField",
    "VideoField",
]


def _known(name: str, value: str | None) -> bool:
    return value is not None and value in CHOICES[name]


# -- nic_model ---------------------------------------------------------------------------------


class NicModelField(DomainField):
    """``nic_model`` -> the ``<model type>`` of the first ``<interface>`` (the one
    ``network`` describes). Without an interface (``network: "none"``) there is nothing to
    compare."""

    fields = ("nic_model",)
    unmanaged_when_none = ("nic_model",)

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"nic_model": vm.nic_model if vm.network != "none" else None}

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        interfaces = devices(domain, "interface")
        if vm.nic_model is not None and interfaces:
            self._set(interfaces[0], vm.nic_model)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        interfaces = devices(domain, "interface")
        if not interfaces:
            return {"nic_model": Reading.clean(None)}
        model = child(interfaces[0], "model")
        kind = model.get("type") if model is not None else None
        if kind is None:
            return {"nic_model": Reading.unsupported("the interface names no model")}
        if not _known("nic_model", kind):
            known = ", ".join(CHOICES["nic_model"])
            return {"nic_model": Reading.unsupported(f"NIC model '{kind}' (bkt knows {known})")}
        return {"nic_model": Reading.clean(kind)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        interfaces = devices(domain, "interface")
        if vm.nic_model is None or not interfaces:
            return
        model = child(interfaces[0], "model")
        if model is None or model.get("type") != vm.nic_model:
            self._set(interfaces[0], vm.nic_model, new_model=True)

    @staticmethod
    def _set(interface: Element, kind: str, new_model: bool = False) -> None:
        model = child(interface, "model")
        if model is None:
            model = insert_child(interface, make("model"))
        retain_attrs(model, ())
        model.set("type", kind)
        if new_model:
            # Another device: the old one's driver options and PCI address do not apply
            # (libvirt places the new model on a bus that suits it). The MAC stays.
            for tag in ("driver", "address"):
                node = child(interface, tag)
                if node is not None:
                    remove(node)

    def capture(
        self,
        readings: Mapping[str, Reading],
        base: VmDefinition | None,
        ctx: DomainContext | None,
    ) -> Mapping[str, Any]:
        reading = readings["nic_model"]
        return {"nic_model": reading.value} if reading.is_clean and reading.value else {}


# -- clock and clock_timers --------------------------------------------------------------------

#: The timers ``clock_timers: true`` sets, as virt-install sets them for x86 guests: the RTC
#: catches up on missed ticks, the PIT delays them, and there is no HPET (Windows and Linux
#: keep better time without it under KVM).
TIMERS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("rtc", (("tickpolicy", "catchup"),)),
    ("pit", (("tickpolicy", "delay"),)),
    ("hpet", (("present", "no"),)),
)
_TIMER_NAMES = tuple(name for name, _ in TIMERS)
#: The attributes of ``<clock>`` that belong to its offset.
_OFFSET_ATTRS = ("offset", "adjustment", "basis", "timezone")


def _timers(clock: Element | None, names: tuple[str, ...]) -> list[Element]:
    found = children(clock, "timer") if clock is not None else []
    return [t for t in found if t.get("name") in names]


def _ensure_clock(domain: Element) -> Element:
    """The domain's ``<clock>``; a new one keeps UTC, what libvirt assumes without one."""
    clock = child(domain, "clock")
    if clock is None:
        clock = insert_child(domain, make("clock", [("offset", "utc")]))
    return clock


def _remove_timers(clock: Element | None, names: tuple[str, ...]) -> None:
    """Removes ``clock``'s timers named in ``names``; a ``<clock>`` left without children
    closes on its own line, as libvirt writes it."""
    if clock is None:
        return
    for timer in _timers(clock, names):
        remove(timer)
    if not len(clock):
        clock.text = None


def _add_timer(clock: Element, timer: Element, first: bool) -> None:
    """Adds ``timer`` to ``clock``: before its other timers when ``first``, else last."""
    others = children(clock, "timer")
    if first and others:
        insert_before(others[0], timer)
    else:
        insert_child(clock, timer)


class ClockField(DomainField):
    """``clock`` -> ``<clock offset>``; ``clock_timers`` -> its ``rtc``, ``pit`` and
    ``hpet`` timers (:data:`TIMERS`), or none of them."""

    fields = ("clock", "clock_timers")
    unmanaged_when_none = ("clock", "clock_timers")

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.clock is None and not vm.clock_timers:
            return
        clock = insert_child(domain, make("clock", [("offset", vm.clock or "utc")]))
        if vm.clock_timers:
            for name, attrs in TIMERS:
                append(clock, make("timer", [("name", name), *attrs]))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        clock = child(domain, "clock")
        return {"clock": self._offset(clock), "clock_timers": self._timers(clock)}

    @staticmethod
    def _offset(clock: Element | None) -> Reading:
        offset = clock.get("offset", "utc") if clock is not None else "utc"
        if offset in CHOICES["clock"]:
            return Reading.clean(offset)
        return Reading.unsupported(f"clock offset '{offset}' (bkt knows utc and localtime)")

    @staticmethod
    def _timers(clock: Element | None) -> Reading:
        found = _timers(clock, _TIMER_NAMES)
        if not found:
            return Reading.clean(False)
        by_name: dict[str, list[dict[str, str]]] = {}
        for timer in found:
            attrs = {k: v for k, v in timer.attrib.items() if k != "name"}
            by_name.setdefault(str(timer.get("name")), []).append(attrs)
        wanted = {name: [dict(attrs)] for name, attrs in TIMERS}
        if by_name == wanted:
            return Reading.clean(True)
        shown = ", ".join(sorted(by_name))
        return Reading.unsupported(
            f"timers {shown} set otherwise than RTC catch-up, PIT delay and no HPET"
        )

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        clock = child(domain, "clock")
        if vm.clock is not None and self._offset(clock) != Reading.clean(vm.clock):
            clock = _ensure_clock(domain)
            for attr in _OFFSET_ATTRS:
                clock.attrib.pop(attr, None)
            # The offset comes first, as libvirt writes it.
            rest = dict(clock.attrib)
            clock.attrib.clear()
            clock.set("offset", vm.clock)
            for key, value in rest.items():
                clock.set(key, value)
        if vm.clock_timers is not None and self._timers(clock) != Reading.clean(vm.clock_timers):
            _remove_timers(clock, _TIMER_NAMES)
            if vm.clock_timers:
                clock = _ensure_clock(domain)
                for name, attrs in reversed(TIMERS):
                    _add_timer(clock, make("timer", [("name", name), *attrs]), first=True)


# -- hyperv ------------------------------------------------------------------------------------

#: The Hyper-V enlightenments ``hyperv: true`` writes where a domain has none on: the set
#: virt-install 4 gives Windows guests under KVM (and virt-manager shows). virt-install 5 and
#: later turn on those the host's libvirt offers instead (its domain capabilities), which may
#: be more or fewer; a domain with any enlightenment on reads as ``true`` and keeps its set.
HYPERV_ENLIGHTENMENTS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("relaxed", (("state", "on"),)),
    ("vapic", (("state", "on"),)),
    ("spinlocks", (("state", "on"), ("retries", "8191"))),
)
HYPERV_TIMER = "hypervclock"
# Children of <hyperv> that are settings rather than enlightenments: alone, they turn
# nothing on.
_HYPERV_SETTINGS = frozenset({"vendor_id"})


def _hyperv_on(hyperv: Element) -> bool:
    """Whether ``<hyperv>`` turns enlightenments on: ``passthrough`` mode (every one the
    host offers) or, in ``custom`` mode, at least one with ``state='on'``."""
    if hyperv.get("mode") == "passthrough":
        return True
    return any(
        isinstance(node.tag, str)
        and node.tag not in _HYPERV_SETTINGS
        and node.get("state") == "on"
        for node in hyperv
    )


class HypervField(DomainField):
    """``hyperv`` -> Hyper-V enlightenments in ``<features><hyperv>`` and the ``hypervclock``
    timer; ``false``: neither.

    ``true`` reads from any ``<hyperv>`` that turns enlightenments on (``passthrough`` mode,
    or ``custom`` with at least one on) together with the timer, whichever set it is:
    virt-install 5 turns on what the host offers, and sync of ``true`` keeps a domain's set.
    Where none is on, ``true`` writes :data:`HYPERV_ENLIGHTENMENTS`. A domain with only part
    of it (enlightenments without the timer, the timer without enlightenments) reads as
    neither value, with the reason."""

    fields = ("hyperv",)
    unmanaged_when_none = ("hyperv",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.hyperv:
            self._enable(domain)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        features = child(domain, "features")
        hyperv = child(features, "hyperv") if features is not None else None
        timers = _timers(child(domain, "clock"), (HYPERV_TIMER,))
        clock = any(t.get("present") == "yes" for t in timers)
        if hyperv is None:
            if clock:
                return {"hyperv": Reading.unsupported("a hypervclock timer without <hyperv>")}
            return {"hyperv": Reading.clean(False)}
        mode = hyperv.get("mode", "custom")
        if mode not in ("custom", "passthrough"):
            return {"hyperv": Reading.unsupported(f"Hyper-V mode '{mode}'")}
        if not _hyperv_on(hyperv):
            return {"hyperv": Reading.unsupported("<hyperv> without an enlightenment on")}
        if not clock:
            return {"hyperv": Reading.unsupported("Hyper-V enlightenments without hypervclock")}
        return {"hyperv": Reading.clean(True)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.hyperv is None:
            return
        if vm.hyperv:
            self._enable(domain)
            return
        features = child(domain, "features")
        hyperv = child(features, "hyperv") if features is not None else None
        if hyperv is not None:
            remove(hyperv)
        _remove_timers(child(domain, "clock"), (HYPERV_TIMER,))

    @staticmethod
    def _enable(domain: Element) -> None:
        features = ensure_child(domain, "features")
        hyperv = child(features, "hyperv")
        if hyperv is None:
            hyperv = insert_child(features, make("hyperv", [("mode", "custom")]))
        elif hyperv.get("mode") not in (None, "custom", "passthrough"):
            hyperv.set("mode", "custom")
        if not _hyperv_on(hyperv):
            for name, attrs in HYPERV_ENLIGHTENMENTS:
                node = child(hyperv, name)
                if node is None:
                    node = insert_child(hyperv, make(name))
                for key, value in attrs:
                    node.set(key, value)
        timers = _timers(child(domain, "clock"), (HYPERV_TIMER,))
        for timer in timers:
            timer.set("present", "yes")
        if not timers:
            insert_child(
                _ensure_clock(domain), make("timer", [("name", HYPERV_TIMER), ("present", "yes")])
            )


# -- sound -------------------------------------------------------------------------------------


class SoundField(DomainField):
    """``sound`` -> the first ``<sound model>``; ``none``: no sound device."""

    fields = ("sound",)
    unmanaged_when_none = ("sound",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.sound not in (None, "none"):
            add_device(domain, make("sound", [("model", str(vm.sound))]))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        sounds = devices(domain, "sound")
        if not sounds:
            return {"sound": Reading.clean("none")}
        model = sounds[0].get("model")
        if not _known("sound", model) or model == "none":
            return {
                "sound": Reading.unsupported(
                    f"sound model '{model}' (bkt knows ich9, ich6 and ac97)"
                )
            }
        if len(sounds) > 1:
            reason = f"{len(sounds)} sound devices; the manifest describes only the first"
            return {"sound": Reading.lossy_(model, reason)}
        return {"sound": Reading.clean(model)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        sounds = devices(domain, "sound")
        if vm.sound is None:
            return
        if vm.sound == "none":
            for node in sounds:
                remove(node)
            return
        if not sounds:
            add_device(domain, make("sound", [("model", vm.sound)]))
            return
        first = sounds[0]
        if first.get("model") != vm.sound:
            # Another device: its codecs and address do not apply; the audio backend it
            # plays through stays.
            retain_children(first, ("audio", "alias"))
            first.set("model", vm.sound)


# -- usb_redirection ---------------------------------------------------------------------------


def _redirdev() -> Element:
    return make("redirdev", [("bus", "usb"), ("type", "spicevmc")])


def _redirdevs(domain: Element) -> list[Element]:
    """The SPICE USB redirection channels; redirection over TCP is the user's."""
    return [
        r
        for r in devices(domain, "redirdev")
        if r.get("type") == "spicevmc" and r.get("bus", "usb") == "usb"
    ]


class UsbRedirectionField(DomainField):
    """``usb_redirection`` -> that many ``<redirdev bus='usb' type='spicevmc'>``."""

    fields = ("usb_redirection",)
    unmanaged_when_none = ("usb_redirection",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        for _ in range(vm.usb_redirection or 0):
            add_device(domain, _redirdev())

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        count = len(_redirdevs(domain))
        if count > USB_REDIRECTION_MAX:
            return {
                "usb_redirection": Reading.unsupported(
                    f"{count} USB redirection channels (bkt manages at most {USB_REDIRECTION_MAX})"
                )
            }
        return {"usb_redirection": Reading.clean(count)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.usb_redirection is None:
            return
        found = _redirdevs(domain)
        for node in found[vm.usb_redirection :]:
            remove(node)
        for _ in range(vm.usb_redirection - len(found)):
            add_device(domain, _redirdev())


# -- video -------------------------------------------------------------------------------------


class VideoField(DomainField):
    """``video`` -> the ``<model type>`` of the first ``<video>``; ``none``: no video device
    (``<model type='none'/>`` beside graphics, so that libvirt adds none)."""

    fields = ("video",)
    unmanaged_when_none = ("video",)

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.video is not None:
            self._apply(domain, vm.video)

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        videos = devices(domain, "video")
        if not videos:
            return {"video": Reading.clean("none")}
        model = child(videos[0], "model")
        kind = model.get("type") if model is not None else None
        if kind is None:
            return {"video": Reading.unsupported("a video device without a model")}
        if not _known("video", kind):
            known = ", ".join(CHOICES["video"])
            return {"video": Reading.unsupported(f"video model '{kind}' (bkt knows {known})")}
        if len(videos) > 1:
            reason = f"{len(videos)} video devices; the manifest describes only the first"
            return {"video": Reading.lossy_(kind, reason)}
        return {"video": Reading.clean(kind)}

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        if vm.video is not None:
            self._apply(domain, vm.video)

    @staticmethod
    def _apply(domain: Element, kind: str) -> None:
        videos = devices(domain, "video")
        if not videos:
            if kind != "none":
                add_device(domain, make("video", [], make("model", [("type", kind)])))
            return
        video = videos[0]
        model = child(video, "model")
        if model is not None and model.get("type") == kind:
            return
        if kind == "none" and not devices(domain, "graphics"):
            for node in videos:
                remove(node)
            return
        # A new video model: the old one's settings, driver and address no longer apply.
        retain_children(video, ("alias",))
        append(video, make("model", [("type", kind)]))
