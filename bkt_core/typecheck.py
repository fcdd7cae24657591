"""Check a plugin's hook implementations against the hook specifications, with mypy.

``python -m bkt_core.typecheck MODULE...`` imports each plugin module, and for every
``bkt_*`` function in it that is marked with :data:`bkt_core.hookimpl`, writes a small stub::

    def _check_1(name: str, vm: VmDefinition, ...) -> DiskCreation | None:
        return _plugin_1.bkt_disk_plan(name=name, vm=vm)

that is, a function with the parameters and return type of the hook's specification, calling
the implementation with keyword arguments for the names it accepts, as bkt does. Then it runs
``mypy --strict`` on the stub: an implementation whose parameters do not accept what the hook
passes, or whose return type is not what the hook declares, is mypy's error, printed with the
module and the hook. The specifications are every module the installed plugins declare
(:meth:`bkt_core.Host.hookspec_modules`: bkt's own and, for example, the VM subsystem's).

A plugin whose hooks are methods of an object (an entry point ``module:object``) is named
the same way, ``MODULE:OBJECT``: the object's bound ``bkt_*`` methods are checked.

Exit status: 0 when every implementation matches, 1 when one does not (or names a parameter
its hook does not have, or is not a hook, or a module or object has no hook implementation
at all), 2 when a module or object cannot be imported or mypy cannot run. Wrappers
(``wrapper=True``) are not checked: their signature is pluggy's, not the hook's.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bkt_core.hookspecs import PROJECT

__all__ = ["Report", "Target", "check_modules", "main", "write_stub"]

_SPEC_ATTR = f"{PROJECT}_spec"
_IMPL_ATTR = f"{PROJECT}_impl"


@dataclass
class Report:
    """What checking found: ``problems`` (one line each, naming module and hook) and how
    many implementations were checked."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Target:
    """What to check: the hook functions of ``module``, or with ``attribute`` (a dotted path
    in the module) the hook methods of that object, as ``MODULE:OBJECT`` names it."""

    module: ModuleType
    attribute: str = ""

    @classmethod
    def load(cls, name: str) -> Target:
        """The target ``MODULE`` or ``MODULE:OBJECT``. Raises ImportError."""
        module_name, _, attribute = name.partition(":")
        module = importlib.import_module(module_name)
        target = cls(module, attribute)
        try:
            target.owner()
        except AttributeError:
            raise ImportError(f"module {module_name} has no {attribute!r}", name=name) from None
        return target

    @property
    def label(self) -> str:
        return self.module.__name__ + (f":{self.attribute}" if self.attribute else "")

    def owner(self) -> object:
        """The module, or the object its ``attribute`` names."""
        found: object = self.module
        for part in filter(None, self.attribute.split(".")):
            found = getattr(found, part)
        return found

    def implementations(self) -> list[tuple[str, Any]]:
        """Each ``bkt_*`` hook implementation (marked with :data:`bkt_core.hookimpl`) by
        name: a module's own functions (not ones it imports), or an object's methods."""
        owner = self.owner()
        found = []
        for name in sorted(dir(owner)):
            if not name.startswith(f"{PROJECT}_"):
                continue
            function = getattr(owner, name, None)
            if not callable(function) or getattr(function, _IMPL_ATTR, None) is None:
                continue
            if (
                not self.attribute
                and getattr(function, "__module__", None) != self.module.__name__
            ):
                continue
            found.append((name, function))
        return found

    def objects_with_hooks(self) -> list[str]:
        """The module's objects whose methods are hook implementations (what to name as
        ``MODULE:OBJECT``)."""
        return [
            name
            for name, value in sorted(vars(self.module).items())
            if not isinstance(value, ModuleType | type)
            and not name.startswith("_")
            and Target(self.module, name).implementations()
        ]


