"""bkt-hyperv: a ``hyperv`` manifest field for Windows guests.

``"hyperv": true`` gives the domain the Hyper-V enlightenments libvirt documents under
``<features><hyperv>`` and the ``hypervclock`` timer, which Windows guests need to run well
under KVM. The plugin **extends** bkt: it declares the field (so it is validated, appears in
``bkt schema vms`` and is an unknown field again once the plugin is uninstalled) and
contributes its piece of the domain XML mapping (:mod:`bkt_hyperv.field`), which gives it
render, patch, parse, drift and capture like a built-in field.

Nothing heavy is imported here: the hooks import what they need when they run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core import hookimpl

if TYPE_CHECKING:
    from bkt_core import Problem
    from bkt_vm_plugin.api import DomainField

__all__ = ["bkt_domain_fields", "bkt_manifest_fields", "bkt_validate_manifest"]

__version__ = "1.0.0"


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    if subsystem != "vm":
        return None
    from pydantic import Field

    return {
        "hyperv": (
            bool,
            Field(
                default=False,
                description=(
                    "Hyper-V enlightenments (relaxed, vapic, spinlocks, vpindex, synic, "
                    "stimer, reset, frequencies) and the hypervclock timer, for Windows "
                    "guests (plugin bkt-hyperv)."
                ),
            ),
        )
    }


@hookimpl
def bkt_validate_manifest(subsystem: str, document: Mapping[str, Any]) -> Iterable[Problem] | None:
    """``hyperv: true`` needs ``virt_type: "kvm"``: the enlightenments are KVM's, and QEMU's
    software emulation refuses to start such a guest."""
    if subsystem != "vm":
        return None
    from bkt_core import Problem

    vms = document.get("vms")
    if not isinstance(vms, dict):
        return None
    return [
        Problem(
            ("vms", name, "hyperv"),
            'Hyper-V enlightenments need virt_type "kvm" (QEMU\'s software emulation cannot '
            "start such a guest)",
        )
        for name, vm in vms.items()
        if isinstance(vm, dict) and vm.get("hyperv") is True and vm.get("virt_type") == "qemu"
    ]


@hookimpl
def bkt_domain_fields() -> Iterable[DomainField]:
    from bkt_hyperv.field import HypervField

    return [HypervField()]
