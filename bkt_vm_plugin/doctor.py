"""``bkt doctor``: can this host run the manifest's VMs, and if not, what to do about it.

The knowledge of each check lives here once and serves two callers: :func:`doctor` reports
every check, and :func:`plan_warnings` gives ``sync``'s plan a warning for each problem a VM
it is about to create or change would hit, so the two never disagree.

What libvirt knows is read in one virsh process (:func:`gather`): ``uri`` and ``version``,
``domcapabilities`` per domain type (UEFI and Secure Boot firmware, swtpm), the networks,
and a probe of KVM. The probe matters because libvirt's capabilities only say that
``/dev/kvm`` opens and QEMU knows KVM: a nested host without working virtualisation passes
that and then fails at ``virsh start`` in QEMU itself. So the probe starts a tiny transient
domain, paused, with no disk and no network, as bkt renders a kvm guest (q35,
``host-passthrough``), and destroys it at once; a second probe adds SMM, which Secure Boot
needs and which some nested hosts lack.

What only the local machine shows (bridges, whether the QEMU user can reach a disk or ISO
file) is checked only for a local URI; paths only for a system URI, since a session's QEMU
runs as the user.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import stat
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from bkt_core.errors import BktError
from bkt_vm_plugin.virsh import CONNECT_HINT, INSTALL_HINT, Reply, Virsh, memory_files

if TYPE_CHECKING:
    from bkt_core.plan import PlanEntry
    from bkt_vm_plugin.definition import VmDefinition, VmManifest
    from bkt_vm_plugin.domain_xml import DomainContext
    from bkt_vm_plugin.subsystem import VmSubsystem
    from bkt_vm_plugin.xmltree import Element

__all__ = [
    "Check",
    "DoctorReport",
    "HostFacts",
    "Problem",
    "QemuUser",
    "allowed",
    "doctor",
    "gather",
    "parse_acl",
    "parse_qemu_conf",
    "plan_warnings",
    "vm_problems",
]

Status = Literal["ok", "warn", "fail", "skip"]

QEMU_CONF = "/etc/libvirt/qemu.conf"
#: The QEMU user when qemu.conf does not name one: Debian's, then Fedora's.
DEFAULT_QEMU_USERS = ("libvirt-qemu", "qemu")
SYS_CLASS_NET = "/sys/class/net"

QEMU_HINT = 'set "virt_type": "qemu" (software emulation, slower)'
KVM_HINT = (
    QEMU_HINT + ", or make KVM work (virtualisation on in the firmware; on a VM host, nested "
    "virtualisation)"
)
OVMF_HINT = "install UEFI firmware for QEMU (Debian: apt-get install ovmf)"
SWTPM_HINT = "install swtpm (Debian: apt-get install swtpm swtpm-tools)"


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One line of ``bkt doctor``: ``status`` is ok, warn (a host problem no manifest VM
    hits), fail (one a VM hits, or libvirt unusable) or skip (not checked, and why)."""

    check: str
    status: Status
    message: str
    hint: str | None = None
    vms: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "status": self.status, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.vms:
            out["vms"] = list(self.vms)
        return out


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.failed, "checks": [c.to_json() for c in self.checks]}


@dataclass(frozen=True)
class Problem:
    """What stops one VM from running here: ``check`` names the doctor check it belongs to
    (``kvm``, ``uefi``, ``network default``, ``path /root/x.iso``...)."""

    check: str
    message: str
    hint: str | None = None


# -- what libvirt says -------------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What one :func:`gather` read. A :class:`Reply` per command (None: not asked)."""

    uri: Reply | None = None
    version: Reply | None = None
    domcaps: Mapping[str, Reply] = field(default_factory=dict)
    probes: Mapping[str, Reply] = field(default_factory=dict)
    networks: tuple[Reply, Reply, Reply] | None = None
    #: Probe domains whose destroy failed: still paused, transient.
    leftovers: tuple[str, ...] = ()

    @property
    def uri_text(self) -> str:
        return self.uri.stdout.strip() if self.uri is not None and self.uri.ok else ""

    def domcaps_tree(self, virt_type: str) -> Element | None:
        reply = self.domcaps.get(virt_type)
        if reply is None or not reply.ok:
            return None
        from bkt_vm_plugin.xmltree import DomainXmlError, parse_xml

        try:
            return parse_xml(reply.stdout, "domainCapabilities")
        except DomainXmlError:
            return None

    def network_sets(self) -> tuple[set[str], set[str], set[str]] | None:
        if self.networks is None or not all(r.ok for r in self.networks):
            return None
        all_, active, autostart = (
            {line.strip() for line in r.stdout.splitlines() if line.strip()} for r in self.networks
        )
        return all_, active, autostart


