"""Disk provisioning: the data and the rules of the ``provision`` default plugin
(:mod:`bkt_vm_plugin.provision`, which names everything here too), and the functions sync
calls.

Creating a file at a path a manifest names is the one thing sync does outside libvirt's own
checks, so every rule is checked before anything is created, and each refusal names the rule:

- the path is absolute and has no ``..`` (manifest validation says so too);
- neither the path nor where its links lead is in a system directory
  (:data:`~bkt_vm_plugin.paths.SYSTEM_DIRS`: ``/etc``, ``/proc``, ``/usr``, ...) unless the
  VM says ``allow_system_paths`` (ISO paths too: sync checks them);
- whatever is at the path is a regular file (not a directory, a device, a FIFO) and not
  empty (a 0-byte file is what an interrupted creation leaves), and an existing file is
  only read (``qemu-img info``), never overwritten, truncated or resized;
- a missing disk is created only with ``create_if_missing``, never through a symbolic link
  (a link to an existing image is fine: it is only read);
- every directory above it exists (bkt makes no directories: a typo must not grow a tree);
- the directory is the target of an *active* libvirt storage pool (``virsh vol-create-as``,
  so a member of the libvirt group can provision under /var/lib/libvirt/images), or the user
  may write to it and no one but root and the user can change any directory on the way to
  it or what is created in it (:func:`_open_confined`; then ``qemu-img create`` in a private
  directory, hard-linked into place: :func:`_create_file`). The target of an inactive pool
  is refused with the ``virsh pool-start`` hint: bkt never starts pools.

After provisioning, whoever did it, each disk is checked (:func:`_check_created`): a regular
file (a pool's volume of type file) of the planned format and virtual size, or that VM fails.

Sync calls :func:`plan_disk` for each VM (it looks at the path and asks the
:func:`~bkt_vm_plugin.hookspecs.bkt_disk_plan` hook only for a missing disk to be created),
:func:`disk_format` for a disk that exists, and :func:`provision_all` to execute the plan.
The plugin's hooks (``trylast``, so a third-party plugin's answer wins) run
:func:`plan_default` and :func:`provision_default`.

Processes: libvirt's storage pools are read only when a disk must be created, or when the
format of an existing disk can only come from its pool, in two virsh processes however many
pools and disks there are (``pool-list`` twice, then one ``pool-dumpxml`` each); every
``vol-create-as`` of a sync runs in one more virsh process, with the ``vol-dumpxml`` that checks
each new volume; each disk outside a pool costs one ``qemu-img create`` and one ``qemu-img
info`` to check it, each existing disk one ``qemu-img info``.

With a remote connection (a URI naming a host), the local file system says nothing about
the disks: a disk must then lie in the target directory of one of the remote libvirt's active
pools, and its existence and format are read from the pool's volume (``vol-dumpxml``);
anything else is refused with a message saying why.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from bkt_core.errors import BktError, CommandError, OperationError, PluginError
from bkt_vm_plugin.provision import PLUGIN_NAME, is_remote_uri

if TYPE_CHECKING:
    from bkt_core.host import Host
    from bkt_core.process import CommandRunner
    from bkt_vm_plugin.definition import VmDefinition
    from bkt_vm_plugin.virsh import Reply, Virsh
    from bkt_vm_plugin.xmltree import Element

__all__ = [
    "FILE_POOL_TYPES",
    "DiskCreation",
    "DiskRequest",
    "Entry",
    "PathEntry",
    "Pool",
    "ProvisionContext",
    "create_disks",
    "disk_format",
    "disk_request",
    "look",
    "plan_default",
    "plan_disk",
    "pool_target",
    "provision_all",
    "provision_default",
    "volume_format_of",
]

#: Pool types whose volumes are files in the target directory.
FILE_POOL_TYPES = ("dir", "fs", "netfs")

#: The formats bkt manages; an existing image's format becomes the domain's driver type.
FORMATS = ("qcow2", "raw")

QEMU_IMG_TIMEOUT = 120.0


# -- the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskRequest:
    """A VM's disk as sync wants it: the disk of VM ``vm`` (its name) at ``path``, the
    manifest's ``disk_path`` with ``~`` expanded, of ``size_gb`` GiB; ``create_if_missing``
    and ``allow_system_paths`` are the VM's fields of those names."""

    vm: str
    path: str
    size_gb: int
    create_if_missing: bool
    allow_system_paths: bool = False


def disk_request(name: str, vm: VmDefinition, home: str | None) -> DiskRequest:
    """The :class:`DiskRequest` of manifest VM ``name``."""
    from bkt_vm_plugin.paths import expand_home

    return DiskRequest(
        vm=name,
        path=expand_home(vm.disk_path, home),
        size_gb=vm.disk_size_gb,
        create_if_missing=vm.create_if_missing,
        allow_system_paths=vm.allow_system_paths,
    )


