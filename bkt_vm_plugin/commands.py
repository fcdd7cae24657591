"""The ``bkt vm`` command group: click glue over the VM subsystem (drawn by rich-click when
help is asked for: :func:`bkt_core.cli.wants_help`).

Commands turn options into calls of :class:`~bkt_vm_plugin.subsystem.VmSubsystem`, hand the
results to :mod:`bkt_vm_plugin.report` to print, and raise :class:`~bkt_core.BktError` for
failures; only ``bkt_core.cli.main`` decides exit codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from bkt_core.cli import Cli, pass_cli, run_command
from bkt_core.errors import OperationError
from bkt_vm_plugin import SUBSYSTEM_NAME
from bkt_vm_plugin.actions import run_status, run_sync, vm_subsystem

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem


def _complete_names(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    from bkt_vm_plugin.completion import vm_names

    return vm_names(ctx, param, incomplete)


# No callback and no options of its own: a command line run again without click
# (bkt_core.cli.run_command) runs only the command's body.
vm_group = click.Group(name=SUBSYSTEM_NAME, help="Manage libvirt VMs from vms.json.")


@vm_group.command(help="Validate vms.json: `ok: N VMs`, or every problem with file:line:col.")
@pass_cli
def validate(app: Cli) -> None:
    from bkt_core.errors import Diagnostic

    # Warnings (a value below what the OS needs, ...) leave the manifest valid; only this
    # command prints them, before the errors when there are some.
    warnings: list[Diagnostic] = []
    try:
        count = vm_subsystem(app).validate(warnings=warnings)
    finally:
        for warning in warnings:
            where = warning.file
            if warning.line:
                where += f":{warning.line}:{warning.column}"
            path = f" {warning.path}:" if warning.path else ""
            app.printer.note(f"{where}: warning:{path} {warning.message}")
    app.printer.success(f"ok: {count} VM{'' if count == 1 else 's'}")


@vm_group.command(help="Make libvirt match vms.json: plan, define, read back, post-sync.")
@click.argument("names", nargs=-1, metavar="[NAME...]", shell_complete=_complete_names)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--check", is_flag=True, help="Like --dry-run, and exit 1 if anything would change.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--allow-firmware-change",
    is_flag=True,
    help="Let sync turn Secure Boot off, or give an existing VM another kind of UEFI "
    "firmware while it keeps its NVRAM.",
)
@pass_cli
def sync(
    app: Cli,
    names: tuple[str, ...],
    dry_run: bool,
    check: bool,
    as_json: bool,
    allow_firmware_change: bool,
) -> None:
    run_command(
        app,
        run_sync,
        names=names,
        dry_run=dry_run,
        check=check,
        as_json=as_json,
        allow_firmware_change=allow_firmware_change,
    )


@vm_group.command(help="Show each VM: running, stopped or missing, and in sync or drift.")
@click.argument("names", nargs=-1, metavar="[NAME...]", shell_complete=_complete_names)
@click.option("--all", "all_", is_flag=True, help="Also list libvirt domains not in vms.json.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_cli
def status(app: Cli, names: tuple[str, ...], all_: bool, as_json: bool) -> None:
    run_command(app, run_status, names=names, all_=all_, as_json=as_json)


@vm_group.command(help="Start a VM (one that already runs is success).")
@click.argument("name", shell_complete=_complete_names)
@click.option("--unmanaged", is_flag=True, help="Act on a libvirt domain not in vms.json.")
@pass_cli
def start(app: Cli, name: str, unmanaged: bool) -> None:
    from bkt_vm_plugin import ops

    app.printer.success(ops.start(vm_subsystem(app), name, unmanaged=unmanaged))


@vm_group.command(help="Shut a VM down (ACPI), or power it off at once with --force.")
@click.argument("name", shell_complete=_complete_names)
@click.option("--force", is_flag=True, help="Power off at once (virsh destroy).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a graceful shutdown may take.",
)
@click.option("--unmanaged", is_flag=True, help="Act on a libvirt domain not in vms.json.")
@pass_cli
def stop(app: Cli, name: str, force: bool, timeout: float, unmanaged: bool) -> None:
    from bkt_vm_plugin import ops

    message = ops.stop(vm_subsystem(app), name, force=force, timeout=timeout, unmanaged=unmanaged)
    app.printer.success(message)


@vm_group.command(name="fetch-iso", help="Download a VM's URL ISO sources into the ISO cache.")
@click.argument("name", shell_complete=_complete_names)
@pass_cli
def fetch_iso(app: Cli, name: str) -> None:
    from bkt_vm_plugin import iso

    sub = vm_subsystem(app)
    manifest = sub.load()
    if name not in manifest.vms:
        from bkt_vm_plugin.ops import not_in_manifest

        raise not_in_manifest(sub, name, hint="`bkt vm status` lists the VMs")
    printer = app.printer
    vm = manifest.vms[name]
    if not list(iso.url_sources(vm)):
        printer.note(f"VM {name} has no URL ISO sources: nothing to fetch")
        return
    cache = iso.cache_dir()
    with _progress_bar(printer) as bar:

        def heard(result: iso.FetchResult) -> None:
            bar.finish()
            if result.ok:
                printer.success(result.describe())
            else:
                # Why it failed, at once; FetchFailed names every failed URL at the end.
                printer.error(f"VM {name}: {result.error}")

        iso.fetch_iso(
            name,
            vm,
            cache,
            bar.update if bar.enabled else None,
            on_result=heard,
            note=bar.note,
        )


class _progress_bar:
    """A rich progress bar on stderr while a download runs, only when stderr is a terminal
    (and not with ``-q``); otherwise no progress at all. Each download has a bar of its own,
    erased (:meth:`finish`) before its result line is printed; notes (retries) are printed
    above the bar, never through it."""

    def __init__(self, printer: Any) -> None:
        self.printer = printer
        self.enabled = False
        self.bar: Any = None
        self.url: str | None = None
        self.task: Any = None

    def __enter__(self) -> _progress_bar:
        self.enabled = self.printer.verbosity >= 0 and self.printer.err.isatty()
        return self

    def update(self, url: str, done: int, total: int | None) -> None:
        if self.bar is None or url != self.url:
            self.finish()
            self._start(url, total)
        self.bar.update(self.task, completed=done, total=total)

    def _start(self, url: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        colour = self.printer.paint("", "0", stream="err") != ""
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            # MiB and GiB, as the result lines count.
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            console=Console(file=self.printer.err, no_color=not colour),
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.url = url
        self.task = self.bar.add_task(url.rsplit("/", 1)[-1], total=total)
        self.bar.start()

    def note(self, text: str) -> None:
        if self.bar is None:
            self.printer.note(text)
        else:
            self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def finish(self) -> None:
        """Erase the bar, if one is shown."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
            self.url = None

    def __exit__(self, *exc: object) -> None:
        self.finish()


