"""The firmware of the host a libvirt URI leads to (:class:`HostFirmware`), as the
observation of every status and sync carries it.

Apart from the descriptors and libvirt's choice among them (:mod:`bkt_vm_plugin.firmware`,
which re-exports :class:`HostFirmware`): a domain bkt defined pins its firmware, so the
descriptors are read, and that module imported, only for one that leaves the choice to libvirt.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from bkt_vm_plugin.firmware import Choice, Descriptor, Needs

__all__ = ["HostFirmware"]


def _session(uri: str | None, env: Mapping[str, str]) -> bool | None:
    """Whether ``uri`` (as virsh resolves it) leads to a local session daemon (True) or the
    local system daemon (False); None when it leads elsewhere."""
    uri = uri or env.get("LIBVIRT_DEFAULT_URI") or env.get("VIRSH_DEFAULT_CONNECT_URI")
    if not uri:
        return os.geteuid() != 0
    # scheme[+transport]://[host]/path[?query], read by hand: urllib costs start-up time.
    scheme, sep, rest = uri.partition("://")
    driver, _, transport = scheme.partition("+")
    host, _, path = rest.partition("/")
    if not sep or driver != "qemu" or host or transport not in ("", "unix"):
        return None
    return path.partition("?")[0].rstrip("/") == "session"


class HostFirmware:
    """The firmware descriptors of the host a libvirt URI leads to, read once, when first
    needed (from ``dirs`` instead of libvirt's directories when given)."""

    def __init__(
        self,
        uri: str | None,
        env: Mapping[str, str] | None = None,
        dirs: Sequence[Path] | None = None,
    ) -> None:
        self.uri = uri
        self.env = dict(os.environ if env is None else env)
        self.dirs = dirs

    @functools.cached_property
    def descriptors(self) -> list[Descriptor] | str:
        """The descriptors, or why they cannot be read."""
        from bkt_vm_plugin.firmware import read_descriptors, search_dirs

        dirs = self.dirs
        if dirs is None:
            session = _session(self.uri, self.env)
            if session is None:
                return f"the firmware descriptors of the host behind {self.uri} cannot be read"
            dirs = search_dirs(session, self.env, self.env.get("HOME") or None)
        try:
            return read_descriptors(dirs)
        except ValueError as exc:
            return str(exc)

    def choose(self, needs: Needs) -> Choice:
        from bkt_vm_plugin.firmware import Choice, choose

        found = self.descriptors
        if isinstance(found, str):
            return Choice(problem=found)
        return choose(found, needs)
