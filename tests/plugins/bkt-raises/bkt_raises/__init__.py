"""A plugin whose manifest rule raises."""

from typing import Any

from bkt_core import hookimpl


@hookimpl
def bkt_validate_manifest(subsystem: str, document: Any) -> None:
    raise RuntimeError("the rule exploded")