def _probe_xml(name: str, smm: bool) -> str:
    features = "<features><smm state='on'/></features>" if smm else ""
    return (
        f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>16</memory>"
        "<vcpu>1</vcpu><os><type machine='q35'>hvm</type></os>"
        f"{features}<cpu mode='host-passthrough'/><on_crash>destroy</on_crash></domain>"
    )


def gather(
    virsh: Virsh,
    *,
    uri: bool = True,
    version: bool = False,
    virt_types: Iterable[str] = (),
    probes: Iterable[Literal["kvm", "smm"]] = (),
    networks: bool = False,
) -> HostFacts:
    """Read what the checks need in one virsh process (none when nothing is asked). Raises
    :class:`~bkt_core.errors.CommandError` when virsh could not run it at all."""
    types = sorted(set(virt_types))
    wanted = list(dict.fromkeys(probes))
    commands: list[list[str]] = [["uri"]] if uri else []
    if version:
        commands.append(["version"])
    commands += [["domcapabilities", "--virttype", t, "--machine", "q35"] for t in types]
    names = {p: f"bkt-probe-{secrets.token_hex(6)}-{p}" for p in wanted}
    if networks:
        commands += [
            ["net-list", "--all", "--name"],
            ["net-list", "--name"],
            ["net-list", "--all", "--name", "--autostart"],
        ]
    with memory_files([_probe_xml(names[p], smm=p == "smm") for p in wanted]) as paths:
        for probe, path in zip(wanted, paths, strict=True):
            commands += [
                ["create", "--paused", "--file", path],
                ["destroy", "--domain", names[probe]],
            ]
        replies = iter(virsh.batch(commands))
    said_uri = next(replies) if uri else None
    ver = next(replies) if version else None
    domcaps = {t: next(replies) for t in types}
    nets = (next(replies), next(replies), next(replies)) if networks else None
    results: dict[str, Reply] = {}
    leftovers: list[str] = []
    for probe in wanted:
        created, destroyed = next(replies), next(replies)
        results[probe] = created
        if created.ok and not destroyed.ok:
            leftovers.append(names[probe])
    return HostFacts(said_uri, ver, domcaps, results, nets, tuple(leftovers))


# -- the checks' knowledge ---------------------------------------------------------------------


def _said(reply: Reply) -> str:
    """What virsh said, without libvirt's wrapping and QEMU's timestamps: QEMU's own words."""
    import re

    text = re.sub(r"Failed to create domain from \S+: ", "", reply.message)
    for noise in (
        "internal error: ",
        "qemu unexpectedly closed the monitor: ",
        "process exited while connecting to monitor: ",
    ):
        text = text.replace(noise, "")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ", "", text)
    return text[:300].rstrip(".")


def kvm_problem(facts: HostFacts) -> str | None:
    """Why QEMU cannot use KVM here, or None when a kvm guest starts."""
    caps = facts.domcaps.get("kvm")
    if caps is not None and not caps.ok:
        return f"libvirt offers no kvm domains: {_said(caps)}"
    probe = facts.probes.get("kvm")
    if probe is not None and not probe.ok:
        return f"a kvm guest does not start: {_said(probe)}"
    return None


def smm_problem(facts: HostFacts) -> str | None:
    probe = facts.probes.get("smm")
    if kvm_problem(facts) is None and probe is not None and not probe.ok:
        return f"a kvm guest with SMM (which Secure Boot needs) does not start: {_said(probe)}"
    return None


def _enum_values(node: Element | None, name: str) -> set[str]:
    from bkt_vm_plugin.xmltree import children, text_of

    if node is None:
        return set()
    return {
        text_of(value)
        for enum in children(node, "enum")
        if enum.get("name") == name
        for value in children(enum, "value")
    }


