"""The test kit's FakeLibvirt against the real virsh: one small batch (define, list, dumpxml,
domstate, undefine, and the failures bkt reads) sent to both, and the parts bkt reads of the
replies compared.

Runs on the daemon (``$BKT_TEST_URI``, default ``qemu:///system``): the domain is
``<domain type='qemu'>``, which the test driver does not take.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from bkt_core.process import SubprocessRunner
from bkt_vm_plugin.testing import FakeLibvirt
from bkt_vm_plugin.virsh import DomainState, Reply, Virsh, memory_files
from tests.livelib import Lab

pytestmark = pytest.mark.libvirtd


def domain_xml(name: str, domain_uuid: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{domain_uuid}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
</domain>
"""


def the_batch(virsh: Virsh, name: str, domain_uuid: str) -> list[Reply]:
    with memory_files([domain_xml(name, domain_uuid), "<domain type='qemu'><name>x"]) as files:
        return virsh.batch(
            [
                ["define", "--file", files[0]],
                ["define", "--file", files[1]],
                ["list", "--all", "--name"],
                ["list", "--all", "--uuid"],
                ["dumpxml", "--inactive", "--security-info", "--domain", name],
                ["domstate", "--domain", name],
                ["undefine", "--domain", name],
                ["domstate", "--domain", name],
                ["dumpxml", "--inactive", "--security-info", "--domain", name],
            ]
        )


def what_bkt_reads(replies: list[Reply], name: str, domain_uuid: str) -> dict[str, Any]:
    """The parts of the replies bkt reads: success of each command, the domain among the
    names and UUIDs listed, the identity and size of the domain in its XML, its state, and
    what virsh says when it is gone."""
    _, malformed, names, uuids, dumped, state, _, gone, gone_xml = replies
    root = ET.fromstring(dumped.stdout)
    memory = root.find("memory")
    assert memory is not None
    kib = int(memory.text or "0") * {"KiB": 1, "MiB": 1024}[memory.get("unit", "KiB")]
    return {
        "ok": [r.ok for r in replies],
        "malformed": malformed.message.split(" from ")[0],
        "listed": name in names.stdout.split() and domain_uuid in uuids.stdout.split(),
        "xml": (root.tag, root.get("type"), root.findtext("name"), root.findtext("uuid"), kib),
        "vcpu": (root.findtext("vcpu") or "").strip(),
        "state": DomainState.parse(state.stdout),
        "gone": (gone.message, gone_xml.message),
    }


def test_the_fake_answers_the_batch_as_virsh_does(test_uri: str, lab: Lab) -> None:
    name = lab.name("kit")
    domain_uuid = str(uuid.uuid4())
    real = what_bkt_reads(
        the_batch(Virsh(SubprocessRunner(), test_uri), name, domain_uuid), name, domain_uuid
    )
    fake = what_bkt_reads(
        the_batch(Virsh(FakeLibvirt(), test_uri), name, domain_uuid), name, domain_uuid
    )
    assert real["ok"] == [True, False, True, True, True, True, True, False, False]
    assert fake == real
