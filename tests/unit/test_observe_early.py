"""bkt and virsh at work at once. Status and sync start reading libvirt as soon as the
manifest's VM names are known, before the manifest is validated (and stop virsh when it is
invalid); they read and plan each domain as soon as virsh printed it
(:meth:`Observing.wait_early`). That changes nothing but time: a result made early is used
only when its inputs are those of the whole observation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bkt_core import hookimpl
from bkt_core.errors import ManifestError, UsageError
from bkt_vm_plugin import observe, sync
from bkt_vm_plugin.observe import Observation, Observing
from tests.streaming import kept_early, stream_virsh
from tests.unit.test_capture import World

NAMES = ("drift", "runs", "same", "unread")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "disks").mkdir()
    from bkt_vm_plugin.testing import FakeLibvirt

    w = World(tmp_path, FakeLibvirt())
    vms = {name: w.vm(name) for name in (*NAMES, "missing")}
    w.write(vms)
    for name in NAMES:
        w.define(name, vms[name])
    w.define("drift", {**vms["drift"], "memory_gb": 2})
    w.define("extra", w.vm("extra"))
    w.libvirt.set_state("runs", "running")
    w.define("runs", {**vms["runs"], "vcpus": 2})  # the next boot changes vcpus
    w.libvirt.fail("dumpxml", "unread", "failed to read it")
    yield w


@pytest.fixture
def kept(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    return kept_early(monkeypatch)


def outcomes(world: World) -> tuple[Any, Any]:
    sub = world.sub()
    return sub.status(all=True).to_json(), sub.plan().to_json()


def test_status_and_plan_made_early_are_those_made_after_virsh(
    world: World, monkeypatch: pytest.MonkeyPatch, kept: list[set[str]]
) -> None:
    after = outcomes(world)
    assert kept == [set(), set()], "a runner that cannot stream gives nothing early"
    kept.clear()
    stream_virsh(monkeypatch, lambda argv: world.libvirt.run(argv, timeout=1))
    assert outcomes(world) == after
    # Every definition but the one virsh printed last was read early, the unreadable one too.
    assert kept == [{"drift", "runs", "same"}, {"drift", "runs", "same"}]
    status = after[0]
    rows = {row["name"]: row for row in status["vms"]}
    assert rows["drift"]["drift"] == ["memory_gb"]
    assert rows["runs"]["pending_restart"] == ["vcpus"]
    assert rows["unread"]["in_sync"] is False


def test_a_definition_that_changed_before_virsh_ended_is_read_again(
    world: World, monkeypatch: pytest.MonkeyPatch, kept: list[set[str]]
) -> None:
    # What the watch saw is not what the process ended with: only the final counts.
    same = world.manifest()["vms"]["same"]

    def edit() -> None:
        world.define("same", {**same, "memory_gb": 3})

    stream_virsh(monkeypatch, lambda argv: world.libvirt.run(argv, timeout=1), between=edit)
    status = world.sub().status().to_json()
    rows = {row["name"]: row for row in status["vms"]}
    assert rows["same"]["drift"] == ["memory_gb"]
    assert kept == [{"drift", "runs"}]


def test_nothing_made_early_is_kept_when_the_lists_changed(
    world: World, monkeypatch: pytest.MonkeyPatch, kept: list[set[str]]
) -> None:
    stream_virsh(
        monkeypatch,
        lambda argv: world.libvirt.run(argv, timeout=1),
        between=lambda: world.libvirt.set_state("same", "running"),
    )
    status = world.sub().status().to_json()
    assert kept == [set()]
    rows = {row["name"]: row for row in status["vms"]}
    assert rows["same"]["state"] == "running"
    monkeypatch.undo()
    assert world.sub().status().to_json() == status


def test_early_calls_get_the_observation_as_far_as_it_goes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream_virsh(monkeypatch, lambda argv: world.libvirt.run(argv, timeout=1))
    calls: list[tuple[str, frozenset[str], list[str], dict[str, Any]]] = []

    def each(observation: Observation, name: str) -> str:
        calls.append((name, observation.active, sorted(observation.definitions), observation.live))
        return name

    virsh = world.sub().virsh
    final, made = observe.start_observing(
        virsh, ["same", "drift", "gone", "runs"], live=True
    ).wait_early(each)
    # In the order asked, never a domain that does not exist, never the running definitions.
    assert calls == [
        ("same", frozenset({"runs"}), ["same"], {}),
        ("drift", frozenset({"runs"}), ["drift", "same"], {}),
    ]
    assert made == {"same": "same", "drift": "drift"}
    assert sorted(final.definitions) == ["drift", "runs", "same"]
    assert list(final.live) == ["runs"]


# -- virsh starts before the manifest is validated ----------------------------------------------


class Events:
    """Records when virsh is started and stopped and when the manifest is validated."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[str] = []
        start = observe.start_observing
        stop = Observing.stop

        def starting(virsh: Any, names: Any, **kwargs: Any) -> Observing:
            self.seen.append("start " + " ".join(names))
            return start(virsh, names, **kwargs)

        def stopping(observing: Observing) -> None:
            self.seen.append("stop")
            stop(observing)

        monkeypatch.setattr(observe, "start_observing", starting)
        monkeypatch.setattr(sync, "start_observing", starting)
        monkeypatch.setattr(Observing, "stop", stopping)

    @hookimpl
    def bkt_validate_manifest(self, subsystem: str, document: Any) -> list[Any]:
        self.seen.append("validate")
        return []


