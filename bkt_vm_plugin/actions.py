"""What ``bkt vm sync`` and ``bkt vm status`` do once their options are parsed.

Without click: :mod:`bkt_vm_plugin.commands` defines the commands and runs these through
:func:`bkt_core.cli.run_command`, so that a command line run again unchanged runs them
without click being imported (:func:`bkt_core.cli._replay`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkt_core.cli import command_body
from bkt_core.errors import OperationError
from bkt_vm_plugin import SUBSYSTEM_NAME

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bkt_core.cli import Cli
    from bkt_vm_plugin.subsystem import VmSubsystem

__all__ = ["run_status", "run_sync", "vm_subsystem"]


def vm_subsystem(app: Cli) -> VmSubsystem:
    """The VM subsystem of ``app``'s host."""
    sub: VmSubsystem = app.host.subsystem(SUBSYSTEM_NAME)  # type: ignore[assignment]
    return sub


@command_body
def run_sync(
    app: Cli,
    names: tuple[str, ...] = (),
    *,
    dry_run: bool,
    check: bool,
    as_json: bool,
    allow_firmware_change: bool = False,
) -> None:
    from bkt_core.errors import UsageError

    if dry_run and check:
        raise UsageError("--dry-run and --check cannot be used together")
    report = vm_subsystem(app).sync(
        names, dry_run=dry_run or check, allow_firmware_change=allow_firmware_change
    )
    # Imported once the sync is done: the plan's classes are not needed before virsh runs.
    from bkt_vm_plugin.report import print_dry_run, print_plan, print_results

    if as_json:
        app.printer.json(report.to_json())
    else:
        print_plan(app.printer, report.plan)
        if report.dry_run:
            print_dry_run(app.printer, report)
        else:
            print_results(app.printer, report)
    if report.failed:
        raise _could_not("sync", report.failed)
    if check and report.plan.changes_anything:
        raise OperationError(
            "libvirt does not match the manifest", hint="`bkt vm sync` makes these changes"
        )


@command_body
def run_status(app: Cli, names: tuple[str, ...] = (), *, all_: bool, as_json: bool) -> None:
    report = vm_subsystem(app).status(names, all=all_)
    from bkt_vm_plugin.report import print_status

    if as_json:
        app.printer.json(report.to_json())
    else:
        print_status(app.printer, report)
    if report.failed:
        # Like a VM sync could not sync: every VM is listed, and the run fails.
        raise _could_not("read", report.failed)


def _could_not(verb: str, names: Sequence[str]) -> OperationError:
    return OperationError(
        f"could not {verb} {len(names)} VM{'' if len(names) == 1 else 's'}: " + ", ".join(names)
    )
