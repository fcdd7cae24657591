"""What the installed distribution says about itself (scripts/check-dist checks the built
sdist and wheel)."""

from __future__ import annotations

from importlib.metadata import distribution
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_distribution_carries_its_license() -> None:
    dist = distribution("bkt")
    assert dist.metadata["License-Expression"] == "MIT"
    assert dist.metadata.get_all("License-File") == ["LICENSE"]
    licence = next(f for f in dist.files or [] if f.name == "LICENSE")
    text = licence.read_text()
    assert text.startswith("MIT License\n")
    assert text == (ROOT / "LICENSE").read_text()
