"""Which UEFI firmware libvirt boots a domain with when the domain does not say.

``<os firmware='efi'>`` with neither firmware features nor a loader path (what virt-install
and virt-manager write for every UEFI guest) leaves the choice to libvirt. Older libvirt
(9.x) chooses each time the domain starts; newer libvirt (11.x) chooses when the domain is
defined or its definition loaded, and writes the choice into it. Either way the choice is the
first of the host's firmware descriptors (the JSON files of QEMU's firmware interoperability
format, in ``/etc/qemu/firmware`` and ``/usr/share/qemu/firmware``) that matches the domain.
On Debian and Fedora the first descriptor for q35 is OVMF with Secure Boot and Microsoft's
keys enrolled: such a guest boots with Secure Boot, whatever its definition seems to say.

This module repeats that choice from the same files, in the same order, with the same
matching rules, so that status, capture and sync read the firmware the domain really boots.
libvirt has no command that tells which descriptor it would pick (its domain capabilities
list the firmware files, not their features), so the descriptors are read directly; over a
remote URI they cannot be, and the choice is reported as unknown rather than guessed.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bkt_vm_plugin.host_firmware import HostFirmware

__all__ = ["Choice", "Descriptor", "HostFirmware", "choose", "read_descriptors", "search_dirs"]

# Descriptors are small; anything larger or more numerous is not a firmware descriptor.
MAX_DESCRIPTOR_BYTES = 1 << 20
MAX_DESCRIPTORS = 1000


@dataclass(frozen=True)
class Descriptor:
    """One firmware descriptor, as far as libvirt's choice depends on it."""

    source: str
    interfaces: frozenset[str]
    device: str
    executable: str | None
    mode: str
    targets: tuple[tuple[str, tuple[str, ...]], ...]
    features: frozenset[str]

    @property
    def secure_boot(self) -> bool:
        return "secure-boot" in self.features

    @property
    def enrolled_keys(self) -> bool:
        return "enrolled-keys" in self.features


@dataclass(frozen=True)
class Needs:
    """What a domain asks of its firmware besides the UEFI interface."""

    arch: str
    machine: str
    s3: bool = False
    s4: bool = False
    secure_loader: bool = False
    smm_off: bool = False


@dataclass(frozen=True)
class Choice:
    """The outcome: the descriptor libvirt picks, or why there is none bkt can name."""

    descriptor: Descriptor | None = None
    problem: str | None = None


def search_dirs(session: bool, env: Mapping[str, str], home: str | None) -> list[Path]:
    """Where libvirt looks for descriptors, lowest priority first: a file of the same name in
    a later directory replaces an earlier one. A session daemon also reads the user's own."""
    dirs = [Path("/usr/share/qemu/firmware"), Path("/etc/qemu/firmware")]
    if session:
        config = env.get("XDG_CONFIG_HOME") or (f"{home}/.config" if home else None)
        if config:
            dirs.append(Path(config) / "qemu" / "firmware")
    return dirs


def _read_json(path: Path) -> object:
    # O_NONBLOCK: a FIFO put where a descriptor should be must not hang the command.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_DESCRIPTOR_BYTES + 1)
    if len(data) > MAX_DESCRIPTOR_BYTES:
        raise ValueError("larger than 1 MiB")
    return json.loads(data)


def _parse(source: str, doc: object) -> Descriptor:
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    mapping = doc.get("mapping") or {}
    if not isinstance(mapping, dict):
        raise ValueError("mapping is not an object")
    executable = mapping.get("executable") or {}
    targets = []
    for target in doc.get("targets") or []:
        if not isinstance(target, dict):
            raise ValueError("a target is not an object")
        machines = tuple(str(m) for m in target.get("machines") or [])
        targets.append((str(target.get("architecture", "")), machines))
    return Descriptor(
        source=source,
        interfaces=frozenset(str(i) for i in doc.get("interface-types") or []),
        device=str(mapping.get("device", "")),
        executable=str(executable["filename"])
        if isinstance(executable, dict) and "filename" in executable
        else None,
        mode=str(mapping.get("mode", "split")),
        targets=tuple(targets),
        features=frozenset(str(f) for f in doc.get("features") or []),
    )


def read_descriptors(dirs: Sequence[Path]) -> list[Descriptor]:
    """The descriptors of ``dirs`` in libvirt's order: by file name, the last directory's file
    winning, an empty file hiding the others of its name. Raises ValueError (naming the file)
    for one that cannot be read: libvirt then refuses to start the domain, so there is no
    firmware to report."""
    chosen: dict[str, Path] = {}
    for directory in dirs:
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ValueError(f"{directory}: {exc.strerror}") from None
        for name in entries:
            if name.endswith(".json"):
                chosen[name] = directory / name
    if len(chosen) > MAX_DESCRIPTORS:
        raise ValueError(f"more than {MAX_DESCRIPTORS} firmware descriptors")
    out = []
    for name in sorted(chosen):
        path = chosen[name]
        try:
            if path.stat().st_size == 0:
                continue
            out.append(_parse(str(path), _read_json(path)))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ValueError(f"firmware descriptor {path}: {reason}") from None
    return out


def _matches(fw: Descriptor, needs: Needs) -> bool:
    if "uefi" not in fw.interfaces:
        return False
    if not any(
        arch == needs.arch and any(fnmatch.fnmatchcase(needs.machine, m) for m in machines)
        for arch, machines in fw.targets
    ):
        return False
    if needs.s3 and "acpi-s3" not in fw.features:
        return False
    if needs.s4 and "acpi-s4" not in fw.features:
        return False
    if needs.secure_loader and "requires-smm" not in fw.features:
        return False
    return not (fw.device == "flash" and fw.mode != "split")


def choose(descriptors: Sequence[Descriptor], needs: Needs) -> Choice:
    """libvirt's pick for a domain with no firmware features and no loader path."""
    for fw in descriptors:
        if _matches(fw, needs):
            if needs.smm_off and "requires-smm" in fw.features:
                return Choice(
                    fw,
                    problem=f"libvirt would boot it with {fw.executable or fw.source}, which "
                    "needs SMM, and the domain turns SMM off: it cannot start",
                )
            return Choice(fw)
    return Choice(problem=f"no UEFI firmware descriptor matches machine {needs.machine}")
