"""Definitions read while virsh still runs (:meth:`Observing.wait_early`): status and sync
read and plan each domain as soon as virsh printed it, and that changes nothing but time.
A result made early is used only when its inputs are those of the whole observation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bkt_vm_plugin import observe
from bkt_vm_plugin.observe import Observation, Observing
from tests.streaming import stream_virsh
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
    """The domains whose early results each observation kept."""
    seen: list[set[str]] = []
    wait_early = Observing.wait_early

    def spy(self: Observing, each: Callable[[Observation, str], Any]) -> Any:
        observation, made = wait_early(self, each)
        seen.append(set(made))
        return observation, made

    monkeypatch.setattr(Observing, "wait_early", spy)
    return seen


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
