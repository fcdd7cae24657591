"""A second subsystem ("toy", one entry that never changes) and a `bkt toy hello` command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from bkt_core import (
    CaptureReport,
    Host,
    PlanEntry,
    StatusReport,
    StatusRow,
    SyncPlan,
    SyncReport,
    hookimpl,
)


class ToySubsystem:
    name = "toy"
    manifest_file = "toys.json"
    manifest_key = "toys"

    def __init__(self, host: Host) -> None:
        self.host = host

    def schema(self) -> dict[str, Any]:
        return {"type": "object"}

    def validate(self) -> int:
        return 1

    def plan(self, names: Sequence[str] = ()) -> SyncPlan:
        return SyncPlan("toy", (PlanEntry("teddy", "unchanged"),), key=self.manifest_key)

    def sync(self, names: Sequence[str] = (), *, dry_run: bool = False) -> SyncReport:
        return SyncReport(self.plan(names), dry_run=dry_run)

    def status(self, names: Sequence[str] = (), *, all: bool = False) -> StatusReport:
        return StatusReport((StatusRow("teddy", "running", True, True),), key=self.manifest_key)

    def capture(
        self, names: Sequence[str] = (), *, all: bool = False, dry_run: bool = False
    ) -> CaptureReport:
        return CaptureReport(
            (), (), path="toys.json", written=False, dry_run=dry_run, key=self.manifest_key
        )


@hookimpl
def bkt_subsystems(host: Host) -> list[ToySubsystem]:
    return [ToySubsystem(host)]


@click.group(name="toy", help="The toy subsystem.")
def toy() -> None:
    pass


@toy.command(help="Say hello.")
@click.pass_obj
def hello(app: Any) -> None:
    app.printer.data(f"hello from {app.host.subsystem('toy').manifest_file}")


@hookimpl
def bkt_cli_commands(cli: click.Group) -> None:
    cli.add_command(toy)
