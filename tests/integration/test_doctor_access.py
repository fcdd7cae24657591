"""``bkt doctor``'s permission rule against the kernel's: for random modes, owners and POSIX
ACLs on a real directory, what :func:`bkt_vm_plugin.doctor.allowed` says about the QEMU user
is what the kernel answers when that user tries (``runuser -u USER -- test -x DIR``)."""

from __future__ import annotations

import os
import pwd
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bkt_vm_plugin.doctor import QemuUser, allowed, parse_acl, path_problem, qemu_user

QEMU = qemu_user()

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or QEMU is None or shutil.which("runuser") is None,
    reason="needs root, runuser and libvirt's QEMU user",
)

ANY = 0xFFFFFFFF


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="bkt-test-access-"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def kernel_says(user: str, flag: str, path: Path) -> bool:
    done = subprocess.run(
        ["runuser", "-u", user, "--", "test", flag, str(path)], check=False, timeout=30
    )
    return done.returncode == 0


perms = st.integers(min_value=0, max_value=7)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mode=st.integers(min_value=0, max_value=0o777),
    owned_by_qemu=st.booleans(),
    group_is_qemus=st.booleans(),
    named_user=st.none() | perms,
    named_group=st.none() | perms,
    mask=perms,
)
def test_the_rule_agrees_with_the_kernel(
    place: Path,
    mode: int,
    owned_by_qemu: bool,
    group_is_qemus: bool,
    named_user: int | None,
    named_group: int | None,
    mask: int,
) -> None:
    assert QEMU is not None
    directory = place / "d"
    if directory.exists():
        directory.rmdir()
    directory.mkdir()
    primary = pwd.getpwnam(QEMU.name).pw_gid
    os.chown(directory, QEMU.uid if owned_by_qemu else 0, primary if group_is_qemus else 0)
    directory.chmod(mode)
    if named_user is not None or named_group is not None:
        entries = [(0x01, (mode >> 6) & 7, ANY), (0x04, (mode >> 3) & 7, ANY)]
        if named_user is not None:
            entries.append((0x02, named_user, QEMU.uid))
        if named_group is not None:
            entries.append((0x08, named_group, primary))
        entries += [(0x10, mask, ANY), (0x20, mode & 7, ANY)]
        # The kernel wants the entries in tag order.
        data = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in sorted(entries))
        os.setxattr(directory, "system.posix_acl_access", data)
    stat = os.stat(directory)
    try:
        acl = parse_acl(os.getxattr(directory, "system.posix_acl_access"))
    except OSError:
        acl = None
    for want, flag in ((1, "-x"), (4, "-r"), (2, "-w")):
        ours = allowed((stat.st_mode, stat.st_uid, stat.st_gid), acl, QEMU.uid, QEMU.gids, want)
        assert ours is kernel_says(QEMU.name, flag, directory), (oct(stat.st_mode), acl, flag)


def test_an_iso_under_a_private_directory_is_reported_with_the_directory(place: Path) -> None:
    assert QEMU is not None
    private = place / "home"
    private.mkdir(mode=0o700)
    iso = private / "installer.iso"
    iso.write_bytes(b"")
    problem = path_problem(str(iso), QEMU, write=False)
    assert problem == (f"{QEMU.name} cannot search {private} (drwx------ root:root)", str(private))
    assert not kernel_says(QEMU.name, "-r", iso)
    private.chmod(0o711)
    assert path_problem(str(iso), QEMU, write=False) is None
    # Without dynamic ownership libvirt leaves the file as it is: then it must be readable.
    iso.chmod(0o600)
    strict = QemuUser(QEMU.name, QEMU.uid, QEMU.gids, dynamic_ownership=False)
    assert path_problem(str(iso), strict, write=False) == (
        f"{QEMU.name} cannot read {iso} (-rw------- root:root)",
        str(iso),
    )
    assert path_problem(str(iso), QEMU, write=False) is None
