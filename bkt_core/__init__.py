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
    "BktError": "bkt_core.errors",
    "CommandError": "bkt_core.errors",
    "Diagnostic": "bkt_core.errors",
    "ManifestError": "bkt_core.errors",
    "OperationError": "bkt_core.errors",
    "PluginError": "bkt_core.errors",
    "UsageError": "bkt_core.errors",
    "hookimpl": "bkt_core.hookspecs",
    "hookspec": "bkt_core.hookspecs",
    "Host": "bkt_core.host",
    "PluginInfo": "bkt_core.host",
    "ManifestSource": "bkt_core.manifest",
    "Problem": "bkt_core.diagnostics",
    "CaptureEntry": "bkt_core.capture_report",
    "CaptureReport": "bkt_core.capture_report",
    "EntryResult": "bkt_core.plan",
    "FieldChange": "bkt_core.plan",
    "PlanEntry": "bkt_core.plan",
    "StatusReport": "bkt_core.status_report",
    "StatusRow": "bkt_core.status_report",
    "Summary": "bkt_core.plan",
    "SyncPlan": "bkt_core.plan",
    "SyncReport": "bkt_core.plan",
    "CommandRunner": "bkt_core.process",
    "Completed": "bkt_core.process",
    "FakeRunner": "bkt_core.process",
    "SubprocessRunner": "bkt_core.process",
    "Subsystem": "bkt_core.subsystem",
    "cache_enabled": "bkt_core.cache",
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
    from bkt_core.lazy import attribute

    return attribute(__name__, _WHERE, name)


def __dir__() -> list[str]:
    return __all__
