"""One plugin as ``bkt plugins`` lists it (:meth:`bkt_core.host.Host.plugins`).

A module of its own, imported only when the listing is asked for: creating a dataclass costs
some 0.8 ms of CPU, and every other command only loads plugins (the host keeps each plugin's
fields until then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PluginInfo"]


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``bkt plugins`` lists it. ``status`` is ``active``, ``disabled`` or
    ``failed`` (then ``error`` says why)."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    status: str = "active"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "hooks": list(self.hooks),
            **({"error": self.error} if self.error else {}),
        }
