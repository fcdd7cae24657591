"""Embedding bkt: sync one VM from another program, with an explicit plugin list.

    python examples/embed/sync_one.py MANIFEST_DIR VM_NAME [--connect URI] [--dry-run]

The host is built with ``entry_points=False`` and the default plugins passed by hand, so that
whatever else is installed in the environment plays no part: the program says exactly which
plugins it runs with (add your own objects or modules to the list). It validates the
manifest, prints the plan for the VM as JSON (the document ``bkt vm sync --dry-run --json``
prints under ``"plan"``), then syncs that VM and prints its results as JSON
(``{"results": [...]}``).

Exit status: 0 when the VM is in sync afterwards, 1 when it failed, 2 for an invalid manifest
or a VM the manifest does not have. Nothing in :mod:`bkt_core` prints or exits: this script
decides both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bkt_core import BktError, Host, ManifestError, SyncPlan, SyncReport
from bkt_vm_plugin.api import default_plugins


def build_host(manifest_dir: str, uri: str | None) -> Host:
    """A host that loads no entry points: only the plugins listed here."""
    plugins: list[object] = [*default_plugins()]
    return Host(manifest_dir, uri=uri, entry_points=False, plugins=plugins)


def report_error(exc: BktError) -> int:
    if isinstance(exc, ManifestError):
        for diagnostic in exc.diagnostics:
            print(diagnostic, file=sys.stderr)  # file:line:col: path: message
    print(f"error: {exc}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Sync one VM of a bkt manifest.")
    parser.add_argument("manifest_dir", help="the directory that holds vms.json")
    parser.add_argument("name", help="the VM to sync")
    parser.add_argument("-c", "--connect", metavar="URI", help="libvirt URI (virsh's default)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    args = parser.parse_args(argv)

    host = build_host(args.manifest_dir, args.connect)
    try:
        host.validate("vm")  # the whole manifest, every problem at once
        plan: SyncPlan = host.plan("vm", [args.name])
        print(json.dumps(plan.to_json(), indent=2), flush=True)
        if args.dry_run:
            return 0
        report: SyncReport = host.sync("vm", [args.name])
    except BktError as exc:
        return report_error(exc)
    print(json.dumps({"results": [r.to_json() for r in report.results or ()]}, indent=2))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