def _specs(spec_modules: Iterable[object]) -> dict[str, tuple[Any, ModuleType]]:
    """Each hook's specification function and the module it is declared in."""
    found: dict[str, tuple[Any, ModuleType]] = {}
    for module in spec_modules:
        assert isinstance(module, ModuleType)
        for name, value in vars(module).items():
            if name.startswith(f"{PROJECT}_") and hasattr(value, _SPEC_ATTR):
                found.setdefault(name, (value, module))
    return found


def _imports(module: ModuleType) -> list[str]:
    """The import statements of ``module`` at its top level and under ``if TYPE_CHECKING:``,
    as absolute imports: what the names in its annotations refer to."""
    tree = ast.parse(inspect.getsource(module))
    nodes: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.If):
            nodes.extend(node.body)
        else:
            nodes.append(node)
    lines = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = node.module or ""
            if node.level:
                package = (module.__package__ or "").split(".")
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            lines.append(f"from {base} import {names}")
        elif isinstance(node, ast.Import):
            lines.append("import " + ", ".join(ast.unparse(a) for a in node.names))
    return lines


def _accepted(function: Any, spec_args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The spec's arguments ``function`` accepts (by name), and the names it has that the
    spec does not pass."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return list(spec_args), []
    names = [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    return [a for a in spec_args if a in names], [n for n in names if n not in spec_args]


def write_stub(
    modules: Sequence[ModuleType | Target], spec_modules: Iterable[object], report: Report
) -> tuple[str, dict[int, str]]:
    """The stub's source, and for each of its lines that calls an implementation, which
    ``module.hook`` (``module:object.hook``) it checks. Problems found without mypy go into
    ``report``, a module or object without any hook implementation among them."""
    targets = [m if isinstance(m, Target) else Target(m) for m in modules]
    specs = _specs(spec_modules)
    head = ["from __future__ import annotations", "", "from collections.abc import Callable"]
    head += ["from typing import TYPE_CHECKING, Any", ""]
    head += [f"import {t.module.__name__} as _plugin_{i}" for i, t in enumerate(targets)]
    imports = sorted({line for _, spec_module in specs.values() for line in _imports(spec_module)})
    head += ["", "if TYPE_CHECKING:", *(f"    {line}" for line in imports or ["pass"]), ""]
    body: list[str] = []
    owners: dict[int, str] = {}
    for i, target in enumerate(targets):
        implementations = target.implementations()
        if not implementations:
            report.problems.append(_nothing_found(target))
        holder = f"_plugin_{i}" + (f".{target.attribute}" if target.attribute else "")
        for name, function in implementations:
            opts = getattr(function, _IMPL_ATTR)
            where = f"{target.label}.{name}"
            if name not in specs:
                report.problems.append(f"{where}: error: {name} is not a hook of bkt")
                continue
            if opts.get("wrapper") or opts.get("hookwrapper"):
                continue
            spec, _ = specs[name]
            signature = inspect.signature(spec)
            spec_args = list(signature.parameters)
            passed, unknown = _accepted(function, spec_args)
            if unknown:
                report.problems.append(
                    f"{where}: error: accepts {', '.join(map(repr, unknown))}, which {name} "
                    f"does not pass (it passes {', '.join(spec_args) or 'nothing'})"
                )
                continue
            report.checked += 1
            params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
            returns = signature.return_annotation
            call = f"{holder}.{name}({', '.join(f'{a}={a}' for a in passed)})"
            start = len(head) + len(body) + 1
            body.append(f"def _check_{len(owners)}({params}) -> {returns}:")
            if returns == "None":
                body.append(f"    _returns: Callable[..., None] = {holder}.{name}")
                body.append(f"    {call}")
            else:
                body.append(f"    return {call}")
            body.append("")
            for line in range(start, start + 4):
                owners[line] = where
    return "\n".join([*head, "", *body]) + "\n", owners


def _nothing_found(target: Target) -> str:
    """The problem of a module or object in which no hook implementation was found."""
    problem = (
        f"{target.label}: error: no hook implementation found (a {PROJECT}_* "
        f"{'method' if target.attribute else 'function'} marked with @hookimpl)"
    )
    objects = [] if target.attribute else target.objects_with_hooks()
    if objects:
        named = " or ".join(f"{target.label}:{name}" for name in objects)
        problem += f"; its hooks are methods of an object: check {named}"
    return problem


def _search_path(modules: Iterable[ModuleType]) -> list[str]:
    """The directories mypy needs to find these modules (and bkt) as the code imports them."""
    roots: list[str] = []
    for module in modules:
        top = sys.modules[module.__name__.partition(".")[0]]
        file = getattr(top, "__file__", None)
        if file is None:
            continue
        path = Path(file).parent
        root = path.parent if Path(file).name == "__init__.py" else path
        if str(root) not in roots:
            roots.append(str(root))
    return roots


def check_modules(names: Sequence[str], *, host: Any = None) -> Report:
    """Check the plugins ``names`` (``MODULE``, or ``MODULE:OBJECT`` for hooks that are an
    object's methods) against the hooks of ``host`` (default: a host with every installed
    plugin). Raises ImportError for a module or object that cannot be imported, and OSError
    or RuntimeError when mypy cannot run."""
    if host is None:
        from bkt_core.host import Host

        host = Host(strict=False)
    targets = [Target.load(name) for name in names]
    modules = [t.module for t in targets]
    report = Report()
    spec_modules = host.hookspec_modules
    source, owners = write_stub(targets, spec_modules, report)
    if not report.checked:
        return report
    import bkt_core

    search = _search_path([*modules, bkt_core, *spec_modules])
    with tempfile.TemporaryDirectory(prefix="bkt-typecheck-") as scratch:
        stub = Path(scratch) / "bkt_hook_check.py"
        stub.write_text(source)
        report.problems += _mypy(stub, search, owners)
    return report


def _mypy(stub: Path, search: Sequence[str], owners: dict[int, str]) -> list[str]:
    """mypy's errors in ``stub``, each named after the implementation it is about."""
    try:
        from mypy import api
    except ImportError:
        raise RuntimeError("mypy is not installed (pip install mypy)") from None

    # A configuration of its own: the search path, and nothing from the current directory's.
    config = stub.parent / "mypy.ini"
    config.write_text(f"[mypy]\nmypy_path = {os.pathsep.join(search)}\n")
    stdout, stderr, status = api.run(
        [
            "--strict",
            # Only the stub's errors: the plugin's own code is the plugin's business.
            "--follow-imports=silent",
            "--no-error-summary",
            "--show-error-codes",
            # mypy's cache of what the stub imports (bkt, pydantic, lxml's stubs) makes every
            # run after the first one fast; it lives with the user's other caches.
            f"--cache-dir={_cache_dir()}",
            f"--config-file={config}",
            f"--python-version={sys.version_info.major}.{sys.version_info.minor}",
            str(stub),
        ]
    )
    if status not in (0, 1):
        raise RuntimeError(f"mypy could not run: {(stderr or stdout).strip()}")
    problems = []
    for line in stdout.splitlines():
        location, _, message = line.partition(": ")
        file, _, number = location.rpartition(":")
        if Path(file).name != stub.name or message.startswith("note:"):
            continue
        problems.append(f"{owners.get(int(number), stub.name)}: {message}")
    return problems


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bkt" / "typecheck"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bkt_core.typecheck MODULE[:OBJECT]...``: check, print, return the exit
    status."""
    names = list(sys.argv[1:] if argv is None else argv)
    if not names or any(n.startswith("-") for n in names):
        sys.stderr.write("usage: python -m bkt_core.typecheck MODULE[:OBJECT]...\n")
        return 2
    try:
        report = check_modules(names)
    except ImportError as exc:
        sys.stderr.write(f"error: cannot import {exc.name or exc}: {exc}\n")
        return 2
    except (OSError, RuntimeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    for problem in report.problems:
        sys.stdout.write(problem + "\n")
    if report.ok:
        sys.stdout.write(f"ok: {report.checked} hook implementations match their hooks\n")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
