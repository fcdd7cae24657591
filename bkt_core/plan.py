"""Plans and reports as plain data.

What a subsystem is going to do (a :class:`SyncPlan`) and what it did (a :class:`SyncReport`,
a :class:`StatusReport`, a :class:`CaptureReport`) are frozen dataclasses. Their
``to_json()`` is the document the CLI prints for ``--json``; nothing here prints. The entries
are listed there under the subsystem's own ``key`` (the VM subsystem's is ``"vms"``), which the
subsystem passes when it builds the plan or report.

The status report and the capture report live in modules of their own
(:mod:`bkt_core.status_report`, :mod:`bkt_core.capture_report`), imported from here on first
use: creating a dataclass costs some 0.4 ms, and a status needs none of the plan's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bkt_core.capture_report import CaptureEntry, CaptureReport
    from bkt_core.status_report import StatusReport, StatusRow

__all__ = [
    "Action",
    "CaptureEntry",
    "CaptureReport",
    "EntryResult",
    "FieldChange",
    "PlanEntry",
    "StatusReport",
    "StatusRow",
    "Summary",
    "SyncPlan",
    "SyncReport",
]

Action = Literal["create", "update", "unchanged", "error"]
Outcome = Literal["created", "updated", "unchanged", "failed"]


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: ``old`` is what libvirt has, ``new`` what the manifest wants,
    both spelled as the manifest spells them."""

    field: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.field}: {self.old} -> {self.new}"

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class PlanEntry:
    """What sync will do with one manifest entry.

    ``details`` holds subsystem-specific facts for the JSON form and the printed plan (for
    VMs: ``create_disk``, ``autostart``). ``payload`` is what execution needs (for VMs: the
    domain XML to define); it is not part of the JSON form. An entry that cannot be planned
    (``error``) has a ``message`` and, when its error gave one, a ``hint``.
    """

    name: str
    action: Action
    changes: tuple[FieldChange, ...] = ()
    message: str | None = None
    hint: str | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    pending_reboot: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)
    payload: Any = field(default=None, compare=False, repr=False)

    @property
    def changes_anything(self) -> bool:
        return self.action in ("create", "update")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "action": self.action}
        if self.action == "error":
            out["message"] = self.message
            if self.hint is not None:
                out["hint"] = self.hint
        if self.action == "update" or (self.action == "create" and self.changes):
            out["changes"] = [c.to_json() for c in self.changes]
        out.update(self.details)
        if self.action == "update":
            out["pending_reboot"] = self.pending_reboot
            if self.notes:
                out["notes"] = list(self.notes)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class Summary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
        }


@dataclass(frozen=True)
class SyncPlan:
    """Every entry of a sync, in manifest order. ``key`` names the entries in the JSON form."""

    subsystem: str
    entries: tuple[PlanEntry, ...]
    key: str = field(kw_only=True)

    @property
    def changes_anything(self) -> bool:
        return any(e.changes_anything for e in self.entries)

    @property
    def has_errors(self) -> bool:
        return any(e.action == "error" for e in self.entries)

    def summary(self) -> Summary:
        count = {a: sum(e.action == a for e in self.entries) for a in ("create", "update")}
        return Summary(
            created=count["create"],
            updated=count["update"],
            unchanged=sum(e.action == "unchanged" for e in self.entries),
            failed=sum(e.action == "error" for e in self.entries),
        )

    def to_json(self) -> dict[str, Any]:
        return {self.key: [e.to_json() for e in self.entries]}


@dataclass(frozen=True)
class EntryResult:
    """What happened to one entry: a failed one has a ``message`` and, when its error gave
    one, a ``hint``."""

    name: str
    result: Outcome
    message: str | None = None
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "result": self.result}
        if self.message is not None:
            out["message"] = self.message
        if self.hint is not None:
            out["hint"] = self.hint
        return out


@dataclass(frozen=True)
class SyncReport:
    """A plan, and when it was executed, its results."""

    plan: SyncPlan
    dry_run: bool
    results: tuple[EntryResult, ...] | None = None

    @property
    def failed(self) -> list[str]:
        if self.results is None:
            return [e.name for e in self.plan.entries if e.action == "error"]
        return [r.name for r in self.results if r.result == "failed"]

    def summary(self) -> Summary:
        if self.results is None:
            return self.plan.summary()
        return Summary(
            **{
                outcome: sum(r.result == outcome for r in self.results)
                for outcome in ("created", "updated", "unchanged", "failed")
            }
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dry_run": self.dry_run, "plan": self.plan.to_json()}
        if self.results is not None:
            out["results"] = [r.to_json() for r in self.results]
        out["summary"] = self.summary().to_json()
        return out


#: The names of this module that live in another, imported on first use.
_ELSEWHERE = {
    "StatusRow": "bkt_core.status_report",
    "StatusReport": "bkt_core.status_report",
    "CaptureEntry": "bkt_core.capture_report",
    "CaptureReport": "bkt_core.capture_report",
}


def __getattr__(name: str) -> Any:
    from bkt_core.lazy import attribute

    return attribute(__name__, _ELSEWHERE, name)
