"""The test kit's FakeLibvirt against the real virsh: one small batch (define, list, dumpxml,
domstate, start, destroy, undefine, and the failures bkt reads) sent to both, and the parts
bkt reads of the replies compared.

Runs on the test driver (``test:///default``, in-process, needs only virsh) and on the
daemon (``$BKT_TEST_URI``, default ``qemu:///system``).
"""

from __future__ import annotations

import os
import re
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from bkt_core.process import SubprocessRunner
from bkt_vm_plugin.testing import FakeLibvirt
from bkt_vm_plugin.virsh import Reply, Virsh, memory_files
from tests.livelib import Lab

pytestmark = pytest.mark.libvirtd


@pytest.fixture(
    params=["test:///default", os.environ.get("BKT_TEST_URI") or "qemu:///system"],
    ids=["test-driver", "daemon"],
)
def uri(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def domain_xml(name: str, domain_uuid: str) -> str:
    """A small domain with no disk: started, it sits in its firmware."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{domain_uuid}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
</domain>
"""


COMMANDS = [
    "define",
    "define (malformed)",
    "define (cpu features without a model)",
    "list --all --name",
    "list --all --uuid",
    "dumpxml --inactive",
    "domstate",
    "start",
    "start (again)",
    "list --name",
    "destroy",
    "destroy (again)",
    "undefine",
    "domstate (gone)",
    "dumpxml (gone)",
]


def the_batch(virsh: Virsh, name: str, domain_uuid: str) -> list[Reply]:
    dom = ["--domain", name]
    no_model = domain_xml(name, domain_uuid).replace(
        "</domain>", "<cpu><feature policy='require' name='vmx'/></cpu></domain>"
    )
    texts = [domain_xml(name, domain_uuid), "<domain type='qemu'><name>x", no_model]
    with memory_files(texts) as files:
        return virsh.batch(
            [
                ["define", "--file", files[0]],
                ["define", "--file", files[1]],
                ["define", "--file", files[2]],
                ["list", "--all", "--name"],
                ["list", "--all", "--uuid"],
                ["dumpxml", "--inactive", "--security-info", *dom],
                ["domstate", *dom],
                ["start", *dom],
                ["start", *dom],
                ["list", "--name"],
                ["destroy", *dom],
                ["destroy", *dom],
                ["undefine", *dom],
                ["domstate", *dom],
                ["dumpxml", "--inactive", "--security-info", *dom],
            ]
        )


def what_bkt_reads(replies: list[Reply], name: str, domain_uuid: str) -> dict[str, Any]:
    """The parts of the replies bkt reads: which commands failed and what virsh said then,
    our domain among the names and UUIDs listed, the identity and size of the domain in its
    XML, and its state as virsh prints it."""
    by = dict(zip(COMMANDS, replies, strict=True))
    root = ET.fromstring(by["dumpxml --inactive"].stdout)
    memory = root.find("memory")
    assert memory is not None
    kib = int(memory.text or "0") * {"KiB": 1, "MiB": 1024}[memory.get("unit", "KiB")]

    def listed(reply: Reply, value: str) -> tuple[bool, bool]:
        lines = reply.stdout.splitlines()
        return value in lines, "" in lines

    return {
        "ok": {c: r.ok for c, r in by.items()},
        # The parsers word a syntax error differently; the file's name is the batch's own.
        "said": {
            c: r.message.split(" from ")[0]
            if c == "define (malformed)"
            else re.sub(r" from \S+:", " from FILE:", r.message)
            for c, r in by.items()
            if not r.ok
        },
        "names": listed(by["list --all --name"], name),
        "uuids": listed(by["list --all --uuid"], domain_uuid),
        "running": listed(by["list --name"], name),
        "xml": (root.tag, root.get("type"), root.findtext("name"), root.findtext("uuid"), kib),
        "vcpu": (root.findtext("vcpu") or "").strip(),
        "state": by["domstate"].stdout,
    }


def test_the_fake_answers_the_batch_as_virsh_does(uri: str, lab: Lab) -> None:
    name = lab.name("kit")
    domain_uuid = str(uuid.uuid4())
    real = what_bkt_reads(
        the_batch(Virsh(SubprocessRunner(), uri), name, domain_uuid), name, domain_uuid
    )
    fake = what_bkt_reads(
        the_batch(Virsh(FakeLibvirt(), uri), name, domain_uuid), name, domain_uuid
    )
    assert [c for c, ok in real["ok"].items() if not ok] == [
        "define (malformed)",
        "define (cpu features without a model)",
        "start (again)",
        "destroy (again)",
        "domstate (gone)",
        "dumpxml (gone)",
    ]
    assert real["names"] == real["running"] == (True, False)
    assert fake == real
