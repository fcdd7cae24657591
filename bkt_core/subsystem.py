"""What a subsystem is: a kind of thing bkt manages from one manifest file.

The VM subsystem (``bkt_vm_plugin``) is the one that ships; plugins contribute more through
:func:`~bkt_core.hookspecs.bkt_subsystems`. ``bkt sync``, ``bkt status`` and ``bkt capture``
run every registered subsystem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from bkt_core.plan import CaptureReport, StatusReport, SyncPlan, SyncReport

__all__ = ["Subsystem"]


@runtime_checkable
class Subsystem(Protocol):
    """The operations every subsystem offers. None of them prints or exits: they return data
    or raise :class:`~bkt_core.BktError`."""

    #: The CLI group name (``vm``); ``bkt schema`` names a subsystem by its manifest file
    #: instead (``vms``, from :attr:`manifest_file`).
    name: str
    #: The manifest file inside the manifest directory (``vms.json``).
    manifest_file: str

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the manifest, the installed plugins' fields included."""
        ...

    def validate(self) -> int:
        """Load and validate the manifest; the number of entries. Raises ManifestError."""
        ...

    def plan(self, names: Sequence[str] = ()) -> SyncPlan:
        """What ``sync`` would do, changing nothing."""
        ...

    def sync(self, names: Sequence[str] = (), *, dry_run: bool = False) -> SyncReport:
        """Plan, then (unless ``dry_run``) execute and run the post-sync hooks."""
        ...

    def status(self, names: Sequence[str] = (), *, all: bool = False) -> StatusReport:
        """What runs, what is stopped, missing or drifted."""
        ...

    def capture(
        self, names: Sequence[str] = (), *, all: bool = False, dry_run: bool = False
    ) -> CaptureReport:
        """Write what exists back into the manifest."""
        ...
