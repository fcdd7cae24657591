"""A plugin that claims the `notes` field that bkt-notes declares too."""

from typing import Any

from pydantic import Field

from bkt_core import hookimpl


@hookimpl
def bkt_manifest_fields(subsystem: str) -> dict[str, Any]:
    return {"notes": (int, Field(default=0))}
