"""bkt_core: the plugin host of bkt.

The public API, for plugins and for tools that embed bkt::

    from bkt_core import Host, hookimpl

    host = Host("manifests", uri="qemu:///system")
    plan = host.plan("vm")            # a SyncPlan: plain data, plan.to_json() is `--json`
    report = host.sync("vm", ["win11"])

Names are imported on first use, so ``import bkt_core`` costs almost nothing.
"""

from __future__ import annotations

__version__ = "0.2.0"

# Not `typing.TYPE_CHECKING`: importing typing (and re) would slow `bkt --version` down.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bkt_core.cache import cache_enabled
    from bkt_core.capture_report import CaptureEntry, CaptureReport
    from bkt_core.diagnostics import Problem
    from bkt_core.errors import (
        BktError,
        CommandError,
        Diagnostic,
        ManifestError,
        OperationError,
        PluginError,
        UsageError,
    )
    from bkt_core.hookspecs import hookimpl, hookspec
    from bkt_core.host import Host, PluginInfo
    from bkt_core.manifest import ManifestSource
    from bkt_core.plan import EntryResult, FieldChange, PlanEntry, Summary, SyncPlan, SyncReport
    from bkt_core.process import CommandRunner, Completed, FakeRunner, SubprocessRunner
    from bkt_core.subsystem import Subsystem

_WHERE = {
    "BktError": "errors",
    "CommandError": "errors",
    "Diagnostic": "errors",
    "ManifestError": "errors",
    "OperationError": "errors",
    "PluginError": "errors",
    "UsageError": "errors",
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    "Host": "host",
    "PluginInfo": "host",
    "ManifestSource": "manifest",
    "Problem": "diagnostics",
    "CaptureEntry": "capture_report",
    "CaptureReport": "capture_report",
    "EntryResult": "plan",
    "FieldChange": "plan",
    "PlanEntry": "plan",
    "StatusReport": "status_report",
    "StatusRow": "status_report",
    "Summary": "plan",
    "SyncPlan": "plan",
    "SyncReport": "plan",
    "CommandRunner": "process",
    "Completed": "process",
    "FakeRunner": "process",
    "SubprocessRunner": "process",
    "Subsystem": "subsystem",
    "cache_enabled": "cache",
}

__all__ = [
    "BktError",
    "CaptureEntry",
    "CaptureReport",
    "CommandError",
    "CommandRunner",
    "Completed",
    "Diagnostic",
    "EntryResult",
    "FakeRunner",
    "FieldChange",
    "Host",
    "ManifestError",
    "ManifestSource",
    "OperationError",
    "PlanEntry",
    "PluginError",
    "PluginInfo",
    "Problem",
    "StatusReport",
    "StatusRow",
    "SubprocessRunner",
    "Subsystem",
    "Summary",
    "SyncPlan",
    "SyncReport",
    "UsageError",
    "__version__",
    "cache_enabled",
    "hookimpl",
    "hookspec",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bkt_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"bkt_core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
