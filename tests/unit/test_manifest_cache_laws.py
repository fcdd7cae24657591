"""The cache of validated manifests changes nothing but time: for generated valid manifests,
with and without plugins that declare fields (of plain, list, mapping and model types, one
with a domain XML mapping), the command that takes the manifest from the cache plans, reports
status and captures exactly as the one that validates it, on the same (fake) libvirt."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bkt_nested_virt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from bkt_core import hookimpl
from bkt_vm_plugin.defaults import fill_defaults
from bkt_vm_plugin.definition import VmManifest
from bkt_vm_plugin.subsystem import VmSubsystem
from bkt_vm_plugin.testing import FakeLibvirt, ManifestDir, vm_subsystem
from tests.strategies import HOME, has_os_database, raw_definitions, texts

EXAMPLES = 25
WITH_OS = has_os_database()


class Owner(BaseModel):
    """A plugin's model: dumped without its None fields."""

    name: str
    email: str | None = None


class Inventory:
    """Declares fields of several types, none of them mapped to the domain."""

    @hookimpl
    def bkt_manifest_fields(self, subsystem: str) -> dict[str, Any] | None:
        if subsystem != "vm":
            return None
        return {
            "tags": (list[str], Field(default_factory=list)),
            "labels": (dict[str, int], Field(default_factory=dict)),
            "owner": (Owner | None, Field(default=None)),
            "ratio": (float, Field(default=0.5)),
        }


def inventory_fields(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["tags"] = draw(st.lists(texts(), max_size=3))
    if draw(st.booleans()):
        fields["labels"] = draw(st.dictionaries(texts(), st.integers(-5, 5), max_size=3))
    if draw(st.booleans()):
        fields["owner"] = draw(
            st.one_of(
                st.none(),
                st.builds(
                    lambda name, email: {"name": name, **({"email": email} if email else {})},
                    texts(),
                    st.one_of(st.none(), texts()),
                ),
            )
        )
    if draw(st.booleans()):
        fields["ratio"] = draw(st.floats(-10, 10, allow_nan=False, allow_infinity=False))
    if draw(st.booleans()):
        fields["nested_virt"] = draw(st.sampled_from([None, "vmx", "svm"]))
    return fields


PLUGINS: dict[str, tuple[Sequence[object], Callable[[st.DrawFn], dict[str, Any]] | None]] = {
    "default-plugins": ((), None),
    "plugin-fields": (
        [("inventory", Inventory()), ("nested_virt", bkt_nested_virt)],
        inventory_fields,
    ),
}


def manifests(
    extra: Callable[[st.DrawFn], dict[str, Any]] | None,
) -> st.SearchStrategy[dict[str, Any]]:
    """The ``vms`` of a valid manifest: one to three VMs, each on a disk of its own."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        names = draw(
            st.lists(
                st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,12}", fullmatch=True),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        vms: dict[str, Any] = {}
        for name in names:
            # The default plugins include os: the manifests name OSes, which fill devices.
            data = draw(raw_definitions(with_os=WITH_OS))
            data["disk_path"] = f"{data['disk_path']}/{name}.qcow2"
            if extra is not None:
                data.update(extra(draw))
            vms[name] = data
        return vms

    return build()


def reports(sub: VmSubsystem) -> dict[str, Any]:
    """What the commands that read the manifest give: plan, status (every domain) and a
    capture that writes nothing."""
    return {
        "plan": sub.plan().to_json(),
        "status": sub.status(all=True).to_json(),
        "capture": sub.capture(all=True, dry_run=True).to_json(),
    }


@pytest.mark.parametrize("config", list(PLUGINS))
def test_the_cached_path_gives_what_the_validating_path_gives(config: str) -> None:
    plugins, extra = PLUGINS[config]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(manifests(extra), manifests(extra), st.booleans())
    def law(before: dict[str, Any], after: dict[str, Any], schema: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
            patch.setenv("HOME", HOME)
            patch.setenv("XDG_CACHE_HOME", os.path.join(tmp, "cache"))
            validated: list[VmManifest] = []
            real = VmSubsystem._validate_sources

            def counted(
                self: VmSubsystem, sources: Any, home: str | None, *rest: Any
            ) -> VmManifest:
                validated.append(real(self, sources, home, *rest))
                return validated[-1]

            patch.setattr(VmSubsystem, "_validate_sources", counted)
            fake = FakeLibvirt()
            directory = ManifestDir(Path(tmp) / "manifests")
            # Domains of another manifest, so that some VMs drift, some are missing and some
            # domains are not in the manifest.
            directory.write(before)
            vm_subsystem(fake.host(directory, plugins, cache=False)).sync()
            directory.write(after, **({"$schema": "vms.schema.json"} if schema else {}))
            validated.clear()

            cold = vm_subsystem(fake.host(directory, plugins))
            expected = reports(cold)
            assert len(validated) == 1, "the first command validates, once"
            warm = vm_subsystem(fake.host(directory, plugins))
            got = reports(warm)
            assert len(validated) == 1, "the second command takes the manifest from the cache"
            assert json.dumps(got) == json.dumps(expected)
            loaded = warm.load()
            # the cached manifest, filled (never cached) as the validated one is
            assert loaded == fill_defaults(validated[0], warm.hooks)
            assert [dict(vm.filled) for vm in loaded.vms.values()] == [
                dict(vm.filled) for vm in cold.load().vms.values()
            ]
            for name, vm in loaded.vms.items():
                assert vm.written == validated[0].vms[name].written
                assert vm.layout.names == cold.vm_fields.names
                assert vm.as_written() == validated[0].vms[name].as_written()

    law()
