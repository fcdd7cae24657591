"""``bkt vm capture``: what libvirt holds, merged back into ``vms.json`` without loss.

Capture reads each domain (one batched observation, one batched ``domblkinfo``), parses it
with the host's domain mapping, and merges it into the VM's manifest entry
(:mod:`bkt_vm_plugin.capture_merge` says how). The whole manifest is then validated with
every merged VM (rules across VMs, such as two VMs on one disk: a VM that breaks one is
reverted or skipped, not the whole capture).

Decisions:

- A manifest directory that does not exist is created (like ``mkdir -p``), and a note says
  so; with ``--dry-run`` nothing is created and the note says it would be.
- A missing ``vms.json`` is created with ``"$schema": "vms.schema.json"``, and
  ``vms.schema.json`` beside it when absent, even when every domain was skipped (then the
  manifest has no VMs and a note says so). An existing manifest is rewritten only when its
  content changes; when every domain was skipped nothing is written and a note says so.
- ``$schema`` is kept as it was, ``null`` included. Both files are written atomically.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bkt_core.capture_report import CaptureEntry, CaptureReport
from bkt_core.errors import BktError, ManifestError, OperationError
from bkt_vm_plugin.capture_merge import (
    ALL_FIELDS,
    Capturer,
    DiskSize,
    Json,
    Merged,
    compact_json,
    field_changes,
    plain_json,
    vm_path,
)

if TYPE_CHECKING:
    from bkt_core.manifest import ManifestSource
    from bkt_vm_plugin.definition import VmDefinition, VmManifest
    from bkt_vm_plugin.domain_xml import DomainContext, Parsed
    from bkt_vm_plugin.observe import Observation
    from bkt_vm_plugin.subsystem import VmSubsystem
    from bkt_vm_plugin.virsh import Virsh

__all__ = ["capture", "capturer_of"]

SCHEMA_REF = "vms.schema.json"


def capturer_of(sub: VmSubsystem, *, exists: Callable[[str], bool] = os.path.exists) -> Capturer:
    """The :class:`Capturer` of ``sub``'s host: its model and mapping, the user's home and
    ISO cache, the host's full manifest validator and the defaults its plugins fill."""
    from bkt_vm_plugin.defaults import fill_vm, proposed
    from bkt_vm_plugin.iso import find_cache_dir
    from bkt_vm_plugin.paths import home_dir

    home = home_dir()
    cache = find_cache_dir()
    return Capturer(
        mapping=sub.mapping,
        vm_fields=sub.vm_fields,
        home=home,
        iso_cache=None if cache is None else str(cache),
        exists=exists,
        validate=functools.partial(_problems, sub, home=home),
        defaults=lambda name, vm: {f: v for f, (_p, v) in proposed(name, vm, sub.hooks).items()},
        fill=lambda name, vm: fill_vm(name, vm, sub.hooks),
    )


def _problems(
    sub: VmSubsystem, text: str, *, home: str | None
) -> tuple[Any, list[tuple[str, str]]]:
    """The manifest model of a text, or None and every problem the full validator finds in
    it, as (path, message)."""
    try:
        return _validate(sub, text, home), []
    except ManifestError as exc:
        return None, [(d.path, d.message) for d in exc.diagnostics] or [("", exc.message)]


def _validate(sub: VmSubsystem, text: str, home: str | None) -> VmManifest:
    from bkt_core.manifest import validate_text
    from bkt_vm_plugin.model import to_manifest

    return to_manifest(
        validate_text(
            text,
            str(sub.manifest_path),
            sub.manifest_model,
            validators=[functools.partial(sub.validate_document, home=home)],
            context={"home": home},
        )
    )


@dataclass
class _Existing:
    """The manifest as it is on disk: its model, its document as written (the sources
    merged), and the sources it was merged from."""

    vms: Mapping[str, VmDefinition]
    document: dict[str, Json]
    sources: Sequence[ManifestSource] = ()


def capture(
    sub: VmSubsystem, names: Sequence[str] = (), *, all: bool = False, dry_run: bool = False
) -> CaptureReport:
    """Captures the domains ``names`` (every manifest VM when empty; with ``all``, also every
    libvirt domain the manifest does not have) into ``vms.json``. With ``dry_run`` nothing is
    written (nor created). Raises ManifestError for an invalid manifest (exit 2) and
    OperationError when libvirt cannot be reached or a NAME is not a domain (exit 1)."""
    from bkt_core.manifest import locked

    directory = Path(sub.host.manifest_dir)
    notes: list[str] = []
    if not directory.is_dir():
        if directory.exists():
            raise OperationError(f"cannot capture into {directory}: it is not a directory")
        if dry_run:
            notes.append(f"{directory} does not exist: capture would create it")
            return _capture(sub, names, all, dry_run, notes)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OperationError(f"cannot create {directory}: {exc.strerror or exc}") from exc
        notes.append(f"created directory {directory}")
    # Two captures of one manifest must not lose each other's writes: the lock is held from
    # reading the manifest to renaming the new one into place.
    with locked(directory):
        return _capture(sub, names, all, dry_run, notes)


