"""SIGINT and SIGTERM while ``bkt vm sync`` waits for the define batch, against the real
libvirtd: a ``virsh`` on ``PATH`` passes every command to the real one except the define
batch, which it turns into a process that waits to be killed. bkt must end with 130 or 143
and a short message, its virsh child must be gone and nothing of it left in the temporary
directory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BKT
from tests.livelib import URI, Lab, virsh_shim, vm, write_vms

pytestmark = pytest.mark.libvirtd

FAKE_VIRSH = """#!/bin/sh
case "$*" in
  *"'define'"*) echo $$ > "$BKT_TEST_MARK.part"; mv "$BKT_TEST_MARK.part" "$BKT_TEST_MARK"
                exec sleep 600 ;;
esac
exec {virsh} "$@"
"""


@pytest.mark.parametrize(
    ("signum", "code", "message"),
    [(signal.SIGINT, 130, "error: interrupted\n"), (signal.SIGTERM, 143, "error: terminated\n")],
)
def test_a_signal_during_the_define_batch_ends_bkt_cleanly(
    lab: Lab, disks: Path, tmp_path: Path, signum: int, code: int, message: str
) -> None:
    path = virsh_shim(tmp_path, FAKE_VIRSH)
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    mark = tmp_path / "define-started"
    write_vms(tmp_path / "manifests", {lab.name("sig"): vm(disks, lab.name("sig"))})
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
    env.update(
        PATH=path,
        TMPDIR=str(private_tmp),
        BKT_TEST_MARK=str(mark),
    )
    proc = subprocess.Popen(
        [BKT, "-c", URI, "vm", "sync"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    virsh_pid = None
    try:
        while not mark.exists():  # the define batch has started
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        virsh_pid = int(mark.read_text())
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err
        assert err.endswith(message), err
        assert list(private_tmp.iterdir()) == [], "nothing left in the temporary directory"
        with pytest.raises(ProcessLookupError):
            os.kill(virsh_pid, 0)  # the virsh child was killed and reaped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if virsh_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(virsh_pid, signal.SIGKILL)
