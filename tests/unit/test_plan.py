"""bkt_core.plan names every plan and report class, also those that live in modules of
their own (the status and capture reports), as it always did."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bkt_core
from bkt_core import plan


@pytest.mark.parametrize("name", [n for n in plan.__all__ if n != "Action"])
def test_every_name_of_the_plan_is_the_one_bkt_core_exports(name: str) -> None:
    assert getattr(plan, name) is getattr(bkt_core, name)
    assert getattr(plan, name).__name__ == name


def test_a_name_the_plan_does_not_have_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'StatusTable'"):
        plan.StatusTable  # noqa: B018


def test_importing_a_report_from_the_plan_works_in_a_fresh_interpreter() -> None:
    # As a plugin written against bkt_core.plan does, star import included.
    code = (
        "from bkt_core.plan import StatusReport, CaptureReport\n"
        "from bkt_core import plan\n"
        "names = {}\n"
        "exec('from bkt_core.plan import *', names)\n"
        "assert set(plan.__all__) <= set(names), set(plan.__all__) - set(names)\n"
        "assert names['StatusRow'].__module__ == 'bkt_core.status_report'\n"
        "print(StatusReport((), key='vms').to_json(), CaptureReport.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, "{'vms': []} bkt_core.capture_report\n"), (
        done.stderr
    )
