"""The typed facades that call the hooks (Host's methods for the host-level hooks,
:class:`bkt_vm_plugin.hooks.VmHooks` for the VM hooks) take the parameters their hook passes,
in its order and with its types, and return what the hook's results become: a change to a
hook's specification that its facade does not follow fails here.

Annotations are read with ``inspect`` and evaluated in the namespace of their module's
imports (those under ``TYPE_CHECKING`` included), so that two names for one type compare
equal and one name for two types does not."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bkt_core import hookspecs as core_specs
from bkt_core.errors import BktError
from bkt_core.host import Host
from bkt_core.typecheck import _imports
from bkt_vm_plugin import hooks as vm_hooks
from bkt_vm_plugin import hookspecs as vm_specs
from bkt_vm_plugin.hooks import VmHooks


def namespace(module: types.ModuleType) -> dict[str, Any]:
    """The names ``module``'s annotations may use: its globals and its imports."""
    found: dict[str, Any] = dict(vars(module))
    for line in _imports(module):
        exec(line, found)
    return found


def evaluated(annotation: str, module: types.ModuleType) -> Any:
    return eval(annotation, namespace(module))


def item_of(spec_return: Any) -> Any:
    """``X`` of a hook declared to return ``Iterable[X] | None``."""
    (iterable, none) = spec_return.__args__
    assert none is type(None)
    (item,) = iterable.__args__
    return item


def value_of(spec_return: Any) -> Any:
    """``X`` of a hook declared to return ``X | None``."""
    (value, none) = spec_return.__args__
    assert none is type(None)
    return value


def collected(spec_return: Any) -> Any:
    """Each plugin's result, with its name."""
    return list[tuple[str, value_of(spec_return)]]  # type: ignore[misc]


def collected_items(spec_return: Any) -> Any:
    """Each item of each plugin's result, with the plugin's name."""
    return list[tuple[str, item_of(spec_return)]]  # type: ignore[misc]


def one_by_one(spec_return: Any) -> Any:
    """Each implementation as (plugin name, a call that returns what the hook returns)."""
    assert spec_return is None
    return Iterator[tuple[str, Callable[[], None]]]


#: facade -> (its hook, parameters the facade supplies itself, what it returns given what
#: the hook returns).
FACADES: dict[Callable[..., Any], tuple[Callable[..., Any], tuple[str, ...], Any]] = {
    Host.add_cli_commands: (
        core_specs.bkt_cli_commands,
        (),
        lambda r: list[BktError] if r is None else pytest.fail("not None"),
    ),
    Host.manifest_fields: (core_specs.bkt_manifest_fields, (), collected),
    Host.validate_manifest: (
        core_specs.bkt_validate_manifest,
        (),
        lambda r: list[item_of(r)],  # type: ignore[misc]
    ),
    # Each implementation gets the sources the ones before it made.
    Host.manifest_sources: (
        core_specs.bkt_manifest_sources,
        ("sources",),
        lambda r: list[item_of(r)],  # type: ignore[misc]
    ),
    Host.manifest_cache_keys: (
        core_specs.bkt_manifest_cache_key,
        (),
        lambda r: list[value_of(r)],  # type: ignore[misc]
    ),
    Host.subsystems: (
        core_specs.bkt_subsystems,
        ("host",),
        lambda r: dict[str, item_of(r)],  # type: ignore[misc]
    ),
    VmHooks.domain_fields: (vm_specs.bkt_domain_fields, (), collected_items),
    VmHooks.vm_defaults: (vm_specs.bkt_vm_defaults, (), collected),
    VmHooks.disk_plan: (vm_specs.bkt_disk_plan, (), lambda r: r),
    VmHooks.disk_provision: (vm_specs.bkt_disk_provision, (), lambda r: r),
    VmHooks.post_sync_vm: (vm_specs.bkt_post_sync_vm, (), one_by_one),
    VmHooks.post_sync: (vm_specs.bkt_post_sync, (), one_by_one),
}

#: Hooks bkt calls without a facade: the host calls it once while it builds its manager.
NO_FACADE = {"bkt_add_hookspecs"}


def hooks_of(module: types.ModuleType) -> set[str]:
    return {name for name in vars(module) if name.startswith("bkt_") and name != "bkt_impl"}


def test_every_hook_has_a_facade() -> None:
    declared = hooks_of(core_specs) | hooks_of(vm_specs)
    covered = {spec.__name__ for spec, _supplied, _returns in FACADES.values()}
    assert covered | NO_FACADE == declared
    assert not covered & NO_FACADE


@pytest.mark.parametrize("facade", list(FACADES), ids=lambda f: f.__qualname__)
def test_a_facade_has_its_hooks_parameters_and_result(facade: Callable[..., Any]) -> None:
    spec, supplied, returns = FACADES[facade]
    spec_module = core_specs if spec.__module__ == core_specs.__name__ else vm_specs
    facade_module = vm_hooks if facade.__module__ == vm_hooks.__name__ else inspect.getmodule(Host)
    assert facade_module is not None
    spec_signature = inspect.signature(spec)
    signature = inspect.signature(facade)

    wanted = [p for p in spec_signature.parameters.values() if p.name not in supplied]
    got = [p for p in signature.parameters.values() if p.name != "self"]
    assert [p.name for p in got] == [p.name for p in wanted], "names and order"
    for mine, theirs in zip(got, wanted, strict=True):
        assert evaluated(mine.annotation, facade_module) == evaluated(
            theirs.annotation, spec_module
        ), mine.name

    spec_return = evaluated(spec_signature.return_annotation, spec_module)
    assert evaluated(signature.return_annotation, facade_module) == returns(spec_return)


def test_the_comparison_notices_a_changed_type() -> None:
    # The check compares types, not spellings: DiskCreation is not DiskRequest.
    ns = namespace(vm_specs)
    assert eval("DiskCreation | None", ns) != eval("DiskRequest | None", ns)
    assert eval("DiskCreation | None", ns) == eval("DiskCreation | None", namespace(vm_hooks))
