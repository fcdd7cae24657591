"""The embedding API: sync, status and capture through :class:`bkt_core.Host`, without the
CLI, and the JSON form of their results is exactly what ``--json`` prints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from bkt_core import EntryResult, Host, ManifestError, PlanEntry, SyncReport, hookimpl
from bkt_core.process import Completed, SubprocessRunner
from tests.conftest import RunBkt
from tests.livelib import domains, unique_name, uri, vm, write_vms

pytestmark = pytest.mark.libvirtd


def test_sync_and_status_through_the_host(tmp_path: Path, disks: Path, run_bkt: RunBkt) -> None:
    a, b = sorted([unique_name("api"), unique_name("api")])
    manifests = tmp_path / "manifests"
    with domains(a, b):
        write_vms(manifests, {a: vm(disks, a), b: vm(disks, b, autostart=True)})
        host = Host(manifests, uri=uri())
        assert host.validate("vm") == 2

        plan = host.plan("vm")
        assert [(e.name, e.action) for e in plan.entries] == [(a, "create"), (b, "create")]
        dry = host.sync("vm", dry_run=True)
        assert dry.results is None and dry.to_json()["plan"] == plan.to_json()

        report = host.sync("vm", names=[a])
        assert isinstance(report, SyncReport)
        assert [(r.name, r.result) for r in report.results or ()] == [(a, "created")]
        assert report.failed == []

        status = host.status("vm")
        rows = {r.name: (r.state, r.in_sync) for r in status.rows}
        assert rows == {a: ("stopped", True), b: ("missing", None)}

        # The JSON form of the results is the CLI's --json output.
        cli = run_bkt("-c", uri(), "-C", str(manifests), "vm", "status", "--json")
        assert json.loads(cli.stdout) == status.to_json()
        cli_sync = run_bkt("-c", uri(), "-C", str(manifests), "vm", "sync", "--dry-run", "--json")
        assert json.loads(cli_sync.stdout) == host.sync("vm", dry_run=True).to_json()


def test_the_host_raises_instead_of_printing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "vms.json").write_text('{"vms": {"a": {"memory_gb": 0}}}')
    host = Host(tmp_path, uri=uri())
    with pytest.raises(ManifestError) as caught:
        host.plan("vm")
    assert caught.value.diagnostics
    assert capsys.readouterr() == ("", "")


class Recorder:
    """A post-sync plugin that records what it is given."""

    bkt_plugin_name = "recorder"

    def __init__(self) -> None:
        self.per_vm: list[tuple[str, str, str | None]] = []
        self.reports: list[SyncReport] = []

    @hookimpl
    def bkt_post_sync_vm(self, name: str, entry: PlanEntry, result: EntryResult | None) -> None:
        self.per_vm.append((name, entry.action, result.result if result else None))

    @hookimpl
    def bkt_post_sync(self, report: SyncReport) -> None:
        self.reports.append(report)


def test_post_sync_hooks_see_every_result(tmp_path: Path, disks: Path) -> None:
    good, broken, same = sorted(unique_name(t) for t in ("ps-good", "ps-broken", "ps-same"))
    manifests = tmp_path / "manifests"
    with domains(good, broken, same):
        write_vms(manifests, {same: vm(disks, same)})
        assert Host(manifests, uri=uri()).sync("vm").failed == []
        write_vms(
            manifests,
            {
                good: vm(disks, good),
                broken: vm(disks, broken, create_if_missing=False),
                same: vm(disks, same),
            },
        )
        recorder = Recorder()
        host = Host(manifests, uri=uri(), plugins=[recorder])
        report = host.sync("vm")
        assert sorted(recorder.per_vm) == sorted(
            [
                (good, "create", "created"),
                (broken, "error", "failed"),
                (same, "unchanged", "unchanged"),
            ]
        )
        (seen,) = recorder.reports
        assert seen.results == report.results
        assert report.failed == [broken]
        # A dry run runs no post-sync action.
        Host(manifests, uri=uri(), plugins=[recorder]).sync("vm", dry_run=True)
        assert len(recorder.reports) == 1


class CountingRunner(SubprocessRunner):
    """The real runner, counting the processes it starts."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, timeout: float, input: str | None = None) -> Completed:
        self.started.append(tuple(argv))
        return super().run(argv, timeout=timeout, input=input)


def test_a_second_sync_is_one_virsh_process_whatever_the_number_of_vms(
    tmp_path: Path, disks: Path
) -> None:
    names = sorted(unique_name("count") for _ in range(5))
    manifests = tmp_path / "manifests"
    with domains(*names):
        write_vms(manifests, {n: vm(disks, n) for n in names})
        first = CountingRunner()
        assert Host(manifests, uri=uri(), runner=first).sync("vm").failed == []
        programs = [argv[0] for argv in first.started]
        # observe, pool reads (the disks are created), one vol-create-as or qemu-img each
        # outside a pool, one define batch, one read-back: not one virsh process per VM.
        assert programs.count("virsh") <= 5, first.started

        again = CountingRunner()
        report = Host(manifests, uri=uri(), runner=again).sync("vm")
        assert [r.result for r in report.results or ()] == ["unchanged"] * 5
        assert len(again.started) == 1, again.started
        assert again.started[0][0] == "virsh"