@dataclass(frozen=True)
class DiskCreation:
    """A disk a plugin will create: what the plan shows, and what provisioning is given.

    The file at ``path``, of ``size_gb`` GiB, in ``format`` (``qcow2`` or ``raw``). ``pool`` is
    the storage pool it is created in (None: a file outside any pool).
    ``plugin`` names the plugin that planned it, so that only that plugin creates it.

    Frozen: subclass it (a frozen dataclass too) to carry what your plugin needs to create
    the disk, and override :meth:`describe` and :meth:`to_json` to show it.
    """

    path: str
    size_gb: int
    format: str = "qcow2"
    pool: str | None = None
    plugin: str = PLUGIN_NAME

    def describe(self) -> str:
        """The plan's line: ``create disk PATH (N GiB, qcow2)[ in storage pool P]``."""
        where = f" in storage pool {self.pool}" if self.pool is not None else ""
        return f"create disk {self.path} ({self.size_gb} GiB, {self.format}){where}"

    def to_json(self) -> dict[str, Any]:
        """The plan's ``create_disk`` in ``--json``: path, size_gb, format, and pool when
        there is one."""
        out: dict[str, Any] = {"path": self.path, "size_gb": self.size_gb, "format": self.format}
        if self.pool is not None:
            out["pool"] = self.pool
        return out


class Pool(NamedTuple):
    """A libvirt storage pool whose volumes are files, as :meth:`ProvisionContext.pools`
    reads it: ``name``, the pool's name; ``target``, the directory its volumes are files in
    (as libvirt records it); ``active``, whether the pool is started (a volume can be created
    only in an active pool)."""

    name: str
    target: str
    active: bool


class PathEntry(NamedTuple):
    """What is at a path on the local file system, following a symbolic link that leads
    somewhere, as :func:`look` (``ProvisionContext.look``) says.

    ``kind`` is ``missing``, ``file``, ``empty`` (a regular file of 0 bytes), ``dir``,
    ``device`` (block or character), ``other``
    (FIFO, socket), ``dangling`` (a symbolic link to nothing) or ``unknown`` (it cannot be
    looked at). ``detail`` is the link's target for ``dangling``, why for ``unknown``, and
    empty otherwise.
    """

    kind: str
    detail: str = ""


#: The name :class:`PathEntry` had before it was public; kept for code that imports it.
Entry = PathEntry


