"""The firmware fields of the core mapping: ``boot`` (BIOS or UEFI) and ``secure_boot``.

UEFI is written as ``<os firmware='efi'>`` with a firmware feature list, never a loader path,
so that libvirt picks this host's matching firmware and NVRAM template. A domain that leaves
its firmware to libvirt (what virt-install writes) is read by asking which firmware libvirt
will boot it with (:mod:`bkt_vm_plugin.firmware`, given as ``ctx.facts["firmware"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bkt_vm_plugin.domain_xml import DomainContext, DomainField, Reading
from bkt_vm_plugin.xmltree import at, child, children, ensure_child, insert_child, make, remove

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.xmltree import Element

__all__ = ["BootField"]


def _firmware_features(secure_boot: bool) -> Element:
    # Always written for UEFI, so that every host picks the same kind of firmware: without a
    # feature list libvirt takes the host's first firmware descriptor, Secure Boot on Debian
    # and Fedora. Features rather than a loader path: autoselection then picks this host's
    # matching firmware and NVRAM template.
    enabled = "yes" if secure_boot else "no"
    return make(
        "firmware",
        [],
        make("feature", [("enabled", enabled), ("name", "enrolled-keys")]),
        make("feature", [("enabled", enabled), ("name", "secure-boot")]),
    )


def _feature(os: Element | None, name: str) -> bool | None:
    firmware = child(os, "firmware")
    if firmware is None:
        return None
    for feature in children(firmware, "feature"):
        if feature.get("name") == name:
            return feature.get("enabled") == "yes"
    return None


class BootField(DomainField):
    """``boot`` -> ``<os firmware='efi'>`` (or none, BIOS); ``secure_boot`` -> the firmware
    feature list and ``<smm state='on'/>``."""

    fields = ("boot", "secure_boot")

    def desired(self, vm: VmDefinition, ctx: DomainContext) -> Mapping[str, Any]:
        return {"boot": vm.boot, "secure_boot": vm.boot == "uefi" and vm.secure_boot}

    def render(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        uefi = vm.boot == "uefi"
        secure = uefi and vm.secure_boot
        os = insert_child(domain, make("os", [("firmware", "efi")] if uefi else []))
        os.append(make("type", [("arch", "x86_64"), ("machine", "q35")], text="hvm"))
        if uefi:
            os.append(_firmware_features(secure))
        os.append(make("boot", [("dev", "hd")]))
        features = insert_child(domain, make("features", [], make("acpi"), make("apic")))
        if secure:
            features.append(make("smm", [("state", "on")]))

    def parse(self, domain: Element, ctx: DomainContext) -> Mapping[str, Reading]:
        os = child(domain, "os")
        loader = child(os, "loader")
        pflash = loader is not None and loader.get("type") == "pflash"
        if (os is None or os.get("firmware") != "efi") and not pflash:
            return {"boot": Reading.clean("bios"), "secure_boot": Reading.clean(False)}
        return {
            "boot": Reading.clean("uefi"),
            "secure_boot": self._secure(domain, os, loader, ctx),
        }

    @staticmethod
    def _secure(
        domain: Element, os: Element | None, loader: Element | None, ctx: DomainContext
    ) -> Reading:
        secure, keys = _feature(os, "secure-boot"), _feature(os, "enrolled-keys")
        smm = at(domain, "features", "smm")
        smm_off = smm is not None and smm.get("state") == "off"
        if secure is True:
            if keys is True:
                if smm_off:
                    return Reading.unsupported("Secure Boot firmware with SMM off")
                return Reading.clean(True)
            if keys is False:
                return Reading.unsupported(
                    "Secure Boot firmware without enrolled keys (Secure Boot is not enforced)"
                )
            return Reading.unsupported(
                "firmware feature secure-boot without enrolled-keys: libvirt picks the keys "
                "when the VM starts"
            )
        if keys is True:
            return Reading.unsupported("firmware feature enrolled-keys without secure-boot")
        if secure is False:
            return Reading.clean(False)
        if keys is False or (loader is not None and (loader.text or "").strip()):
            # enrolled-keys off is libvirt's own way to say "no Secure Boot"; a loader path
            # is the firmware itself.
            return Reading.clean(loader is not None and loader.get("secure") == "yes")
        return _autoselected(domain, loader, ctx)

    def patch(self, domain: Element, vm: VmDefinition, ctx: DomainContext) -> None:
        wanted = self.desired(vm, ctx)
        secure = bool(wanted["secure_boot"])
        os = ensure_child(domain, "os")
        # The old firmware choice: its features and its loader no longer apply.
        for tag in ("firmware", "loader"):
            node = child(os, tag)
            if node is not None:
                remove(node)
        nvram = child(os, "nvram")
        if vm.boot == "bios":
            os.attrib.pop("firmware", None)
            if nvram is not None:
                remove(nvram)
            return
        os.set("firmware", "efi")
        if nvram is not None:
            # Keep the NVRAM file (boot entries), not the template of another firmware, nor
            # the template's format (libvirt 10 and later write templateFormat, which their
            # schema allows only with a template).
            nvram.attrib.pop("template", None)
            nvram.attrib.pop("templateFormat", None)
        insert_child(os, _firmware_features(secure))
        if secure:
            smm = ensure_child(ensure_child(domain, "features"), "smm")
            smm.set("state", "on")
        # Turning Secure Boot off leaves SMM on: it does no harm, and other things need it.


def _autoselected(domain: Element, loader: Element | None, ctx: DomainContext) -> Reading:
    """Secure Boot of a UEFI domain that leaves its firmware to libvirt (what virt-install
    and virt-manager write for every UEFI guest): the firmware libvirt will boot it with,
    which on a q35 machine is usually OVMF with Secure Boot and enrolled keys."""
    from bkt_vm_plugin.firmware import Needs

    host = ctx.facts.get("firmware")
    if host is None:
        return Reading.unsupported(UNPINNED + "; the host's firmware was not looked up")
    kind = at(domain, "os", "type")
    pm = child(domain, "pm")
    smm = at(domain, "features", "smm")
    needs = Needs(
        arch=(kind.get("arch") if kind is not None else None) or "x86_64",
        machine=(kind.get("machine") if kind is not None else None) or "",
        s3=_enabled(child(pm, "suspend-to-mem")),
        s4=_enabled(child(pm, "suspend-to-disk")),
        secure_loader=loader is not None and loader.get("secure") == "yes",
        smm_off=smm is not None and smm.get("state") == "off",
    )
    if child(domain, "launchSecurity") is not None:
        return Reading.unsupported(UNPINNED + " with launch security, which bkt does not model")
    choice = host.choose(needs)
    fw = choice.descriptor
    if choice.problem is not None or fw is None:
        return Reading.unsupported(f"{UNPINNED}: {choice.problem}")
    if fw.secure_boot and not fw.enrolled_keys:
        return Reading.unsupported(
            f"libvirt boots it with {fw.executable}: Secure Boot firmware without enrolled keys "
            "(Secure Boot is not enforced)"
        )
    return Reading.clean(fw.secure_boot)


UNPINNED = "its UEFI firmware is chosen by libvirt"


def _enabled(element: Element | None) -> bool:
    return element is not None and element.get("enabled") == "yes"
