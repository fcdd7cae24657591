"""How ``bkt vm`` commands show their results: the sync plan and summary, the status table,
capture's changes.

Everything goes through :class:`bkt_core.output.Printer` (stdout for data, stderr for
warnings and errors); users' scripts and the tests know these texts, so they change only on
purpose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from bkt_core.output import GREEN, RED, YELLOW, Printer

if TYPE_CHECKING:
    # Only annotations name them: status prints a status report without the plan's classes.
    from bkt_core.capture_report import CaptureReport
    from bkt_core.plan import SyncPlan, SyncReport
    from bkt_core.status_report import StatusReport

Stream = Literal["out", "warning", "note", "hint"]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def print_plan(printer: Printer, plan: SyncPlan) -> None:
    for entry in plan.entries:
        for warning in entry.warnings:
            printer.warning(f"VM {entry.name}: {warning}")
    if not plan.changes_anything and not plan.has_errors and printer.verbosity < 1:
        n = len(plan.entries)
        printer.data(
            "nothing to do: no VMs to sync"
            if n == 0
            else f"nothing to do: {plural(n, 'VM')} in sync"
        )
        return
    for entry in plan.entries:
        disk = entry.details.get("create_disk")
        if entry.action == "create":
            printer.data(f"{printer.paint('+', GREEN)} create {entry.name}")
        elif entry.action == "update":
            printer.data(f"{printer.paint('~', YELLOW)} update {entry.name}")
        elif entry.action == "unchanged":
            if printer.verbosity >= 0:
                printer.data(f"= unchanged {entry.name}")
            continue
        else:
            printer.data(f"{printer.paint('!', RED)} error {entry.name}: {entry.message}")
            if entry.hint:
                printer.hint(entry.hint)
            continue
        if disk:
            # The plugin that planned the disk says what it will do (DiskCreation.describe:
            # a qcow2 overlay on a base image, an LVM volume, ...); the JSON form is the same.
            creation = getattr(entry.payload, "creation", None)
            if creation is not None and callable(getattr(creation, "describe", None)):
                printer.data(f"    {creation.describe()}")
            else:
                where = f" in storage pool {disk['pool']}" if disk.get("pool") else ""
                printer.data(
                    f"    create disk {disk['path']} ({disk['size_gb']} GiB, {disk['format']})"
                    f"{where}"
                )
        for change in entry.changes:
            printer.data(f"    {change}")
        if entry.pending_reboot:
            printer.data(
                f"    note: {entry.name} is running; the new definition takes effect at its "
                "next boot"
            )
        for note in entry.notes:
            printer.data(f"    note: {note}")


def summary_line(report: SyncReport) -> str:
    s = report.summary()
    return f"{s.created} created, {s.updated} updated, {s.unchanged} unchanged, {s.failed} failed"


def print_results(printer: Printer, report: SyncReport) -> None:
    """After execution: each failure, then the summary (only when anything was to be done)."""
    if not report.plan.changes_anything and not report.failed:
        return
    results = {r.name: r for r in report.results or ()}
    for name in report.failed:
        result = results.get(name)
        printer.error(f"VM {name}: {(result and result.message) or 'failed'}")
        if result is not None and result.hint:
            printer.hint(result.hint)
    printer.data(summary_line(report))


def print_dry_run(printer: Printer, report: SyncReport) -> None:
    """The summary of a dry run: data, on stdout like the summary of a real sync."""
    if report.plan.changes_anything or report.plan.has_errors:
        s = report.summary()
        printer.data(
            f"dry run: {s.created} to create, {s.updated} to update, {s.unchanged} unchanged, "
            f"{s.failed} failed; nothing was changed"
        )


def print_status(printer: Printer, report: StatusReport) -> None:
    width = max([4, *(len(r.name) for r in report.rows)])
    printer.data(f"{'NAME'.ljust(width)}  {'STATE'.ljust(7)}  SYNC")
    for row in report.rows:
        state = row.state.ljust(7)
        if row.state == "running":
            state = printer.paint(state, GREEN)
        elif row.state == "missing":
            state = printer.paint(state, RED)
        if not row.managed:
            sync = "unmanaged"
        elif row.in_sync is None:
            sync = "-"
        elif row.in_sync:
            sync = "in sync"
        else:
            sync = printer.paint("drift: " + ", ".join(row.drift), YELLOW)
        if row.pending_restart:
            sync += " " + printer.paint(
                f"(restart pending: {', '.join(row.pending_restart)})", YELLOW
            )
        printer.data(f"{row.name.ljust(width)}  {state}  {sync}")
    # Why a definition could not be read, after the table, as sync reports a failed VM.
    for row in report.rows:
        if row.message is not None:
            printer.error(f"VM {row.name}: {row.message}")
            if row.hint:
                printer.hint(row.hint)


def format_capture(report: CaptureReport, verbosity: int = 0) -> list[tuple[Stream, str]]:
    """What ``bkt vm capture`` prints, as (stream, line): ``warning``, ``note`` and ``hint``
    lines go to stderr (through ``Printer.warning`` / ``.note`` / ``.hint``; a skipped VM's
    hint follows its line), ``out`` lines to stdout.
    Warnings first, then each VM (``= unchanged N`` only at ``-v``), the summary, the notes."""
    lines: list[tuple[Stream, str]] = [("warning", w) for w in report.warnings]
    for entry in report.entries:
        if entry.kind == "added":
            lines.append(("out", f"+ add {entry.name}"))
            lines += [("out", f"    {f}: {new}") for f, _old, new in entry.changes]
        elif entry.kind == "changed":
            lines.append(("out", f"~ change {entry.name}"))
            lines += [("out", f"    {f}: {old} -> {new}") for f, old, new in entry.changes]
        elif entry.kind == "unchanged":
            if verbosity >= 1:
                lines.append(("out", f"= unchanged {entry.name}"))
        else:
            lines.append(("out", f"! skip {entry.name}: {'; '.join(entry.reasons)}"))
            if entry.hint:
                lines.append(("hint", entry.hint))
    added, changed = report.count("added"), report.count("changed")
    unchanged, skipped = report.count("unchanged"), report.count("skipped")
    total = added + changed + unchanged
    lines.append(
        (
            "out",
            f"captured {total} VM{'' if total == 1 else 's'}: {added} added, {changed} changed, "
            f"{unchanged} unchanged; skipped {skipped}",
        )
    )
    lines += [("note", n) for n in report.notes]
    return lines


_MARKS = {"+": GREEN, "~": YELLOW, "!": RED}


def print_capture(printer: Printer, report: CaptureReport) -> None:
    """Prints :func:`format_capture`'s lines, the markers coloured when the printer colours."""
    for stream, line in format_capture(report, printer.verbosity):
        if stream == "warning":
            printer.warning(line)
        elif stream == "note":
            printer.note(line)
        elif stream == "hint":
            printer.hint(line)
        else:
            mark = line[:1]
            if mark in _MARKS and line[1:2] == " ":
                line = printer.paint(mark, _MARKS[mark]) + line[1:]
            printer.data(line)
