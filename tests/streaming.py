"""A virsh process whose output is watched while it "runs": what a child started in the
background gives :meth:`bkt_core.process.Running.wait`, played by a scripted runner; and
what each observation kept of the results made while virsh ran."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from bkt_core.process import Completed, Running, Watch, decode_output

Run = Callable[[tuple[str, ...]], Completed]


class Streaming(Running):
    """``run(argv)``'s output, watched at the points ``cuts`` (pairs: the parts of stdout
    and of stderr written by then): the watch sees growing prefixes, then ``between`` runs
    (when given) and the process ends, its output read from ``run(argv)`` again."""

    def __init__(
        self,
        run: Run,
        argv: tuple[str, ...],
        cuts: Sequence[tuple[float, float]],
        between: Callable[[], object] | None = None,
    ) -> None:
        self._run = run
        self._argv = argv
        self._cuts = cuts
        self._between = between

    def wait(self, watch: Watch | None = None) -> Completed:
        done = self._run(self._argv)
        out, err = done.stdout.encode(), done.stderr.encode()
        seen_out, seen_err = bytearray(), bytearray()
        for at_out, at_err in sorted(self._cuts):
            seen_out += out[len(seen_out) : max(len(seen_out), int(at_out * len(out)))]
            seen_err += err[len(seen_err) : max(len(seen_err), int(at_err * len(err)))]
            if watch is not None:
                watch(seen_out, seen_err)
        if self._between is not None:
            self._between()
            done = self._run(self._argv)
            out, err = done.stdout.encode(), done.stderr.encode()
        # As a child's output is read (universal newlines).
        return Completed(done.argv, done.returncode, decode_output(out), decode_output(err))


#: Cut points that let every command but the last be seen before the process ends.
EVERYWHERE = [(i / 40, i / 40) for i in range(41)]


def stream_virsh(
    monkeypatch: pytest.MonkeyPatch,
    run: Run,
    cuts: Sequence[tuple[float, float]] = EVERYWHERE,
    between: Callable[[], object] | None = None,
) -> None:
    """Every virsh batch process started from now on is :class:`Streaming`."""
    import bkt_vm_plugin.virsh as module

    def start(runner: object, argv: Sequence[str], **_: object) -> Running:
        return Streaming(run, tuple(argv), cuts, between)

    monkeypatch.setattr(module, "start_command", start)


def kept_early(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """From now on, the domains whose results made while virsh ran each observation kept
    (:meth:`~bkt_vm_plugin.observe.Observing.wait_early`), one set per observation."""
    from bkt_vm_plugin.observe import Observation, Observing

    seen: list[set[str]] = []
    wait_early = Observing.wait_early

    def spy(self: Observing, each: Callable[[Observation, str], Any]) -> Any:
        observation, made = wait_early(self, each)
        seen.append(set(made))
        return observation, made

    monkeypatch.setattr(Observing, "wait_early", spy)
    return seen
