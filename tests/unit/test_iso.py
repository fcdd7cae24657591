"""bkt_vm_plugin.iso without a network: the cache, its file names, and what is attached."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bkt_core.errors import OperationError
from bkt_core.host import Host
from bkt_vm_plugin.definition import VmDefinition
from bkt_vm_plugin.iso import (
    FetchFailed,
    FetchResult,
    _content_range,
    cache_dir,
    cache_name,
    cached_path,
    format_size,
    part_path,
    sha256_of_file,
    validator_path,
)
from bkt_vm_plugin.model import validate_vm
from bkt_vm_plugin.testing import ManifestDir
from tests.unit.test_iso_urls import urls


def test_the_cache_is_under_xdg_cache_home_when_absolute_else_home() -> None:
    assert cache_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/bkt/isos")
    assert cache_dir({"XDG_CACHE_HOME": "rel", "HOME": "/h"}) == Path("/h/.cache/bkt/isos")
    assert cache_dir({"XDG_CACHE_HOME": "", "HOME": "/h"}) == Path("/h/.cache/bkt/isos")
    with pytest.raises(OperationError, match="neither XDG_CACHE_HOME"):
        cache_dir({})


def test_a_url_maps_to_its_cache_file_and_part_files() -> None:
    url = "https://example.org/a/virtio-win.iso?x=1#y"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = cached_path(url, Path("/cache"))
    assert path == Path(f"/cache/{key}-virtio-win.iso")
    assert part_path(path) == Path(f"/cache/.{key}-virtio-win.iso.part")
    assert validator_path(path) == Path(f"/cache/.{key}-virtio-win.iso.part.validator")
    with pytest.raises(ValueError, match="http"):
        cached_path("file:///x.iso", Path("/cache"))


def test_urls_that_end_in_the_same_file_name_never_share_a_cache_file() -> None:
    a, b = "https://example.org/a/install.iso", "https://example.org/b/install.iso"
    assert cached_path(a, Path("/c")) != cached_path(b, Path("/c"))
    assert cache_name(a).endswith("-install.iso") and cache_name(b).endswith("-install.iso")
    # The digest covers the whole URL: query and scheme too.
    assert len({cache_name(u) for u in (a, a + "?v=2", a.replace("https", "http"))}) == 3


@given(st.lists(urls(), min_size=2, max_size=6, unique=True))
def test_different_urls_get_different_cache_files(found: list[str]) -> None:
    assert len({cache_name(u) for u in found}) == len(found)


def test_content_range_sizes_and_digests_read_right(tmp_path: Path) -> None:
    assert _content_range("bytes 1048576-3145727/3145728") == (1048576, 3145728)
    assert _content_range("bytes */3145728") == (None, 3145728)
    assert _content_range("bytes 5-9/*") == (5, None)
    assert _content_range("items 1-2/3") == (None, None)
    assert _content_range(None) == (None, None)
    assert [format_size(n) for n in (5, 1024, 3 * 2**20 + 5, 2**31)] == [
        "5 bytes",
        "1.0 KiB",
        "3.0 MiB",
        "2.0 GiB",
    ]
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_of_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    with pytest.raises(OperationError, match="cannot read"):
        sha256_of_file(tmp_path / "none")


def vm(*sources: dict[str, str]) -> VmDefinition:
    return validate_vm(
        {
            "memory_gb": 1,
            "vcpus": 1,
            "disk_path": "/srv/a.qcow2",
            "disk_size_gb": 1,
            "boot": "uefi",
            "network": "none",
            "graphics": "none",
            "iso_sources": list(sources),
        },
        home="/home/u",
    )


def test_results_describe_themselves() -> None:
    ok = FetchResult("https://e/x.iso", Path("/c/x.iso"), "fetched", 2**20, resumed=True)
    failed = FetchResult("https://e/y.iso", Path("/c/y.iso"), "failed", error="HTTP 500")
    assert ok.describe() == "fetched https://e/x.iso -> /c/x.iso (1.0 MiB, resumed)"
    assert ok.to_json()["status"] == "fetched" and "error" not in ok.to_json()
    assert failed.to_json()["error"] == "HTTP 500"
    error = FetchFailed("w", [ok, failed, failed])
    assert error.message == "VM w: 2 ISOs not fetched: https://e/y.iso, https://e/y.iso"
    assert error.exit_code == 1


def test_without_home_or_xdg_cache_home_status_and_plan_work_and_leave_url_isos_out(
    bkt_host: Host,
    bkt_manifest_dir: ManifestDir,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only what needs the ISO cache (a URL source, fetch-iso) needs HOME or XDG_CACHE_HOME.
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    url = "https://example.org/install.iso"
    bkt_manifest_dir.write(
        {
            "box": {
                "memory_gb": 1,
                "vcpus": 1,
                "disk_path": str(tmp_path / "box.qcow2"),
                "disk_size_gb": 1,
                "create_if_missing": True,
                "boot": "bios",
                "network": "none",
                "graphics": "none",
                "iso_sources": [{"url": url}],
            }
        }
    )
    plan = bkt_host.plan("vm")
    (entry,) = plan.entries
    assert entry.action == "create"
    assert any("cannot be cached" in w for w in entry.warnings), entry.warnings
    assert [(row.name, row.state) for row in bkt_host.status("vm").rows] == [("box", "missing")]
    with pytest.raises(OperationError, match="cannot find the ISO cache"):
        cache_dir()
