"""What a status reports, as plain data: a :class:`StatusReport` of :class:`StatusRow`.

Frozen dataclasses like the plans of :mod:`bkt_core.plan` (which names them too), in a module
of their own: ``bkt status`` builds these two and none of the plan's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["StatusReport", "StatusRow"]


@dataclass(frozen=True)
class StatusRow:
    """One entry as status reports it: ``state`` is running, stopped or missing; ``in_sync``
    is None when there is nothing to compare (missing, unmanaged); ``pending_restart`` lists
    the fields of a running entry whose persistent definition differs from the running one
    (for VMs: a domain's live and persistent XML). An entry whose definition could not be
    read has a ``message`` saying why and, when its error gave one, a ``hint``."""

    name: str
    state: str
    managed: bool
    in_sync: bool | None
    drift: tuple[str, ...] = ()
    pending_restart: tuple[str, ...] = ()
    message: str | None = None
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "managed": self.managed,
            "in_sync": self.in_sync,
            "drift": list(self.drift),
            "pending_restart": list(self.pending_restart),
        }
        if self.message is not None:
            out["message"] = self.message
        if self.hint is not None:
            out["hint"] = self.hint
        return out


@dataclass(frozen=True)
class StatusReport:
    """Every row of a status. ``key`` names the rows in the JSON form."""

    rows: tuple[StatusRow, ...]
    key: str = field(kw_only=True)

    @property
    def failed(self) -> list[str]:
        """The entries whose status could not be read (each row has a ``message``)."""
        return [r.name for r in self.rows if r.message is not None]

    def to_json(self) -> dict[str, Any]:
        return {self.key: [r.to_json() for r in self.rows]}
