"""Disk provisioning: the ``provision`` default plugin and the functions sync calls.

Creating a file at a path a manifest names is the one thing sync does outside libvirt's own
checks, so every rule is checked before anything is created, and each refusal names the rule:

- the path is absolute and has no ``..`` (manifest validation says so too);
- whatever is at the path is a regular file (not a directory, a device, a FIFO), and an
  existing file is only read (``qemu-img info``), never overwritten, truncated or resized;
- a missing disk is created only with ``create_if_missing``, never through a symbolic link
  (a link to an existing image is fine: it is only read);
- every directory above it exists (bkt makes no directories: a typo must not grow a tree);
- the directory is the target of an *active* libvirt storage pool (``virsh vol-create-as``,
  so a member of the libvirt group can provision under /var/lib/libvirt/images), or the user
  may write to it (``qemu-img create`` behind an ``O_EXCL`` placeholder). The target of an
  inactive pool is refused with the ``virsh pool-start`` hint: bkt never starts pools.

Sync calls :func:`plan_disk` for each VM (it looks at the path and asks the
:func:`~bkt_core.hookspecs.bkt_disk_plan` hook only for a missing disk to be created),
:func:`disk_format` for a disk that exists, and :func:`provision_all` to execute the plan.
The defaults here are ``trylast``, so a third-party plugin's answer wins.

Processes: libvirt's storage pools are read only when a disk must be created, or when the
format of an existing disk can only come from its pool, in two virsh processes however many
pools and disks there are (``pool-list`` twice, then one ``pool-dumpxml`` each); every
``vol-create-as`` of a sync runs in one more virsh process; each disk outside a pool costs one
``qemu-img create``, each existing disk one ``qemu-img info``.

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

from bkt_core.errors import BktError, CommandError, OperationError
from bkt_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from bkt_core.host import Host
    from bkt_core.process import CommandRunner
    from bkt_vm_plugin.model import VmDefinition
    from bkt_vm_plugin.virsh import Virsh

__all__ = [
    "FILE_POOL_TYPES",
    "PLUGIN_NAME",
    "DiskCreation",
    "DiskRequest",
    "Entry",
    "Pool",
    "ProvisionContext",
    "bkt_disk_plan",
    "bkt_disk_provision",
    "disk_format",
    "disk_request",
    "is_remote_uri",
    "look",
    "plan_disk",
    "pool_target",
    "provision_all",
    "volume_format_of",
]

#: The entry-point name of this plugin; :attr:`DiskCreation.plugin` of what it plans.
PLUGIN_NAME = "provision"

#: Pool types whose volumes are files in the target directory.
FILE_POOL_TYPES = ("dir", "fs", "netfs")

#: The formats bkt manages; an existing image's format becomes the domain's driver type.
FORMATS = ("qcow2", "raw")

QEMU_IMG_TIMEOUT = 120.0


# -- the data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskRequest:
    """A VM's disk as sync wants it: ``path`` is ``disk_path`` with ``~`` expanded."""

    vm: str
    path: str
    size_gb: int
    create_if_missing: bool


def disk_request(name: str, vm: VmDefinition, home: str | None) -> DiskRequest:
    """The :class:`DiskRequest` of manifest VM ``name``."""
    from bkt_vm_plugin.model import expand_home

    return DiskRequest(
        vm=name,
        path=expand_home(vm.disk_path, home),
        size_gb=vm.disk_size_gb,
        create_if_missing=vm.create_if_missing,
    )


@dataclass(frozen=True)
class DiskCreation:
    """A disk a plugin will create: what the plan shows, and what provisioning is given.

    ``pool`` is the storage pool it is created in (None: a file outside any pool).
    ``plugin`` names the plugin that planned it, so that only that plugin creates it.
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
        out: dict[str, Any] = {"path": self.path, "size_gb": self.size_gb, "format": self.format}
        if self.pool is not None:
            out["pool"] = self.pool
        return out


class Pool(NamedTuple):
    """A libvirt storage pool whose volumes are files in directory ``target``."""

    name: str
    target: str
    active: bool


class Entry(NamedTuple):
    """What is at a path, following a symbolic link that leads somewhere.

    ``kind`` is ``missing``, ``file``, ``dir``, ``device`` (block or character), ``other``
    (FIFO, socket), ``dangling`` (a symbolic link to nothing; ``detail`` is its target) or
    ``unknown`` (it cannot be looked at; ``detail`` says why).
    """

    kind: str
    detail: str = ""


def look(path: str) -> Entry:
    """What is at ``path`` on the local file system."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        # Not there, or a directory above it is not one (the ancestors' rule names it).
        return Entry("missing")
    except OSError as exc:
        return Entry("unknown", exc.strerror or str(exc))
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return Entry("dangling", target)
        except OSError as exc:
            return Entry("unknown", exc.strerror or str(exc))
    if stat.S_ISREG(st.st_mode):
        return Entry("file")
    if stat.S_ISDIR(st.st_mode):
        return Entry("dir")
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return Entry("device")
    return Entry("other")


def is_remote_uri(uri: str | None, environ: dict[str, str] | None = None) -> bool:
    """Whether libvirt at ``uri`` (None: ``$LIBVIRT_DEFAULT_URI``, else local) may be on
    another host: the URI names a host (``qemu+ssh://host/system``)."""
    if uri is None:
        uri = (os.environ if environ is None else environ).get("LIBVIRT_DEFAULT_URI") or None
    if uri is None:
        return False
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(uri).hostname)
    except ValueError:
        return True