def _read_existing(sub: VmSubsystem, home: str | None) -> _Existing | None:
    from bkt_core.manifest import merge_sources
    from bkt_vm_plugin.defaults import fill_defaults

    sources = sub.sources()
    if not sources:
        return None
    # Validated as every command validates it: taken from the cache when it holds it.
    manifest = sub.validated(sources, home=home)
    # Each VM with the defaults plugins fill: a value the domain has that equals one is not
    # written, and a field a plugin fills is managed.
    manifest = fill_defaults(manifest, sub.hooks)
    document, _locations = merge_sources(sources)
    return _Existing(manifest.vms, document, sources)


def _observe(virsh: Virsh, known: Sequence[str], all: bool) -> Observation:
    from bkt_vm_plugin.observe import Observation, observe

    seen = observe(virsh, known)
    if not all:
        return seen
    extra = sorted(seen.domains - set(known))
    if not extra:
        return seen
    more = observe(virsh, extra)
    return Observation(
        domains=seen.domains | more.domains,
        active=more.active,
        autostart=more.autostart,
        definitions={**seen.definitions, **more.definitions},
        firmware=seen.firmware,
    )


def _disk_sizes(virsh: Virsh, disks: Mapping[str, str]) -> dict[str, DiskSize]:
    """The virtual size of each domain's disk (name -> file), in one virsh process."""
    if not disks:
        return {}
    names = list(disks)
    replies = virsh.batch([["domblkinfo", "--domain", n, "--device", disks[n]] for n in names])
    out: dict[str, DiskSize] = {}
    for name, reply in zip(names, replies, strict=True):
        if not reply.ok:
            message = reply.message
            if "No such file or directory" in message:
                out[name] = DiskSize(missing=True)
            else:
                out[name] = DiskSize(error=message)
            continue
        size = None
        for line in reply.stdout.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Capacity" and value.strip().isdigit():
                size = int(value.strip())
        if size is None:
            out[name] = DiskSize(error=f"domblkinfo printed {json.dumps(reply.stdout.strip())}")
        else:
            out[name] = DiskSize(bytes=size)
    return out


def _capture(
    sub: VmSubsystem, names: Sequence[str], all: bool, dry_run: bool, notes: list[str]
) -> CaptureReport:
    from bkt_vm_plugin.rules import name_problem

    path = Path(sub.manifest_path)
    capturer = capturer_of(sub)
    existing = _read_existing(sub, capturer.home) if path.parent.is_dir() else None
    base_vms: Mapping[str, VmDefinition] = existing.vms if existing else {}
    raw_vms: dict[str, dict[str, Json]] = dict(existing.document["vms"]) if existing else {}

    requested = list(dict.fromkeys(names))
    known = sorted(set(requested or base_vms))
    observation = _observe(sub.virsh, [n for n in known if name_problem(n) is None], all)
    _check_requested(requested, observation, base_vms, path)
    wanted = sorted(set(known) | (set(observation.domains) if all else set()))

    entries: dict[str, CaptureEntry] = {}
    warnings: list[str] = []
    read = _read_domains(capturer, wanted, observation, base_vms, entries, warnings)
    merged = _merge_domains(sub, capturer, read, base_vms, raw_vms)
    merged = _check_together(capturer, raw_vms, merged)
    order = capturer.fields
    new_vms = _apply(merged, raw_vms, order, entries, warnings)

    document = _new_document(existing, new_vms, order)
    created = existing is None
    ordered = tuple(entries[n] for n in sorted(entries))
    _note_nothing_captured(notes, path, wanted, ordered, created)

    written = False
    if dry_run:
        if created:
            notes.append(f"{path} does not exist: capture would create it")
        notes.append("dry run: nothing was written")
    elif existing is None or document != existing.document:
        _write_document(sub, capturer, path, document, existing, notes)
        written = True
    return CaptureReport(
        entries=ordered,
        warnings=tuple(warnings),
        path=str(path),
        written=written,
        dry_run=dry_run,
        created=created and written,
        notes=tuple(notes),
        key=sub.manifest_key,
    )


def _merge_domains(
    sub: VmSubsystem,
    capturer: Capturer,
    read: Mapping[str, tuple[Parsed, DomainContext]],
    base_vms: Mapping[str, VmDefinition],
    raw_vms: Mapping[str, dict[str, Json]],
) -> dict[str, Merged]:
    """Each domain that was read merged into its manifest entry (the disks' virtual sizes
    asked for in one virsh process)."""
    disks = {n: p for n, (parsed, _) in read.items() if (p := capturer.disk_path(parsed))}
    sizes = _disk_sizes(sub.virsh, disks)
    return {
        name: capturer.merge(
            name, base_vms.get(name), raw_vms.get(name), parsed, ctx, sizes.get(name, DiskSize())
        )
        for name, (parsed, ctx) in read.items()
    }


