"""A plugin that breaks the plugin contract in the way ``$MISBEHAVE`` names, and otherwise
behaves: ``exit`` and ``interrupt`` (the manifest rule calls ``sys.exit(7)`` or raises
``KeyboardInterrupt``), ``sleep`` (the rule takes a minute), ``wrong-type`` (the field hook
returns a list), ``cli-raise`` and ``cli-exit`` (the command hook raises or exits),
``import-exit`` (importing the module calls ``sys.exit(5)``)."""

import os
import sys
import time
from collections.abc import Mapping
from typing import Any, cast

from bkt_core import hookimpl


def _asked(what: str) -> bool:
    return os.environ.get("MISBEHAVE") == what


if _asked("import-exit"):
    sys.exit(5)


@hookimpl
def bkt_validate_manifest(subsystem: str, document: Any) -> None:
    if _asked("exit"):
        sys.exit(7)
    if _asked("interrupt"):
        raise KeyboardInterrupt
    if _asked("sleep"):
        time.sleep(60)


@hookimpl
def bkt_manifest_fields(subsystem: str) -> Mapping[str, tuple[Any, Any]] | None:
    if _asked("wrong-type"):
        # The wrong type bkt must catch: a list where the hook returns a mapping.
        return cast("Mapping[str, tuple[Any, Any]]", ["notes"])
    return None


@hookimpl
def bkt_cli_commands(cli: Any) -> None:
    if _asked("cli-raise"):
        raise RuntimeError("no commands today")
    if _asked("cli-exit"):
        sys.exit(3)