def _writable_dir(path: str) -> bool:
    # The effective user's permission, as the kernel checks it when the file is created.
    return os.access(path, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)


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
    user); ``remote`` whether libvirt is on another host (default: from the virsh's URI).
    Pools are read on first need and kept for the life of the context (one sync).
    """

    def __init__(
        self,
        virsh: Virsh,
        runner: CommandRunner | None = None,
        *,
        writable: Callable[[str], bool] | None = None,
        remote: bool | None = None,
        look: Callable[[str], Entry] = look,
        qemu_img_timeout: float = QEMU_IMG_TIMEOUT,
    ) -> None:
        self.virsh = virsh
        self.runner = runner if runner is not None else virsh.runner
        self.writable = writable if writable is not None else _writable_dir
        self.remote = is_remote_uri(virsh.uri) if remote is None else remote
        self.look = look
        self.qemu_img_timeout = qemu_img_timeout
        self._pools: list[Pool] | OperationError | None = None
        self._volumes: dict[tuple[str, str], str | None] = {}
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
            raise self._pools
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
            (reply,) = self.virsh.batch([["vol-dumpxml", "--pool", pool, "--vol", name]])
            if not reply.ok:
                if _no_volume(reply.stderr):
                    self._volumes[key] = None
                    return None
                raise reply.error()
            found = volume_format_of(reply.stdout)
            if found is None:
                raise OperationError(
                    f"volume {name} of storage pool {pool} has no format in its XML"
                )
            self._volumes[key] = found
        return self._volumes[key]

    # -- qemu-img ---------------------------------------------------------------------------

    def qemu_img(self, args: Sequence[str]) -> str:
        """Run ``qemu-img ARGS``; its stdout, or :class:`CommandError` with what it said."""
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

    def _run_batch(self) -> dict[str, str | None]:
        queued, self._queue = self._queue or [], None
        results: dict[str, str | None] = {}
        if not queued:
            return results
        try:
            replies = self.virsh.batch([q.command for q in queued])
        except OperationError as exc:
            for q in queued:
                results[q.creation.path] = f"cannot create disk {q.creation.path}: {exc.message}"
            return results
        for q, reply in zip(queued, replies, strict=True):
            results[q.creation.path] = (
                None
                if reply.ok
                else f"cannot create disk {q.creation.path} in storage pool "
                f"{q.creation.pool}: {reply.message}"
            )
        return results


def _names(text: str) -> list[str]:
    # virsh pads each name with spaces.
    return [line.strip() for line in text.splitlines() if line.strip()]


def _no_volume(stderr: str) -> bool:
    return "Storage volume not found" in stderr or "no storage vol" in stderr


def _parse(xml: str) -> ET.Element | None:
    # libvirt's own output, read only for a few elements: no entities, no DTDs to fear.
    import xml.etree.ElementTree as ET

    try:
        return ET.fromstring(xml)
    except ET.ParseError:
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
        if _remote_volume(path, ctx) is not None:
            return None
    else:
        entry = ctx.look(path)
        if entry.kind == "file":
            return None
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
    if not request.create_if_missing:
        raise _missing(path)
    result = host.call("bkt_disk_plan", name=name, vm=vm, disk=request, context=ctx)
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
    return result


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


@hookimpl(trylast=True)
def bkt_disk_plan(name: str, disk: DiskRequest, context: ProvisionContext) -> DiskCreation:
    """The default plan: a volume of the active pool whose target is the disk's directory,
    else a qcow2 file made with ``qemu-img`` in a directory the user can write."""
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


@hookimpl(trylast=True)
def bkt_disk_provision(creation: DiskCreation, context: ProvisionContext) -> bool | None:
    """The default provisioning of what :func:`bkt_disk_plan` planned: ``virsh
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


def _create_file(creation: DiskCreation, context: ProvisionContext) -> None:
    """A qcow2 image outside any pool. The file is first created empty with ``O_EXCL``
    (which also refuses a symbolic link), so that an image that appeared since planning, or
    one a concurrent sync is creating, is never overwritten: qemu-img itself would truncate
    whatever is there. Only this user may read the new image, as with libvirt's volumes."""
    path = creation.path
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise _appeared(path) from None
    except OSError as exc:
        raise _refuse(path, exc.strerror or str(exc)) from None
    os.close(fd)
    try:
        context.qemu_img(
            ["create", "-q", "-f", creation.format, "--", path, f"{creation.size_gb}G"]
        )
    except CommandError as exc:
        # The empty file is ours: take it away again.
        try:
            os.unlink(path)
        except OSError as gone:
            if gone.errno != errno.ENOENT:
                raise
        raise _refuse(path, exc.message) from None


def provision_all(
    host: Host, creations: Iterable[DiskCreation], ctx: ProvisionContext
) -> dict[str, str | None]:
    """Create every planned disk through the ``bkt_disk_provision`` hook, one call each,
    with the default's ``vol-create-as`` commands run together in one virsh process.

    Returns each creation's path and its error message (None: created). One failure does
    not stop the others. A path planned twice is created once; the second one fails.
    """
    results: dict[str, str | None] = {}
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
                done = host.call("bkt_disk_provision", creation=creation, context=ctx)
            except BktError as exc:
                results[path] = exc.message
                continue
            if not done:
                results[path] = (
                    f"cannot create disk {path}: plugin {creation.plugin}, which planned it, "
                    "did not create it (is it disabled?)"
                )
                continue
            results[path] = None
    finally:
        batched = ctx._run_batch()
    results.update(batched)
    return results
