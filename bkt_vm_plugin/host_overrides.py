"""The ``host_overrides`` default plugin: per-host override files merged over a manifest.

A dotfiles repository shares one ``vms.json`` between machines; ``vms.<host>.json`` beside it
holds what differs on machine ``<host>`` (a laptop gives a VM 4 GiB where the desktop gives
16). ``<host>`` is ``$BKT_HOSTNAME`` when set, else the short host name (what
``socket.gethostname()`` says, up to its first dot). The override is merged over
``vms.json`` field by field (:func:`bkt_core.manifest.merge_documents`): objects member by
member, any other value (a number, a string, an array such as ``iso_sources``) replaces the
base's whole. An override may add a VM that ``vms.json`` lacks (it must then be complete);
it cannot remove a field, only set it (to its default value, say). It applies only over an
existing ``vms.json``. The same holds for any subsystem's manifest file (``NAME.<host>.EXT``).

It is a plugin like any other, through :func:`~bkt_core.hookspecs.bkt_manifest_sources`:
``--disable-plugin host_overrides`` reads ``vms.json`` alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bkt_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkt_core.manifest import ManifestSource

__all__ = ["HOSTNAME_ENV", "bkt_manifest_sources", "hostname", "override_file"]

#: The variable that names this machine for its override file, for machines whose host name
#: is not the name their override uses (and for tests).
HOSTNAME_ENV = "BKT_HOSTNAME"


def hostname() -> str:
    """The name of this machine's override: ``$BKT_HOSTNAME`` when set and not empty, else
    the host name up to its first dot. Raises OperationError for a name that is not one file
    name part (empty, ``.``-led, or with a ``/``)."""
    from bkt_core.errors import OperationError

    name = os.environ.get(HOSTNAME_ENV, "").strip()
    source = f"${HOSTNAME_ENV}"
    if not name:
        # The kernel's node name is what socket.gethostname() returns, without importing
        # socket (milliseconds on every command that reads a manifest).
        name, source = os.uname().nodename.split(".")[0], "the host name"
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise OperationError(
            f"{source} {name!r} cannot name a manifest override file",
            hint=f"set {HOSTNAME_ENV} to this machine's name (letters, digits, - and _)",
        )
    return name


def override_file(file_name: str, host: str) -> str:
    """The override of ``file_name`` on ``host``: ``vms.json`` -> ``vms.HOST.json``."""
    path = Path(file_name)
    return f"{path.stem}.{host}{path.suffix}"


@hookimpl(trylast=True)
def bkt_manifest_sources(
    manifest_dir: Path, file_name: str, sources: Sequence[ManifestSource]
) -> Iterable[ManifestSource] | None:
    # trylast: the host's own values win over whatever other plugins contribute.
    if not sources:
        return None  # nothing to override
    from bkt_core.manifest import ManifestSource

    override = ManifestSource.read(Path(manifest_dir) / override_file(file_name, hostname()))
    if override is None:
        return None
    return [*sources, override]
