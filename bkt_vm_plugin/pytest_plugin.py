"""pytest fixtures for testing bkt plugins against an in-memory libvirt.

Installed with bkt (entry point group ``pytest11``), so a plugin's tests use them without
importing anything; ``pytest -p no:bkt`` turns them off. Nothing heavy is imported until a
fixture is used, so a project that does not use them starts as fast as before.

- ``bkt_fake_libvirt``: a fresh :class:`~bkt_vm_plugin.testing.FakeLibvirt`.
- ``bkt_manifest_dir``: a :class:`~bkt_vm_plugin.testing.ManifestDir` in the test's
  temporary directory (``bkt_manifest_dir.write({"web": {...}})`` writes ``vms.json``).
- ``bkt_plugins``: the plugins ``bkt_host`` registers after the default ones; empty unless a
  test module or conftest overrides it (``@pytest.fixture def bkt_plugins(): return [mine]``).
- ``bkt_host``: a :class:`~bkt_core.host.Host` on that directory, with the default plugins
  and ``bkt_plugins``, whose processes the fake answers.

Example::

    def test_sync_defines_the_vm(bkt_host, bkt_manifest_dir, bkt_fake_libvirt):
        bkt_manifest_dir.write({"web": {...}})
        bkt_host.sync("vm")
        assert "web" in bkt_fake_libvirt.domains
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bkt_core.host import Host
    from bkt_vm_plugin.testing import FakeLibvirt, ManifestDir

__all__ = ["bkt_fake_libvirt", "bkt_host", "bkt_manifest_dir", "bkt_plugins"]


@pytest.fixture
def bkt_fake_libvirt() -> FakeLibvirt:
    """A fresh in-memory libvirt (:class:`~bkt_vm_plugin.testing.FakeLibvirt`)."""
    from bkt_vm_plugin.testing import FakeLibvirt

    return FakeLibvirt()


@pytest.fixture
def bkt_manifest_dir(tmp_path: Path) -> ManifestDir:
    """An empty manifest directory, ``manifests`` in the test's temporary directory."""
    from bkt_vm_plugin.testing import ManifestDir

    return ManifestDir(tmp_path / "manifests")


@pytest.fixture
def bkt_plugins() -> Sequence[object]:
    """The plugins :func:`bkt_host` registers after the default ones (none): override this
    fixture to test your own (objects, modules or ``(name, plugin)`` pairs)."""
    return ()


@pytest.fixture
def bkt_host(
    bkt_fake_libvirt: FakeLibvirt, bkt_manifest_dir: ManifestDir, bkt_plugins: Sequence[object]
) -> Host:
    """A host on :func:`bkt_manifest_dir` with the default plugins and :func:`bkt_plugins`,
    no entry points, whose virsh and qemu-img are :func:`bkt_fake_libvirt`."""
    return bkt_fake_libvirt.host(bkt_manifest_dir, bkt_plugins)
