"""Defaults plugins fill: each VM's values for the fields its manifest entry does not state,
from the :func:`~bkt_vm_plugin.hookspecs.bkt_vm_defaults` hook.

:func:`fill_defaults` applies them to a whole manifest (the VM subsystem calls it each time it
loads one; the fill is never cached), :func:`fill_vm` to one VM, and :func:`proposed` gives
what the plugins propose for a VM whatever its author wrote (capture compares a domain's values
with it, so that it does not write a value a plugin fills anyway).

The plugins are held to the hook's contract here, every error naming the plugin and the hook:
a field the host does not have, a value the field does not accept (a built-in field's value is
checked without the manifest's model: :func:`~bkt_vm_plugin.definition.builtin_value_problem`;
a plugin field's with pydantic, only when a plugin fills one), a value that breaks a rule with
the VM's other values (``hyperv`` under ``virt_type: "qemu"``), and two plugins filling one
field with different values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bkt_core.errors import PluginError

if TYPE_CHECKING:
    from bkt_vm_plugin.definition import VmDefinition, VmManifest
    from bkt_vm_plugin.hooks import VmHooks

__all__ = [
    "HOOK",
    "PluginFieldCheck",
    "fill_defaults",
    "fill_vm",
    "is_filled",
    "proposed",
    "state_hint",
]

HOOK = "bkt_vm_defaults"

#: Checks a value a plugin fills for a plugin field: (field, value) -> the value as a
#: definition holds it; raises ValueError (pydantic's ValidationError is one) for a value the
#: field does not accept.
PluginFieldCheck = Callable[[str, Any], Any]


def proposed(
    name: str,
    vm: VmDefinition,
    hooks: VmHooks,
    check: PluginFieldCheck | None = None,
    settled: frozenset[str] = frozenset(),
) -> dict[str, tuple[str, Any]]:
    """What the plugins propose for VM ``name`` (``vm``), checked: field -> (plugin, value as
    a definition holds it), whether or not the author wrote the field. ``check`` checks a
    plugin field's value (by default with the host's manifest model). Two plugins proposing
    different values for a field is an error, unless the field is ``settled`` (its author
    wrote it): then the first plugin's proposal is given. Raises PluginError."""
    from bkt_vm_plugin.definition import BUILTIN_FIELDS, builtin_value_problem, frozen

    builtin = set(BUILTIN_FIELDS.names)
    out: dict[str, tuple[str, Any]] = {}
    for plugin, values in hooks.vm_defaults(vm):
        for field, value in values.items():
            if not isinstance(field, str) or field not in vm.layout.names:
                raise PluginError(
                    plugin, HOOK, f"fills VM field {field!r}, which is not a field of this host"
                )
            if field in builtin:
                problem = builtin_value_problem(field, value)
                if problem is not None:
                    raise PluginError(plugin, HOOK, f"fills {field} of VM {name}: {problem}")
                value = frozen(value)
            else:
                value = _plugin_value(plugin, name, field, value, check or _model_check(hooks))
            if field in out and field in settled:
                continue
            if field in out and out[field][1] != value:
                other, theirs = out[field]
                raise PluginError(
                    plugin,
                    HOOK,
                    f"fills {field} of VM {name} with {_shown(value)}, but plugin {other} "
                    f"fills it with {_shown(theirs)}",
                    hint=f"state {field} in the VM's manifest entry, or block one of them: "
                    f"--disable-plugin {plugin} or --disable-plugin {other}",
                )
            out[field] = (plugin, value)
    return out


def fill_vm(
    name: str, vm: VmDefinition, hooks: VmHooks, check: PluginFieldCheck | None = None
) -> VmDefinition:
    """VM ``name`` (``vm``) with the plugins' values for every field its author did not
    write, recorded in :attr:`~bkt_vm_plugin.definition.VmDefinition.filled` (and the
    plugin that filled each in ``filled_by``). A VM built in
    code (``written`` None) has every field written: it is returned as it is. Raises
    PluginError."""
    from bkt_vm_plugin.definition import BUILTIN_FIELDS

    written = frozenset(vm.layout.names if vm.written is None else vm.written)
    offers = proposed(name, vm, hooks, check, settled=written)
    taken = {f: offer for f, offer in offers.items() if f not in written}
    if not taken:
        return vm
    builtin = {f: v for f, (_p, v) in taken.items() if f in BUILTIN_FIELDS.names}
    plugin = {f: v for f, (_p, v) in taken.items() if f not in BUILTIN_FIELDS.names}
    filled = dataclasses.replace(
        vm,
        **builtin,
        plugin_values={**vm.plugin_values, **plugin},
        filled={f: v for f, (_p, v) in taken.items()},
        filled_by={f: p for f, (p, _v) in taken.items()},
    )
    _check_together(name, filled, taken)
    return filled


