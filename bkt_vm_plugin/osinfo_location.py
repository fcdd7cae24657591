"""Where the osinfo database is, and what identifies its content: all that a command needs
of the database when no VM names an OS (the key of the cache of validated manifests), kept
apart from :mod:`bkt_vm_plugin.osinfo` so that it costs no more than a few ``stat`` calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bkt_core.cache import sha256_hex

__all__ = ["INDEX_FORMAT", "PACKAGED_ROOTS", "database_identity", "database_roots"]

#: The format of the cached index; a change of what it holds changes this.
INDEX_FORMAT = 1


# -- where the database is -------------------------------------------------------------------


def database_roots(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The directories libosinfo reads, in order (later ones override earlier ones); they
    need not exist."""
    env = os.environ if environ is None else environ
    system = env.get("OSINFO_SYSTEM_DIR") or env.get("OSINFO_DATA_DIR")
    if system:
        roots = [Path(system)]
    else:
        roots = [Path("/usr/share/osinfo")]
        older = Path("/usr/share/libosinfo/db")
        if not roots[0].is_dir() and older.is_dir():
            roots = [older]
    roots.append(Path(env.get("OSINFO_LOCAL_DIR") or "/etc/osinfo"))
    user = env.get("OSINFO_USER_DIR")
    if user:
        roots.append(Path(user))
    else:
        config = env.get("XDG_CONFIG_HOME", "")
        home = env.get("HOME", "")
        if config.startswith("/"):
            roots.append(Path(config) / "osinfo")
        elif home.startswith("/"):
            roots.append(Path(home) / ".config" / "osinfo")
    return roots


def _stat_line(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return f"{path} -"
    return f"{path} {info.st_mtime_ns} {info.st_size} {info.st_ino}"


#: Where distributions install the database: its files are replaced by a package upgrade
#: (which changes their directories), never edited in place.
PACKAGED_ROOTS = (Path("/usr/share/osinfo"), Path("/usr/share/libosinfo/db"))


def database_identity(roots: Sequence[Path], packaged: Sequence[Path] | None = None) -> str | None:
    """A string that changes whenever the database in ``roots`` may have changed; None when
    there is no database (no root has an ``os`` directory). Cheap: the ``VERSION`` file and,
    for a root in ``packaged`` (a package's files are replaced, not edited, so its
    directories change), its directories; for every other root (``$OSINFO_SYSTEM_DIR``
    elsewhere, the local and user directories: edited by hand) every file. ``packaged`` is
    :data:`PACKAGED_ROOTS` when None."""
    packaged = PACKAGED_ROOTS if packaged is None else packaged
    lines = [f"format {INDEX_FORMAT}"]
    found = False
    for index, root in enumerate(roots):
        top = os.path.join(root, "os")
        lines.append(f"root {root}")
        if not os.path.isdir(top):
            continue
        found = True
        try:
            with open(os.path.join(root, "VERSION"), "rb") as version:
                lines.append("version " + version.read(256).decode("utf-8", "replace").strip())
        except OSError:
            lines.append("version -")
        if index == 0 and Path(root) in packaged:
            # The packaged database: its directories, not its ~1000 files.
            lines.append(_stat_line(top))
            try:
                vendors = sorted(e.name for e in os.scandir(top) if e.is_dir())
            except OSError:
                vendors = []
            lines.extend(_stat_line(os.path.join(top, v)) for v in vendors)
            continue
        for directory, dirs, files in os.walk(top):
            dirs.sort()
            lines.append(_stat_line(directory))
            lines.extend(_stat_line(os.path.join(directory, f)) for f in sorted(files))
    if not found:
        return None
    return sha256_hex("\n".join(lines).encode())
