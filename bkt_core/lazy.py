"""Names a module offers that live in another module, imported on first use (through the
offering module's ``__getattr__``), so that importing the offering module costs nothing
until one of them is used.

Only :mod:`importlib` and :mod:`sys` are imported: ``bkt_core`` itself uses this.
"""

from __future__ import annotations

import importlib
import sys

# Not `typing.TYPE_CHECKING`: importing typing would slow `bkt --version` down.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["attribute"]


def attribute(module: str, where: Mapping[str, str], name: str) -> Any:
    """The value of ``name`` in module ``module``: taken from the module ``where`` names for
    it, and kept in ``module`` so that the next use finds it there. AttributeError, as for
    any missing name, when ``where`` names no module for it."""
    source = where.get(name)
    if source is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    setattr(sys.modules[module], name, value)
    return value
