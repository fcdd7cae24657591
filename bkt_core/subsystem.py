"""What a subsystem is: a kind of thing bkt manages from one manifest file.

The VM subsystem (``bkt_vm_plugin``) is the one that ships; plugins contribute more through
:func:`~bkt_core.hookspecs.bkt_subsystems`. ``bkt sync``, ``bkt status`` and ``bkt capture``
run every registered subsystem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    # Only annotations name them: a command imports the plan's classes once it has results.
    from bkt_core.plan import CaptureReport, StatusReport, SyncPlan, SyncReport

__all__ = ["Subsystem"]


@runtime_checkable
class Subsystem(Protocol):
    """The operations every subsystem offers. None of them prints or exits: they return data
    or raise :class:`~bkt_core.BktError`."""

    #: The name of the subsystem and of its CLI group (``vm``); ``Host.plan(name)`` and the
    #: other operations of the host take it.
    name: str
    #: The manifest file inside the manifest directory (``vms.json``).
    manifest_file: str
    #: The manifest's key of the entries (``vms``): the key under which the JSON form of its
    #: plans and reports lists them (the ``key`` it passes to :class:`~bkt_core.SyncPlan`,
    #: :class:`~bkt_core.StatusReport` and :class:`~bkt_core.CaptureReport`), and the
    #: argument of ``bkt schema KEY``.
    manifest_key: str

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
