"""The firmware of a typical host, for tests that read UEFI domains which leave the firmware
to libvirt: the three OVMF descriptors of Debian 12's ovmf package (Secure Boot with
Microsoft's keys enrolled first, for q35 only; then Secure Boot without keys; then plain
OVMF, also for i440fx)."""

from __future__ import annotations

from pathlib import Path

from bkt_vm_plugin.firmware import HostFirmware

DEBIAN12_DIR = Path(__file__).parent / "fixtures" / "firmware" / "debian12"
DEBIAN12 = HostFirmware(None, dirs=[DEBIAN12_DIR])
