"""Shell completion of VM names for the ``bkt vm`` commands.

Completion runs on every <TAB>, so it is cheap and silent: the manifest is read as plain
JSON (only the keys of ``vms`` matter, so no model is built and nothing is validated), and
anything that goes wrong (no manifest, a broken one, no libvirt) means no candidates, never a
message: the shell would print it into the user's command line. libvirt is asked only where
a command takes domains the manifest does not describe, in one ``virsh list`` process.
"""

from __future__ import annotations

import json
import os
import stat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

#: A manifest larger than this is not read for completion: bkt_core.manifest's limit, which
#: is not imported from there because that module brings pydantic (a test keeps them equal).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

#: Seconds ``virsh list`` may take before completion gives up on libvirt's names.
VIRSH_TIMEOUT = 5.0


def vm_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The VM names a command's NAME argument may take that start with ``incomplete``: the
    manifest's VMs, and libvirt's domains too for ``capture``, for ``start``/``stop`` with
    ``--unmanaged`` and for ``status --all``. Names already on the command line are left
    out."""
    from click.shell_completion import CompletionItem

    try:
        names = _candidates(ctx)
    except Exception:  # completion must never print a traceback
        return []
    given = ctx.params.get(param.name or "")
    taken = set(given) if isinstance(given, tuple | list) else set()
    return [
        CompletionItem(name)
        for name in sorted(names)
        if name.startswith(incomplete) and name not in taken
    ]


def _candidates(ctx: click.Context) -> set[str]:
    from bkt_core.cli import resolve_manifest_dir
    from bkt_vm_plugin.subsystem import MANIFEST_FILE

    root = ctx.find_root().params
    vms = read_vms(resolve_manifest_dir(root.get("manifest_dir")) / MANIFEST_FILE)
    command = ctx.command.name
    if command == "fetch-iso":
        # Only a VM with a URL source has anything to fetch.
        vms = {name: vm for name, vm in vms.items() if _has_url_source(vm)}
    names = set(vms)
    params = ctx.params
    if command == "capture" or params.get("unmanaged") or params.get("all_"):
        names |= libvirt_names(root.get("connect"))
    return {name for name in names if _printable(name)}


def read_vms(path: os.PathLike[str] | str) -> dict[str, Any]:
    """The ``vms`` object of the manifest at ``path`` as plain JSON, or ``{}`` when the file
    is missing, unreadable, not a regular file, too large or not a JSON object with a ``vms``
    object."""
    try:
        # O_NONBLOCK: a FIFO in the manifest's place must not hang the shell.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return {}
            data = file.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            return {}
        document = json.loads(data)
    except (OSError, ValueError, RecursionError):
        return {}
    vms = document.get("vms") if isinstance(document, dict) else None
    return vms if isinstance(vms, dict) else {}


def libvirt_names(uri: str | None) -> set[str]:
    """The names of libvirt's domains on ``uri`` (one ``virsh list`` process), or none when
    virsh fails."""
    from bkt_core.errors import BktError
    from bkt_core.process import SubprocessRunner
    from bkt_vm_plugin.virsh import Virsh

    try:
        return set(Virsh(SubprocessRunner(), uri, timeout=VIRSH_TIMEOUT).domain_names())
    except BktError:
        return set()


def _has_url_source(vm: Any) -> bool:
    sources = vm.get("iso_sources") if isinstance(vm, dict) else None
    return isinstance(sources, list) and any(
        isinstance(source, dict) and "url" in source for source in sources
    )


def _printable(name: str) -> bool:
    # One candidate per line, words split at blanks: a name with either would break the
    # shell's side of the protocol (and is no valid VM name anyway).
    return bool(name) and name.isprintable() and not any(c.isspace() for c in name)