def _new_document(
    existing: _Existing | None, new_vms: Mapping[str, Mapping[str, Json]], order: Sequence[str]
) -> dict[str, Json]:
    """The manifest capture writes: ``$schema`` as it was (a new manifest gets
    :data:`SCHEMA_REF`), then the VMs by name, each with its fields in schema order."""
    document: dict[str, Json] = {}
    if existing is None:
        document["$schema"] = SCHEMA_REF
    elif "$schema" in existing.document:
        document["$schema"] = existing.document["$schema"]
    document["vms"] = {n: _in_order(new_vms[n], order) for n in sorted(new_vms)}
    return document


def _write_document(
    sub: VmSubsystem,
    capturer: Capturer,
    path: Path,
    document: dict[str, Json],
    existing: _Existing | None,
    notes: list[str],
) -> None:
    """Write ``document``, once it has loaded again: back to the files it was merged from
    when there are several, else to ``path``."""
    from bkt_core.manifest import dump_manifest

    text = dump_manifest(document)
    # What capture writes must load again; anything else is a bug, and nothing is written.
    _validate(sub, text, capturer.home)
    if existing is not None and len(existing.sources) > 1:
        _write_sources(capturer, existing, document, notes)
    else:
        _write(sub, path, text, existing is None, notes)


def _check_requested(
    requested: Sequence[str],
    observation: Observation,
    base_vms: Mapping[str, VmDefinition],
    path: Path,
) -> None:
    """Every name the user gave is a libvirt domain (capture reads domains)."""
    for name in requested:
        if name not in observation.domains:
            in_manifest = name in base_vms
            raise OperationError(
                f"VM {name} is not a libvirt domain",
                hint=(
                    f"it is in {path}: `bkt vm sync {name}` creates it"
                    if in_manifest
                    else "`bkt vm status --all` lists the domains"
                ),
            )


def _read_domains(
    capturer: Capturer,
    wanted: Sequence[str],
    observation: Observation,
    base_vms: Mapping[str, VmDefinition],
    entries: dict[str, CaptureEntry],
    warnings: list[str],
) -> dict[str, tuple[Parsed, DomainContext]]:
    """Each wanted domain parsed in its context; a domain that cannot be read gets its
    entry (skipped, or unchanged when libvirt does not have it) instead."""
    from bkt_vm_plugin.rules import name_problem

    read: dict[str, tuple[Parsed, DomainContext]] = {}
    for name in wanted:
        problem = name_problem(name)
        if problem is not None:
            entries[name] = CaptureEntry(
                name, "skipped", reasons=(f"its name cannot be a manifest VM name: {problem}",)
            )
            continue
        if name not in observation.domains:
            warnings.append(
                f"VM {name} is not defined in libvirt; its manifest entry is kept as it is"
            )
            entries[name] = CaptureEntry(name, "unchanged")
            continue
        reply = observation.definitions.get(name)
        if reply is None:
            entries[name] = CaptureEntry(
                name, "skipped", reasons=("it disappeared while capture ran",)
            )
            continue
        if not reply.ok:
            entries[name] = CaptureEntry(
                name, "skipped", reasons=(f"cannot read its definition: {reply.message}",)
            )
            continue
        try:
            read[name] = capturer.read(
                name, base_vms.get(name), reply.stdout, observation.facts(name)
            )
        except BktError as exc:
            entries[name] = CaptureEntry(name, "skipped", reasons=(exc.message,), hint=exc.hint)
    return read


def _apply(
    merged: Mapping[str, Merged],
    raw_vms: Mapping[str, dict[str, Json]],
    order: Sequence[str],
    entries: dict[str, CaptureEntry],
    warnings: list[str],
) -> dict[str, dict[str, Json]]:
    """The manifest's VMs with every merged one applied; each merged VM's entry (added,
    changed, unchanged or skipped) and the warnings for the fields that kept their value."""
    new_vms = dict(raw_vms)
    for name, result in merged.items():
        for f, reason in result.kept:
            warnings.append(f"VM {name}: {f} keeps its manifest value: {reason}")
        if result.written is None:
            entries[name] = CaptureEntry(name, "skipped", reasons=result.reasons)
            continue
        old = raw_vms.get(name)
        if old is None:
            changes = tuple((f, "", compact_json(v)) for f, v in result.written.items())
            entries[name] = CaptureEntry(name, "added", changes=changes)
        elif old == result.written:
            entries[name] = CaptureEntry(name, "unchanged")
        else:
            entries[name] = CaptureEntry(
                name, "changed", changes=field_changes(old, result.written, order)
            )
        new_vms[name] = result.written
    return new_vms


