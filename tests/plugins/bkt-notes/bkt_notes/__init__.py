"""A plugin that adds a `notes` field to each VM, with a rule of its own."""

from typing import Any

from pydantic import Field

from bkt_core import Problem, hookimpl


@hookimpl
def bkt_manifest_fields(subsystem: str) -> dict[str, Any] | None:
    if subsystem != "vm":
        return None
    return {"notes": (str, Field(default="", description="Free text about the VM."))}


@hookimpl
def bkt_validate_manifest(subsystem: str, document: Any) -> list[Problem]:
    problems = []
    vms = document.get("vms") if isinstance(document, dict) else None
    for name, vm in (vms or {}).items() if isinstance(vms, dict) else ():
        notes = vm.get("notes") if isinstance(vm, dict) else None
        if isinstance(notes, str) and "TODO" in notes:
            problems.append(Problem(("vms", name, "notes"), "must not say TODO"))
    return problems
