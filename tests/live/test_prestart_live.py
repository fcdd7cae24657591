"""The early start against the real libvirtd (bkt_core.prestart): the second run of the same
command line starts its observation batch before bkt has loaded and uses it, with the same
output, the same ``-vv`` trace and no extra virsh process; after an edit that changes the
batch, the early virsh is stopped (``-v`` says so), the command's own one is used and the
answer is the edited manifest's. A ``virsh`` on ``PATH`` logs each process it starts.

The same command line also runs its command again without click (bkt_core.cli._replay),
with the same output and exit status, for ``vm status`` and ``vm sync``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BKT
from tests.livelib import URI, Lab, virsh_shim, vm, write_vms

PYTHON = str(Path(BKT).parent / "python")

pytestmark = pytest.mark.libvirtd

LOGGING_VIRSH = """#!/bin/sh
echo "$$" >> "$BKT_TEST_LOG"
exec {virsh} "$@"
"""


def test_the_same_command_line_uses_the_virsh_started_early(
    lab: Lab, disks: Path, tmp_path: Path
) -> None:
    path = virsh_shim(tmp_path, LOGGING_VIRSH)
    log = tmp_path / "virsh.log"
    web, db = lab.name("web"), lab.name("db")
    manifests = tmp_path / "manifests"
    write_vms(manifests, {web: vm(disks, web)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
    env.update(PATH=path, BKT_TEST_LOG=str(log))

    def status(*python: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*python, BKT, "-c", URI, "-C", str(manifests), "-v", "-vv", "vm", "status"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done

    subprocess.run(
        [BKT, "-c", URI, "-C", str(manifests), "vm", "sync"], env=env, check=True, timeout=120
    )
    log.unlink()

    first = status()
    assert len(log.read_text().split()) == 1
    second = status()  # started early this time
    assert len(log.read_text().split()) == 2, "one virsh process, the early one"
    assert second.stdout == first.stdout
    assert second.stdout.split() == ["NAME", "STATE", "SYNC", web, "stopped", "in", "sync"]
    assert "early" not in second.stderr
    # The trace names the same batch (the markers in it are hidden behind `<N commands>`).
    assert second.stderr == first.stderr

    # Run again without click, with the same answer and trace.
    imports = status(PYTHON, "-X", "importtime")
    assert not imported(imports.stderr, "click")
    assert imports.stdout == first.stdout
    assert without_imports(imports.stderr) == first.stderr
    log.write_text("")

    # Another VM in the manifest: another batch. The early virsh is stopped and reaped.
    write_vms(manifests, {web: vm(disks, web), db: vm(disks, db)})
    third = status()
    pids = log.read_text().split()
    assert len(pids) == 2
    early = int(pids[0])
    with pytest.raises(ProcessLookupError):
        os.kill(early, 0)
    assert third.stdout.split()[3:] == [db, "missing", "-", web, "stopped", "in", "sync"]
    assert "is not the one this command starts: stopped it" in third.stderr
    fourth = status()
    assert len(log.read_text().split()) == 3
    assert fourth.stdout == third.stdout


def imported(stderr: str, package: str) -> bool:
    """Whether ``python -X importtime``'s report in ``stderr`` lists ``package``."""
    return re.search(rf"^import time:.*\| +{re.escape(package)}(\.|$)", stderr, re.M) is not None


def without_imports(stderr: str) -> str:
    return "".join(
        line for line in stderr.splitlines(keepends=True) if not line.startswith("import time:")
    )


def test_a_no_op_sync_run_again_runs_without_click(lab: Lab, disks: Path, tmp_path: Path) -> None:
    web = lab.name("web")
    manifests = tmp_path / "manifests"
    write_vms(manifests, {web: vm(disks, web)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}

    def sync(*python: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*python, BKT, "-c", URI, "-C", str(manifests), "vm", "sync", "--check"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    missing = sync()
    assert missing.returncode == 1  # --check: the VM would be created
    again = sync(PYTHON, "-X", "importtime")
    assert not imported(again.stderr, "click")
    assert (again.returncode, again.stdout) == (1, missing.stdout)
    assert without_imports(again.stderr) == missing.stderr
    assert f"+ create {web}" in again.stdout

    # Created: the same command line, the same batch (the VM's definition is read now).
    subprocess.run([BKT, "-c", URI, "-C", str(manifests), "vm", "sync"], env=env, check=True)
    in_sync = sync(PYTHON, "-X", "importtime")
    assert not imported(in_sync.stderr, "click")
    assert (in_sync.returncode, in_sync.stdout) == (0, "nothing to do: 1 VM in sync\n")
    assert without_imports(in_sync.stderr) == ""