@vm_group.command(help="Write what libvirt has back into vms.json, losslessly.")
@click.argument("names", nargs=-1, metavar="[NAME...]", shell_complete=_complete_names)
@click.option("--all", "all_", is_flag=True, help="Also add every libvirt domain not in vms.json.")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@pass_cli
def capture(app: Cli, names: tuple[str, ...], all_: bool, dry_run: bool) -> None:
    run_capture(app, names, all_=all_, dry_run=dry_run)


@click.command(
    name="doctor",
    help="Check that this host can run the manifest's VMs: virsh, libvirt, KVM, firmware, "
    "swtpm, networks, bridges, and the disk and ISO paths QEMU must reach.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_cli
def doctor(app: Cli, as_json: bool) -> None:
    from bkt_vm_plugin.doctor import doctor as run_doctor

    report = run_doctor(vm_subsystem(app))
    if as_json:
        app.printer.json(report.to_json())
    else:
        from bkt_core.output import DIM, GREEN, RED, YELLOW

        width = max(len(c.check) for c in report.checks)
        colours = {"ok": GREEN, "warn": YELLOW, "fail": RED, "skip": DIM}
        for c in report.checks:
            status = app.printer.paint(c.status.ljust(4), colours[c.status])
            hint = f" (fix: {c.hint})" if c.hint and c.status in ("warn", "fail") else ""
            app.printer.data(f"{status}  {c.check.ljust(width)}  {c.message}{hint}")
    failed = report.failed
    if failed:
        raise OperationError(
            f"{len(failed)} of {len(report.checks)} checks failed: "
            + ", ".join(c.check for c in failed)
        )


def every_subsystem(app: Cli, verb: str, *, dry_run: bool = False, check: bool = False) -> None:
    """What ``bkt sync``, ``bkt status`` and ``bkt capture`` do for the VM subsystem."""
    if verb == "sync":
        run_sync(app, dry_run=dry_run, check=check, as_json=False)
    elif verb == "status":
        run_status(app, all_=False, as_json=False)
    else:
        run_capture(app, (), all_=False, dry_run=dry_run)


def run_capture(app: Cli, names: tuple[str, ...], *, all_: bool, dry_run: bool) -> None:
    from bkt_vm_plugin.report import print_capture

    report = vm_subsystem(app).capture(names, all=all_, dry_run=dry_run)
    print_capture(app.printer, report)


vm_group.every_subsystem = every_subsystem  # type: ignore[attr-defined]