def look(path: str) -> PathEntry:
    """What is at ``path`` on the local file system."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        # Not there, or a directory above it is not one (the ancestors' rule names it).
        return PathEntry("missing")
    except OSError as exc:
        return PathEntry("unknown", exc.strerror or str(exc))
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return PathEntry("dangling", target)
        except OSError as exc:
            return PathEntry("unknown", exc.strerror or str(exc))
    if stat.S_ISREG(st.st_mode):
        return PathEntry("file" if st.st_size else "empty")
    if stat.S_ISDIR(st.st_mode):
        return PathEntry("dir")
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return PathEntry("device")
    return PathEntry("other")


def _writable_dir(path: str) -> bool:
    # The effective user's permission, as the kernel checks it when the file is created.
    return os.access(path, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


class _Exposed(Exception):
    """Why someone else could redirect what bkt creates in a directory."""


def _trusted(uid: int) -> bool:
    return uid == 0 or uid == os.geteuid()


def _owner(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (KeyError, ImportError):
        return f"uid {uid}"


def _check_entry(where: str, folder: os.stat_result, name: str, owner: int) -> None:
    """Refuses entry ``name`` (owned by uid ``owner``) of directory ``where`` when anyone but
    root and this user could replace it: the directory's owner always can; others can when
    the directory is writable by its group or by others, unless its sticky bit keeps them to
    their own entries."""
    here = posixpath.join(where, name)
    if not _trusted(folder.st_uid):
        raise _Exposed(
            f"directory {where} belongs to {_owner(folder.st_uid)}, who could replace {here}"
        )
    if not folder.st_mode & 0o022:
        return
    if not folder.st_mode & stat.S_ISVTX:
        raise _Exposed(
            f"directory {where} (mode {stat.S_IMODE(folder.st_mode):04o}) is writable by "
            f"group or others without the sticky bit, so they could replace {here}"
        )
    if not _trusted(owner):
        raise _Exposed(f"{here} belongs to {_owner(owner)}, in the shared directory {where}")


#: Symbolic links followed while opening one directory, as the kernel allows.
MAX_LINKS = 40


def _open_confined(directory: str, name: str) -> int:
    """A descriptor of ``directory``, opened one name at a time from ``/`` (following
    symbolic links as the kernel does) so that every directory looked in and every link
    followed is checked: no one but root and this user can replace any of them, nor file
    ``name`` that bkt will create in ``directory``. Raises :class:`_Exposed` or
    :class:`OSError`."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open("/", flags)
    where = "/"
    todo = [p for p in directory.split("/") if p][::-1]
    links = 0
    try:
        while todo:
            part = todo.pop()
            if part == ".":
                continue
            if part == "..":
                # Back into a directory this walk came through (or / itself): checked.
                up = os.open("..", flags, dir_fd=fd)
                os.close(fd)
                fd, where = up, posixpath.dirname(where)
                continue
            entry = os.stat(part, dir_fd=fd, follow_symlinks=False)
            _check_entry(where, os.fstat(fd), part, entry.st_uid)
            if stat.S_ISLNK(entry.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                target = os.readlink(part, dir_fd=fd)
                todo.extend([p for p in target.split("/") if p][::-1])
                if target.startswith("/"):
                    os.close(fd)
                    fd, where = os.open("/", flags), "/"
                continue
            # O_NOFOLLOW: a link put there since the check is refused, never followed.
            inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd, where = inner, posixpath.join(where, part)
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (entry.st_dev, entry.st_ino):
                raise _Exposed(f"{where} was replaced while bkt was opening it")
        _check_entry(where, os.fstat(fd), name, os.geteuid())
    except BaseException:
        os.close(fd)
        raise
    return fd


def confinement_problem(path: str) -> str | None:
    """Why the file ``path`` bkt would create could be redirected or swapped by someone other
    than root and this user; None when it cannot."""
    directory, name = posixpath.split(path)
    try:
        os.close(_open_confined(directory, name))
    except _Exposed as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot open {directory}: {exc.strerror or exc}"
    return None


def _said(text: str) -> str:
    return ": ".join(line.strip() for line in text.splitlines() if line.strip())


class _Queued(NamedTuple):
    creation: DiskCreation
    command: tuple[str, ...]


# -- the context ---------------------------------------------------------------------------


class ProvisionContext:
    """What planning and provisioning look at: virsh, qemu-img, and libvirt's storage pools.

    ``runner`` starts ``qemu-img`` (default: the virsh's runner). ``writable`` says whether
    this user may create files in a directory (default: :func:`os.access` for the effective
    user), ``confined`` why a file bkt creates at a path could be redirected by someone else
    (default: :func:`confinement_problem`; None: it cannot); ``remote`` whether libvirt is on
    another host (default: from the virsh's URI). ``virsh`` is the
    :class:`~bkt_vm_plugin.virsh.Virsh` of the sync; ``look`` says what is at a path
    (:func:`look`: ``look(path).kind`` is ``missing``, ``file``, ``dir``...);
    ``qemu_img_timeout`` the seconds one ``qemu-img`` process may take.
    Pools are read on first need and kept for the life of the context (one sync).
    """

    def __init__(
        self,
        virsh: Virsh,
        runner: CommandRunner | None = None,
        *,
        writable: Callable[[str], bool] | None = None,
        confined: Callable[[str], str | None] = confinement_problem,
        remote: bool | None = None,
        look: Callable[[str], PathEntry] = look,
        qemu_img_timeout: float = QEMU_IMG_TIMEOUT,
    ) -> None:
        self.virsh = virsh
        self.runner = runner if runner is not None else virsh.runner
        self.writable = writable if writable is not None else _writable_dir
        self.confined = confined
        self.remote = is_remote_uri(virsh.uri) if remote is None else remote
        self.look = look
        self.qemu_img_timeout = qemu_img_timeout
        self._pools: list[Pool] | OperationError | None = None
        self._volumes: dict[tuple[str, str], Volume | None] = {}
        self._queue: list[_Queued] | None = None

    # -- pools -----------------------------------------------------------------------------

    def pools(self) -> list[Pool]:
        """libvirt's file-based storage pools, read once (two virsh processes, one when there
        is no pool). Raises :class:`OperationError` when they cannot be read."""
        if self._pools is None:
            try:
                self._pools = self._read_pools()
            except OperationError as exc:
                self._pools = OperationError(
                    f"cannot list libvirt's storage pools: {exc.message}", hint=exc.hint
                )
        if isinstance(self._pools, OperationError):
            # A new error each time: the host records on an error which plugin's hook raised
            # it, and the next caller may be another plugin.
            raise OperationError(self._pools.message, hint=self._pools.hint)
        return self._pools

    @property
    def pools_read(self) -> bool:
        """Whether the pools were read (tests check that a sync of existing disks reads none)."""
        return self._pools is not None

    def _read_pools(self) -> list[Pool]:
        every, active = self.virsh.batch(
            [["pool-list", "--all", "--name"], ["pool-list", "--name"]]
        )
        names = _names(every.check())
        running = set(_names(active.check()))
        if not names:
            return []
        pools: list[Pool] = []
        replies = self.virsh.batch([["pool-dumpxml", "--pool", name] for name in names])
        for name, reply in zip(names, replies, strict=True):
            # A pool that vanished in between, or that libvirt cannot describe, holds no disk.
            target = pool_target(reply.stdout) if reply.ok else None
            if target is not None:
                pools.append(Pool(name, target, name in running))
        return pools

    def pool_of(self, directory: str) -> Pool | None:
        """The storage pool whose target is ``directory`` (symbolic links resolved, locally):
        an active one before an inactive one, then by name; None when there is none."""
        here = self._canonical(directory)
        matching = [p for p in self.pools() if self._canonical(p.target) == here]
        matching.sort(key=lambda p: (not p.active, p.name))
        return matching[0] if matching else None

    def _canonical(self, path: str) -> str:
        path = posixpath.normpath(path)
        if self.remote:
            return path
        try:
            return os.path.realpath(path, strict=True)
        except OSError:
            return path

    # -- volumes ---------------------------------------------------------------------------

    def volume_format(self, pool: str, name: str) -> str | None:
        """The format libvirt records for volume ``name`` of ``pool`` (``vol-dumpxml``, one
        process, cached); None when the pool has no such volume. Raises
        :class:`OperationError` for any other failure."""
        key = (pool, name)
        if key not in self._volumes:
            (reply,) = self.virsh.batch([_dump_volume(pool, name)])
            self._volumes[key] = _volume(pool, name, reply)
        found = self._volumes[key]
        return None if found is None else found.format

    # -- creating files ----------------------------------------------------------------------

    def create_image(self, creation: DiskCreation, options: Sequence[str] = ()) -> None:
        """Create ``creation`` as a file outside any pool with ``qemu-img create -f FORMAT
        [OPTIONS] ... SIZE`` (``options`` such as ``-b BASE -F qcow2``), the way bkt creates
        its own: no one else can redirect or swap the file while it is made, it is readable by
        this user only, and a file that appeared at ``creation.path`` since planning is never
        replaced. Raises :class:`OperationError` (``disk PATH appeared after planning`` for
        the latter, or what went wrong)."""
        _create_file(creation, self, options)

    # -- qemu-img ---------------------------------------------------------------------------

    def qemu_img(self, args: Sequence[str]) -> str:
        """Run ``qemu-img`` with the arguments ``args``; its stdout, or raise
        :class:`CommandError` with what it said (its ``message`` is qemu-img's stderr, or the
        exit status)."""
        argv = ("qemu-img", *args)
        done = self.runner.run(argv, timeout=self.qemu_img_timeout)
        if done.returncode != 0:
            said = _said(done.stderr) or f"exit status {done.returncode}"
            raise CommandError(
                argv,
                said,
                kind="failed",
                returncode=done.returncode,
                stderr=done.stderr,
            )
        return done.stdout

    # -- batching vol-create-as --------------------------------------------------------------

    def queue(self, creation: DiskCreation, command: Sequence[str]) -> bool:
        """Queue a virsh command that creates ``creation`` for :func:`provision_all` to run
        in one process with the others; False when nothing is batching (run it now)."""
        if self._queue is None:
            return False
        self._queue.append(_Queued(creation, tuple(command)))
        return True

    def _start_batch(self) -> None:
        self._queue = []

    def _run_batch(
        self, in_pools: Sequence[DiskCreation] = ()
    ) -> tuple[dict[str, str | None], dict[str, Volume | OperationError | None]]:
        """Runs the queued ``vol-create-as`` and, in the same virsh process, reads back the
        volume of every creation of ``in_pools`` (queued or made by a plugin). Returns the
        error of each queued creation (None: done) and the volume read back for each path."""
        queued, self._queue = self._queue or [], None
        results: dict[str, str | None] = {}
        volumes: dict[str, Volume | OperationError | None] = {}
        commands: list[Sequence[str]] = [q.command for q in queued]
        commands += [_dump_volume(str(c.pool), posixpath.basename(c.path)) for c in in_pools]
        try:
            replies = self.virsh.batch(commands)
        except OperationError as exc:
            for q in queued:
                results[q.creation.path] = f"cannot create disk {q.creation.path}: {exc.message}"
            for c in in_pools:
                volumes[c.path] = exc
            return results, volumes
        for q, reply in zip(queued, replies, strict=False):
            results[q.creation.path] = (
                None
                if reply.ok
                else f"cannot create disk {q.creation.path} in storage pool "
                f"{q.creation.pool}: {reply.message}"
            )
        for c, reply in zip(in_pools, replies[len(queued) :], strict=True):
            try:
                volumes[c.path] = _volume(str(c.pool), posixpath.basename(c.path), reply)
            except OperationError as exc:
                volumes[c.path] = exc
        return results, volumes


def _names(text: str) -> list[str]:
    # virsh pads each name with spaces.
    return [line.strip() for line in text.splitlines() if line.strip()]


def _no_volume(stderr: str) -> bool:
    return "Storage volume not found" in stderr or "no storage vol" in stderr


class Volume(NamedTuple):
    """A storage volume as libvirt records it: ``type`` (``file``, ...), format, capacity in
    bytes (None when the XML does not say)."""

    type: str | None
    format: str
    capacity: int | None


def _dump_volume(pool: str, name: str) -> list[str]:
    return ["vol-dumpxml", "--pool", pool, "--vol", name]


def _volume(pool: str, name: str, reply: Reply) -> Volume | None:
    """The :class:`Volume` of a ``vol-dumpxml`` reply; None when the pool has no such volume.
    Raises :class:`OperationError` for any other failure."""
    if not reply.ok:
        if _no_volume(reply.stderr):
            return None
        raise reply.error()
    root = _parse(reply.stdout)
    found = volume_format_of(reply.stdout)
    if root is None or found is None:
        raise OperationError(f"volume {name} of storage pool {pool} has no format in its XML")
    capacity = root.find("capacity")
    size: int | None = None
    if capacity is not None and capacity.get("unit", "bytes") == "bytes":
        try:
            size = int((capacity.text or "").strip())
        except ValueError:
            size = None
    return Volume(root.get("type"), found, size)


def _parse(xml: str) -> Element | None:
    """The root of a pool's or volume's XML; None when it is not XML bkt can read."""
    from bkt_vm_plugin.xmltree import DomainXmlError, parse_xml

    try:
        return parse_xml(xml, root_tag=None)
    except DomainXmlError:
        return None


def pool_target(xml: str) -> str | None:
    """The target directory of a file-based pool's XML (trimmed, absolute); None for other
    pool types or XML that does not say."""
    root = _parse(xml)
    if root is None or root.tag != "pool" or root.get("type") not in FILE_POOL_TYPES:
        return None
    path = root.findtext("target/path")
    if path is None:
        return None
    path = path.strip()
    return path if path.startswith("/") else None


def volume_format_of(xml: str) -> str | None:
    """``<target><format type=...>`` of a volume's XML."""
    root = _parse(xml)
    if root is None:
        return None
    node = root.find("target/format")
    return node.get("type") if node is not None else None


# -- planning ------------------------------------------------------------------------------


def _refuse(path: str, rule: str, hint: str | None = None) -> OperationError:
    return OperationError(f"cannot create disk {path}: {rule}", hint=hint)


def _missing(path: str) -> OperationError:
    return OperationError(
        f'disk {path} does not exist: set "create_if_missing": true to create it, '
        "or create it yourself"
    )


def _path_rules(path: str) -> None:
    if not path.startswith("/"):
        raise OperationError(f"disk {path} is not an absolute path")
    if ".." in path.split("/"):
        raise OperationError(f'disk {path} must not contain ".."')
    if posixpath.basename(path) in ("", "."):
        raise OperationError(f"disk {path} has no file name")


def plan_disk(
    host: Host, name: str, vm: Any, request: DiskRequest, ctx: ProvisionContext
) -> DiskCreation | None:
    """What sync does about VM ``name``'s disk: None when it exists (it is used as it is,
    with :func:`disk_format`), or the :class:`DiskCreation` the ``bkt_disk_plan`` hook
    returned for a missing one with ``create_if_missing``. Raises :class:`OperationError`
    (that VM fails) for a disk bkt refuses, naming the path and the rule."""
    path = request.path
    _path_rules(path)
    if ctx.remote:
        _system_rule(request, resolve=False)
        if _remote_volume(path, ctx) is not None:
            return None
    elif _local_disk_exists(request, ctx):
        return None
    if not request.create_if_missing:
        raise _missing(path)
    return _planned_creation(host, name, vm, request, ctx)


def _local_disk_exists(request: DiskRequest, ctx: ProvisionContext) -> bool:
    """Whether the local disk at ``request.path`` is a file to use as it is (False: it is
    missing). Raises :class:`OperationError` for anything else at that path."""
    path = request.path
    entry = ctx.look(path)
    if entry.kind == "dir":
        raise OperationError(f"disk {path} is a directory, not a disk image")
    if entry.kind == "device":
        raise OperationError(
            f"disk {path} is a device; bkt manages disk image files (qcow2 or raw)"
        )
    if entry.kind == "other":
        raise OperationError(f"disk {path} is not a regular file")
    if entry.kind == "unknown":
        raise OperationError(f"cannot look at disk {path}: {entry.detail}")
    # Before anything reads the file: qemu-img would read /proc/kmsg until it is killed.
    _system_rule(request, resolve=True)
    if entry.kind == "file":
        return True
    if entry.kind == "empty":
        raise OperationError(
            f"disk {path} is an empty file (0 bytes), which is what an interrupted "
            "creation leaves, not a disk image: bkt does not use it",
            hint="remove it (with create_if_missing, sync then creates the disk), or put an "
            f"image there (`qemu-img create -f qcow2 {path} SIZE`)",
        )
    if entry.kind == "dangling":
        if request.create_if_missing:
            raise _refuse(
                path,
                f"it is a symbolic link to {entry.detail}, which does not exist, and bkt "
                "does not create disks through symbolic links (point disk_path at the "
                "real file)",
            )
        raise OperationError(
            f"disk {path} is a symbolic link to {entry.detail}, which does not exist"
        )
    return False


def _planned_creation(
    host: Host, name: str, vm: Any, request: DiskRequest, ctx: ProvisionContext
) -> DiskCreation:
    """The ``bkt_disk_plan`` hook's plan for the missing disk, which must create exactly the
    manifest's path."""
    from bkt_vm_plugin.hooks import VmHooks

    path = request.path
    result = VmHooks(host).disk_plan(name, vm, request, ctx)
    if result is None:
        raise _refuse(
            path,
            "no plugin plans the creation of disks",
            hint="is the provision plugin disabled? (`bkt plugins` lists the plugins)",
        )
    if not isinstance(result, DiskCreation):
        raise _refuse(
            path, f"bkt_disk_plan returned a {type(result).__name__}, not a DiskCreation"
        )
    if result.path != path:
        # The domain's disk is the manifest's path: a disk made anywhere else would leave the
        # VM defined on a file that does not exist, and "created" would be a lie.
        raise PluginError(
            result.plugin,
            "bkt_disk_plan",
            f"planned disk {result.path} for VM {name}, whose disk is {path}",
        )
    return result


def _system_rule(request: DiskRequest, *, resolve: bool) -> None:
    from bkt_vm_plugin.paths import system_path_problem

    if not request.allow_system_paths:
        problem = system_path_problem(request.path, "disk", resolve=resolve)
        if problem is not None:
            raise OperationError(problem)


def _remote_pool(path: str, ctx: ProvisionContext, *, creating: bool) -> Pool:
    directory = posixpath.dirname(path)
    uri = ctx.virsh.uri or os.environ.get("LIBVIRT_DEFAULT_URI", "")
    pool = ctx.pool_of(directory)
    if pool is None:
        verb = "create" if creating else "check"
        raise OperationError(
            f"cannot {verb} disk {path}: libvirt at {uri} may be on another host and "
            f"{directory} is not the target of one of its storage pools, so bkt cannot "
            "look at the file (it never looks at the local disk for a remote host)",
            hint=f"define a pool there: `virsh -c {uri} pool-define-as NAME dir --target "
            f"{directory}` then `virsh -c {uri} pool-start NAME`",
        )
    if not pool.active:
        raise _inactive(path, directory, pool)
    return pool


def _inactive(path: str, directory: str, pool: Pool) -> OperationError:
    return _refuse(
        path,
        f"its directory {directory} is the target of storage pool {pool.name}, which is not "
        f"active (`virsh pool-start {pool.name}` starts it)",
    )


def _remote_volume(path: str, ctx: ProvisionContext) -> str | None:
    pool = _remote_pool(path, ctx, creating=False)
    return ctx.volume_format(pool.name, posixpath.basename(path))


def disk_format(path: str, ctx: ProvisionContext) -> str:
    """The format of the existing image at ``path`` (``qcow2`` or ``raw``), which becomes
    the domain's driver type: ``qemu-img info``, or, when qemu-img cannot read the file (a
    volume libvirt created as root), the format its storage pool records."""
    if ctx.remote:
        found = _remote_volume(path, ctx)
        if found is None:
            raise OperationError(f"disk {path} does not exist")
    else:
        import json

        try:
            info = json.loads(ctx.qemu_img(["info", "--output=json", "-U", "--", path]))
            found = str(info["format"])
        except (CommandError, ValueError, KeyError, TypeError) as exc:
            found = _pool_format(path, ctx)
            if found is None:
                why = exc.message if isinstance(exc, CommandError) else "unreadable output"
                raise OperationError(f"cannot read the image format of {path}: {why}") from None
    if found not in FORMATS:
        raise OperationError(f"disk {path} is a {found} image; bkt manages qcow2 and raw images")
    return found


def _pool_format(path: str, ctx: ProvisionContext) -> str | None:
    try:
        pool = ctx.pool_of(posixpath.dirname(path))
        if pool is None or not pool.active:
            return None
        return ctx.volume_format(pool.name, posixpath.basename(path))
    except OperationError:
        return None


def _ancestors(directory: str) -> list[str]:
    out = ["/"]
    for part in directory.strip("/").split("/"):
        if part:
            out.append(posixpath.join(out[-1], part))
    return out


def plan_default(name: str, disk: DiskRequest, context: ProvisionContext) -> DiskCreation:
    """The ``provision`` plugin's ``bkt_disk_plan``: a volume of the active pool whose target
    is the disk's directory, else a qcow2 file made with ``qemu-img`` in a directory the user
    can write."""
    path = disk.path
    directory = posixpath.dirname(path)
    creation = DiskCreation(path=path, size_gb=disk.size_gb)
    if context.remote:
        remote = _remote_pool(path, context, creating=True)
        return DiskCreation(path=path, size_gb=disk.size_gb, pool=remote.name)
    for at in _ancestors(directory):
        entry = context.look(at)
        if entry.kind == "dir":
            continue
        if entry.kind == "missing":
            raise _refuse(
                path,
                f"directory {at} does not exist (bkt creates no directories: make it, or fix "
                "disk_path)",
            )
        if entry.kind == "dangling":
            raise _refuse(
                path, f"directory {at} is a symbolic link to {entry.detail}, which does not exist"
            )
        if entry.kind == "unknown":
            raise _refuse(path, f"cannot look at {at}: {entry.detail}")
        raise _refuse(path, f"{at} is not a directory")
    pool = context.pool_of(directory)
    if pool is not None and pool.active:
        return DiskCreation(path=path, size_gb=disk.size_gb, pool=pool.name)
    if pool is not None:
        raise _inactive(path, directory, pool)
    if context.writable(directory):
        exposed = context.confined(path)
        if exposed is not None:
            raise _refuse(
                path,
                f"{exposed}, and bkt creates disks only where no one but you and root can "
                "redirect them",
                hint="make the directory yours and not writable by others (or set its sticky "
                "bit), make a libvirt storage pool its target, or create the disk yourself",
            )
        return creation
    raise _refuse(
        path,
        f"you cannot write to {directory} and no libvirt storage pool has it as its target",
        hint=f"define one (`virsh pool-define-as NAME dir --target {directory}` then "
        "`virsh pool-start NAME`), or create the disk yourself",
    )


# -- provisioning --------------------------------------------------------------------------


def _appeared(path: str) -> OperationError:
    return OperationError(f"disk {path} appeared after planning; it is left as it is")


def provision_default(creation: DiskCreation, context: ProvisionContext) -> bool | None:
    """The ``provision`` plugin's ``bkt_disk_provision`` of what :func:`plan_default`
    planned: ``virsh
    vol-create-as`` in a pool (batched by :func:`provision_all`), else ``qemu-img create``
    behind an exclusive placeholder. Never overwrites anything."""
    if not isinstance(creation, DiskCreation) or creation.plugin != PLUGIN_NAME:
        return None
    path = creation.path
    if creation.pool is not None:
        # libvirt refuses a volume whose file exists anyway; asking first gives the same
        # message as outside a pool. A remote host's files are libvirt's to check.
        if not context.remote and context.look(path).kind != "missing":
            raise _appeared(path)
        command = (
            "vol-create-as",
            "--pool",
            creation.pool,
            "--name",
            posixpath.basename(path),
            "--capacity",
            f"{creation.size_gb}GiB",
            "--format",
            creation.format,
        )
        if context.queue(creation, command):
            return True
        (reply,) = context.virsh.batch([command])
        if not reply.ok:
            raise OperationError(
                f"cannot create disk {path} in storage pool {creation.pool}: {reply.message}"
            )
        return True
    if context.remote:
        raise _refuse(path, "libvirt is on another host and the disk is in none of its pools")
    _create_file(creation, context)
    return True


def _create_file(
    creation: DiskCreation, context: ProvisionContext, options: Sequence[str] = ()
) -> None:
    """An image outside any pool, made so that no one else can redirect it or swap it.

    The directory is opened once, name by name (:func:`_open_confined`: every directory on
    the way is one only root and this user can change). qemu-img writes into a fresh
    directory inside it that only this user may enter, named through this process's
    descriptor of it (``/proc/PID/fd/N``), so no path it follows can be changed by others.
    The finished image is then hard-linked to its name relative to the directory's
    descriptor: a link never replaces anything, so a file that appeared since planning (or
    that a concurrent sync made) is left alone. Whatever happens, Ctrl-C included, the
    private directory goes away: the disk's name holds a whole image or nothing. Only this
    user may read the image, as with libvirt's volumes."""
    path = creation.path
    directory, name = posixpath.split(path)
    try:
        folder = _open_confined(directory, name)
    except _Exposed as exc:
        raise _refuse(path, str(exc)) from None
    except OSError as exc:
        raise _refuse(path, f"cannot open {directory}: {exc.strerror or exc}") from None
    try:
        if _exists_in(folder, name):
            raise _appeared(path)
        private, inner = _private_directory(folder, name, path)
        try:
            _create_and_link(creation, context, options, folder, inner, name)
        finally:
            _remove_private(folder, private, inner, name)
    finally:
        os.close(folder)


def _private_directory(folder: int, name: str, path: str) -> tuple[str, int]:
    """A fresh directory in ``folder`` that only this user may enter, for the image ``name``
    while it is made: its name and an open descriptor of it."""
    import secrets

    private = f".{name}.bkt-{secrets.token_hex(4)}"
    try:
        os.mkdir(private, 0o700, dir_fd=folder)
    except OSError as exc:
        directory = posixpath.dirname(path)
        raise _refuse(path, f"cannot create a directory in {directory}: {exc.strerror}") from None
    try:
        inner = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
    except BaseException:
        os.rmdir(private, dir_fd=folder)
        raise
    return private, inner


def _create_and_link(
    creation: DiskCreation,
    context: ProvisionContext,
    options: Sequence[str],
    folder: int,
    inner: int,
    name: str,
) -> None:
    """qemu-img makes the image ``name`` in the private directory ``inner``, named through
    this process's descriptor; the image is then hard-linked to ``name`` in ``folder``."""
    path = creation.path
    os.close(
        os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=inner)
    )
    pinned = f"/proc/{os.getpid()}/fd/{inner}/{name}"
    try:
        context.qemu_img(
            ["create", "-q", "-f", creation.format, *options, "--", pinned, f"{creation.size_gb}G"]
        )
    except CommandError as exc:
        raise _refuse(path, exc.message.replace(pinned, path)) from None
    try:
        os.link(name, name, src_dir_fd=inner, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        raise _appeared(path) from None
    except OSError as exc:
        raise _refuse(path, f"cannot link the new image into place: {exc.strerror}") from None


def _exists_in(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _remove_private(folder: int, private: str, inner: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=inner)
    except FileNotFoundError:
        pass
    finally:
        os.close(inner)
        os.rmdir(private, dir_fd=folder)


def provision_all(
    host: Host, creations: Iterable[DiskCreation], ctx: ProvisionContext
) -> dict[str, str | None]:
    """:func:`create_disks`, with each error as its message (None: created)."""
    return {
        path: None if error is None else error.message
        for path, error in create_disks(host, creations, ctx).items()
    }


def create_disks(
    host: Host, creations: Iterable[DiskCreation], ctx: ProvisionContext
) -> dict[str, BktError | None]:
    """Create every planned disk through the ``bkt_disk_provision`` hook, one call each,
    with the default's ``vol-create-as`` commands run together in one virsh process, then
    check each disk (:func:`_check_created`): a disk counts as created only when it is there
    as planned, whoever made it.

    Returns each creation's path and its error (None: created); an error a plugin raised
    names the plugin (:meth:`bkt_core.Host.named`) and keeps its hint. One failure
    does not stop the others. A path planned twice is created once; the second one fails.
    """
    from bkt_vm_plugin.hooks import VmHooks

    hooks = VmHooks(host)
    results: dict[str, str | BktError | None] = {}
    made: list[DiskCreation] = []
    seen: set[str] = set()
    ctx._start_batch()
    try:
        for creation in creations:
            path = creation.path
            if path in seen:
                results[path] = _appeared(path).message
                continue
            seen.add(path)
            try:
                done = hooks.disk_provision(creation, ctx)
            except BktError as exc:
                results[path] = host.named(exc)
                continue
            if done is None:
                results[path] = (
                    f"cannot create disk {path}: plugin {creation.plugin}, which planned it, "
                    "did not create it (is it disabled?)"
                )
                continue
            if done is not True:
                import reprlib

                results[path] = (
                    f"cannot create disk {path}: plugin {creation.plugin}'s "
                    f"bkt_disk_provision returned {reprlib.repr(done)}, not True (created) "
                    "or None (not its disk)"
                )
                continue
            results[path] = None
            made.append(creation)
    finally:
        batched, volumes = ctx._run_batch([c for c in made if c.pool is not None])
    results.update(batched)
    for creation in made:
        if results[creation.path] is None:
            results[creation.path] = _check_created(creation, ctx, volumes.get(creation.path))
    return {
        path: OperationError(result) if isinstance(result, str) else result
        for path, result in results.items()
    }


def _check_created(
    creation: DiskCreation, ctx: ProvisionContext, volume: Volume | OperationError | None
) -> str | None:
    """Why the disk ``creation`` names is not what was planned, or None: it exists as a
    regular file of the planned format and virtual size (a pool's volume as libvirt records
    it, ``volume``; any other file as ``qemu-img info`` reads it)."""
    path = creation.path
    by = (
        ""
        if creation.plugin == PLUGIN_NAME
        else f" (plugin {creation.plugin} said its bkt_disk_provision created it)"
    )

    def wrong(why: str) -> str:
        return f"cannot create disk {path}{by}: {why}"

    fmt: str | None
    size: int | None
    if creation.pool is not None:
        if isinstance(volume, OperationError):
            return wrong(
                f"cannot read it back from storage pool {creation.pool}: {volume.message}"
            )
        if volume is None:
            return wrong(f"storage pool {creation.pool} has no volume {posixpath.basename(path)}")
        if volume.type not in (None, "file"):
            return wrong(f"it is a volume of type {volume.type}, not a file")
        fmt, size = volume.format, volume.capacity
    elif ctx.remote:
        return wrong("libvirt is on another host and the disk is in none of its pools")
    else:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return wrong("it does not exist")
        except OSError as exc:
            return wrong(f"cannot look at it: {exc.strerror}")
        if stat.S_ISLNK(st.st_mode):
            return wrong("it is a symbolic link, not the image itself")
        if not stat.S_ISREG(st.st_mode):
            return wrong("it is not a regular file")
        if st.st_size == 0:
            return wrong("it is empty (0 bytes)")
        import json

        try:
            info = json.loads(ctx.qemu_img(["info", "--output=json", "-U", "--", path]))
            fmt, size = str(info["format"]), int(info["virtual-size"])
        except CommandError as exc:
            return wrong(f"qemu-img cannot read it: {exc.message}")
        except (ValueError, KeyError, TypeError):
            return wrong("qemu-img info gave unreadable output")
    if fmt != creation.format:
        return wrong(f"it is a {fmt} image, not {creation.format}")
    if size != creation.size_gb << 30:
        return wrong(f"its virtual size is {size} bytes, not {creation.size_gb} GiB")
    return None
