"""Commands started in the background (:func:`bkt_core.process.start`) give what
:meth:`CommandRunner.run` gives, raise what it raises, and other runners run at ``wait``."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from bkt_core.errors import CommandError
from bkt_core.process import Completed, FakeRunner, SubprocessRunner, start

SCRIPT = "printf 'out\\r\\nline é'; printf 'err\\n' >&2; exit 3"


def test_started_child_gives_what_run_gives() -> None:
    runner = SubprocessRunner()
    argv = ("sh", "-c", SCRIPT)
    assert start(runner, argv, timeout=10).wait() == runner.run(argv, timeout=10)


def test_output_larger_than_a_pipe_is_read_whole() -> None:
    # A child that writes more than a pipe holds finishes although nobody reads it meanwhile.
    runner = SubprocessRunner()
    argv = ("sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo done >&2")
    done = start(runner, argv, timeout=10).wait()
    assert (done.returncode, len(done.stdout), done.stderr) == (0, 300000, "done\n")


def test_missing_program_raises_at_wait_as_run_does() -> None:
    runner = SubprocessRunner()
    argv = ("/nonexistent/bkt-no-such-program",)
    running = start(runner, argv, timeout=10)
    with pytest.raises(CommandError) as started:
        running.wait()
    with pytest.raises(CommandError) as ran:
        runner.run(argv, timeout=10)
    assert (started.value.kind, started.value.message) == (ran.value.kind, ran.value.message)
    assert started.value.kind == "spawn"
    # virsh's install hint is chosen from the error's context.
    assert isinstance(started.value.__context__, FileNotFoundError)


def test_timeout_stops_the_child_and_raises() -> None:
    runner = SubprocessRunner()
    argv = ("sh", "-c", "echo partial >&2; sleep 5")
    with pytest.raises(CommandError) as err:
        start(runner, argv, timeout=0.3).wait()
    assert err.value.kind == "timeout"
    assert "did not finish within 0.3 s" in err.value.message
    assert err.value.stderr == "partial\n"


def test_other_runners_run_at_wait() -> None:
    fake = FakeRunner().reply(lambda argv: argv[0] == "virsh", stdout="x")
    running = start(fake, ["virsh", "list"], timeout=1)
    assert fake.calls == []
    assert running.wait() == Completed(("virsh", "list"), 0, "x", "")
    assert fake.calls == [("virsh", "list")]


def test_a_runner_that_overrides_run_is_given_its_run() -> None:
    class Counting(SubprocessRunner):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[str, ...]] = []

        def run(
            self, argv: Sequence[str], *, timeout: float, input: str | None = None
        ) -> Completed:
            self.seen.append(tuple(argv))
            return super().run(argv, timeout=timeout, input=input)

    runner = Counting()
    done = start(runner, ["sh", "-c", "echo hi"], timeout=10).wait()
    assert (done.stdout, runner.seen) == ("hi\n", [("sh", "-c", "echo hi")])


def test_a_signal_while_waiting_kills_and_reaps_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGINT and SIGTERM reach bkt as exceptions raised while it waits: the child must not
    # outlive it (as a child of subprocess.run would not).
    from bkt_core import process

    running = start(SubprocessRunner(), ("sleep", "60"), timeout=120)
    child = running._proc  # type: ignore[attr-defined]

    def interrupted(proc: object, timeout: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(process, "_wait_exit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        running.wait()
    assert child.returncode is not None, "the child was killed and reaped"


# Watching a child's output while it runs ------------------------------------------------------

# Three lines, each written (and flushed: one write each) while the child still runs; the
# child ends only once the test has seen the second one (it waits for a file to appear).
STEPS = (
    "printf 'one\\n'; printf 'e1\\n' >&2; "
    "printf 'two\\n'; while [ ! -e \"$1\" ]; do sleep 0.01; done; printf 'three\\n'"
)


def test_a_watched_child_is_seen_while_it_runs_and_gives_what_run_gives(tmp_path: Path) -> None:
    runner = SubprocessRunner()
    go = tmp_path / "go"
    argv = ("sh", "-c", STEPS, "sh", str(go))
    seen: list[tuple[bytes, bytes]] = []

    def watch(out: bytearray, err: bytearray) -> None:
        seen.append((bytes(out), bytes(err)))
        if out.endswith(b"two\n"):
            go.touch()  # only now may the child end

    done = start(runner, argv, timeout=30).wait(watch)
    go.unlink()
    go.touch()
    assert done == runner.run(argv, timeout=30)
    assert (b"one\ntwo\n", b"e1\n") in seen
    # The output only grows.
    outs = [out for out, _ in seen]
    assert all(b.startswith(a) for a, b in itertools.pairwise(outs))


def test_what_a_watch_raises_stops_the_child_and_is_raised(tmp_path: Path) -> None:
    running = start(SubprocessRunner(), ("sh", "-c", "echo hi; exec sleep 60"), timeout=120)
    child = running._proc  # type: ignore[attr-defined]

    def watch(out: bytearray, err: bytearray) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        running.wait(watch)
    assert child.returncode is not None, "the child was killed and reaped"


def test_a_watched_child_still_times_out() -> None:
    seen: list[bytes] = []
    running = start(SubprocessRunner(), ("sh", "-c", "echo partial >&2; sleep 5"), timeout=0.3)
    with pytest.raises(CommandError) as err:
        running.wait(lambda out, err: seen.append(bytes(err)))
    assert (err.value.kind, err.value.stderr) == ("timeout", "partial\n")
    assert seen == [b"partial\n"]


def test_other_runners_never_call_the_watch() -> None:
    fake = FakeRunner().reply(lambda argv: True, stdout="x")
    calls: list[object] = []
    done = start(fake, ["virsh"], timeout=1).wait(lambda out, err: calls.append(out))
    assert (done.stdout, calls) == ("x", [])


def test_a_child_that_ended_in_time_is_not_timed_out_by_a_slow_watch() -> None:
    # The watch's own time may use up the child's: what counts is whether the child ended.
    slept: list[float] = []

    def slow(out: bytearray, err: bytearray) -> None:
        if not slept:
            slept.append(0.6)
            time.sleep(0.6)

    running = start(SubprocessRunner(), ("sh", "-c", "echo hi; sleep 0.1"), timeout=0.3)
    assert running.wait(slow).stdout == "hi\n"
    assert slept == [0.6]


def test_stop_after_wait_closes_nothing_else() -> None:
    running = start(SubprocessRunner(), ("true",), timeout=10)
    running.wait()
    others = [os.open("/dev/null", os.O_RDONLY) for _ in range(2)]
    try:
        running.stop()
        running.stop()
        for fd in others:
            os.fstat(fd)  # still open: stop closed only the child's own files, once
    finally:
        for fd in others:
            os.close(fd)
