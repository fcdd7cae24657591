"""Commands started in the background (:func:`bkt_core.process.start`) give what
:meth:`CommandRunner.run` gives, raise what it raises, and other runners run at ``wait``."""

from __future__ import annotations

from collections.abc import Sequence

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