def _domcaps(facts: HostFacts, virt_type: str) -> tuple[Element | None, str | None]:
    """libvirt's domain capabilities for ``virt_type`` guests, or why they cannot be read
    (both None: they were not asked for)."""
    reply = facts.domcaps.get(virt_type)
    if reply is None:
        return None, None
    tree = facts.domcaps_tree(virt_type)
    if tree is None:
        return None, f"cannot read libvirt's {virt_type} domain capabilities: {_said(reply)}"
    return tree, None


def firmware_problem(facts: HostFacts, virt_type: str, secure: bool) -> str | None:
    """Why libvirt has no UEFI (``secure``: Secure Boot) firmware for ``virt_type`` guests."""
    from bkt_vm_plugin.xmltree import at

    tree, problem = _domcaps(facts, virt_type)
    if tree is None:
        return problem
    os_ = at(tree, "os")
    loader = at(tree, "os", "loader")
    if "efi" not in _enum_values(os_, "firmware") or loader is None:
        return f"libvirt has no UEFI firmware for {virt_type} guests"
    if secure and "yes" not in _enum_values(loader, "secure"):
        return f"libvirt has no Secure Boot UEFI firmware for {virt_type} guests"
    return None


def swtpm_problem(facts: HostFacts, virt_type: str) -> str | None:
    from bkt_vm_plugin.xmltree import at

    tree, problem = _domcaps(facts, virt_type)
    if tree is None:
        return problem
    tpm = at(tree, "devices", "tpm")
    # libvirt lists the emulator backend only when it finds swtpm.
    if tpm is None or "emulator" not in _enum_values(tpm, "backendModel"):
        return "libvirt finds no swtpm, which an emulated TPM needs"
    return None


def network_problem(facts: HostFacts, name: str) -> tuple[Status, str, str] | None:
    """A libvirt network that is missing or inactive (fail) or not started at boot (warn)."""
    sets = facts.network_sets()
    if sets is None:
        return None
    all_, active, autostart = sets
    if name not in all_:
        return (
            "fail",
            f"network {name} does not exist",
            "`virsh net-list --all` lists the networks; define it or change the VM's network",
        )
    if name not in active:
        also = "" if name in autostart else f", and `virsh net-autostart {name}` for every boot"
        return "fail", f"network {name} is not active", f"`virsh net-start {name}`{also}"
    if name not in autostart:
        return (
            "warn",
            f"network {name} is active but not started when the host boots",
            f"`virsh net-autostart {name}`",
        )
    return None


def bridge_problem(name: str, sysfs: str = SYS_CLASS_NET) -> str | None:
    device = os.path.join(sysfs, name)
    if not os.path.exists(device):
        return f"host bridge {name} does not exist"
    if not os.path.isdir(os.path.join(device, "bridge")):
        return f"host interface {name} is not a bridge"
    return None


# -- who QEMU runs as, and what it can reach ----------------------------------------------------


@dataclass(frozen=True)
class QemuUser:
    """The user QEMU runs as for a system URI, its groups, and whether libvirt hands it the
    image files (``dynamic_ownership``, on by default: then only the directories matter)."""

    name: str
    uid: int
    gids: frozenset[int]
    dynamic_ownership: bool = True


