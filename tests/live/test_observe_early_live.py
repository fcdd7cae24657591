"""Definitions read while the real virsh still runs (bkt_vm_plugin.observe.Observing.wait_early):
status and a plan of a dozen domains, some in sync, some drifted, some missing, are the same
whether each definition is read as virsh prints it or once virsh has ended."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bkt_core import Host
from bkt_core.process import Completed, SubprocessRunner
from tests.livelib import URI, Lab, vm, write_vms
from tests.streaming import kept_early

pytestmark = pytest.mark.libvirtd


class AtWait(SubprocessRunner):
    """Runs each process when it is waited for (its run is its own): nothing is read
    while virsh runs."""

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        return super().run(argv, timeout=timeout, input=input)


def test_status_and_plan_read_while_virsh_runs_are_those_read_after(
    lab: Lab, disks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [lab.name(f"early{i:02d}") for i in range(12)]
    manifests = tmp_path / "manifests"
    vms = {name: vm(disks, name) for name in names}
    write_vms(manifests, vms)
    Host(manifests, uri=URI).sync("vm", names=names[:10])
    # Drift on two domains; two VMs are missing.
    write_vms(
        manifests,
        {
            **vms,
            names[3]: vm(disks, names[3], vcpus=2),
            names[7]: vm(disks, names[7], memory_gb=2),
        },
    )

    kept = kept_early(monkeypatch)

    def outcomes(runner: SubprocessRunner) -> tuple[Any, Any]:
        host = Host(manifests, uri=URI, runner=runner)
        return host.status("vm").to_json(), host.plan("vm").to_json()

    after = outcomes(AtWait())
    assert kept == [set(), set()]
    kept.clear()
    for _ in range(3):
        assert outcomes(SubprocessRunner()) == after
    assert all(early <= set(names[:10]) for early in kept)
    # virsh prints a dozen definitions over tens of milliseconds: some are read meanwhile.
    assert any(kept)
    rows = {row["name"]: row for row in after[0]["vms"]}
    assert (rows[names[3]]["drift"], rows[names[7]]["drift"]) == (["vcpus"], ["memory_gb"])
    assert rows[names[11]]["state"] == "missing"
