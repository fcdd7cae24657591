"""Which plugin a VM's failure came from, as the user reads it.

An error a plugin raises on purpose (a :class:`~bkt_core.errors.BktError` with a message and
maybe a hint) fails the VM it was working on. When the plugin is not one of bkt's own, the
failure names it (``plugin NAME in HOOK: MESSAGE``) and keeps its hint, so that the user
knows whose refusal it is and what to do about it. bkt's own plugins speak as bkt: their
messages are printed as they are.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from bkt_core.errors import BktError, PluginError

if TYPE_CHECKING:
    from bkt_core.host import Host

__all__ = ["is_own", "named", "plugin_error"]

#: The package of bkt's own VM plugins (vm, cpu_model, autostart, provision).
OWN_PACKAGE = "bkt_vm_plugin"


def is_own(module: str) -> bool:
    """Whether code of ``module`` (a module's ``__name__``) is one of bkt's own plugins."""
    return module == OWN_PACKAGE or module.startswith(OWN_PACKAGE + ".")


def plugin_error(plugin: str, hook: str, detail: str, exc: BktError) -> PluginError:
    """The :class:`PluginError` naming ``plugin`` and ``hook`` for ``exc``, which it raised:
    ``detail`` is what to say, ``exc``'s hint is kept."""
    error = PluginError(plugin, hook, detail, hint=exc.hint)
    error.__cause__ = exc
    return error


def named(host: Host, exc: BktError) -> BktError:
    """``exc`` as a VM's failure reports it: raised by a hook implementation of a plugin that
    is not bkt's own (the host records which, :attr:`BktError.plugin`), a
    :class:`PluginError` naming the plugin and the hook with the same message and hint;
    otherwise ``exc`` itself."""
    plugin, hook = exc.plugin, exc.hook
    if isinstance(exc, PluginError) or plugin is None or hook is None:
        return exc
    obj = host.pluginmanager.get_plugin(plugin)
    if obj is None or is_own(_module_of(obj)):
        return exc
    return plugin_error(plugin, hook, exc.message, exc)


def _module_of(plugin: object) -> str:
    """The module a plugin object (a module, a class or an instance) is defined in."""
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    module = getattr(plugin, "__module__", None)
    return module if isinstance(module, str) else type(plugin).__module__
