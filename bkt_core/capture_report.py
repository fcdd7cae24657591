"""What a capture reports, as plain data: a :class:`CaptureReport` of :class:`CaptureEntry`.

Frozen dataclasses like the plans of :mod:`bkt_core.plan` (which names them too), in a module
of their own: neither ``bkt status`` nor ``bkt sync`` builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CaptureEntry", "CaptureReport"]


@dataclass(frozen=True)
class CaptureEntry:
    """One entry of a capture: ``kind`` is added, changed, unchanged or skipped. ``changes``
    are (field, old JSON, new JSON) for a changed entry, or (field, "", JSON) for an added one;
    ``reasons`` say why an entry was skipped, and ``hint`` what to do about it when the
    error that skipped it gave one."""

    name: str
    kind: Literal["added", "changed", "unchanged", "skipped"]
    changes: tuple[tuple[str, str, str], ...] = ()
    reasons: tuple[str, ...] = ()
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.changes:
            out["changes"] = [{"field": f, "old": o, "new": n} for f, o, n in self.changes]
        if self.reasons:
            out["reasons"] = list(self.reasons)
        if self.hint is not None:
            out["hint"] = self.hint
        return out


@dataclass(frozen=True)
class CaptureReport:
    """What a capture found and wrote to the manifest at ``path``. ``key`` names the entries
    in the JSON form."""

    entries: tuple[CaptureEntry, ...]
    warnings: tuple[str, ...]
    path: str
    written: bool
    dry_run: bool
    created: bool = False
    #: What the user should know besides warnings: a directory or file created, every domain
    #: skipped, nothing to capture (printed on stderr).
    notes: tuple[str, ...] = ()
    key: str = field(kw_only=True)

    def count(self, kind: str) -> int:
        return sum(e.kind == kind for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dry_run": self.dry_run,
            "written": self.written,
            "created": self.created,
            self.key: [e.to_json() for e in self.entries],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }
