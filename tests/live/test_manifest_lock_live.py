"""sync and capture take the same manifest lock: a ``bkt vm sync`` started while another
process (capture, here the test) holds the lock of the manifest directory waits for it
before it reads the manifest or touches libvirt."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BKT
from tests.livelib import URI

pytestmark = pytest.mark.libvirtd


def _waits_for(pid: int, inode: int) -> bool:
    """Whether process ``pid`` is blocked on a flock of inode ``inode`` (/proc/locks lists a
    blocked request as ``N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE ...``)."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1:3] == ["->", "FLOCK"] and fields[5] == str(pid):
            return fields[6].rsplit(":", 1)[1] == str(inode)
    return False


def test_sync_waits_for_the_manifest_lock_capture_holds(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "vms.json").write_text('{"vms": {}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
    fd = os.open(manifests, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [BKT, "-c", URI, "-C", str(manifests), "vm", "sync"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while not _waits_for(proc.pid, os.fstat(fd).st_ino):
                assert proc.poll() is None, ("sync did not wait for the lock", proc.communicate())
                time.sleep(0.02)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(fd)
    assert (proc.returncode, out, err) == (0, "nothing to do: no VMs to sync\n", "")