def parse_qemu_conf(text: str) -> dict[str, str]:
    """The ``user``, ``group`` and ``dynamic_ownership`` settings of a qemu.conf."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if eq and key in ("user", "group", "dynamic_ownership"):
            found[key] = value.strip('"')
    return found


def _uid_of(spec: str) -> tuple[str, int, int] | None:
    """(name, uid, primary gid) of a qemu.conf user: a name or ``+UID``."""
    try:
        entry = pwd.getpwuid(int(spec[1:])) if spec.startswith("+") else pwd.getpwnam(spec)
    except (KeyError, ValueError):
        return None
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def _gid_of(spec: str) -> int | None:
    try:
        return int(spec[1:]) if spec.startswith("+") else grp.getgrnam(spec).gr_gid
    except (KeyError, ValueError):
        return None


def qemu_user(conf_path: str = QEMU_CONF) -> QemuUser | None:
    """The QEMU user of the local system daemon: qemu.conf's ``user`` (when bkt can read
    it), else the first of :data:`DEFAULT_QEMU_USERS` that exists. Its groups are qemu.conf's
    ``group`` (else its primary group) and its supplementary groups, as libvirt sets them."""
    try:
        with open(conf_path, encoding="utf-8", errors="replace") as f:
            conf = parse_qemu_conf(f.read(1 << 20))
    except OSError:
        conf = {}
    who = None
    for spec in [conf["user"]] if "user" in conf else DEFAULT_QEMU_USERS:
        who = _uid_of(spec)
        if who is not None:
            break
    if who is None:
        return None
    name, uid, primary = who
    gid = _gid_of(conf["group"]) if "group" in conf else primary
    gids = {gid if gid is not None else primary, *os.getgrouplist(name, primary)}
    return QemuUser(name, uid, frozenset(gids), conf.get("dynamic_ownership", "1") != "0")


_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
)


def parse_acl(data: bytes) -> list[tuple[int, int, int]] | None:
    """The (tag, permission bits, id) entries of a ``system.posix_acl_access`` value; None
    when it is not one (the kernel's format: a version 2 header, then 8-byte entries)."""
    if len(data) < 4 or (len(data) - 4) % 8 or struct.unpack_from("<I", data)[0] != 2:
        return None
    return [struct.unpack_from("<HHI", data, 4 + 8 * i) for i in range((len(data) - 4) // 8)]


def allowed(
    owner_bits: tuple[int, int, int],
    acl: Sequence[tuple[int, int, int]] | None,
    uid: int,
    gids: Iterable[int],
    want: int,
) -> bool:
    """Whether user ``uid`` with groups ``gids`` has permission bits ``want`` (4 read,
    2 write, 1 search/execute) on a file whose (mode, owner, group) is ``owner_bits``: the
    kernel's rule, with the POSIX ACL ``acl`` when there is one. Root is not special here:
    libvirt drops QEMU's capabilities, so a root QEMU goes by these bits too."""
    mode, owner, group = owner_bits
    groups = set(gids)
    # Like the kernel, which consults an ACL only when the mode's group bits (its mask)
    # are not all clear: with a zero mask, a matching group entry cannot deny either.
    if not acl or not mode & 0o070:
        if uid == owner:
            bits = mode >> 6
        elif group in groups:
            bits = mode >> 3
        else:
            bits = mode
        return bits & want == want
    mask = next((perm for tag, perm, _ in acl if tag == _ACL_MASK), 7)
    if uid == owner:
        return any(perm & want == want for tag, perm, _ in acl if tag == _ACL_USER_OBJ)
    named = [perm for tag, perm, who in acl if tag == _ACL_USER and who == uid]
    if named:
        return named[0] & mask & want == want
    matched = [
        perm
        for tag, perm, who in acl
        if (tag == _ACL_GROUP_OBJ and group in groups) or (tag == _ACL_GROUP and who in groups)
    ]
    if matched:
        return any(perm & mask & want == want for perm in matched)
    return any(perm & want == want for tag, perm, _ in acl if tag == _ACL_OTHER)


def _bits(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_mode, st.st_uid, st.st_gid


def _acl_of(path: str) -> list[tuple[int, int, int]] | None:
    try:
        return parse_acl(os.getxattr(path, "system.posix_acl_access"))
    except OSError:  # no ACL, or a file system without them
        return None


def _describe(path: str, st: os.stat_result) -> str:
    def name(lookup: Any, number: int) -> str:
        try:
            return str(lookup(number)[0])
        except KeyError:
            return str(number)

    owner, group = name(pwd.getpwuid, st.st_uid), name(grp.getgrgid, st.st_gid)
    return f"{path} ({stat.filemode(st.st_mode)} {owner}:{group})"


def path_problem(path: str, qemu: QemuUser, *, write: bool) -> tuple[str, str] | None:
    """Why ``qemu`` cannot open ``path``, and the file or directory in its way: a directory
    on the way it may not search (the classic: an ISO under /root or a 0700 home), or the
    file itself when libvirt does not hand files to QEMU. Directories are checked along
    ``path`` as written and along its resolved form; a part that does not exist ends the
    walk (sync reports missing files)."""
    seen: set[tuple[int, int]] = set()
    for spelled in dict.fromkeys([path, os.path.realpath(path)]):
        parts = spelled.split("/")[1:-1]
        for i in range(len(parts) + 1):
            directory = "/" + "/".join(parts[:i])
            try:
                st = os.stat(directory)
            except OSError:
                break
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            if not allowed(_bits(st), _acl_of(directory), qemu.uid, qemu.gids, 1):
                return f"{qemu.name} cannot search {_describe(directory, st)}", directory
    if not qemu.dynamic_ownership:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not allowed(_bits(st), _acl_of(path), qemu.uid, qemu.gids, 6 if write else 4):
            verb = "write" if write else "read"
            return f"{qemu.name} cannot {verb} {_describe(path, st)}", path
    return None


def _path_hint(qemu: QemuUser, blocked: str, search: bool) -> str:
    if search:
        return (
            f"`setfacl -m u:{qemu.name}:x {blocked}`, or move the file where QEMU can reach "
            "it (/var/lib/libvirt/images)"
        )
    return f"`setfacl -m u:{qemu.name}:rw {blocked}`, or let libvirt own the file"


# -- where the URI points --------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """What the URI means for the local checks."""

    uri: str
    local: bool
    system: bool

    @classmethod
    def of(cls, uri: str) -> Place:
        parts = urlsplit(uri)
        transport = parts.scheme.partition("+")[2]
        local = transport in ("", "unix") and parts.hostname in (None, "", "localhost")
        return cls(uri, local, parts.path == "/system")


def _as_whom(place: Place) -> str:
    if not place.local:
        return f"on {urlsplit(place.uri).hostname} (remote: files and bridges are not checked)"
    user = pwd.getpwuid(os.geteuid()).pw_name if _has_user(os.geteuid()) else str(os.geteuid())
    if not place.system:
        return f"as {user} (a session: QEMU runs as {user})"
    if os.geteuid() == 0:
        return "as root"
    try:
        libvirt_gid = grp.getgrnam("libvirt").gr_gid
    except KeyError:
        libvirt_gid = None
    if libvirt_gid is not None and libvirt_gid in os.getgroups():
        return f"as {user}, a member of group libvirt"
    return f"as {user} (allowed by polkit)"


def _has_user(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


# -- per VM ----------------------------------------------------------------------------------


def needs(vms: Iterable[VmDefinition]) -> dict[str, Any]:
    """The :func:`gather` arguments that the checks of ``vms`` need."""
    from bkt_vm_plugin.paths import network_kind

    vms = list(vms)
    types = {vm.virt_type for vm in vms if vm.boot == "uefi" or vm.tpm == "2.0"}
    kvm = [vm for vm in vms if vm.virt_type == "kvm"]
    probes: list[Literal["kvm", "smm"]] = ["kvm"] if kvm else []
    if any(vm.boot == "uefi" and vm.secure_boot for vm in kvm):
        probes.append("smm")
    return {
        "virt_types": types | ({"kvm"} if kvm else set()),
        "probes": probes,
        "networks": any(network_kind(vm.network)[0] == "network" for vm in vms),
    }


def vm_problems(
    facts: HostFacts,
    place: Place,
    qemu: QemuUser | None,
    vm: VmDefinition,
    ctx: DomainContext,
) -> list[Problem]:
    """Every host problem that would stop ``vm`` (its paths resolved in ``ctx``)."""
    from bkt_vm_plugin.paths import network_kind

    found: list[Problem] = []
    if vm.virt_type == "kvm":
        why = kvm_problem(facts)
        if why is not None:
            found.append(Problem("kvm", f"KVM is not usable here: {why}", QEMU_HINT))
        elif vm.boot == "uefi" and vm.secure_boot and (why := smm_problem(facts)):
            found.append(
                Problem(
                    "secure-boot",
                    f"Secure Boot cannot run under KVM here: {why}",
                    QEMU_HINT + ', or set "secure_boot": false',
                )
            )
    kvm_broken = vm.virt_type == "kvm" and kvm_problem(facts) is not None
    if vm.boot == "uefi" and not kvm_broken:
        secure = vm.secure_boot
        why = firmware_problem(facts, vm.virt_type, secure)
        if why is not None:
            found.append(Problem("secure-boot" if "Secure" in why else "uefi", why, OVMF_HINT))
    if vm.tpm == "2.0" and not kvm_broken:
        why = swtpm_problem(facts, vm.virt_type)
        if why is not None:
            found.append(Problem("swtpm", why, SWTPM_HINT))
    kind, net = network_kind(vm.network)
    if kind == "network":
        net_problem = network_problem(facts, net)
        if net_problem is not None and net_problem[0] == "fail":
            found.append(Problem(f"network {net}", net_problem[1], net_problem[2]))
    elif kind == "bridge" and place.local:
        why = bridge_problem(net)
        if why is not None:
            found.append(
                Problem(
                    f"bridge {net}",
                    why,
                    "create the bridge (systemd-networkd, NetworkManager, ifupdown) or change "
                    "the VM's network",
                )
            )
    if place.local and place.system and qemu is not None:
        for path, write in [(ctx.disk_path, True), *((iso, False) for iso in ctx.isos)]:
            trouble = path_problem(path, qemu, write=write)
            if trouble is not None:
                message, blocked = trouble
                hint = _path_hint(qemu, blocked, search=" search " in message)
                found.append(Problem(f"path {path}", message, hint))
    return found


def plan_warnings(
    sub: VmSubsystem, entries: Sequence[PlanEntry], defined: Sequence[str], manifest: VmManifest
) -> tuple[PlanEntry, ...]:
    """``entries`` with a warning for each host problem of the VMs ``defined`` (those the plan
    creates or changes), read in one virsh process."""
    todo = [e for e in entries if e.name in defined]
    vms = {e.name: manifest.vms[e.name] for e in todo}
    extra: dict[str, list[str]] = {}
    try:
        # `virsh uri` only when the host has none: it says whether QEMU runs as another user.
        facts = gather(sub.virsh, uri=sub.host.uri is None, **needs(vms.values()))
    except BktError as exc:
        extra = {name: [f"cannot check the host: {exc.message}"] for name in vms}
    else:
        place = Place.of(sub.host.uri or facts.uri_text)
        qemu = qemu_user() if place.local and place.system else None
        # The KVM probe is a transient guest destroyed in the same process: one left behind
        # is said, never kept quiet.
        leftovers = [
            f"the KVM probe domain {n} could not be destroyed (fix: `virsh destroy {n}`)"
            for n in facts.leftovers
        ]
        for entry in todo:
            extra[entry.name] = [
                f"{p.message} (fix: {p.hint})" if p.hint else p.message
                for p in vm_problems(facts, place, qemu, vms[entry.name], entry.payload.context)
            ] + leftovers
    return tuple(
        replace(e, warnings=(*e.warnings, *extra[e.name])) if extra.get(e.name) else e
        for e in entries
    )


# -- bkt doctor ---------------------------------------------------------------------------------


def doctor(sub: VmSubsystem) -> DoctorReport:
    """Every check, for this host and the manifest (when there is a valid one)."""
    import shutil

    checks: list[Check] = []
    found = shutil.which("virsh")
    if found is None:
        checks.append(Check("virsh", "fail", "virsh is not installed", INSTALL_HINT))
        return DoctorReport(tuple(checks))
    checks.append(Check("virsh", "ok", found))

    manifest_check, manifest = _manifest_check(sub)
    checks.append(manifest_check)
    vms = dict(manifest.vms) if manifest is not None else {}

    try:
        facts = gather(
            sub.virsh,
            version=True,
            virt_types=("kvm", "qemu"),
            probes=("kvm", "smm"),
            networks=True,
        )
    except BktError as exc:
        uri = sub.host.uri or "virsh's default URI"
        checks.append(
            Check("libvirt", "fail", f"{uri} is not reachable: {exc.message}", _connect_hint(exc))
        )
        return DoctorReport(tuple(checks))
    place = Place.of(facts.uri_text or sub.host.uri or "")
    checks += _libvirt_checks(facts, place)

    qemu = qemu_user() if place.local and place.system else None
    per_vm = _vm_problems(facts, place, qemu, vms)

    checks.append(_kvm_check(facts, vms, per_vm))
    checks += _firmware_checks(facts, vms, per_vm)
    checks += _network_checks(facts, place, vms, per_vm)
    checks += _path_checks(place, qemu, vms, per_vm)
    return DoctorReport(tuple(checks))


def _manifest_check(sub: VmSubsystem) -> tuple[Check, VmManifest | None]:
    """Whether the manifest loads, and the manifest when it does (none: only the host is
    checked)."""
    from bkt_core.errors import ManifestError

    if not sub.manifest_path.exists():
        return Check("manifest", "skip", f"no {sub.manifest_path}: only the host is checked"), None
    try:
        manifest = sub.load()
    except ManifestError as exc:
        return Check(
            "manifest", "fail", exc.message, "`bkt vm validate` lists every problem"
        ), None
    except BktError as exc:
        return Check("manifest", "fail", exc.message, exc.hint), None
    n = len(manifest.vms)
    return Check("manifest", "ok", f"{sub.manifest_path}: {n} VM{'s' * (n != 1)}"), manifest


def _libvirt_checks(facts: HostFacts, place: Place) -> list[Check]:
    """libvirt is reachable (as whom, which versions), and no KVM probe domain was left
    behind."""
    checks = [Check("libvirt", "ok", f"{place.uri} reachable {_as_whom(place)}{_versions(facts)}")]
    for name in facts.leftovers:
        checks.append(
            Check(
                "kvm-probe",
                "warn",
                f"the probe domain {name} could not be destroyed",
                f"`virsh destroy {name}`",
            )
        )
    return checks


def _connect_hint(exc: BktError) -> str | None:
    text = exc.message
    if "authentication" in text or "Permission denied" in text or "polkit" in text:
        return (
            "add yourself to the libvirt group (`sudo adduser $USER libvirt`, then log in "
            "again), or use --connect qemu:///session"
        )
    return exc.hint or CONNECT_HINT


def _versions(facts: HostFacts) -> str:
    if facts.version is None or not facts.version.ok:
        return ""
    found = {}
    for line in facts.version.stdout.splitlines():
        key, _, value = line.partition(":")
        found[key.strip()] = value.strip()
    shown = [v for k, v in found.items() if k in ("Using library", "Running hypervisor") and v]
    return f" ({', '.join(shown)})" if shown else ""


def _vm_problems(
    facts: HostFacts, place: Place, qemu: QemuUser | None, vms: Mapping[str, VmDefinition]
) -> dict[str, list[Problem]]:
    from bkt_vm_plugin.iso import find_cache_dir
    from bkt_vm_plugin.observe import resolve_context
    from bkt_vm_plugin.paths import home_dir

    found = find_cache_dir()
    home, cache = home_dir(), None if found is None else str(found)
    return {
        name: vm_problems(
            facts,
            place,
            qemu,
            vm,
            resolve_context(name, vm, home=home, iso_cache=cache, exists=os.path.exists),
        )
        for name, vm in sorted(vms.items())
    }


def _hit(
    per_vm: Mapping[str, list[Problem]], check: str
) -> tuple[tuple[str, ...], Problem | None]:
    """The VMs with a problem of ``check``, and the first such problem."""
    names: list[str] = []
    first: Problem | None = None
    for name, problems in per_vm.items():
        for problem in problems:
            if problem.check == check:
                names.append(name)
                first = first or problem
                break
    return tuple(names), first


def _vms_text(names: Sequence[str]) -> str:
    return f" (VM{'s' * (len(names) != 1)} {', '.join(names)})"


def _kvm_check(
    facts: HostFacts, vms: Mapping[str, VmDefinition], per_vm: Mapping[str, list[Problem]]
) -> Check:
    why = kvm_problem(facts)
    if why is None:
        return Check("kvm", "ok", "KVM is usable by QEMU (a paused kvm guest started)")
    names, _ = _hit(per_vm, "kvm")
    if names:
        return Check("kvm", "fail", f"KVM is not usable: {why}{_vms_text(names)}", KVM_HINT, names)
    return Check("kvm", "warn", f"KVM is not usable: {why}; no VM asks for it", KVM_HINT)


def _firmware_checks(
    facts: HostFacts, vms: Mapping[str, VmDefinition], per_vm: Mapping[str, list[Problem]]
) -> list[Check]:
    usable = ["qemu"] if kvm_problem(facts) else ["kvm", "qemu"]
    out: list[Check] = []
    for check, secure in (("uefi", False), ("secure-boot", True)):
        names, problem = _hit(per_vm, check)
        if names and problem is not None:
            out.append(
                Check(check, "fail", problem.message + _vms_text(names), problem.hint, names)
            )
            continue
        what = "Secure Boot UEFI firmware" if secure else "UEFI firmware"
        missing = [t for t in usable if firmware_problem(facts, t, secure)]
        lacks = [f"no {what} for {' and '.join(missing)} guests"] if missing else []
        if secure and "kvm" in usable and (why := smm_problem(facts)):
            lacks.append(f"Secure Boot cannot run under KVM: {why}")
        if lacks:
            hint = OVMF_HINT if missing else 'use "virt_type": "qemu" for Secure Boot VMs'
            out.append(Check(check, "warn", "; ".join(lacks) + "; no VM needs it", hint))
        else:
            out.append(Check(check, "ok", f"{what} available ({', '.join(usable)})"))
    names, problem = _hit(per_vm, "swtpm")
    if names and problem is not None:
        out.append(Check("swtpm", "fail", problem.message + _vms_text(names), problem.hint, names))
    elif any(swtpm_problem(facts, t) for t in usable):
        out.append(Check("swtpm", "warn", "libvirt finds no swtpm; no VM has a TPM", SWTPM_HINT))
    else:
        out.append(Check("swtpm", "ok", "swtpm available for emulated TPMs"))
    return out


def _network_checks(
    facts: HostFacts,
    place: Place,
    vms: Mapping[str, VmDefinition],
    per_vm: Mapping[str, list[Problem]],
) -> list[Check]:
    from bkt_vm_plugin.paths import network_kind

    users: dict[tuple[str, str], list[str]] = {}
    for name, vm in sorted(vms.items()):
        kind, net = network_kind(vm.network)
        if kind in ("network", "bridge"):
            users.setdefault((kind, net), []).append(name)
    out: list[Check] = []
    for (what, net), names in sorted(users.items()):
        check = f"{what} {net}"
        used = _vms_text(names)
        if what == "bridge" and not place.local:
            out.append(
                Check(check, "skip", "a remote host's bridges are not checked", vms=tuple(names))
            )
            continue
        if what == "network":
            found = network_problem(facts, net)
            if found is not None:
                out.append(Check(check, found[0], found[1] + used, found[2], tuple(names)))
            else:
                out.append(
                    Check(
                        check,
                        "ok",
                        f"network {net} is active and autostarts{used}",
                        vms=tuple(names),
                    )
                )
            continue
        why = bridge_problem(net)
        if why is not None:
            _, problem = _hit(per_vm, check)
            out.append(
                Check(check, "fail", why + used, problem.hint if problem else None, tuple(names))
            )
        else:
            out.append(Check(check, "ok", f"host bridge {net} exists{used}", vms=tuple(names)))
    return out


def _path_checks(
    place: Place,
    qemu: QemuUser | None,
    vms: Mapping[str, VmDefinition],
    per_vm: Mapping[str, list[Problem]],
) -> list[Check]:
    if not vms:
        return []
    if not place.local:
        return [Check("paths", "skip", "a remote host's files are not checked")]
    if not place.system:
        return [Check("paths", "skip", "a session's QEMU runs as you: no other user to check")]
    if qemu is None:
        return [
            Check(
                "paths",
                "skip",
                f"cannot tell which user QEMU runs as (no user in {QEMU_CONF}, none of "
                f"{', '.join(DEFAULT_QEMU_USERS)} exists)",
            )
        ]
    out: list[Check] = []
    failing: dict[str, tuple[Problem, list[str]]] = {}
    for name, problems in per_vm.items():
        for problem in problems:
            if problem.check.startswith("path "):
                failing.setdefault(problem.check, (problem, []))[1].append(name)
    for check, (problem, names) in sorted(failing.items()):
        out.append(
            Check(check, "fail", problem.message + _vms_text(names), problem.hint, tuple(names))
        )
    if not failing:
        out.append(Check("paths", "ok", f"{qemu.name} can reach every disk and ISO path"))
    return out