def fill_defaults(
    manifest: VmManifest, hooks: VmHooks, check: PluginFieldCheck | None = None
) -> VmManifest:
    """``manifest`` with every VM filled (:func:`fill_vm`); ``manifest`` itself when no
    plugin fills a field of any VM. Raises PluginError."""
    from bkt_vm_plugin.definition import VmManifest

    if not hooks.host.pluginmanager.hook.bkt_vm_defaults.get_hookimpls():
        return manifest
    vms = {name: fill_vm(name, vm, hooks, check) for name, vm in manifest.vms.items()}
    if all(vms[name] is vm for name, vm in manifest.vms.items()):
        return manifest
    return VmManifest(vms, schema=manifest.schema)


def is_filled(vm: VmDefinition, name: str) -> bool:
    """Whether ``vm``'s value of field ``name`` is one a plugin filled (the author did not
    write the field)."""
    return name in vm.filled and vm.written is not None and name not in vm.written


def state_hint(vm: VmDefinition, name: str, domain_value: Any) -> str:
    """What to write into the entry of a VM whose filled value of ``name`` would change its
    domain: the domain's value keeps it, the filled one changes it. (Capture is no answer
    there: it writes what the domain holds, and drops what the domain does not hold yet,
    such as a newly added ``os``.)"""
    filled = f'"{name}": {_shown(vm.field(name))}'
    if domain_value is None:
        return f"state {name} in the VM's manifest entry ({filled} changes the domain)"
    keep = f'"{name}": {_shown(domain_value)}'
    return (
        f"state {name} in the VM's manifest entry: {keep} keeps the domain as it is, "
        f"{filled} changes it"
    )


def _check_together(name: str, vm: VmDefinition, taken: Mapping[str, tuple[str, Any]]) -> None:
    """The rules between fields that a filled value may break (the manifest's rules checked
    the author's values already): each names the plugin that filled the value."""
    from bkt_vm_plugin.rules import HYPERV_NEEDS_KVM, USB_REDIRECTION_NEEDS_SPICE

    def blame(fields: tuple[str, ...], message: str) -> None:
        for field in fields:
            if field in taken:
                raise PluginError(taken[field][0], HOOK, f"fills {field} of VM {name}: {message}")

    if vm.hyperv is True and vm.virt_type == "qemu":
        blame(("hyperv", "virt_type"), HYPERV_NEEDS_KVM)
    if vm.usb_redirection and vm.graphics != "spice":
        blame(("usb_redirection", "graphics"), USB_REDIRECTION_NEEDS_SPICE)
    if vm.secure_boot and vm.boot == "bios":
        blame(("secure_boot", "boot"), 'needs boot "uefi"')


def _plugin_value(plugin: str, name: str, field: str, value: Any, check: PluginFieldCheck) -> Any:
    from bkt_vm_plugin.definition import frozen

    try:
        return frozen(check(field, value))
    except ValueError as exc:
        errors = getattr(exc, "errors", None)  # pydantic's ValidationError: its first message
        found = errors() if callable(errors) else []
        reason = str(found[0].get("msg")) if found else str(exc) or type(exc).__name__
        raise PluginError(
            plugin, HOOK, f"fills {field} of VM {name} with {_shown(value)}: {reason}"
        ) from None


def _model_check(hooks: VmHooks) -> PluginFieldCheck:
    """A plugin field's value checked with the host's manifest model (pydantic is imported
    only when a plugin fills a plugin field)."""

    def check(field: str, value: Any) -> Any:
        from pydantic import TypeAdapter

        from bkt_vm_plugin.subsystem import VmSubsystem

        sub = hooks.host.subsystem("vm")
        assert isinstance(sub, VmSubsystem)
        info = sub.vm_model.model_fields[field]
        return TypeAdapter(info.rebuild_annotation()).validate_python(value, strict=True)

    return check


def _shown(value: Any) -> str:
    import json

    from bkt_vm_plugin.definition import plain

    try:
        return json.dumps(plain(value))
    except (TypeError, ValueError):
        return repr(value)
