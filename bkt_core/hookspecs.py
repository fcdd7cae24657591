"""The host-level hooks of bkt: the ones every subsystem shares.

A plugin is any object or module with functions named like these hooks and marked with
:data:`bkt_core.hookimpl`. It is found through the entry-point group ``bkt`` (see the README's
plugin guide) or passed to :class:`bkt_core.Host` by an embedder. Hooks are called with
keyword arguments; an implementation may accept any subset of them, so new arguments can be
added without breaking plugins. Wrappers (``wrapper=True``) may wrap the hooks whose result
pluggy computes (here ``bkt_add_hookspecs`` and ``bkt_cli_commands``); the hooks in
:data:`CALLED_ONE_BY_ONE` are called implementation by implementation, and a wrapper on them is
a start-up error.

A subsystem declares hooks of its own in a module like this one and adds it from
:func:`bkt_add_hookspecs` with :meth:`bkt_core.Host.add_hookspecs` (the VM subsystem's are in
``bkt_vm_plugin.hookspecs``). Such a module may hold its own :data:`RESULTS` and
:data:`CALLED_ONE_BY_ONE`, which the host merges into its contract checks.

Every result is checked against the type its hook declares (:data:`RESULTS`), and a plugin
that returns something else, exits, raises (any ``BaseException``) or runs past the per-hook
time limit is an error naming the plugin and the hook (:class:`bkt_core.host.Host`).

pluggy calls implementations last-registered first, ``tryfirst`` ones before and ``trylast``
ones after the others; the defaults that ship with bkt are ``trylast`` wherever a first
result wins, so a third-party answer takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from bkt_core.diagnostics import Problem
    from bkt_core.host import Host
    from bkt_core.manifest import ManifestSource
    from bkt_core.subsystem import Subsystem

PROJECT = "bkt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["CALLED_ONE_BY_ONE", "PROJECT", "RESULTS", "hookimpl", "hookspec"]

#: The hooks bkt calls implementation by implementation, so that every result and every
#: failure is tied to its plugin; wrappers on them are refused at start-up.
CALLED_ONE_BY_ONE = frozenset(
    {
        "bkt_subsystems",
        "bkt_manifest_fields",
        "bkt_validate_manifest",
        "bkt_manifest_sources",
        "bkt_manifest_cache_key",
    }
)

#: What each hook's implementations may return, checked on every result (the annotations
#: below are strings, and evaluating them at run time would cost start-up): ``(shape, type)``
#: where the shape is ``"none"`` (only None), ``"value"`` (None or one ``type``),
#: ``"iterable"`` (None or an iterable of ``type``s) or ``"fields"`` (None or a mapping of
#: field names to ``(annotation, type)`` pairs), and the type is ``"module:name"``, imported
#: only when a result is checked.
RESULTS: dict[str, tuple[str, str]] = {
    "bkt_add_hookspecs": ("none", ""),
    "bkt_subsystems": ("iterable", "bkt_core.subsystem:Subsystem"),
    "bkt_cli_commands": ("none", ""),
    "bkt_manifest_fields": ("fields", "pydantic.fields:FieldInfo"),
    "bkt_validate_manifest": ("iterable", "bkt_core.diagnostics:Problem"),
    "bkt_manifest_sources": ("iterable", "bkt_core.manifest:ManifestSource"),
    "bkt_manifest_cache_key": ("value", "builtins:str"),
}


# -- hooks of subsystems -------------------------------------------------------------------


@hookspec
def bkt_add_hookspecs(host: Host) -> None:
    """Declare more hooks: call ``host.add_hookspecs(module)`` with a module of hook
    specifications (functions marked with :data:`bkt_core.hookspec`).

    Called once per host, after every plugin is registered and before their implementations
    are checked, so the order in which plugins are registered does not matter: an
    implementation of a hook that some plugin declares here is accepted and held to that
    hook's contract. A plugin implementing a hook that no active plugin declares is a
    start-up error naming the plugin. Returns nothing.
    """


# -- subsystems and commands -------------------------------------------------------------


@hookspec
def bkt_subsystems(host: Host) -> Iterable[Subsystem] | None:
    """Contribute subsystems (the VM subsystem is one).

    Called once per host, the first time a subsystem is needed. ``host`` is the
    :class:`~bkt_core.Host` the subsystem will work for. Return the subsystems this plugin
    provides; every result is kept. Two subsystems with one name are a start-up error.
    """


@hookspec
def bkt_cli_commands(cli: click.Group) -> None:
    """Add commands or command groups to the ``bkt`` command line.

    Called once when the CLI is built, before arguments are parsed (never for
    ``bkt --version``, nor when a command line runs again unchanged without click:
    :func:`bkt_core.cli.run_command`; so it must only add commands). ``cli`` is the root
    click group; add to it with
    ``cli.add_command(...)`` (plain click: rich-click draws the help of every command when
    help is asked for). Keep imports inside the command functions so that start-up stays
    fast. Returns nothing.
    """


# -- manifest loading --------------------------------------------------------------------


@hookspec
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    """Declare optional fields of a subsystem's manifest entries (for ``vm``: each VM).

    Called once per host and subsystem, when its entry model is built. Return a mapping from
    field name to ``(annotation, pydantic.Field(default=..., description=...))``, as for
    :func:`pydantic.create_model`; the field must have a default (absent means the default).
    The fields join the entry model after the built-in ones: they are validated (strictly),
    appear in ``bkt schema``, and are captured and compared like built-in fields. Every result
    is kept; a field declared twice, or one that shadows a built-in field, is a start-up error
    naming both plugins.
    """


@hookspec
def bkt_validate_manifest(
    subsystem: str, document: Mapping[str, Any], home: str | None
) -> Iterable[Problem] | None:
    """Check a manifest beyond what its model says (rules over several fields, names, ...).

    Called each time a manifest of ``subsystem`` is loaded, with the parsed JSON ``document``
    (plain dicts and lists, before and whatever pydantic says, so that these rules are reported
    together with shape errors; look only at values of the type you expect) and the user's
    home directory. Return :class:`~bkt_core.Problem` objects: each carries the JSON path it is
    about and is reported with file:line:col. Every result is kept.

    The verdict is cached (:mod:`bkt_core.manifest_cache`): a manifest found valid is not
    validated again, and this hook not called, until its documents, the plugin set, bkt's
    version or the home directory change. So the problems must depend only on ``document``
    and ``home``: a check of the host (does a file, a network, a pool exist?) belongs to
    planning, which runs on every command. A plugin whose verdict depends on outside data
    (a database of operating systems, say) returns that data's identity from
    :func:`bkt_manifest_cache_key`.
    """


@hookspec
def bkt_manifest_sources(
    subsystem: str,
    manifest_dir: Path,
    file_name: str,
    sources: Sequence[ManifestSource],
) -> Iterable[ManifestSource] | None:
    """Contribute or transform the documents that make up a subsystem's manifest.

    Called each time a manifest of ``subsystem`` is loaded (and by ``capture``), before it is
    validated. ``manifest_dir`` is the manifest directory, ``file_name`` the subsystem's file
    in it (``vms.json``), ``sources`` the :class:`~bkt_core.manifest.ManifestSource` documents
    so far: the subsystem's file when it exists, as earlier implementations left them. Return
    the new sequence (keep, drop, reorder, add or replace documents; build one with
    ``ManifestSource.read(path)`` or ``ManifestSource.parse(path, text)``), or None to leave it
    as it is. Implementations run one after the other in pluggy's order, each receiving the
    previous one's result; the per-host overrides that ship with bkt are ``trylast``.

    The documents are merged in order, each over the ones before it: two objects merge
    member by member, any other value replaces the earlier one whole. Problems are reported
    in the file and at the line of the value that won. ``capture`` writes a field back, as
    JSON, to the document it came from. No document at all is "no manifest".
    """


@hookspec
def bkt_manifest_cache_key(subsystem: str) -> str | None:
    """Name what else your :func:`bkt_validate_manifest` verdict on a ``subsystem`` manifest
    depends on: a string that changes whenever the verdict could change for the same document
    and home directory (the version or the modification time of the database it checks
    against, say), or None when it depends on nothing else.

    A validated manifest is cached, keyed by its documents, the plugin set (names,
    distributions, versions, modules), bkt's version, the home directory and these strings;
    a new string is a new key, so the next command validates again. Called each time a
    manifest of ``subsystem`` is loaded, the cached ones included (not when the cache is off,
    ``--no-cache``): keep it cheap (a ``stat``, not a scan) and import nothing heavy. Every
    result is kept, in pluggy's order.
    """


def hook_names() -> Sequence[str]:
    """The names of every hook, in declaration order."""
    return [name for name in globals() if name.startswith("bkt_")]
