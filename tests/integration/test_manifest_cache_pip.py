"""The cache of validated manifests as users meet it: a plugin installed, upgraded or
uninstalled with real ``pip`` runs is seen by the next command (its fields are there, or
gone), and a manifest is validated again only then."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.integration.test_plugin_index_pip import RACY, Venv, project

#: Loads the manifest of the directory argv[1] as a command does (the Host API, the plugins of
#: the entry points, the user's cache) and prints how often it was validated and its fields.
PROBE = """
import json, sys
from bkt_core.host import Host
from bkt_vm_plugin.subsystem import VmSubsystem

validated = []
real = VmSubsystem._validate_sources

def counted(self, sources, home, *rest):
    validated.append(1)
    return real(self, sources, home, *rest)

VmSubsystem._validate_sources = counted
web = Host(sys.argv[1]).subsystem("vm").load().vms["web"]
print(json.dumps({"validated": len(validated), "fields": list(web.layout.names)}))
"""


def probe(venv: Venv, manifests: Path) -> dict[str, Any]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BKT_")}
    environ["XDG_CACHE_HOME"] = str(venv.cache_home)
    environ["HOME"] = str(venv.work)
    done = subprocess.run(
        [str(venv.python), "-c", PROBE, str(manifests)],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        cwd=venv.work,
        timeout=120,
    )
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_pip_install_upgrade_and_uninstall_are_seen_by_the_next_command(tmp_path: Path) -> None:
    venv = Venv(tmp_path)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    vm = {
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": "~/web.qcow2",
        "disk_size_gb": 1,
        "boot": "bios",
        "network": "default",
        "graphics": "none",
    }
    (manifests / "vms.json").write_text(json.dumps({"vms": {"web": vm}}))

    def twice() -> tuple[dict[str, Any], dict[str, Any]]:
        # A module installed less than RACY seconds ago keeps the verdict from being stored.
        time.sleep(RACY + 0.2)
        return probe(venv, manifests), probe(venv, manifests)

    first, again = twice()
    assert first["validated"] == 1 and again == {**first, "validated": 0}
    assert "notes" not in first["fields"]

    venv.install(project(tmp_path, "bkt-notes"))
    first, again = twice()
    assert first["validated"] == 1, "a new plugin is a new key"
    assert first["fields"][-1] == "notes"
    assert again == {**first, "validated": 0}

    venv.install(project(tmp_path, "bkt-notes", "1.3.0"), "--upgrade")
    first, again = twice()
    assert first["validated"] == 1, "an upgraded plugin is a new key"
    assert first["fields"][-1] == "notes"
    assert again == {**first, "validated": 0}

    venv.pip("uninstall", "--yes", "bkt-notes")
    after = probe(venv, manifests)
    # The plugin set is the first one again: its entry, without the plugin's field, is used.
    assert "notes" not in after["fields"]
    assert after["validated"] == 0
