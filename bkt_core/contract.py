"""The plugin contract, as :class:`~bkt_core.host.Host` holds every hook implementation to it.

A result must be what its hook declares (:func:`checked_result`, from the ``RESULTS`` tables
of the hook modules), and one call may not run past the per-hook time limit nor swallow a
real Ctrl-C (:class:`Watch`). The host turns :class:`BadResult` and :class:`HookTimeout` into
a :class:`~bkt_core.errors.PluginError` naming the plugin and the hook.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from bkt_core.errors import Signalled

__all__ = ["MAX_RESULT_ITEMS", "BadResult", "HookTimeout", "Watch", "checked_result"]

#: Most items one hook call may return: an endless generator is a failure, not a hang.
MAX_RESULT_ITEMS = 100_000


class HookTimeout(BaseException):
    """Raised in the main thread by ``SIGALRM`` when a hook runs past its limit. Not an
    ``Exception``, so that a plugin's ``except Exception`` does not swallow it."""


class BadResult(Exception):
    """A hook implementation returned something its hook does not declare."""


def _on_alarm(signum: int, frame: object) -> None:
    raise HookTimeout


def _on_interrupt(signum: int, frame: object) -> None:
    raise Signalled(signum)


class Watch:
    """The watchdog of the hook call running now: a ``SIGALRM`` timer, and a SIGINT handler
    that tells a real Ctrl-C (:class:`Signalled`) from a plugin raising ``KeyboardInterrupt``
    (the CLI installs that handler itself; an embedder with Python's default gets it for the
    duration of the call). Signals belong to the process: only the outermost hook call in the
    main thread has one, and none when the embedder runs a timer of its own."""

    running = False

    def __init__(self, previous_alarm: Any, previous_sigint: Any) -> None:
        self.previous_alarm = previous_alarm
        self.previous_sigint = previous_sigint

    @property
    def sigint_was_default(self) -> bool:
        """Whether SIGINT had Python's own handler when the call began (an embedder's)."""
        import signal

        return self.previous_sigint is signal.default_int_handler

    @classmethod
    def start(cls, limit: float | None) -> Watch | None:
        """The watch of a call that begins now, ``limit`` seconds long (None: no limit); None
        when this call cannot have one (a nested call, another thread, the embedder's
        timer)."""
        import signal

        if cls.running or signal.getitimer(signal.ITIMER_REAL)[0]:
            return None
        try:
            previous_sigint = signal.getsignal(signal.SIGINT)
            previous_alarm = signal.signal(signal.SIGALRM, _on_alarm)
        except ValueError:  # not the main thread: no signal handler can be set here
            return None
        watch = cls(previous_alarm, previous_sigint)
        if watch.sigint_was_default:
            signal.signal(signal.SIGINT, _on_interrupt)
        if limit is not None:
            signal.setitimer(signal.ITIMER_REAL, limit)
        cls.running = True
        return watch

    def stop(self) -> None:
        """The call is over: the timer off, the previous handlers back."""
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous_alarm or signal.SIG_DFL)
        if self.sigint_was_default:
            signal.signal(signal.SIGINT, self.previous_sigint)
        Watch.running = False


@functools.cache
def _result_type(spelling: str) -> type:
    module, _, name = spelling.partition(":")
    found: type = getattr(importlib.import_module(module), name)
    return found


def _a(value: object) -> str:
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def checked_result(results: Mapping[str, tuple[str, str]], hook_name: str, result: Any) -> Any:
    """``result`` if it is what ``hook_name`` declares in ``results`` (an iterable as a
    tuple, a mapping as a dict), else raise :class:`BadResult` saying what came and what was
    expected."""
    shape, spelling = results.get(hook_name, ("", ""))
    if result is None or not shape:
        return result
    if shape == "none":
        raise BadResult(f"returned {_a(result)}, expected None")
    kind = _result_type(spelling)
    if shape == "value":
        if isinstance(result, kind):
            return result
        raise BadResult(f"returned {_a(result)}, expected {kind.__name__} or None")
    if shape == "iterable":
        expected = f"an iterable of {kind.__name__} (or None)"
        if isinstance(result, str | bytes | Mapping) or not isinstance(result, Iterable):
            raise BadResult(f"returned {_a(result)}, expected {expected}")
        items = tuple(itertools.islice(result, MAX_RESULT_ITEMS + 1))
        if len(items) > MAX_RESULT_ITEMS:
            raise BadResult(f"returned more than {MAX_RESULT_ITEMS} items, expected {expected}")
        for item in items:
            if not isinstance(item, kind):
                raise BadResult(f"returned {_a(item)} among its items, expected {expected}")
        return items
    expected = f"a mapping of field names to (annotation, {kind.__name__}) pairs (or None)"
    if not isinstance(result, Mapping):
        raise BadResult(f"returned {_a(result)}, expected {expected}")
    fields = dict(itertools.islice(result.items(), MAX_RESULT_ITEMS + 1))
    if len(fields) > MAX_RESULT_ITEMS:
        raise BadResult(f"returned more than {MAX_RESULT_ITEMS} fields, expected {expected}")
    for key, spec in fields.items():
        if not isinstance(key, str):
            raise BadResult(f"returned {_a(key)} as a field name, expected {expected}")
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], kind)):
            raise BadResult(f"returned {_a(spec)} for field {key!r}, expected {expected}")
    return fields