@pytest.fixture
def events(world: World, monkeypatch: pytest.MonkeyPatch) -> Events:
    recorder = Events(monkeypatch)
    world.plugins = (("events", recorder),)
    return recorder


ALL = "start drift missing runs same unread"


def test_virsh_starts_before_validation_and_after_a_cached_manifest(
    world: World, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bkt_core import manifest_cache

    # This file, a plugin's, may have changed a moment ago (a fresh clone).
    monkeypatch.setattr(manifest_cache, "RACY_SECONDS", 0.0)
    world.sub().status()
    assert events.seen == [ALL, "validate"]
    events.seen.clear()
    world.sub().status()  # the manifest is in the cache now
    assert events.seen == [ALL]
    events.seen.clear()
    world.sub().plan(["same", "drift"])
    assert events.seen == ["start drift same"]


def test_an_invalid_manifest_stops_virsh_and_nothing_runs(world: World, events: Events) -> None:
    vms = world.manifest()["vms"]
    world.write({**vms, "same": {**vms["same"], "vcpus": 0}})
    for command in (lambda: world.sub().status(), lambda: world.sub().plan()):
        events.seen.clear()
        with pytest.raises(ManifestError):
            command()
        assert events.seen == [ALL, "validate", "stop"]
    assert world.libvirt.processes == []


def test_names_the_manifest_does_not_have_start_nothing_early(
    world: World, events: Events
) -> None:
    with pytest.raises(UsageError, match="VM nope is not in"):
        world.sub().plan(["same", "nope"])
    assert events.seen == ["validate"]
    assert world.libvirt.processes == []


def test_other_names_before_validation_are_read_again(
    world: World, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bkt_vm_plugin import subsystem

    expected = (world.sub().status(all=True).to_json(), world.sub().plan().to_json())
    monkeypatch.setattr(subsystem, "_names_in", lambda sources: ["same"])
    monkeypatch.setenv("BKT_NO_CACHE", "1")
    events.seen.clear()
    assert (world.sub().status(all=True).to_json(), world.sub().plan().to_json()) == expected
    assert events.seen == ["start same", "validate", "stop", ALL] * 2


def test_a_name_validation_refuses_never_reaches_virsh(world: World, events: Events) -> None:
    vms = world.manifest()["vms"]
    world.write({**vms, "--help": vms["same"]})
    with pytest.raises(ManifestError) as caught:
        world.sub().status()
    assert any("VM name must not start with" in d.message for d in caught.value.diagnostics)
    assert events.seen == ["validate"]
    assert world.libvirt.processes == []


def test_a_command_that_fails_before_it_waits_stops_virsh(
    world: World, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bkt_core.errors import PluginError
    from bkt_vm_plugin.subsystem import VmSubsystem

    def refused(self: VmSubsystem) -> None:
        raise PluginError("a", "bkt_domain_fields", "maps VM field 'x', which plugin b maps too")

    monkeypatch.setattr(VmSubsystem, "mapping", property(refused))
    for command in (lambda: world.sub().status(), lambda: world.sub().plan()):
        events.seen.clear()
        with pytest.raises(PluginError):
            command()
        # (The second command finds the manifest validated in the cache.)
        assert [e for e in events.seen if e != "validate"] == [ALL, "stop"]
    assert world.libvirt.processes == []