def _note_nothing_captured(
    notes: list[str],
    path: Path,
    wanted: Sequence[str],
    entries: Sequence[CaptureEntry],
    created: bool,
) -> None:
    if not wanted:
        notes.append(
            f"nothing to capture: {path} has no VMs; name domains (`bkt vm capture NAME...`) "
            "or pass --all to capture every libvirt domain"
        )
    elif all_skipped(entries):
        notes.append(
            "every domain was skipped: nothing was captured"
            + (f"; {path} is created with no VMs" if created else "")
        )


def all_skipped(entries: Sequence[CaptureEntry]) -> bool:
    return bool(entries) and all(e.kind == "skipped" for e in entries)


def _in_order(entry: Mapping[str, Json], order: Sequence[str]) -> dict[str, Json]:
    keys = [*(f for f in order if f in entry), *(k for k in entry if k not in order)]
    return {k: entry[k] for k in keys}


def _write(sub: VmSubsystem, path: Path, text: str, created: bool, notes: list[str]) -> None:
    from bkt_core.manifest import dump_manifest, write_atomic

    write_atomic(path, text)
    if not created:
        notes.append(f"wrote {path}")
        return
    schema = path.parent / SCHEMA_REF
    if schema.exists():
        notes.append(f"created {path}")
        return
    write_atomic(schema, dump_manifest(sub.schema()))
    notes.append(f"created {path} and {schema}")


def _write_sources(
    capturer: Capturer, existing: _Existing, document: dict[str, Json], notes: list[str]
) -> None:
    """Writes ``document`` back into the sources it was merged from: each field to the file
    it came from (an override file for a field it overrides, ``vms.json`` otherwise), every
    changed file atomically. No file is created."""
    from bkt_core.manifest import dump_manifest, split_document, write_atomic

    sources = existing.sources
    _keep_overridden_defaults(capturer, sources, document)
    try:
        parts = split_document([s.document for s in sources], document)
    except ValueError as exc:
        files = ", ".join(str(s.path) for s in sources)
        raise OperationError(
            f"cannot write the capture back to {files} (nothing was written): {exc}"
        ) from None
    for source, part in zip(sources, parts, strict=True):
        if part != source.document:
            write_atomic(source.path, dump_manifest(part))
            notes.append(f"wrote {source.path}")


def _keep_overridden_defaults(
    capturer: Capturer, sources: Sequence[ManifestSource], document: dict[str, Json]
) -> None:
    """A field capture leaves out (it has its default) that one file sets over another is
    written as its default value instead: leaving it out of the override would let the value
    of the file below win."""
    for name, entry in document.get("vms", {}).items():
        layout = capturer.vm_fields
        for field_name in layout.names:
            if field_name in entry or layout.is_required(field_name):
                continue
            holders = [s for s in sources if _has(s.document, ("vms", name, field_name))]
            if len(holders) > 1:
                entry[field_name] = plain_json(layout.default(field_name))
        document["vms"][name] = _in_order(entry, capturer.fields)


def _has(document: Json, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    return True


def _check_together(
    capturer: Capturer, raw_vms: Mapping[str, dict[str, Json]], merged: dict[str, Merged]
) -> dict[str, Merged]:
    """Validates the manifest with every merged VM; a VM that breaks a rule across VMs (two
    VMs on one disk) is reverted to its manifest entry, or skipped when it is new."""
    from bkt_core.manifest import dump_manifest

    merged = dict(merged)
    while True:
        touched = [
            n for n, m in merged.items() if m.written is not None and m.written != raw_vms.get(n)
        ]
        if not touched:
            return merged
        # Untouched VMs first: a rule between two VMs reports the later one.
        vms: dict[str, Json] = {n: e for n, e in raw_vms.items() if n not in touched}
        vms.update({n: merged[n].written for n in touched})
        manifest, problems = capturer.validate(dump_manifest({"vms": vms}))
        if manifest is not None:
            return merged
        blamed: dict[str, list[str]] = {}
        for problem_path, message in problems:
            for n in touched:
                prefix = vm_path(n)
                if problem_path == prefix or problem_path.startswith((prefix + ".", prefix + "[")):
                    rest = problem_path[len(prefix) + 1 :] or "(the VM)"
                    blamed.setdefault(n, []).append(f"{rest}: {message}")
        if not blamed:
            return merged  # the final validation reports it; nothing is written
        for n, reasons in blamed.items():
            if n in raw_vms:
                merged[n] = Merged(dict(raw_vms[n]), kept=((ALL_FIELDS, "; ".join(reasons)),))
            else:
                merged[n] = Merged(None, reasons=tuple(reasons))
