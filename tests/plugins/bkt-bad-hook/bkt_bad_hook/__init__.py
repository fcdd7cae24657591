"""A plugin that implements a hook bkt does not have."""

from bkt_core import hookimpl


@hookimpl
def bkt_not_a_hook() -> None:
    pass
