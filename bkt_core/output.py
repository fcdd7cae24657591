"""The only module that writes to the terminal.

stdout carries data (plans, tables, JSON, schemas, summary and result lines) in every mode;
warnings, notes, hints, errors, progress and the ``-vv`` trace go to stderr. Colour is
decided per stream: ``always``, ``never``, or ``auto`` (a terminal, and ``NO_COLOR`` unset or
empty). Output reads the same without colour.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Literal, TextIO

__all__ = ["Color", "Printer", "to_json"]

Color = Literal["auto", "always", "never"]

RED = "1;31"
YELLOW = "1;33"
CYAN = "1;36"
GREEN = "32"
DIM = "2"


def to_json(document: Any) -> str:
    """The one-line JSON form of a report (``--json``)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def _wants_color(mode: Color, stream: TextIO) -> bool:
    if mode == "always":
        return True
    if mode == "never":
        return False
    return not os.environ.get("NO_COLOR") and stream.isatty()


class Printer:
    """Writes what commands report. ``verbosity`` is -1 with ``-q``, else the number of
    ``-v`` given (0 by default)."""

    def __init__(
        self,
        verbosity: int = 0,
        color: Color = "auto",
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.verbosity = verbosity
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._color_out = _wants_color(color, self.out)
        self._color_err = _wants_color(color, self.err)

    def paint(self, text: str, code: str, *, stream: Literal["out", "err"] = "out") -> str:
        on = self._color_out if stream == "out" else self._color_err
        return f"\x1b[{code}m{text}\x1b[0m" if on else text

    # -- stdout ------------------------------------------------------------------------------

    def data(self, text: str) -> None:
        """Data: always printed, even with ``-q``."""
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    def json(self, document: Any) -> None:
        self.data(to_json(document))

    def success(self, text: str) -> None:
        """A result line (``ok: 2 VMs``), silenced by ``-q``."""
        if self.verbosity >= 0:
            self.data(self.paint(text, GREEN))

    # -- stderr ------------------------------------------------------------------------------

    def _err(self, label: str, code: str, text: str) -> None:
        self.err.write(f"{self.paint(label, code, stream='err')} {text}\n")
        self.err.flush()

    def error(self, text: str) -> None:
        self._err("error:", RED, text)

    def hint(self, text: str) -> None:
        self._err("hint:", CYAN, text)

    def warning(self, text: str) -> None:
        if self.verbosity >= 0:
            self._err("warning:", YELLOW, text)

    def note(self, text: str) -> None:
        if self.verbosity >= 0:
            self.err.write(text + "\n")
            self.err.flush()

    def diagnostic(self, text: str) -> None:
        self.err.write(text + "\n")

    def trace(self, text: str) -> None:
        """A ``-vv`` line: what process runs, and what is batched into it."""
        if self.verbosity >= 2:
            self.err.write(self.paint(text, DIM, stream="err") + "\n")
            self.err.flush()
